"""Losses: segmentation losses by name and the deep-supervision wrapper."""

from attnseg.losses.segmentation import LOSSES, DeepSupervisedLoss, SegmentationLoss

__all__ = ["LOSSES", "DeepSupervisedLoss", "SegmentationLoss"]
