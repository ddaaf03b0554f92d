import pytest
import torch

from attnseg.losses import GuidedAttentionLoss, SegmentationLoss
from attnseg.networks import GuidedAttentionOutput


def cross_entropy_by_hand(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    log_p = logits - logits.exp().sum(1, keepdim=True).log()
    return -log_p.gather(1, target.unsqueeze(1)).mean()


def mse_by_hand(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return ((a - b) ** 2).sum() / a.numel()


def fake_output(steps: int = 2, scales: int = 4) -> GuidedAttentionOutput:
    logits = [torch.randn(2, 3, 8, 8) for _ in range(2 * scales)]
    return GuidedAttentionOutput(
        logits=torch.stack(logits[scales:]).mean(0),
        feature_logits=logits[:scales],
        refined_logits=logits[scales:],
        latents=[[torch.randn(2, 16, 2, 2) for _ in range(scales)] for _ in range(steps)],
        module_inputs=[[torch.randn(2, 4, 8, 8) for _ in range(scales)] for _ in range(steps)],
        reconstructions=[[torch.randn(2, 4, 8, 8) for _ in range(scales)] for _ in range(steps)],
    )


def test_equals_a_hand_computation():
    out, target = fake_output(), torch.randint(0, 3, (2, 8, 8))
    seg = sum(cross_entropy_by_hand(logits, target) for logits in out.head_logits)
    guided = sum(mse_by_hand(out.latents[0][s], out.latents[1][s]) for s in range(4))
    recon = sum(mse_by_hand(out.module_inputs[t][s], out.reconstructions[t][s]) for t in range(2) for s in range(4))
    parts = GuidedAttentionLoss().parts(out, target)
    torch.testing.assert_close(parts["segmentation"], seg)
    torch.testing.assert_close(parts["guided"], guided)
    torch.testing.assert_close(parts["reconstruction"], recon)
    torch.testing.assert_close(parts["total"], seg + 0.25 * guided + 0.1 * recon)
    weighted = GuidedAttentionLoss(seg_weight=2.0, guided_weight=0.5, recon_weight=0.0)
    torch.testing.assert_close(weighted(out, target), 2 * seg + 0.5 * guided)


def test_guided_term_pairs_consecutive_steps():
    out, target = fake_output(steps=3), torch.randint(0, 3, (2, 8, 8))
    expected = sum(mse_by_hand(out.latents[t][s], out.latents[t + 1][s]) for t in (0, 1) for s in range(4))
    torch.testing.assert_close(GuidedAttentionLoss().parts(out, target)["guided"], expected)
    single = GuidedAttentionLoss().parts(fake_output(steps=1), target)
    assert single["guided"].item() == 0.0


def test_dice_ce_segmentation_and_channel_target():
    out, target = fake_output(), torch.randint(0, 3, (2, 1, 8, 8))
    dice_ce = SegmentationLoss("dice_ce")
    expected = sum(dice_ce(logits, target) for logits in out.head_logits)
    torch.testing.assert_close(GuidedAttentionLoss(segmentation="dice_ce").parts(out, target)["segmentation"], expected)
    torch.testing.assert_close(GuidedAttentionLoss(segmentation=dice_ce).parts(out, target)["segmentation"], expected)


def test_plain_logits_get_the_segmentation_term():
    logits, target = torch.randn(2, 3, 8, 8), torch.randint(0, 3, (2, 8, 8))
    torch.testing.assert_close(
        GuidedAttentionLoss(seg_weight=3.0)(logits, target), 3 * cross_entropy_by_hand(logits, target)
    )


def test_gradients_reach_both_sides_of_the_mse_terms():
    out, target = fake_output(), torch.randint(0, 3, (2, 8, 8))
    tensors = [out.latents[0][0], out.latents[1][0], out.module_inputs[1][2], out.reconstructions[1][2]]
    for t in tensors:
        t.requires_grad_()
    GuidedAttentionLoss()(out, target).backward()
    assert all(t.grad is not None and t.grad.abs().sum() > 0 for t in tensors)


def test_bad_arguments():
    with pytest.raises(ValueError, match="non-negative"):
        GuidedAttentionLoss(guided_weight=-1)
    with pytest.raises(ValueError, match="training output"):
        GuidedAttentionLoss()(GuidedAttentionOutput(logits=torch.zeros(1, 2, 4, 4)), torch.zeros(1, 4, 4).long())
