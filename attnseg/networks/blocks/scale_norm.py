"""Batch norm with statistics per scale, for a module shared by the multi-scale network's four scales.

In Sinha & Dolz's network (JBHI 2020; their code, ``DAF_stack``) one semantic encoder-decoder per
refinement step serves the four scales, and its batch-norm layers see them one after the other: in
training each scale is normalised with its own batch statistics, but the running statistics used at
evaluation are one moving average over all four, so a scale is evaluated with statistics it was never
trained with. ``ScaleBatchNorm`` keeps the convolutions shared and gives each scale its own batch norm
(statistics and affine parameters), as domain-specific batch norm does for domains (Chang et al., CVPR
2019). Beyond the paper, opt-in (``scale_norm="per_scale"``); measured in docs/ms-guided.md.
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm


class ScaleBatchNorm(nn.Module):
    """``scales`` copies of a batch norm; the input holds the scales stacked along the batch, in order,
    and chunk ``s`` goes through norm ``s``."""

    def __init__(self, norm: _BatchNorm, scales: int) -> None:
        super().__init__()
        self.norms = nn.ModuleList(copy.deepcopy(norm) for _ in range(scales))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] % len(self.norms):
            raise ValueError(
                f"ScaleBatchNorm: a batch of {x.shape[0]} does not hold {len(self.norms)} stacked scales; "
                "per-scale normalisation needs the scales stacked (batch_scales=True)"
            )
        return torch.cat([norm(part) for norm, part in zip(self.norms, x.chunk(len(self.norms)), strict=True)])


def split_batch_norms(module: nn.Module, scales: int) -> int:
    """Replace every batch norm inside ``module`` by a ``ScaleBatchNorm`` of ``scales`` copies; returns
    how many were replaced."""
    replaced = 0
    for name, child in module.named_children():
        if isinstance(child, _BatchNorm):
            setattr(module, name, ScaleBatchNorm(child, scales))
            replaced += 1
        else:
            replaced += split_batch_norms(child, scales)
    return replaced
