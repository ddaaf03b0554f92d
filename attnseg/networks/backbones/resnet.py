"""ResNet and ResNeXt encoders with feature taps at strides 4, 8, 16 and 32, in 2D or 3D, written
without torchvision.

The module layout and the parameter names are torchvision's (``conv1``, ``bn1``, ``layer1.0.conv1``,
``layer2.0.downsample.0``, ...), so an ImageNet state dict saved from torchvision loads as it is
(``load_pretrained``). Blocks follow torchvision's "ResNet v1.5": in a bottleneck the stride sits on the
3x3 convolution.

3D (``spatial_dims=3``) is the same network with every kernel cubic (7x7x7 stem, 3x3x3 blocks, 3x3x3
max-pool) and every stride isotropic, as the 3D ResNets of Hara et al. (CVPR 2018) and MedicalNet (Chen
et al. 2019, "Med3D"; they dilate layers 3-4 instead of striding them, we keep torchvision's strides so
the taps sit at 4, 8, 16, 32 in both). Its state dict has the same keys with 5-D kernels, and
``load_pretrained`` also takes a 2D (ImageNet) file and inflates it (I3D, Carreira & Zisserman, CVPR
2017; see ``inflate_kernel``).

Deviations from torchvision, and why:

* no ``avgpool``/``fc``: a segmentation encoder never uses the classifier, and parameters that receive
  no gradient break DistributedDataParallel; ``fc.*`` keys in a weights file are ignored;
* ``in_channels`` is free (scans have 1 or more channels); ``load_pretrained`` adapts the first
  convolution (see ``adapt_first_conv``);
* ``width`` scales every stage (64 is torchvision's); smaller widths exist for fast tests and tiny
  models and cannot load ImageNet weights.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from attnseg.errors import DataError

STRIDES: tuple[int, ...] = (4, 8, 16, 32)
_CONV: dict[int, type[nn.Module]] = {2: nn.Conv2d, 3: nn.Conv3d}
_BATCH_NORM: dict[int, type[nn.Module]] = {2: nn.BatchNorm2d, 3: nn.BatchNorm3d}
_MAX_POOL: dict[int, type[nn.Module]] = {2: nn.MaxPool2d, 3: nn.MaxPool3d}


def _check_dims(spatial_dims: int) -> None:
    if spatial_dims not in _CONV:
        raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")


class _ResidualBlock(nn.Module, ABC):
    """``relu(branch(x) + shortcut(x))``, built from torchvision's block arguments ``(inplanes, planes,
    stride, downsample, groups, base_width)``; the shortcut is ``downsample`` (a strided 1x1 convolution
    and BN, where the shape changes) or the identity. Subclasses build the branch and run it."""

    expansion = 1

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        groups: int = 1,
        base_width: int = 64,
        spatial_dims: int = 2,
    ) -> None:
        super().__init__()
        self._build_branch(inplanes, planes, stride, groups, base_width, _CONV[spatial_dims], _BATCH_NORM[spatial_dims])
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    @abstractmethod
    def _build_branch(
        self, inplanes: int, planes: int, stride: int, groups: int, base_width: int, conv: type, norm: type
    ) -> None:
        """Create the block's own layers (the residual branch)."""

    @abstractmethod
    def _branch(self, x: torch.Tensor) -> torch.Tensor:
        """The residual branch, before the skip is added."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(self._branch(x) + identity)


class BasicBlock(_ResidualBlock):
    """Two 3x3 convolutions with a residual connection (ResNet-18/34)."""

    expansion = 1

    def _build_branch(
        self, inplanes: int, planes: int, stride: int, groups: int, base_width: int, conv: type, norm: type
    ) -> None:
        if groups != 1 or base_width != 64:
            raise ValueError("BasicBlock supports only groups=1 and width_per_group=64")
        self.conv1 = conv(inplanes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = norm(planes)
        self.conv2 = conv(planes, planes, 3, padding=1, bias=False)
        self.bn2 = norm(planes)

    def _branch(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        return self.bn2(self.conv2(out))


class Bottleneck(_ResidualBlock):
    """1x1 reduce, 3x3 (grouped for ResNeXt, carries the stride), 1x1 expand by 4, residual."""

    expansion = 4

    def _build_branch(
        self, inplanes: int, planes: int, stride: int, groups: int, base_width: int, conv: type, norm: type
    ) -> None:
        width = int(planes * (base_width / 64.0)) * groups
        self.conv1 = conv(inplanes, width, 1, bias=False)
        self.bn1 = norm(width)
        self.conv2 = conv(width, width, 3, stride=stride, padding=1, groups=groups, bias=False)
        self.bn2 = norm(width)
        self.conv3 = conv(width, planes * self.expansion, 1, bias=False)
        self.bn3 = norm(planes * self.expansion)

    def _branch(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        return self.bn3(self.conv3(out))


@dataclass(frozen=True)
class BackboneSpec:
    block: type[BasicBlock] | type[Bottleneck]
    layers: tuple[int, int, int, int]
    groups: int = 1
    width_per_group: int = 64


BACKBONES: dict[str, BackboneSpec] = {
    "resnet18": BackboneSpec(BasicBlock, (2, 2, 2, 2)),
    "resnet34": BackboneSpec(BasicBlock, (3, 4, 6, 3)),
    "resnet50": BackboneSpec(Bottleneck, (3, 4, 6, 3)),
    "resnet101": BackboneSpec(Bottleneck, (3, 4, 23, 3)),
    "resnext101_32x8d": BackboneSpec(Bottleneck, (3, 4, 23, 3), groups=32, width_per_group=8),
}


class ResNetBackbone(nn.Module):
    """A ResNet/ResNeXt encoder returning the outputs of ``layer1..layer4`` (strides 4, 8, 16, 32).

    Args:
        block, layers, groups, width_per_group: the architecture, as torchvision's ``ResNet``.
        in_channels: input channels (torchvision: 3).
        width: channels of the stem; stage ``i`` has ``width * 2**i`` planes (torchvision: 64).
        spatial_dims: 2 (torchvision's network) or 3 (the same with cubic kernels).
    """

    def __init__(
        self,
        block: type[BasicBlock] | type[Bottleneck],
        layers: Sequence[int],
        in_channels: int = 3,
        groups: int = 1,
        width_per_group: int = 64,
        width: int = 64,
        spatial_dims: int = 2,
    ) -> None:
        super().__init__()
        _check_dims(spatial_dims)
        if len(layers) != 4 or min(layers) < 1:
            raise ValueError(f"layers must list 4 positive block counts, got {tuple(layers)}")
        if in_channels < 1 or width < 1:
            raise ValueError(f"in_channels and width must be positive, got {in_channels} and {width}")
        if block is Bottleneck and int(width * width_per_group / 64) < 1:
            raise ValueError(
                f"width {width} leaves no channels per group; use width >= {math.ceil(64 / width_per_group)}"
            )
        self.in_channels = in_channels
        self.width = width
        self.groups = groups
        self.base_width = width_per_group
        self.spatial_dims = spatial_dims
        self.inplanes = width
        self.conv1 = _CONV[spatial_dims](in_channels, width, 7, stride=2, padding=3, bias=False)
        self.bn1 = _BATCH_NORM[spatial_dims](width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = _MAX_POOL[spatial_dims](3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, width, layers[0])
        self.layer2 = self._make_layer(block, width * 2, layers[1], stride=2)
        self.layer3 = self._make_layer(block, width * 4, layers[2], stride=2)
        self.layer4 = self._make_layer(block, width * 8, layers[3], stride=2)
        self.out_channels: tuple[int, ...] = tuple(width * 2**i * block.expansion for i in range(4))
        self.strides = STRIDES
        self.reset_parameters()

    def _make_layer(
        self, block: type[BasicBlock] | type[Bottleneck], planes: int, blocks: int, stride: int = 1
    ) -> nn.Sequential:
        dims = self.spatial_dims
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                _CONV[dims](self.inplanes, planes * block.expansion, 1, stride=stride, bias=False),
                _BATCH_NORM[dims](planes * block.expansion),
            )
        layers = [block(self.inplanes, planes, stride, downsample, self.groups, self.base_width, dims)]
        self.inplanes = planes * block.expansion
        layers += [
            block(self.inplanes, planes, groups=self.groups, base_width=self.base_width, spatial_dims=dims)
            for _ in range(1, blocks)
        ]
        return nn.Sequential(*layers)

    def reset_parameters(self) -> None:
        """torchvision's initialisation: Kaiming-normal (fan_out, ReLU) convolutions, BN weight 1, bias 0."""
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Conv3d)):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm3d)):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor, memory_format: torch.memory_format | None = None) -> list[torch.Tensor]:
        """Features of ``layer1..layer4``: (B, out_channels[i], ceil(S / stride_i) for every spatial size S).

        ``memory_format``: lay the activations out so from the stem on. (A one-channel input is laid out
        both ways at once, and a convolution then keeps the default layout, so asking the input is not
        enough.)
        """
        x = self.conv1(x)
        if memory_format is not None:
            x = x.contiguous(memory_format=memory_format)
        x = self.maxpool(self.relu(self.bn1(x)))
        taps = []
        for layer in (self.layer1, self.layer2, self.layer3, self.layer4):
            x = layer(x)
            taps.append(x)
        return taps

    def load_pretrained(self, path: str | Path) -> list[str]:
        """Load a torchvision-layout state dict (e.g. ImageNet weights) from a local file.

        ``.safetensors`` files are read with safetensors, anything else with
        ``torch.load(weights_only=True)``; nothing is unpickled and nothing is downloaded. The
        classifier (``fc.*``) is ignored; the first convolution is adapted to ``in_channels`` with
        ``adapt_first_conv``. Every other tensor must be present with the right shape. A 3D backbone
        also takes a 2D file: its kernels are inflated along the first spatial axis (``inflate_kernel``).

        Returns the keys of the file that were ignored. Raises ``DataError`` naming the file when it
        cannot be read or does not match this architecture.
        """
        path = Path(path)
        state = read_state_dict(path)
        ignored = sorted(k for k in state if k.startswith("fc."))
        state = {k: v for k, v in state.items() if not k.startswith("fc.")}
        own = self.state_dict()
        if self.spatial_dims == 3:
            state = {
                k: inflate_kernel(v) if k in own and own[k].dim() == 5 and v.dim() == 4 else v for k, v in state.items()
            }
        if "conv1.weight" in state:
            state["conv1.weight"] = adapt_first_conv(state["conv1.weight"], self.in_channels)
        # Old torchvision files predate BN's num_batches_tracked; such a missing counter is harmless.
        missing = sorted(k for k in own if k not in state and not k.endswith("num_batches_tracked"))
        unexpected = sorted(k for k in state if k not in own)
        if missing or unexpected:
            parts = []
            if missing:
                parts.append(f"{len(missing)} missing (e.g. {', '.join(missing[:3])})")
            if unexpected:
                parts.append(f"{len(unexpected)} unexpected (e.g. {', '.join(unexpected[:3])})")
            raise DataError(f"{path}: not a torchvision-layout state dict for this backbone: {'; '.join(parts)} keys")
        for key, value in state.items():
            if value.shape != own[key].shape:
                raise DataError(
                    f"{path}: {key} has shape {tuple(value.shape)}, this backbone needs {tuple(own[key].shape)} "
                    f"(another architecture or width?)"
                )
        self.load_state_dict(state, strict=False)
        return ignored


