import pytest
import torch
import torch.nn.functional as F

from attnseg.losses import DeepSupervisedLoss, SegmentationLoss
from attnseg.networks.outputs import SegmentationOutput


def _hand_soft_dice(logits, target, smooth, include_background=True):
    """1 - mean over (sample, class) of (2 Σ p t + s) / (Σ p + Σ t + s)."""
    probs = logits.softmax(1)
    onehot = F.one_hot(target, logits.shape[1]).movedim(-1, 1).float()
    if not include_background:
        probs, onehot = probs[:, 1:], onehot[:, 1:]
    dims = tuple(range(2, logits.dim()))
    inter = (probs * onehot).sum(dims)
    denom = probs.sum(dims) + onehot.sum(dims)
    return 1 - ((2 * inter + smooth) / (denom + smooth)).mean()


def test_dice_matches_hand_computation():
    logits = torch.randn(2, 3, 5, 6)
    target = torch.randint(0, 3, (2, 5, 6))
    got = SegmentationLoss("dice", smooth=0.01)(logits, target)
    torch.testing.assert_close(got, _hand_soft_dice(logits, target, 0.01))
    got = SegmentationLoss("dice", smooth=0.01, include_background=False)(logits, target)
    torch.testing.assert_close(got, _hand_soft_dice(logits, target, 0.01, include_background=False))


def test_dice_on_a_tiny_example():
    # One sample, two classes, two pixels: confident and right on pixel 0, 50/50 on pixel 1.
    logits = torch.tensor([[[[10.0, 0.0]], [[-10.0, 0.0]]]])
    target = torch.tensor([[[0, 1]]])
    p0 = torch.sigmoid(torch.tensor(20.0))  # softmax prob of class 0 at pixel 0
    dice_bg = 2 * p0 / (p0 + 0.5 + 1)
    dice_fg = 2 * 0.5 / ((1 - p0) + 0.5 + 1)
    expected = 1 - (dice_bg + dice_fg) / 2
    torch.testing.assert_close(SegmentationLoss("dice", smooth=0.0)(logits, target), expected)


def test_ce_and_dice_ce():
    logits = torch.randn(2, 4, 6, 5, 3)
    target = torch.randint(0, 4, (2, 6, 5, 3))
    ce = F.cross_entropy(logits, target)
    torch.testing.assert_close(SegmentationLoss("ce")(logits, target), ce)
    torch.testing.assert_close(SegmentationLoss("ce")(logits, target[:, None]), ce)
    dice = _hand_soft_dice(logits, target, 1e-5)
    torch.testing.assert_close(SegmentationLoss("dice_ce")(logits, target), ce + dice)


def test_class_weighted_ce():
    logits = torch.randn(3, 2, 4, 4)
    target = torch.randint(0, 2, (3, 4, 4))
    expected = F.cross_entropy(logits, target, weight=torch.tensor([0.2, 1.0]))
    torch.testing.assert_close(SegmentationLoss("ce", class_weights=[0.2, 1.0])(logits, target), expected)


@pytest.mark.parametrize("name", ["focal", "dice_focal", "tversky"])
def test_small_foreground_losses_reward_the_right_answer(name):
    target = torch.zeros(1, 16, 16, dtype=torch.long)
    target[0, 7:9, 7:9] = 1  # a 4-pixel lesion
    right = F.one_hot(target, 2).movedim(-1, 1).float() * 8 - 4
    loss = SegmentationLoss(name)
    assert loss(right, target) < loss(-right, target)
    assert loss(right, target) < loss(torch.zeros_like(right), target)


def test_deep_supervision_weights_and_target_downsampling():
    loss = SegmentationLoss("ce")
    target = torch.randint(0, 3, (2, 8, 8))
    main, aux1, aux2 = torch.randn(2, 3, 8, 8), torch.randn(2, 3, 4, 4), torch.randn(2, 3, 2, 2)
    out = SegmentationOutput(logits=main, aux_logits=[aux1, aux2])
    # nearest at pixel centres: level k keeps pixel (2^k i + 2^(k-1), ...) of the full map
    expected = (
        F.cross_entropy(main, target)
        + 0.5 * F.cross_entropy(aux1, target[:, 1::2, 1::2])
        + 0.25 * F.cross_entropy(aux2, target[:, 2::4, 2::4])
    )
    torch.testing.assert_close(DeepSupervisedLoss(loss)(out, target), expected)
    custom = DeepSupervisedLoss(loss, weights=[1.0, 0.0, 2.0])(out, target)
    torch.testing.assert_close(custom, F.cross_entropy(main, target) + 2 * F.cross_entropy(aux2, target[:, 2::4, 2::4]))
    torch.testing.assert_close(DeepSupervisedLoss(loss)(main, target), F.cross_entropy(main, target))


def test_bad_target_and_name():
    with pytest.raises(ValueError, match="class indices"):
        SegmentationLoss("ce")(torch.randn(1, 2, 4, 4), torch.zeros(1, 2, 4, 4))
    with pytest.raises(ValueError, match="loss must be one of"):
        SegmentationLoss("hinge")
