"""The loss of the multi-scale self-guided attention network (Sinha & Dolz, JBHI 2020).

    L = seg_weight · L_seg + guided_weight · L_guided + recon_weight · L_recon

* L_seg: the segmentation loss of every head, summed: the heads on the projected features F'_s and the
  refined heads (8 for 4 scales); cross-entropy as in the paper, or any ``SegmentationLoss`` (Dice + CE);
* L_guided: Σ_s Σ_t MSE(z_s^t, z_s^(t+1)), between the semantic latents of consecutive refinement steps
  of the same scale (the paper: ‖E_1(F) − E_2(F_SA)‖²);
* L_recon: Σ_t Σ_s MSE(X_s^t, R_s^t), between each semantic module's input and its reconstruction.

With the high-resolution head (beyond the paper, ``fine_stride``), its logits are one more head of
L_seg, weighted by ``fine_weight`` (1 by default: one head among nine).

Defaults are the paper's weights (1, 0.25, 0.1). As in the authors' code, every term is a mean over its
elements, the terms are summed (not averaged) over heads, scales and steps, and nothing is detached: the
guided and reconstruction gradients reach both sides.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from attnseg.losses.segmentation import SegmentationLoss
from attnseg.networks.outputs import GuidedAttentionOutput


class GuidedAttentionLoss(nn.Module):
    """Segmentation + guided + reconstruction loss on a ``GuidedAttentionOutput``.

    Args:
        seg_weight, guided_weight, recon_weight: the weights α, β, γ of the paper (1, 0.25, 0.1).
        segmentation: the per-head loss: a ``SegmentationLoss`` name (``"ce"``, the paper's;
            ``"dice_ce"``, ...) or a ready module taking (logits, class-index target).
        fine_weight: the weight of the high-resolution head's term within L_seg (the other heads: 1).

    ``forward(output, target)`` returns the total; ``parts(output, target)`` also returns each term
    (``"segmentation"``, ``"guided"``, ``"reconstruction"``, unweighted, and ``"total"``) for logging.
    A plain logits tensor (the eval output) gets ``seg_weight`` times its segmentation loss.
    """

    def __init__(
        self,
        seg_weight: float = 1.0,
        guided_weight: float = 0.25,
        recon_weight: float = 0.1,
        segmentation: str | nn.Module = "ce",
        fine_weight: float = 1.0,
    ) -> None:
        super().__init__()
        if min(seg_weight, guided_weight, recon_weight, fine_weight) < 0:
            raise ValueError(
                f"loss weights must be non-negative, got seg {seg_weight}, guided {guided_weight}, recon {recon_weight}"
            )
        self.seg_weight = seg_weight
        self.guided_weight = guided_weight
        self.recon_weight = recon_weight
        self.fine_weight = fine_weight
        self.segmentation = SegmentationLoss(segmentation) if isinstance(segmentation, str) else segmentation

    def parts(self, output: GuidedAttentionOutput | torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        if isinstance(output, torch.Tensor):
            seg = self.segmentation(output, target)
            return {"segmentation": seg, "total": self.seg_weight * seg}
        if not output.head_logits:
            raise ValueError("GuidedAttentionLoss needs the training output of the network (no head logits found)")
        heads = [*output.feature_logits, *output.refined_logits]
        seg = torch.stack([self.segmentation(logits, target) for logits in heads]).sum()
        for logits in output.fine_logits:
            seg = seg + self.fine_weight * self.segmentation(logits, target)
        guided = _sum_mse(
            (earlier, later)
            for step, next_step in zip(output.latents, output.latents[1:], strict=False)
            for earlier, later in zip(step, next_step, strict=True)
        )
        recon = _sum_mse(
            (x, r)
            for inputs, recons in zip(output.module_inputs, output.reconstructions, strict=True)
            for x, r in zip(inputs, recons, strict=True)
        )
        total = self.seg_weight * seg + self.guided_weight * guided + self.recon_weight * recon
        return {"segmentation": seg, "guided": guided, "reconstruction": recon, "total": total}

    def forward(self, output: GuidedAttentionOutput | torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.parts(output, target)["total"]


def _sum_mse(pairs) -> torch.Tensor:
    terms = [F.mse_loss(a.float(), b.float()) for a, b in pairs]
    return torch.stack(terms).sum() if terms else torch.zeros(())
