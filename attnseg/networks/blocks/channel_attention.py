"""Channel attention module (CAM) of DANet (Fu et al., CVPR 2019) as used by Sinha & Dolz (JBHI 2020).

For x of shape (B, C, H, W) reshaped to X (B, C, N):

    E = X Xᵀ (C x C),  E' = rowmax(E) - E,  A = softmax(E') over the last axis,  out = A X
    y = γ·out + x,  γ a learnable scalar initialised to 0 (the module starts as the identity)

No learned projections, as in DANet and the authors' code. The "rowmax(E) - E" trick (DANet's) makes a
channel attend most to the channels it is *least* similar to; the softmax is shift-invariant, so this
equals softmax(-E) and is numerically safe. The C x C map is small (64 x 64), so no memory tricks.
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
        out = torch.bmm(self.attention_weights(x), x.flatten(2)).view_as(x)
        return self.gamma * out + x