def adapt_first_conv(weight: torch.Tensor, in_channels: int) -> torch.Tensor:
    """Adapt a first-convolution weight (O, S, *kernel), 2D or 3D, trained on S input channels to
    ``in_channels``.

    Unchanged when the channel counts agree. Otherwise the kernels are summed over the S source
    channels and spread evenly over the new ones: ``w_c = sum_s w_s / in_channels``. So an input whose
    channels all equal a grey image g produces exactly the activations the pretrained network gives for
    the image (g, g, g): for one channel this is the usual "sum over RGB" rule (as timm does), and for
    C > 1 no channel is favoured.
    """
    if weight.dim() not in (4, 5):
        raise ValueError(f"expected a conv weight (O, S, k, k) or (O, S, k, k, k), got shape {tuple(weight.shape)}")
    if weight.shape[1] == in_channels:
        return weight
    grey = weight.sum(dim=1, keepdim=True)
    return grey.expand(-1, in_channels, *grey.shape[2:]) / in_channels


def inflate_kernel(weight: torch.Tensor) -> torch.Tensor:
    """A 2D kernel (O, I, kh, kw) as a 3D one (O, I, kh, kh, kw): repeated kh times along the new first
    spatial axis and divided by kh (I3D's inflation, Carreira & Zisserman, CVPR 2017).

    So a volume that is constant along that axis gives, away from its ends, the activations the 2D
    network gives for one of its slices: an ImageNet start for a 3D backbone.
    """
    if weight.dim() != 4:
        raise ValueError(f"expected a 2D conv weight (O, I, kh, kw), got shape {tuple(weight.shape)}")
    depth = weight.shape[2]
    return weight.unsqueeze(2).expand(-1, -1, depth, -1, -1) / depth


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A dict of tensors from a ``.safetensors`` file or a ``torch.save`` file, never unpickling."""
    if not path.is_file():
        raise DataError(f"{path}: no such weights file")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path), device="cpu")
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # any reader failure is a bad file, reported in one line
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise DataError(f"{path}: cannot read weights: {reason}") from error
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise DataError(f"{path}: expected a state dict (names -> tensors), got {type(state).__name__}")
    return state


def build_backbone(name: str, in_channels: int = 3, width: int = 64, spatial_dims: int = 2) -> ResNetBackbone:
    """A backbone by name: one of ``BACKBONES`` (resnet18/34/50/101, resnext101_32x8d), 2D or 3D."""
    if name not in BACKBONES:
        raise ValueError(f"backbone must be one of {', '.join(BACKBONES)}, got {name!r}")
    spec = BACKBONES[name]
    return ResNetBackbone(spec.block, spec.layers, in_channels, spec.groups, spec.width_per_group, width, spatial_dims)
