"""The multi-scale guided network's high-resolution head (beyond the paper) and the presets that use it;
``ms_guided_faithful`` stays the authors' network."""

import json

import pytest
import torch

from attnseg.losses import GuidedAttentionLoss
from attnseg.networks import GuidedAttentionOutput, MultiScaleGuidedAttentionNet, build_network
from attnseg.networks.blocks.fine_head import FineHead, fine_head_parameters
from attnseg.networks.registry import get_spec
from attnseg.networks.utils import count_parameters
from tests.networks.parameter_counts import semantic_module

TINY = {"backbone": "resnet18", "backbone_width": 8, "head_channels": 16}


def tiny(**config) -> MultiScaleGuidedAttentionNet:
    return MultiScaleGuidedAttentionNet(**{"in_channels": 1, "out_channels": 3, **TINY, **config})


@pytest.mark.parametrize("stride", [2, 1])
@pytest.mark.parametrize("size", [(64, 64), (45, 70)])
def test_fine_head_is_the_prediction_and_one_more_supervised_head(stride, size):
    model = tiny(fine_stride=stride).train()
    out = model(torch.randn(2, 1, *size))
    assert isinstance(out, GuidedAttentionOutput)
    assert len(out.fine_logits) == 1 and len(out.head_logits) == 9
    assert all(t.shape == (2, 3, *size) for t in out.head_logits)
    torch.testing.assert_close(out.logits, out.fine_logits[0])
    model.eval()
    x = torch.randn(1, 1, *size)
    with torch.no_grad():
        logits = model(x)
        full = model(x, return_attention=True)
    assert logits.shape == (1, 3, *size)
    torch.testing.assert_close(logits, full.fine_logits[0])  # eval output = the fine head's logits


@pytest.mark.parametrize("size", [(64, 64), (45, 70)])
def test_a_residual_fine_head_corrects_the_papers_prediction(size):
    """``fine_residual``: the fine head's logits are added to the mean of the refined logits. With its
    last layer zeroed the correction is zero and the network predicts exactly what the paper's head does
    (the mean of the refined logits, resized to the input); trained, the correction is the difference."""
    torch.manual_seed(0)
    model = tiny(fine_stride=1, fine_image_features=4, fine_residual=True).eval()
    x = torch.randn(1, 1, *size)
    with torch.no_grad():
        full = model(x, return_attention=True)
        paper = torch.stack(full.refined_logits).mean(0)
        correction = model(x) - paper
        model.fine_head.head.weight.zero_()
        model.fine_head.head.bias.zero_()
        torch.testing.assert_close(model(x), paper)
    assert correction.abs().max() > 1e-3
    with pytest.raises(ValueError, match="needs fine_stride"):
        tiny(fine_residual=True)


def test_fine_head_grid():
    """Stride 2 predicts on the stem's grid, stride 1 on the input's."""
    head2 = FineHead(16, 8, 1, 12, 3, stride=2)
    head1 = FineHead(16, 8, 1, 12, 3, stride=1)
    context, stem, image = torch.randn(2, 16, 8, 8), torch.randn(2, 8, 16, 16), torch.randn(2, 1, 32, 32)
    assert head2(context, stem, image).shape == (2, 3, 16, 16)
    assert head1(context, stem, image).shape == (2, 3, 32, 32)
    with pytest.raises(ValueError, match="stride"):
        FineHead(16, 8, 1, 12, 3, stride=4)
    with pytest.raises(ValueError, match="image features need stride 1"):
        FineHead(16, 8, 1, 12, 3, stride=2, image_features=8)


def test_image_features_are_computed_at_full_resolution_and_reach_the_logits():
    """With ``image_features`` the image passes two full-resolution conv layers before it is joined: a
    change of one input pixel moves the logits around it through them, not only through the stride-2
    path, and every one of their parameters gets a gradient."""
    torch.manual_seed(0)
    head = FineHead(16, 8, 1, 12, 3, stride=1, image_features=6).eval()
    context, stem, image = torch.randn(1, 16, 8, 8), torch.randn(1, 8, 16, 16), torch.randn(1, 1, 32, 32)
    assert head.image_encoder(image).shape == (1, 6, 32, 32)
    poked = image.clone()
    poked[0, 0, 17, 9] += 5.0
    with torch.no_grad():
        change = (head(context, stem, poked) - head(context, stem, image)).abs().sum(1)[0]
    # two 3x3 layers and the joined 3x3 layer: a receptive field of 7 x 7 around the pixel, nothing beyond
    assert change[14:21, 6:13].min() > 0 and change.sum() == change[14:21, 6:13].sum()
    head.train()
    head(context, stem, image).sum().backward()
    assert all(p.grad is not None for p in head.image_encoder.parameters())


