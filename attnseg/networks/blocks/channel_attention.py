"""Channel attention module (CAM) of DANet (Fu et al., CVPR 2019) as used by Sinha & Dolz (JBHI 2020).

For x of shape (B, C, *S) (2D or 3D) reshaped to X (B, C, N), N the number of positions:

    E = X Xᵀ (C x C),  E' = rowmax(E) - E,  A = softmax(E') over the last axis,  out = A X
    y = γ·out + x,  γ a learnable scalar initialised to 0 (the module starts as the identity)

No learned projections, as in DANet and the authors' code. The "rowmax(E) - E" trick (DANet's) makes a
channel attend most to the channels it is *least* similar to; the softmax is shift-invariant, so this
equals softmax(-E) and is numerically safe. The C x C map is small (64 x 64), so no memory tricks.

Layout: for a channels-last x, X is a transposed view and the product is computed as (Xᵀ Aᵀ)ᵀ, so the
output stays channels-last without a copy (a channels-first result would make every following
convolution reorder it).
"""

from __future__ import annotations

import torch
from torch import nn


class ChannelAttention(nn.Module):
    """DANet's channel attention module (CAM), any spatial dimensionality."""

    def __init__(self) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.zeros(1))

    def attention_weights(self, x: torch.Tensor) -> torch.Tensor:
        """The channel attention map A (B, C, C); rows sum to 1."""
        flat = x.flatten(2)
        energy = torch.bmm(flat, flat.transpose(1, 2))
        energy = energy.amax(dim=-1, keepdim=True) - energy
        return torch.softmax(energy, dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.flatten(2)
        attention = self.attention_weights(x)
        if flat.stride(1) == 1 and flat.shape[2] > 1:  # channels-last: (B, N, C) is the contiguous view
            out = torch.bmm(flat.transpose(1, 2), attention.transpose(1, 2)).transpose(1, 2)
        else:
            out = torch.bmm(attention, flat)
        return self.gamma * out.unflatten(2, x.shape[2:]) + x
