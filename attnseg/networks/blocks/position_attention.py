"""Position attention module (PAM) of DANet (Fu et al., CVPR 2019) as used by Sinha & Dolz (JBHI 2020),
in 2D and 3D.

For x of shape (B, C, H, W) and N = H·W positions (3D: (B, C, D, H, W) and N = D·H·W; the formula is
the same, every position attends to every other position of the volume):

    q = Conv1x1(C -> C/r)(x), k = Conv1x1(C -> C/r)(x), v = Conv1x1(C -> C)(x)
    E = qᵀk (N x N, *unscaled*),  A = softmax(E) over the keys (last axis),  out_i = Σ_j A_ij v_j
    y = γ·out + x,  γ a learnable scalar initialised to 0 (so the module starts as the identity)

Memory: A has N² entries per image (64 MiB in fp32 on a 64x64 grid, 1 GiB on 128x128; 324 MiB on the
24x24x16 grid of a 96x96x64 volume at stride 4). The default
``implementation="sdpa"`` calls ``torch.nn.functional.scaled_dot_product_attention(q, k, v, scale=1.0)``,
the same formula, through fused kernels that never store A. The fused CPU kernel (and CUDA's flash
kernel) needs q, k and v to have the same head size and contiguous channels; otherwise PyTorch silently
falls back to the math path, which materialises A. So q and k are zero-padded to C channels (every q·k
is unchanged) and all three are made contiguous, and the fused kernel runs (measured on CPU, batch 2,
128x128 grid: 6.2 GiB -> 48 MiB and 6x faster).
``implementation="naive"`` is the literal formula, kept as the reference and for inspecting A.

``kv_pool`` > 1 average-pools the keys and values (non-local-networks style): each query then attends
over ceil(H/p)·ceil(W/p) pooled positions (3D: ceil(D/p)·ceil(H/p)·ceil(W/p)), which cuts the cost of
the attention by p² (3D: p³) for large grids, and the memory of the naive path by as much. It is an
extension, off by default (the paper attends over every position).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from attnseg.networks.blocks.conv import conv_layer
from attnseg.networks.memory import estimating_memory

PositionAttentionImpl = Literal["sdpa", "naive"]
IMPLEMENTATIONS: tuple[str, ...] = ("sdpa", "naive")


def position_attention_naive(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The literal formula on (B, N, Cq), (B, M, Cq), (B, M, Cv): returns (out (B, N, Cv), A (B, N, M))."""
    attention = torch.softmax(torch.bmm(q, k.transpose(1, 2)), dim=-1)
    return torch.bmm(attention, v), attention


def position_attention_sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Same result as ``position_attention_naive(q, k, v)[0]`` without storing the N x M map where the
    backend has a fused kernel. q and k are zero-padded to v's width so that the fused kernels apply."""
    pad = v.shape[-1] - q.shape[-1]
    if pad > 0:
        q, k = F.pad(q, (0, pad)), F.pad(k, (0, pad))
    # The fused kernels also need a unit stride along the channels; (B, N, C) views of conv outputs
    # have stride N there.
    q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
    if q.is_meta and estimating_memory():
        # On the meta device the dispatcher picks the math path, which keeps the N x M map; the memory
        # estimate must count what the fused kernels keep instead.
        return _FusedAttentionStandIn.apply(q, k, v)
    out = F.scaled_dot_product_attention(q.unsqueeze(1), k.unsqueeze(1), v.unsqueeze(1), scale=1.0)
    return out.squeeze(1)


class _FusedAttentionStandIn(torch.autograd.Function):
    """Shape-only stand-in for a fused attention kernel: keeps q, k, v, out and the row log-sum-exp
    for backward, as the fused kernels do. Used only on the meta device."""

    @staticmethod
    def forward(ctx, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        out = torch.empty(q.shape[:-1] + v.shape[-1:], dtype=v.dtype, device=v.device)
        logsumexp = torch.empty(q.shape[:-1], dtype=torch.float32, device=v.device)
        ctx.save_for_backward(q, k, v, out, logsumexp)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:  # type: ignore[override]
        q, k, v, _, _ = ctx.saved_tensors
        return torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)


def attention_map_bytes(batch: int, queries: int, keys: int, element_size: int = 4) -> int:
    """Bytes of one materialised attention map (B x N x M), as the naive path stores it."""
    return batch * queries * keys * element_size


class PositionAttention(nn.Module):
    """DANet's position attention module (PAM), 2D or 3D.

    Args:
        channels: C, the width of input and output.
        reduction: q and k have ``channels // reduction`` channels (DANet: 8).
        implementation: ``"sdpa"`` (fused, memory-efficient, default) or ``"naive"`` (literal formula).
        kv_pool: average-pool keys and values by this factor along every axis (1: off, the paper's).
        spatial_dims: 2 or 3.
    """

    def __init__(
        self,
        channels: int,
        reduction: int = 8,
        implementation: PositionAttentionImpl = "sdpa",
        kv_pool: int = 1,
        spatial_dims: int = 2,
    ) -> None:
        super().__init__()
        if implementation not in IMPLEMENTATIONS:
            raise ValueError(f"implementation must be one of {IMPLEMENTATIONS}, got {implementation!r}")
        if kv_pool < 1:
            raise ValueError(f"kv_pool must be >= 1, got {kv_pool}")
        qk_channels = max(channels // reduction, 1)
        self.channels = channels
        self.implementation = implementation
        self.kv_pool = kv_pool
        self.spatial_dims = spatial_dims
        self.query = conv_layer(spatial_dims, channels, qk_channels, 1)
        self.key = conv_layer(spatial_dims, channels, qk_channels, 1)
        self.value = conv_layer(spatial_dims, channels, channels, 1)
        self.gamma = nn.Parameter(torch.zeros(1))

    def _projections(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """q (B, N, Cq), k (B, M, Cq), v (B, M, C); M = N unless keys and values are pooled."""
        pool = F.avg_pool2d if self.spatial_dims == 2 else F.avg_pool3d
        context = x if self.kv_pool == 1 else pool(x, self.kv_pool, ceil_mode=True)
        # The pooled map is a linear function of x, so pooling before the 1x1 convs equals pooling their
        # outputs, at a p² smaller cost.
        q = self.query(x).flatten(2).transpose(1, 2)
        k = self.key(context).flatten(2).transpose(1, 2)
        v = self.value(context).flatten(2).transpose(1, 2)
        return q, k, v

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self._projections(x)
        if self.implementation == "sdpa":
            out = position_attention_sdpa(q, k, v)
        else:
            out = position_attention_naive(q, k, v)[0]
        # (B, N, C) -> (B, C, *S): a view, laid out channels-last, as the flattened channels-last x is
        out = out.transpose(1, 2).unflatten(2, x.shape[2:])
        return self.gamma * out + x

    def attention_weights(self, x: torch.Tensor) -> torch.Tensor:
        """The attention map A (B, N, M): row i holds the weights query position i gives every key.

        Materialises N x M values: meant for inspection on small grids, not for training.
        """
        q, k, v = self._projections(x)
        return position_attention_naive(q, k, v)[1]

    def extra_repr(self) -> str:
        return (
            f"channels={self.channels}, implementation={self.implementation!r}, kv_pool={self.kv_pool}, "
            f"spatial_dims={self.spatial_dims}"
        )