@pytest.mark.parametrize("spatial_dims", [2, 3])
@pytest.mark.parametrize(("stride", "image_features"), [(2, 0), (1, 0), (1, 6)])
def test_parameter_count_is_the_formula(spatial_dims, stride, image_features):
    base = tiny(spatial_dims=spatial_dims)
    fine = tiny(spatial_dims=spatial_dims, fine_stride=stride, fine_channels=12, fine_image_features=image_features)
    expected = fine_head_parameters(16, 8, 1, 12, 3, stride, spatial_dims, image_features)
    assert count_parameters(fine.fine_head) == expected
    assert count_parameters(fine) - count_parameters(base) == expected
    if (spatial_dims, image_features) == (2, 6):
        # by hand: the image's two full-resolution layers 1 -> 6 -> 6, then (12 + 6) -> 12 where the
        # raw image would give (12 + 1) -> 12
        raw = fine_head_parameters(16, 8, 1, 12, 3, 1, 2)
        assert expected - raw == (1 * 6 * 9 + 6 + 12 + 1) + (6 * 6 * 9 + 6 + 12 + 1) + 5 * 12 * 9
    # by hand, 2D stride 2: (16 + 8) -> 12 and 12 -> 12 3x3 conv-BN-PReLU, then a 1x1 head to 3 classes
    if (spatial_dims, stride) == (2, 2):
        assert expected == (24 * 12 * 9 + 12 + 24 + 1) + (12 * 12 * 9 + 12 + 24 + 1) + 12 * 3 + 3


def test_presets_are_the_light_network_plus_the_head():
    def on_meta(name: str, **config) -> torch.nn.Module:
        with torch.device("meta"):
            return build_network(name, in_channels=1, out_channels=5, **config)

    light, hr, cpu = on_meta("ms_guided"), on_meta("ms_guided_hr"), on_meta("ms_guided_cpu")
    assert count_parameters(hr) == count_parameters(light) + fine_head_parameters(64, 64, 1, 64, 5, 2)
    narrow = on_meta("ms_guided", backbone_width=32, head_channels=16, semantic_widths=(32, 64))
    assert count_parameters(cpu) == count_parameters(narrow) + fine_head_parameters(
        16, 32, 1, 32, 5, 1, image_features=16
    )  # the CPU preset's head predicts at stride 1 from 16 image features; kv_pool, residual: no parameters
    assert count_parameters(hr) == 27_805_919 + 111_303  # 128·64·9 + 193 + 64·64·9 + 193 + 64·5 + 5
    # its two encoder-decoders at half the authors' widths: 32 -> 32 -> 64 where theirs is 32 -> 64 -> 128
    authors = on_meta("ms_guided_cpu", semantic_widths=None)
    saved = 2 * (semantic_module(32, 2) - semantic_module(32, 2, (32, 64)))
    assert count_parameters(authors) - count_parameters(cpu) == saved == 616_000
    assert count_parameters(cpu) == 3_268_201
    for wrong in ([32], [32, 0]):
        with pytest.raises(ValueError, match="semantic_widths must be two positive widths"):
            on_meta("ms_guided_cpu", semantic_widths=wrong)


def test_faithful_is_unchanged():
    """The authors' network: no fine head, same parameter count, and its preset does not ask for one."""
    assert "fine_stride" not in get_spec("ms_guided_faithful").preset
    with torch.device("meta"):
        faithful = build_network("ms_guided_faithful", in_channels=1)
    assert faithful.fine_stride is None and not hasattr(faithful, "fine_head")
    assert count_parameters(faithful) == 103_556_063
    assert not any(name.startswith("fine_head") for name, _ in faithful.named_modules())


