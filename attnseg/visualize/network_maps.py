"""What a network looks at: its attention maps and predictions as channels, for any batch it is given.

:class:`MapChannels` wraps a network so that :func:`attnseg.inference.volume.map_preprocessed` can run it
over a whole scan the way prediction does (slice by slice, or by sliding window with Gaussian blending)
and return, as one (M, *S) array on the network's grid, every map at the input's resolution:

* the prediction: softmax probabilities (K channels; the network's own output);
* Attention U-Net (``SegmentationOutput``): every gate's coefficients α, one channel per gated level and
  head (``gate level2 head1``, ...), values in (0, 1);
* the multi-scale guided network (``GuidedAttentionOutput``): per refinement step t and scale s the
  outputs of the position attention branch, the channel attention branch and their combination A_s
  (the module output that gates F_MS at the next step), each reduced from C feature channels to their
  root mean square (where the branch responds strongly; ≥ 0, unbounded), and per scale the prediction
  of its refined head (K channels) beside the average that is the network's output.

Both families are read from their output dataclasses, not from the network class, and everything is
dimension-generic, so a 3-D network with the same outputs works unchanged.

A map of a coarser level covers ``stride`` input voxels per map voxel and is cropped to
``ceil(size / stride)``; it is brought to the input's size by linear resizing to ``map size x stride``
and cropping, which keeps every map voxel centred over the input voxels it covers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from attnseg.networks.blocks.conv import resize_to
from attnseg.networks.outputs import GuidedAttentionOutput, SegmentationOutput
from attnseg.networks.utils import crop_to

PREDICTION = "prediction"
# GuidedAttentionOutput.attention keys end with the branch; what the pictures call them
GUIDED_KINDS = {"position": "position", "channel": "channel", "guided": "combined"}


@dataclass(frozen=True)
class Channel:
    """A group of consecutive channels: ``size`` 1 for a map, K for class probabilities."""

    name: str
    kind: str  # "probabilities" or "map"
    size: int


@dataclass
class ChannelLayout:
    """The channels :class:`MapChannels` produces, in order."""

    groups: list[Channel] = field(default_factory=list)

    def slices(self) -> dict[str, slice]:
        out, start = {}, 0
        for group in self.groups:
            out[group.name] = slice(start, start + group.size)
            start += group.size
        return out

    def map_channels(self) -> slice:
        """Where the maps are: every channel after the probabilities (see :class:`MapChannels`)."""
        first = sum(g.size for g in self.groups if g.kind == "probabilities")
        if any(g.kind == "probabilities" for g in self.groups[len(self.probabilities) :]):
            raise ValueError("maps must come after every group of probabilities")
        return slice(first, first + len(self.maps))

    @property
    def maps(self) -> list[str]:
        return [g.name for g in self.groups if g.kind == "map"]

    @property
    def probabilities(self) -> list[str]:
        return [g.name for g in self.groups if g.kind == "probabilities"]


def stride_of(map_size: Sequence[int], input_size: Sequence[int]) -> int:
    """The power-of-two stride s with ``ceil(input / s) == map`` on every axis (the smallest such)."""
    stride = 1
    while stride <= max(input_size):
        if all(math.ceil(n / stride) == m for n, m in zip(input_size, map_size, strict=True)):
            return stride
        stride *= 2
    raise ValueError(f"a map of size {tuple(map_size)} is not a strided view of an input of size {tuple(input_size)}")


def to_input_size(values: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """(B, C, *m) at a stride of the input -> (B, C, *size), each map voxel over the voxels it covers."""
    stride = stride_of(values.shape[2:], size)
    if stride == 1:
        return crop_to(values, list(size))
    return crop_to(resize_to(values.float(), [m * stride for m in values.shape[2:]]), list(size))


def gate_maps(output: SegmentationOutput, size: Sequence[int]) -> dict[str, torch.Tensor]:
    """Every gate's α per head, (B, 1, *size), coarse levels last."""
    maps = {}
    for level in sorted(output.attention, key=lambda key: int(key.removeprefix("level"))):
        alpha = to_input_size(output.attention[level], size)
        for head in range(alpha.shape[1]):
            maps[f"gate {level} head{head + 1}"] = alpha[:, head : head + 1]
    return maps


def guided_maps(output: GuidedAttentionOutput, size: Sequence[int]) -> dict[str, torch.Tensor]:
    """Per step and scale, the position, channel and combined maps (RMS over features), (B, 1, *size)."""
    maps = {}
    for key, features in output.attention.items():
        step, scale, kind = key.split(".")
        rms = features.float().pow(2).mean(1, keepdim=True).sqrt()
        maps[f"{step} {scale} {GUIDED_KINDS[kind]}"] = to_input_size(rms, size)
    return maps


class MapChannels(nn.Module):
    """A network as a function from a batch (B, C, *s) to its maps (B, M, *s); see the module docstring.

    ``layout`` says which channel is which once the first batch has run: the probabilities first (the
    prediction, then the guided network's scales), then one channel per map.
    """

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network
        self.layout: ChannelLayout | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        output = self.network(x, return_attention=True)
        size = x.shape[2:]
        groups: dict[str, tuple[str, torch.Tensor]] = {PREDICTION: ("probabilities", output.logits.float().softmax(1))}
        if isinstance(output, GuidedAttentionOutput):
            for s, logits in enumerate(output.refined_logits, start=1):
                groups[f"scale{s} {PREDICTION}"] = ("probabilities", logits.float().softmax(1))
            maps = guided_maps(output, size)
        elif isinstance(output, SegmentationOutput):
            maps = gate_maps(output, size)
        else:
            raise TypeError(f"{type(self.network).__name__} returns no attention maps ({type(output).__name__})")
        groups.update({name: ("map", values.float()) for name, values in maps.items()})
        layout = ChannelLayout([Channel(name, kind, t.shape[1]) for name, (kind, t) in groups.items()])
        if self.layout is None:
            self.layout = layout
        elif layout != self.layout:
            raise RuntimeError("the network returned different maps for two batches of one scan")
        return torch.cat([t for _, t in groups.values()], dim=1)
