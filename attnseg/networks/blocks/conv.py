"""Dimension-generic convolution building blocks.

Every block takes `spatial_dims` (2 or 3) and picks the matching torch layers, so one
network definition serves 2D slices and 3D volumes.
"""

from __future__ import annotations

from collections.abc import Sequence
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

    Exact sizes (not scale factors) keep odd-sized inputs aligned. Maps of 2-3 channels (class
    logits) are resized in the plain layout, which is faster for them on a CPU.
    """
    if list(x.shape[2:]) == list(size):
        return x
    if 1 < x.shape[1] < 4:  # the channels-last kernel is 4x slower than the plain one for 2-3 channels
        x = x.contiguous()
    mode = "bilinear" if x.dim() == 4 else "trilinear"
    return F.interpolate(x, size=list(size), mode=mode, align_corners=False)


def convolve(
    conv: nn.Module,
    x: torch.Tensor | Sequence[torch.Tensor],
    weight_and_bias: tuple[torch.Tensor, torch.Tensor | None] | None = None,
) -> torch.Tensor:
    """``conv(x)`` for a Conv2d/Conv3d, with ``weight_and_bias`` in place of its own when given.

    ``x`` may be a list of channel parts: the result is ``conv(torch.cat(x, 1))``, computed as the sum
    of each part convolved with its slice of the weight (a convolution is linear in its input
    channels), so the concatenation is never built. Same FLOPs, but no copy of every part into a new
    tensor, and no strided channel slices of one gradient in the backward pass, which the kernels
    after it handle slowly in the channels-last layout: on a CPU this made the decoder's first
    convolution 1.4x faster in a training step (docs/benchmarks.md).
    """
    weight, bias = (conv.weight, conv.bias) if weight_and_bias is None else weight_and_bias
    function = F.conv2d if weight.dim() == 4 else F.conv3d
    options = (conv.stride, conv.padding, conv.dilation, conv.groups)
    if isinstance(x, torch.Tensor):
        return function(x, weight, bias, *options)
    if conv.groups != 1 or sum(part.shape[1] for part in x) != weight.shape[1]:
        raise ValueError(
            f"channel parts {[part.shape[1] for part in x]} do not add up to the {weight.shape[1]} input "
            f"channels of an ungrouped convolution"
        )
    out, start = None, 0
    for part in x:
        width = part.shape[1]
        y = function(part, weight[:, start : start + width], bias if out is None else None, *options)
        out = y if out is None else out.add_(y)  # a convolution's backward does not need its output
        start += width
    return out


class ConvNormAct(nn.Sequential):
    """Conv -> norm -> activation (ReLU by default; ``act=None``: conv -> norm).

    The input may be a tensor or a list of channel parts that the block concatenates (see
    :func:`convolve`). In eval mode a batch norm is folded into the convolution (with its running
    statistics it is an affine map per channel): one pass over the output instead of two, the same
    function up to rounding. Parameters and buffers stay where they are, so state dicts, training and
    exports are unchanged. ReLU runs in place (batch norm's backward does not need its output); a
    PReLU that needs a gradient runs as :func:`prelu_for_training` (the same function, a faster backward).
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        norm: NormName = "batch",
        act: type[nn.Module] | None = nn.ReLU,
        bias: bool = True,
    ) -> None:
        layers = [
            conv_layer(spatial_dims, in_channels, out_channels, kernel_size, bias=bias),
            norm_layer(spatial_dims, norm, out_channels),
        ]
        super().__init__(*layers, *([act()] if act is not None else []))

    def forward(self, x: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
        conv, norm, *rest = self
        if self.training or not is_foldable(norm):
            y = norm(convolve(conv, x))
        else:
            y = convolve(conv, x, folded_conv_norm(conv, norm))
        for layer in rest:
            if type(layer) is nn.ReLU:
                y = torch.relu_(y)
            elif type(layer) is nn.PReLU and y.requires_grad:
                y = prelu_for_training(y, layer.weight)
            else:
                y = layer(y)
        return y


class _PReLUWithFastBackward(torch.autograd.Function):
    """Torch's PReLU forward; its backward from elementwise ops and one reduction."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        return F.prelu(x, weight)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x, weight = ctx.saved_tensors
        # in place where it can be: one full-size buffer, and the product for the slope's gradient
        negative = torch.ops.aten.threshold_backward(grad, x, 0.0).neg_().add_(grad)  # grad where x <= 0, else 0
        per_channel = weight.numel() > 1
        axes = [d for d in range(x.dim()) if d != 1] if per_channel else list(range(x.dim()))
        weight_grad = (negative * x).sum(axes).reshape(weight.shape)
        slope = weight.reshape(1, -1, *[1] * (x.dim() - 2)) if per_channel else weight
        return negative.mul_(slope - 1).add_(grad), weight_grad  # grad + (a - 1)·grad where x <= 0


def prelu_for_training(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``F.prelu(x, weight)`` (x for x > 0, a·x otherwise; one a, or one per channel) with a faster
    backward pass: the same values and gradients, and the same memory (it keeps x, as torch's).

    Torch's PReLU backward kernel is slow on a CPU: profiled, it took 11% of the multi-scale network's
    training step (``ms_guided_cpu``, 128 x 128, batch 8, one thread), ten times its forward. The
    gradients computed with ReLU's backward kernel, in-place elementwise ops and one reduction take a
    sixth of its time (forward and backward of a 32 x 16 x 32 x 32 map: 0.37 ms against 2.30 ms;
    docs/benchmarks.md). Used only where a gradient is needed: inference and exports keep torch's PReLU.
    """
    return _PReLUWithFastBackward.apply(x, weight)


def is_foldable(norm: nn.Module) -> bool:
    """A batch norm that normalises with running statistics (eval mode) is an affine map per channel."""
    return isinstance(norm, nn.modules.batchnorm._BatchNorm) and not norm.training and norm.running_var is not None


def folded_conv_norm(conv: nn.Module, norm: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """Weight and bias of one convolution equal to ``norm(conv(x))`` for an eval-mode batch norm:
    w' = w * s and b' = (b - mean) * s + beta per output channel, with s = gamma / sqrt(var + eps)."""
    scale = torch.rsqrt(norm.running_var + norm.eps)
    if norm.weight is not None:
        scale = scale * norm.weight
    bias = conv.bias if conv.bias is not None else torch.zeros_like(scale)
    bias = (bias - norm.running_mean) * scale
    if norm.bias is not None:
        bias = bias + norm.bias
    return conv.weight * scale.reshape(-1, *[1] * (conv.weight.dim() - 1)), bias


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