def test_without_the_head_the_backbone_runs_its_own_forward_and_with_it_the_same_taps():
    """The fine head needs the stem, which the backbone's forward does not return: the network runs the
    backbone's layers itself, and must get exactly the backbone's taps."""
    torch.manual_seed(0)
    model = tiny(fine_stride=2).eval()
    x = torch.randn(2, 1, 64, 64)
    with torch.no_grad():
        stem, taps = model._backbone_taps(x)
        reference = model.backbone(x, model._layout)
        assert stem.shape == (2, 8, 32, 32)
        for tap, expected in zip(taps, reference, strict=True):
            torch.testing.assert_close(tap, expected)
        model.fine_stride = None
        none, plain = model._backbone_taps(x)
    assert none is None
    assert all(torch.equal(a, b) for a, b in zip(plain, reference, strict=True))


@pytest.mark.parametrize("stride", [2, 1])
def test_every_parameter_gets_a_gradient_with_the_head(stride):
    model = tiny(fine_stride=stride).train()
    x, target = torch.randn(2, 1, 64, 48), torch.randint(0, 3, (2, 64, 48))
    GuidedAttentionLoss(segmentation="dice_ce")(model(x), target).backward()
    assert [n for n, p in model.named_parameters() if p.grad is None] == []


def test_3d_head_trains_within_the_memory_limit():
    """The 3D network with the head: the pre-flight check counts it, and a 96 x 96 x 64 training step of
    the tiny network still fits the 1 GiB the head-less one fits (tests/networks/test_ms_guided_3d.py).
    (The estimate is a peak of live tensors: the head adds stride-2 maps at the end of the forward pass,
    when the attention grid's tensors are partly freed, so the peak moves little either way.)"""
    config = {"spatial_dims": 3, "in_channels": 1, "out_channels": 3, **TINY, "head_channels": 8}
    plain = MultiScaleGuidedAttentionNet(**config, memory_limit_gib=2).train()
    fine = MultiScaleGuidedAttentionNet(**config, fine_stride=2, memory_limit_gib=2).train()
    shape = (1, 1, 96, 96, 64)
    with_head, without = fine.check_memory(shape).total, plain.check_memory(shape).total
    assert without < 2**30 and with_head < 2**30
    assert with_head < 1.5 * without
    out = fine(torch.randn(2, 1, 32, 32, 32))
    assert out.logits.shape == (2, 3, 32, 32, 32) and len(out.head_logits) == 9


def test_models_verb_counts_the_presets_flops(capsys):
    from attnseg.cli import main

    assert main(["models", "--flops", "--size", "64", "64", "--classes", "3", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    flops = {row["name"]: row["gflops"] for row in report["networks"]}
    assert report["config"]["size"] == [64, 64]
    # the CPU preset: 1/4 of the backbone's widths and of the head's, so about 1/16 of the arithmetic
    assert flops["ms_guided_cpu"] < flops["ms_guided"] / 10
    assert flops["ms_guided"] < flops["ms_guided_hr"] < 1.05 * flops["ms_guided"]


@pytest.mark.parametrize("name", ["ms_guided_hr", "ms_guided_cpu"])
def test_3d_presets_with_the_head_keep_the_documented_memory(name):
    """docs/ms-guided-3d.md: a 96 x 96 x 64 training step at batch 2 within 3 GiB; the pre-flight check
    (on the meta device: nothing allocated) passes the presets with the head under that limit."""
    with torch.device("meta"):
        model = build_network(name, spatial_dims=3, in_channels=1, out_channels=5, memory_limit_gib=3)
    estimate = model.train().check_memory((2, 1, 96, 96, 64))  # raises MemoryBudgetError when over
    assert estimate.total < 3 * 2**30


def test_fine_weight_scales_the_fine_heads_term_only():
    torch.manual_seed(0)
    model = tiny(fine_stride=2).train()
    out, target = model(torch.randn(2, 1, 32, 32)), torch.randint(0, 3, (2, 32, 32))
    ce = torch.nn.functional.cross_entropy
    others = sum(ce(logits, target) for logits in [*out.feature_logits, *out.refined_logits])
    for weight in (0.0, 1.0, 8.0):
        seg = GuidedAttentionLoss(fine_weight=weight).parts(out, target)["segmentation"]
        torch.testing.assert_close(seg, others + weight * ce(out.fine_logits[0], target))
