"""Losses: segmentation losses by name, the deep-supervision wrapper, the guided attention loss."""

from attnseg.losses.guided_attention import GuidedAttentionLoss
from attnseg.losses.segmentation import LOSSES, DeepSupervisedLoss, SegmentationLoss

__all__ = ["LOSSES", "DeepSupervisedLoss", "GuidedAttentionLoss", "SegmentationLoss"]
