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


@dataclass
class GuidedAttentionOutput:
    """Output of the multi-scale guided attention network (``MultiScaleGuidedAttentionNet``), 2D or 3D.

    Scales are ordered finest first (backbone strides 4, 8, 16, 32); steps in order of refinement.
    S is the input's spatial size, (H, W) or (D, H, W); s the attention grid, stride 4 of the input
    padded to a multiple of 32.

    Attributes:
        logits: (B, K, *S) the prediction (the eval output): the mean of ``refined_logits``, or the
            high-resolution head's ``fine_logits`` when the network has one.
        feature_logits: one (B, K, *S) per scale, the heads on the projected features F'_s.
        refined_logits: one (B, K, *S) per scale, the heads on the last step's refined features.
        latents: ``latents[step][scale]``, the semantic encoder's latent (B, 4d, *s / 4).
        module_inputs: ``module_inputs[step][scale]``, the input [F'_s, F_MS] (step 1) or
            [F'_s, A_s ⊙ F_MS] (later steps) of the semantic module, (B, d, *s).
        reconstructions: ``reconstructions[step][scale]``, its reconstruction, same shape.
        attention: with ``return_attention=True``, per step t and scale s:
            ``"step{t}.scale{s}.position"`` and ``"step{t}.scale{s}.channel"`` (outputs of the position
            and channel attention branches) and ``"step{t}.scale{s}.guided"`` (A_s), each (B, C, *s)
            cropped to ceil(S / 4).
        fine_logits: with the high-resolution head (``fine_stride``), its (B, K, *S) logits; else empty.
    """

    logits: torch.Tensor
    feature_logits: list[torch.Tensor] = field(default_factory=list)
    refined_logits: list[torch.Tensor] = field(default_factory=list)
    latents: list[list[torch.Tensor]] = field(default_factory=list)
    module_inputs: list[list[torch.Tensor]] = field(default_factory=list)
    reconstructions: list[list[torch.Tensor]] = field(default_factory=list)
    attention: dict[str, torch.Tensor] = field(default_factory=dict)
    fine_logits: list[torch.Tensor] = field(default_factory=list)

    @property
    def head_logits(self) -> list[torch.Tensor]:
        """Every supervised head: the feature heads, then the refined heads (8 for 4 scales), then the
        high-resolution head when there is one."""
        return [*self.feature_logits, *self.refined_logits, *self.fine_logits]
