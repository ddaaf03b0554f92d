"""Input checks and size handling shared by every network."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def check_input(x: torch.Tensor, spatial_dims: int, in_channels: int, network: str) -> None:
    """Raise a ValueError that says what was expected when ``x`` cannot be fed to the network."""
    expected = f"(batch, {in_channels}, " + ", ".join("XYZ"[:spatial_dims]) + ")"
    if x.dim() != spatial_dims + 2:
        raise ValueError(
            f"{network} expects a {spatial_dims}D input shaped {expected}, got a tensor of shape {tuple(x.shape)}"
        )
    if x.shape[1] != in_channels:
        raise ValueError(
            f"{network} was built for {in_channels} input channel(s) {expected}, "
            f"got {x.shape[1]} channel(s) in shape {tuple(x.shape)}"
        )


def pad_to_multiple(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Zero-pad the spatial dims at their far end up to a multiple of ``multiple``.

    Padding at the far end keeps voxel (0, 0, 0) in place, so every coarser level can be cropped back
    with ``crop_to`` at ceil(size / stride).
    """
    pads: list[int] = []
    for size in reversed(x.shape[2:]):
        pads += [0, (-size) % multiple]
    return F.pad(x, pads) if any(pads) else x


def crop_to(x: torch.Tensor, size: list[int] | tuple[int, ...]) -> torch.Tensor:
    """Crop the spatial dims to ``size`` from the origin (undoes ``pad_to_multiple``)."""
    if list(x.shape[2:]) == list(size):
        return x
    index = (slice(None), slice(None), *(slice(0, s) for s in size))
    return x[index]


def downsampled_size(size: list[int] | tuple[int, ...], stride: int) -> list[int]:
    return [math.ceil(s / stride) for s in size]


def count_parameters(module: nn.Module, trainable_only: bool = True) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)
