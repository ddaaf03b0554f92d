"""Typed network outputs.

In training mode a network returns one of these dataclasses, holding everything a loss may need.
In eval mode it returns plain logits, unless attention maps are asked for with
``return_attention=True``; then it returns the dataclass with its ``attention`` field filled.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class SegmentationOutput:
    """Output of the U-Net family.

    Attributes:
        logits: (B, K, *S) class scores at the input's size.
        aux_logits: deep-supervision logits of the coarser decoder levels, finest first, each at its
            level's native resolution (level l has size ceil(S / 2**(l-1))). Empty unless the
            network was built with ``aux_outputs=True``.
        attention: gate coefficients per gated level, ``{"level2": α, ...}``, each (B, heads, *S_l)
            at the skip's resolution. Empty unless ``return_attention=True``.
    """

    logits: torch.Tensor
    aux_logits: list[torch.Tensor] = field(default_factory=list)
    attention: dict[str, torch.Tensor] = field(default_factory=dict)
