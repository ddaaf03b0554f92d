"""Segmentation losses and the deep-supervision wrapper.

The losses themselves are MONAI's (well tested, the field's reference); this module fixes one target
convention for the whole package and one way to build a loss by name.

Targets are class-index maps, (B, *S) or (B, 1, *S), integer valued; logits are (B, K, *S).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from monai.losses import DeepSupervisionLoss, DiceCELoss, DiceFocalLoss, DiceLoss, FocalLoss, TverskyLoss
from torch import nn

from attnseg.networks.outputs import SegmentationOutput

LOSSES: tuple[str, ...] = ("ce", "dice", "dice_ce", "focal", "dice_focal", "tversky")


def as_channel_target(target: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """(B, *S) or (B, 1, *S) class indices -> (B, 1, *S), MONAI's layout."""
    if target.dim() == logits.dim() - 1:
        target = target.unsqueeze(1)
    if target.dim() != logits.dim() or target.shape[1] != 1:
        raise ValueError(
            f"target must be class indices shaped (B, *S) or (B, 1, *S) for logits {tuple(logits.shape)}, "
            f"got {tuple(target.shape)}"
        )
    return target


class CrossEntropy(nn.Module):
    """Cross-entropy on a (B, 1, *S) index target, optionally class-weighted."""

    def __init__(self, class_weights: Sequence[float] | None = None) -> None:
        super().__init__()
        weight = torch.as_tensor(class_weights, dtype=torch.float32) if class_weights is not None else None
        self.register_buffer("weight", weight)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, target[:, 0].long(), weight=self.weight)


class SegmentationLoss(nn.Module):
    """A loss by name, on logits and class-index targets.

    Args:
        name: ``"ce"``; ``"dice"`` (soft Dice over every class, per sample, as the Attention U-Net
            paper); ``"dice_ce"`` (the default of nnU-Net and of our trainer); ``"focal"`` and
            ``"dice_focal"``, and ``"tversky"`` (alpha 0.3, beta 0.7 penalises false negatives more),
            for tiny foreground.
        include_background: count the background class in the Dice/Tversky terms.
        smooth: Dice smoothing added to numerator and denominator (the paper's code uses 0.01).
        class_weights: cross-entropy class weights (``"ce"``, ``"dice_ce"``).
        focal_gamma, tversky_alpha, tversky_beta: the usual parameters.
    """

    def __init__(
        self,
        name: str = "dice_ce",
        include_background: bool = True,
        smooth: float = 1e-5,
        class_weights: Sequence[float] | None = None,
        focal_gamma: float = 2.0,
        tversky_alpha: float = 0.3,
        tversky_beta: float = 0.7,
    ) -> None:
        super().__init__()
        if name not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {name!r}")
        self.name = name
        dice = {
            "include_background": include_background,
            "to_onehot_y": True,
            "softmax": True,
            "smooth_nr": smooth,
            "smooth_dr": smooth,
        }
        weight = torch.as_tensor(class_weights, dtype=torch.float32) if class_weights is not None else None
        self.loss: nn.Module = {
            "ce": lambda: CrossEntropy(class_weights),
            "dice": lambda: DiceLoss(**dice),
            "dice_ce": lambda: DiceCELoss(**dice, weight=weight),
            "focal": lambda: FocalLoss(to_onehot_y=True, use_softmax=True, gamma=focal_gamma),
            "dice_focal": lambda: DiceFocalLoss(**dice, gamma=focal_gamma),
            "tversky": lambda: TverskyLoss(**dice, alpha=tversky_alpha, beta=tversky_beta),
        }[name]()

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.loss(logits.float(), as_channel_target(target, logits))


class DeepSupervisedLoss(nn.Module):
    """Applies a loss to the main logits and to every auxiliary level of a ``SegmentationOutput``.

    Targets are downsampled to each level with nearest-neighbour ("nearest-exact", pixel centres).
    Weights default to 1, 1/2, 1/4, ... (finest first), MONAI's ``"exp"`` mode; a plain tensor, or an
    output without aux logits, gets the loss of the main logits only.
    """

    def __init__(self, loss: nn.Module, weights: Sequence[float] | None = None) -> None:
        super().__init__()
        self.loss = loss
        self.wrapper = DeepSupervisionLoss(loss, weight_mode="exp", weights=list(weights) if weights else None)

    def forward(self, output: torch.Tensor | SegmentationOutput, target: torch.Tensor) -> torch.Tensor:
        if isinstance(output, torch.Tensor):
            return self.loss(output, target)
        levels = [output.logits, *output.aux_logits]
        return self.wrapper(levels, as_channel_target(target, output.logits).float())
