"""Attention U-Net (Oktay et al., "Attention U-Net: Learning Where to Look for the Pancreas",
MIDL 2018, arXiv:1804.03999), 2D and 3D.

Follows the authors' code (ozan-oktay/Attention-Gated-Networks, ``unet_CT_multi_att_dsv_3D``):

* encoder: a double 3x3 conv + norm + ReLU per level, max-pool 2 between levels;
  widths ``[64, 128, 256, 512, 1024] / feature_scale`` (``feature_scale=4`` gives 16..256);
* the deepest skip is gated by a 1x1 conv + norm + ReLU projection of the bottleneck; every other
  gated skip by the decoder output of the next coarser level, *before* it is upsampled, so the grid
  gate computes α on the coarse grid;
* decoder: parameter-free (bi/tri)linear upsampling of the coarser features to the skip's exact size,
  concat [gated skip, upsampled], double conv down to the skip's width;
* deep supervision as the authors fuse it: a 1x1 conv to K classes per decoder level, each
  resized to the input size, and a 1x1 conv over their concatenation gives the logits.

Where we deviate, and why:

* sizes: any input size works. The input is zero-padded at the far end to a multiple of
  2**(levels-1) and the outputs are cropped back; every resize uses exact sizes (the authors use
  scale factors, which break on odd sizes);
* ``aux_outputs=True`` additionally returns the per-level logits for a deep-supervision loss
  (the authors feed only the fused logits to the loss);
* ``gating="global"`` reproduces the authors' earlier variant in which one projection of the
  bottleneck (to the width of the deepest skip) gates every level;
* the paper's parameter counts are reproduced exactly (3D, ``feature_scale=4``, 1 input channel,
  4 classes): U-Net with deep supervision 5,888,004; two-head Attention U-Net 6,473,322; the
  earlier global-gating variant 6,411,498 (the paper's "6.40 M").
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import nn

from attnseg.networks.blocks.attention_gate import GateStyle, MultiHeadAttentionGate
from attnseg.networks.blocks.conv import (
    ConvNormAct,
    DoubleConv,
    NormName,
    check_spatial_dims,
    conv_layer,
    convolve,
    init_kaiming,
    max_pool,
    resize_to,
)
from attnseg.networks.outputs import SegmentationOutput
from attnseg.networks.utils import check_input, crop_to, downsampled_size, pad_to_multiple

BASE_FEATURES = (64, 128, 256, 512, 1024)
Gating = Literal["decoder", "global"]


def features_from_scale(feature_scale: float, base: Sequence[int] = BASE_FEATURES) -> tuple[int, ...]:
    """The authors' widths: ``int(w / feature_scale)`` for each base width."""
    if feature_scale <= 0:
        raise ValueError(f"feature_scale must be positive, got {feature_scale}")
    return tuple(int(w / feature_scale) for w in base)


