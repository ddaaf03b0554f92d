"""Dimension-generic convolution building blocks.

Every block takes `spatial_dims` (2 or 3) and picks the matching torch layers, so one
network definition serves 2D slices and 3D volumes.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

NormName = Literal["batch", "instance", "group"]
NORMS: tuple[str, ...] = ("batch", "instance", "group")


def check_spatial_dims(spatial_dims: int) -> None:
    if spatial_dims not in (2, 3):
        raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")


def conv_layer(
    spatial_dims: int,
    in_channels: int,
    out_channels: int,
    kernel_size: int = 3,
    stride: int = 1,
    padding: int | None = None,
    bias: bool = True,
) -> nn.Module:
    """A Conv2d or Conv3d; `padding=None` means 'same' for odd kernels."""
    check_spatial_dims(spatial_dims)
    conv = nn.Conv2d if spatial_dims == 2 else nn.Conv3d
    if padding is None:
        padding = kernel_size // 2
    return conv(in_channels, out_channels, kernel_size, stride=stride, padding=padding, bias=bias)


def transposed_conv_layer(
    spatial_dims: int, in_channels: int, out_channels: int, kernel_size: int = 2, stride: int = 2
) -> nn.Module:
    check_spatial_dims(spatial_dims)
    conv = nn.ConvTranspose2d if spatial_dims == 2 else nn.ConvTranspose3d
    return conv(in_channels, out_channels, kernel_size, stride=stride)


def norm_layer(spatial_dims: int, norm: NormName, channels: int) -> nn.Module:
    """Batch, instance or group normalisation with learnable affine parameters.

    Instance norm matters for 3D training at batch size 1-2, where batch statistics are noise.
    Group norm uses 8 groups (fewer when the channel count is not divisible).
    """
    check_spatial_dims(spatial_dims)
    if norm == "batch":
        return (nn.BatchNorm2d if spatial_dims == 2 else nn.BatchNorm3d)(channels)
    if norm == "instance":
        return (nn.InstanceNorm2d if spatial_dims == 2 else nn.InstanceNorm3d)(channels, affine=True)
    if norm == "group":
        groups = next(g for g in (8, 4, 2, 1) if channels % g == 0)
        return nn.GroupNorm(groups, channels)
    raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")


def max_pool(spatial_dims: int, kernel_size: int = 2) -> nn.Module:
    check_spatial_dims(spatial_dims)
    return (nn.MaxPool2d if spatial_dims == 2 else nn.MaxPool3d)(kernel_size)


def resize_to(x: torch.Tensor, size: list[int] | tuple[int, ...]) -> torch.Tensor:
    """Linear (bi/tri) resize to an exact spatial size; a no-op when the size already matches.

    Exact sizes (not scale factors) keep odd-sized inputs aligned.
    """
    if list(x.shape[2:]) == list(size):
        return x
    mode = "bilinear" if x.dim() == 4 else "trilinear"
    return F.interpolate(x, size=list(size), mode=mode, align_corners=False)


class ConvNormAct(nn.Sequential):
    """Conv -> norm -> activation (ReLU by default)."""

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        norm: NormName = "batch",
        act: type[nn.Module] = nn.ReLU,
        bias: bool = True,
    ) -> None:
        super().__init__(
            conv_layer(spatial_dims, in_channels, out_channels, kernel_size, bias=bias),
            norm_layer(spatial_dims, norm, out_channels),
            act(),
        )


class DoubleConv(nn.Sequential):
    """Two 3x3 ConvNormAct blocks: the U-Net level block (`UnetConv3` in the authors' code)."""

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, norm: NormName = "batch") -> None:
        super().__init__(
            ConvNormAct(spatial_dims, in_channels, out_channels, 3, norm),
            ConvNormAct(spatial_dims, out_channels, out_channels, 3, norm),
        )


NORM_TYPES = (nn.BatchNorm2d, nn.BatchNorm3d, nn.GroupNorm, nn.InstanceNorm2d, nn.InstanceNorm3d)


def init_kaiming(module: nn.Module) -> None:
    """The authors' initialisation: Kaiming-normal (fan_in) conv weights, norm weight ~ N(1, 0.02),
    norm bias 0. Conv biases keep PyTorch's default, as in the authors' code (and so a chosen ψ bias
    of an attention gate survives)."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d, nn.ConvTranspose3d)):
            nn.init.kaiming_normal_(m.weight, mode="fan_in")
        elif isinstance(m, NORM_TYPES) and m.weight is not None:
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)
