"""Attention gates of the Attention U-Net (Oktay et al., "Attention U-Net: Learning Where to Look
for the Pancreas", MIDL 2018, arXiv:1804.03999).

Two styles behind one class:

* ``"grid"``, the paper's and the authors' code (``_GridAttentionBlockND``, mode ``concatenation``):
  θ is a strided convolution (kernel = stride = 2, no bias) that brings the skip x down onto the
  coarse grid of the gating signal g; φ is a 1x1 convolution with bias on g, resized to θ's grid;
  f = ReLU(θx + φg); ψ is a 1x1 convolution to one channel; **one** sigmoid gives the coefficients
  on the coarse grid, which are resized back to x's size; the output is W(α·x) with W = 1x1 conv
  + norm. Computing α on the coarse grid costs 4x (2D) / 8x (3D) less than at x's resolution.
* ``"additive"``, the simplified gate of the popular re-implementations (MONAI ``AttentionBlock``,
  LeeJunHyun/Image_Segmentation): g is resized to x's size, both go through 1x1 conv + norm, ReLU,
  ψ, one sigmoid, and the output is α·x with no output transform.

Both apply the sigmoid exactly once. The widely copied seed code applies it twice, which pins α in
(0.5, 0.73) so a gate can never suppress a region; ours can reach any value in (0, 1).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from attnseg.networks.blocks.conv import ConvNormAct, NormName, conv_layer, norm_layer, resize_to

GateStyle = Literal["grid", "additive"]
GATE_STYLES: tuple[str, ...] = ("grid", "additive")


class AttentionGate(nn.Module):
    """One attention gate head: returns the gated skip and its coefficients α.

    Args:
        spatial_dims: 2 or 3.
        skip_channels: channels of the skip features x (C_x).
        gating_channels: channels of the gating signal g (C_g).
        inter_channels: width of the compatibility space (C_int); defaults to C_x as in the
            authors' CT networks.
        style: ``"grid"`` (paper) or ``"additive"`` (popular simplified gate); see the module doc.
        norm: normalisation of W (grid) or of the two input projections (additive).
        psi_norm: put a norm layer on ψ before the sigmoid, as the popular code does. Off by default:
            with small batches it re-centres the logits and biases α towards 0.5.
        psi_bias: initial bias of ψ. ``None`` keeps the default initialisation (authors' segmentation
            code); a positive value such as 3.0 starts the gate almost fully open (sigmoid(3) = 0.95),
            as the authors' TORR classifier variant does.

    Shapes:
        x: (B, C_x, *S_x); g: (B, C_g, *S_g) with S_g about S_x / 2 for ``"grid"`` (any size works:
        φ(g) is resized to θ's grid exactly). Returns (y, α) with y shaped like x and α of shape
        (B, 1, *S_x), values in (0, 1).
    """

    def __init__(
        self,
        spatial_dims: int,
        skip_channels: int,
        gating_channels: int,
        inter_channels: int | None = None,
        style: GateStyle = "grid",
        norm: NormName = "batch",
        psi_norm: bool = False,
        psi_bias: float | None = None,
    ) -> None:
        super().__init__()
        if style not in GATE_STYLES:
            raise ValueError(f"gate style must be one of {GATE_STYLES}, got {style!r}")
        inter = inter_channels or skip_channels
        self.style = style
        if style == "grid":
            self.theta = conv_layer(spatial_dims, skip_channels, inter, kernel_size=2, stride=2, padding=0, bias=False)
            self.phi = conv_layer(spatial_dims, gating_channels, inter, kernel_size=1)
        else:
            self.theta = nn.Sequential(
                conv_layer(spatial_dims, skip_channels, inter, kernel_size=1), norm_layer(spatial_dims, norm, inter)
            )
            self.phi = nn.Sequential(
                conv_layer(spatial_dims, gating_channels, inter, kernel_size=1), norm_layer(spatial_dims, norm, inter)
            )
        psi: list[nn.Module] = [conv_layer(spatial_dims, inter, 1, kernel_size=1)]
        if psi_norm:
            psi.append(norm_layer(spatial_dims, norm, 1))
        self.psi = nn.Sequential(*psi)
        if psi_bias is not None:
            nn.init.constant_(self.psi[0].bias, psi_bias)
        self.output_transform: nn.Module = (
            ConvNormAct(spatial_dims, skip_channels, skip_channels, kernel_size=1, norm=norm, act=None)
            if style == "grid"
            else nn.Identity()
        )

    def forward(self, x: torch.Tensor, g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        theta_x = self.theta(x)
        phi_g = resize_to(self.phi(resize_to(g, x.shape[2:]) if self.style == "additive" else g), theta_x.shape[2:])
        compatibility = self.psi(torch.relu(theta_x + phi_g))
        alpha = resize_to(torch.sigmoid(compatibility), x.shape[2:])
        return self.output_transform(alpha * x), alpha


class MultiHeadAttentionGate(nn.Module):
    """``heads`` independent gates on the same (x, g), fused by 1x1 conv + norm + ReLU.

    This is the authors' ``MultiAttentionBlock`` (two heads in ``unet_CT_multi_att_dsv_3D``); with one
    head it is their single-attention block, which also ends in the 1x1 conv + norm + ReLU.
    The ``"additive"`` style follows the popular code and returns the gated skip without fusion
    when ``heads == 1``.

    Grid heads without ψ norm compute their coefficients together: the heads' θ, φ and ψ are stacked
    into one convolution each (ψ grouped by head), the same arithmetic as head by head in three
    kernels instead of three per head (about 10% of a gate's training step on a CPU).

    Returns (y, α) with α of shape (B, heads, *S_x).
    """

    def __init__(
        self,
        spatial_dims: int,
        skip_channels: int,
        gating_channels: int,
        heads: int = 2,
        inter_channels: int | None = None,
        style: GateStyle = "grid",
        norm: NormName = "batch",
        psi_norm: bool = False,
        psi_bias: float | None = None,
    ) -> None:
        super().__init__()
        if heads < 1:
            raise ValueError(f"gate heads must be >= 1, got {heads}")
        self.gates = nn.ModuleList(
            AttentionGate(spatial_dims, skip_channels, gating_channels, inter_channels, style, norm, psi_norm, psi_bias)
            for _ in range(heads)
        )
        fuse = style == "grid" or heads > 1
        self.stacked = style == "grid" and not psi_norm and heads > 1
        self.combine: nn.Module = (
            ConvNormAct(spatial_dims, heads * skip_channels, skip_channels, kernel_size=1, norm=norm)
            if fuse
            else nn.Identity()
        )

    def forward(self, x: torch.Tensor, g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.stacked:
            alpha = self._stacked_coefficients(x, g)
            outputs = [gate.output_transform(alpha[:, h : h + 1] * x) for h, gate in enumerate(self.gates)]
        else:
            outputs, alphas = zip(*(gate(x, g) for gate in self.gates), strict=True)
            alpha = torch.cat(alphas, dim=1)
        fused = self.combine(list(outputs)) if isinstance(self.combine, ConvNormAct) else outputs[0]
        return fused, alpha

    def _stacked_coefficients(self, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        """Every grid head's α (B, heads, *S_x): ReLU(θx + φg) and ψ for all heads in one pass each."""
        convolve = F.conv2d if x.dim() == 4 else F.conv3d
        heads = list(self.gates)
        theta = convolve(x, torch.cat([h.theta.weight for h in heads]), None, stride=2)
        phi_weight, phi_bias = torch.cat([h.phi.weight for h in heads]), torch.cat([h.phi.bias for h in heads])
        phi = resize_to(convolve(g, phi_weight, phi_bias), theta.shape[2:])
        psi_weight = torch.cat([h.psi[0].weight for h in heads])
        psi_bias = torch.cat([h.psi[0].bias for h in heads])
        compatibility = convolve(torch.relu_(theta + phi), psi_weight, psi_bias, groups=len(heads))
        return resize_to(torch.sigmoid(compatibility), x.shape[2:])