def _widths_and_gated_levels(
    features: Sequence[int] | None, feature_scale: float, attention_levels: Sequence[int] | None, gating: str
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The widths, finest first (the last is the bottleneck's), and the skip levels to gate (1 = finest;
    default: all but the finest, as in the authors' code), after checking the arguments."""
    widths = tuple(features) if features is not None else features_from_scale(feature_scale)
    if len(widths) < 2 or min(widths) < 1:
        raise ValueError(f"features must list at least two positive widths, got {widths}")
    if gating not in ("decoder", "global"):
        raise ValueError(f"gating must be 'decoder' or 'global', got {gating!r}")
    levels = len(widths) - 1
    gated = tuple(range(2, levels + 1)) if attention_levels is None else tuple(sorted(set(attention_levels)))
    if any(not 1 <= level <= levels for level in gated):
        raise ValueError(f"attention_levels must lie in 1..{levels} for {levels + 1} widths, got {gated}")
    return widths, gated


class UpBlock(nn.Module):
    """Resize the coarser features to the skip's size, concatenate, double conv (``UnetUp3_CT``).

    The concatenation is never built: the first convolution takes the two parts (``convolve``).
    """

    def __init__(self, spatial_dims: int, skip_channels: int, coarse_channels: int, norm: NormName = "batch") -> None:
        super().__init__()
        self.conv = DoubleConv(spatial_dims, skip_channels + coarse_channels, skip_channels, norm)

    def forward(self, skip: torch.Tensor, coarse: torch.Tensor) -> torch.Tensor:
        return self.conv([skip, resize_to(coarse, skip.shape[2:])])


class AttentionUNet(nn.Module):
    """Attention U-Net with grid attention gates, 2D or 3D.

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels (modalities).
        out_channels: number of classes K, background included.
        feature_scale: divides the base widths (64, 128, 256, 512, 1024); the paper uses 4.
        features: explicit widths, one per level, finest first; overrides ``feature_scale``. Its
            length sets the depth (``len(features) - 1`` poolings).
        norm: ``"batch"`` (paper), ``"instance"`` or ``"group"``; instance norm is the safer choice
            for 3D training at batch size 1-2.
        attention_levels: skip levels to gate, 1 = finest. Default: all but the finest, as in the
            authors' code. ``()`` gives a plain U-Net.
        gate_style: ``"grid"`` (paper) or ``"additive"`` (popular simplified gate, same resolution).
        gate_heads: parallel gates per level, fused by 1x1 conv + norm + ReLU (the authors' CT model
            uses 2).
        gating: ``"decoder"`` (authors' current code) or ``"global"`` (one bottleneck projection gates
            every level, the authors' earlier variant).
        psi_norm: norm on ψ before the sigmoid (popular code; off in the paper).
        psi_bias: initial ψ bias; e.g. 3.0 starts every gate almost open. ``None``: default init.
        deep_supervision: fuse per-level 1x1-conv logits into the output, as the authors do.
        aux_outputs: also return the per-level logits (``SegmentationOutput.aux_logits``) for a
            deep-supervision loss.
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 1,
        out_channels: int = 2,
        feature_scale: float = 4.0,
        features: Sequence[int] | None = None,
        norm: NormName = "batch",
        attention_levels: Sequence[int] | None = None,
        gate_style: GateStyle = "grid",
        gate_heads: int = 2,
        gating: Gating = "decoder",
        psi_norm: bool = False,
        psi_bias: float | None = None,
        deep_supervision: bool = True,
        aux_outputs: bool = False,
    ) -> None:
        super().__init__()
        check_spatial_dims(spatial_dims)
        widths, gated = _widths_and_gated_levels(features, feature_scale, attention_levels, gating)
        self.spatial_dims = spatial_dims
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.levels = levels = len(widths) - 1  # skip levels 1..levels; widths[levels] is the bottleneck
        self.features = widths
        self.deep_supervision = deep_supervision
        self.aux_outputs = aux_outputs
        self.global_gating = gating == "global"

        self.pool = max_pool(spatial_dims)
        self.encoder = nn.ModuleList(
            DoubleConv(spatial_dims, in_channels if i == 0 else widths[i - 1], widths[i], norm)
            for i in range(levels + 1)
        )
        self._build_gates(gated, norm, gate_style, gate_heads, psi_norm, psi_bias)
        self.decoder = nn.ModuleDict(
            {
                str(level): UpBlock(spatial_dims, widths[level - 1], widths[level], norm)
                for level in range(1, levels + 1)
            }
        )
        self._build_heads()
        init_kaiming(self)

    def _build_gates(
        self,
        gated: tuple[int, ...],
        norm: NormName,
        gate_style: GateStyle,
        gate_heads: int,
        psi_norm: bool,
        psi_bias: float | None,
    ) -> None:
        """The attention gates of the ``gated`` skip levels, and the bottleneck projection that gates the
        deepest level (or, with global gating, every level)."""
        widths, levels, dims = self.features, self.levels, self.spatial_dims
        needs_projection = bool(gated) and (self.global_gating or levels in gated)
        gating_width = widths[levels - 1] if self.global_gating else widths[levels]
        self.gating = (
            ConvNormAct(dims, widths[levels], gating_width, kernel_size=1, norm=norm) if needs_projection else None
        )
        self.gates = nn.ModuleDict(
            {
                str(level): MultiHeadAttentionGate(
                    dims,
                    skip_channels=widths[level - 1],
                    gating_channels=gating_width if self.global_gating else widths[level],
                    heads=gate_heads,
                    style=gate_style,
                    norm=norm,
                    psi_norm=psi_norm,
                    psi_bias=psi_bias,
                )
                for level in gated
            }
        )

    def _build_heads(self) -> None:
        """A 1x1 convolution to K classes per decoder level (the finest alone without deep supervision or
        auxiliary outputs), and the 1x1 convolution that fuses them (deep supervision)."""
        widths, levels, k = self.features, self.levels, self.out_channels
        head_levels = range(1, levels + 1) if self.deep_supervision or self.aux_outputs else range(1, 2)
        self.heads = nn.ModuleDict(
            {str(level): conv_layer(self.spatial_dims, widths[level - 1], k, 1) for level in head_levels}
        )
        self.fuse = conv_layer(self.spatial_dims, levels * k, k, 1) if self.deep_supervision else None

    @property
    def size_multiple(self) -> int:
        """Inputs are padded internally to a multiple of this along every spatial axis."""
        return 2**self.levels

    def forward(self, x: torch.Tensor, return_attention: bool = False) -> torch.Tensor | SegmentationOutput:
        """Segment ``x`` of shape (B, in_channels, *S).

        Returns the logits (B, K, *S) in eval mode, a ``SegmentationOutput`` in training mode or when
        ``return_attention=True``.
        """
        check_input(x, self.spatial_dims, self.in_channels, type(self).__name__)
        size = list(x.shape[2:])
        skips = self._encode(pad_to_multiple(x, self.size_multiple))
        center = skips.pop()
        decoded, attention = self._decode(skips, center)

        level_logits = {level: head(decoded[int(level)]) for level, head in self.heads.items()}
        logits = self._fuse(level_logits, decoded[1].shape[2:]) if self.fuse is not None else level_logits["1"]
        logits = crop_to(logits, size)
        if not self.training and not return_attention:
            return logits

        def at_level(t: torch.Tensor, level: int) -> torch.Tensor:
            return crop_to(t, downsampled_size(size, 2 ** (level - 1)))

        aux = [at_level(level_logits[str(lv)], lv) for lv in range(2, self.levels + 1)] if self.aux_outputs else []
        maps = {f"level{lv}": at_level(a, lv) for lv, a in attention.items()} if return_attention else {}
        return SegmentationOutput(logits=logits, aux_logits=aux, attention=maps)

    def _fuse(self, level_logits: dict[str, torch.Tensor], full: torch.Size) -> torch.Tensor:
        """The authors' fusion, ``fuse(cat([resize(logits_l) for each level l]))``, level by level.

        ``fuse`` is a 1x1 convolution, which commutes with a linear resize (both are linear maps and
        the resize's weights sum to one per output voxel): each level's slice of it runs on that
        level's own grid, and only its K fused channels are resized to the input grid and summed. The
        same logits up to rounding, without the full-resolution concatenation of every level.
        """
        k = self.out_channels
        total = None
        for index in range(self.levels):
            weight = self.fuse.weight[:, index * k : (index + 1) * k]
            bias = self.fuse.bias if index == 0 else None
            part = resize_to(convolve(self.fuse, level_logits[str(index + 1)], (weight, bias)), full)
            total = part if total is None else total + part
        return total

    def _encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = []
        for i, block in enumerate(self.encoder):
            x = block(x if i == 0 else self.pool(x))
            features.append(x)
        return features

    def _decode(
        self, skips: list[torch.Tensor], center: torch.Tensor
    ) -> tuple[dict[int, torch.Tensor], dict[int, torch.Tensor]]:
        """Run the decoder from the bottleneck up; returns the output of each level and each α."""
        projected = self.gating(center) if self.gating is not None else center
        coarse = center
        decoded: dict[int, torch.Tensor] = {}
        attention: dict[int, torch.Tensor] = {}
        for level in range(self.levels, 0, -1):
            skip = skips[level - 1]
            if str(level) in self.gates:
                gating_signal = projected if self.global_gating or level == self.levels else coarse
                skip, attention[level] = self.gates[str(level)](skip, gating_signal)
            coarse = self.decoder[str(level)](skip, coarse)
            decoded[level] = coarse
        return decoded, attention
