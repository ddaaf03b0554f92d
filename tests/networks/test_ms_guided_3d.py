"""The multi-scale guided attention network in 3D: shapes, gradients, attention maps, the memory check,
and the fast execution (stacked scales, channels-last) against the literal loop."""

import math

import pytest
import torch

from attnseg.errors import ConfigError
from attnseg.losses import GuidedAttentionLoss
from attnseg.networks import (
    GuidedAttentionOutput,
    MemoryBudgetError,
    MultiScaleGuidedAttentionNet,
    PositionAttention,
    build_network,
)
from attnseg.networks.nets import ms_guided_attention
from attnseg.networks.utils import count_parameters
from tests.networks.parameter_counts import ms_guided_parameters

TINY = {"backbone": "resnet18", "backbone_width": 8, "head_channels": 8}  # real structure, CPU-fast


def tiny3d(**config) -> MultiScaleGuidedAttentionNet:
    return MultiScaleGuidedAttentionNet(**{"spatial_dims": 3, "in_channels": 1, "out_channels": 3, **TINY, **config})


def test_3d_is_the_2d_network_with_cubic_kernels():
    """Same modules and parameter names; every k x k kernel becomes k x k x k (a 2x2 transposed conv
    2x2x2), so each weight has k times as many values; nothing else changes."""
    with torch.device("meta"):
        two = build_network("ms_guided", in_channels=1, out_channels=5)
        three = build_network("ms_guided", spatial_dims=3, in_channels=1, out_channels=5)
    params3 = dict(three.named_parameters())
    assert set(params3) == {name for name, _ in two.named_parameters()}
    expected = 0
    for name, p in two.named_parameters():
        kernel = p.shape[2:]
        assert params3[name].shape == (*p.shape, kernel[0]) if kernel else params3[name].shape == p.shape, name
        expected += p.numel() * (kernel[0] if kernel else 1)
    assert count_parameters(three) == expected == ms_guided_parameters("resnet18", 1, 5, spatial_dims=3).total
    assert expected == 82_080_351  # the figure docs/ms-guided-3d.md quotes
    assert three.spatial_dims == 3 and three.size_multiple == 32


@pytest.mark.parametrize("size", [(32, 32, 32), (20, 37, 33)])
def test_training_output_and_every_parameter_gets_a_gradient(size):
    model = tiny3d().train()
    x, target = torch.randn(2, 1, *size), torch.randint(0, 3, (2, *size))
    out = model(x)
    assert isinstance(out, GuidedAttentionOutput)
    assert len(out.head_logits) == 8 and all(t.shape == (2, 3, *size) for t in out.head_logits)
    torch.testing.assert_close(out.logits, torch.stack(out.refined_logits).mean(0))
    grid = [math.ceil(s / 32) * 8 for s in size]  # stride 4 of the input padded to a multiple of 32
    for step in range(2):
        for scale in range(4):
            assert out.module_inputs[step][scale].shape == (2, 16, *grid)  # [F'_s, F_MS]: 2 x 8 channels
            assert out.reconstructions[step][scale].shape == (2, 16, *grid)
            assert out.latents[step][scale].shape == (2, 64, *(g // 4 for g in grid))  # 4 x 16 channels
    parts = GuidedAttentionLoss().parts(out, target)
    assert all(torch.isfinite(v) and v > 0 for v in parts.values())
    parts["total"].backward()
    assert [n for n, p in model.named_parameters() if p.grad is None] == []
    # with γ = 0 the q/k/v projections get an exactly zero gradient by design; with γ != 0 every one moves,
    # but the key bias: it adds q_i·b to every energy of row i, which the softmax ignores
    model.zero_grad(set_to_none=True)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("gamma"):
                p.fill_(0.5)
    GuidedAttentionLoss()(model(x), target).backward()
    still = [n for n, p in model.named_parameters() if p.grad is None or not torch.any(p.grad != 0)]
    assert [n for n in still if not n.endswith("key.bias")] == []


@pytest.mark.parametrize("size", [(32, 32, 32), (17, 40, 33)])
def test_eval_output_has_input_size_and_padding_is_cropped_back(size):
    model = tiny3d(in_channels=2).eval()
    x = torch.randn(1, 2, *size)
    padded = torch.nn.functional.pad(x, [p for s in reversed(size) for p in (0, (-s) % 32)])
    with torch.no_grad():
        logits = model(x)
        assert logits.shape == (1, 3, *size)
        torch.testing.assert_close(logits, model(padded)[(..., *(slice(0, s) for s in size))])


def test_attention_maps_in_3d():
    model = tiny3d().eval()
    with torch.no_grad():
        out = model(torch.randn(1, 1, 40, 33, 30), return_attention=True)
    expected = {
        f"step{t}.scale{s}.{k}" for t in (1, 2) for s in (1, 2, 3, 4) for k in ("position", "channel", "guided")
    }
    assert set(out.attention) == expected
    assert all(a.shape == (1, 8, 10, 9, 8) for a in out.attention.values())  # ceil(size / 4), C channels


def test_position_attention_runs_on_the_3d_stride_4_grid():
    model = tiny3d().eval()
    grids = []
    for module in model.modules():
        if isinstance(module, PositionAttention):
            assert module.spatial_dims == 3
            module.register_forward_hook(lambda m, args, out: grids.append(tuple(args[0].shape[2:])))
    with torch.no_grad():
        model(torch.randn(1, 1, 64, 32, 32))
    assert grids == [(16, 8, 8)] * 8  # 4 scales x 2 steps, N = 1024 positions each


@pytest.mark.parametrize("spatial_dims", [2, 3])
@pytest.mark.parametrize("share", [True, False])
def test_fast_execution_is_the_literal_loop(spatial_dims, share):
    """Stacked scales (one encoder-decoder call, batch norm per chunk) and channels-last activations give
    the outputs, gradients and batch-norm running statistics of the authors' loop over scales in the
    input's layout, after a training step and in eval mode. In float64, so that equal maths shows as
    equal numbers (float32 rounding differs between convolution algorithms, and batch norm over a few
    values amplifies it)."""
    size = (48, 40) if spatial_dims == 2 else (32, 40, 24)
    config = {"spatial_dims": spatial_dims, "share_semantic_module": share, **TINY}
    fast = MultiScaleGuidedAttentionNet(**config, batch_scales=True, channels_last=True).double()
    slow = MultiScaleGuidedAttentionNet(**config, batch_scales=False, channels_last=False).double()
    slow.load_state_dict(fast.state_dict())
    with torch.no_grad():
        for model in (fast, slow):
            for name, p in model.named_parameters():
                if name.endswith("gamma"):
                    p.fill_(0.3)
    x, target = torch.randn(2, 1, *size, dtype=torch.float64), torch.randint(0, 2, (2, *size))
    outputs = []
    for model in (fast, slow):
        out = model.train()(x)
        GuidedAttentionLoss()(out, target).backward()
        outputs.append(out)
    exact = {"atol": 1e-9, "rtol": 1e-9}
    for a, b in zip(outputs[0].head_logits, outputs[1].head_logits, strict=True):
        torch.testing.assert_close(a, b, **exact)
    fast_grads = dict(fast.named_parameters())
    for name, p in slow.named_parameters():
        torch.testing.assert_close(fast_grads[name].grad, p.grad, **exact, msg=name)
    fast_buffers = dict(fast.named_buffers())
    for name, buffer in slow.named_buffers():
        torch.testing.assert_close(fast_buffers[name], buffer, **exact, msg=name)
    with torch.no_grad():
        torch.testing.assert_close(fast.eval()(x), slow.eval()(x), **exact)


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_activations_are_channels_last(spatial_dims):
    """From the stem on, even for a one-channel input (laid out both ways at once, which a convolution
    takes as channels-first) and on one thread (where PyTorch runs 1x1 convolutions outside oneDNN, in
    the default layout); and not at all with ``channels_last=False``."""
    size = (64, 64) if spatial_dims == 2 else (32, 32, 32)
    layout = ms_guided_attention.channels_last_format(spatial_dims)
    for channels_last in (True, False):
        model = MultiScaleGuidedAttentionNet(spatial_dims=spatial_dims, channels_last=channels_last, **TINY)
        out = model.train()(torch.randn(2, 1, *size))
        tensors = [*out.module_inputs[0], *out.module_inputs[1], *out.latents[1], *out.reconstructions[1]]
        assert all(t.is_contiguous(memory_format=layout) == channels_last for t in tensors)


def test_registry_builds_3d_with_the_memory_check_on():
    model = build_network("ms_guided", spatial_dims=3, in_channels=1, out_channels=2, **TINY)
    assert model.spatial_dims == 3 and model.memory_limit_gib == "auto"
    faithful = build_network("ms_guided_faithful", spatial_dims=3, in_channels=1, backbone_width=8, head_channels=8)
    assert faithful.out_channels == 5 and faithful.backbone.groups == 32
    with pytest.raises(ConfigError, match="does not take feature_scale"):
        build_network("ms_guided", spatial_dims=3, feature_scale=4)


# the pre-flight memory check in 3D -------------------------------------------------------------------


def test_naive_3d_attention_is_refused_and_sdpa_is_named():
    """At 96 x 96 x 64 the stride-4 grid has 9,216 positions: 8 naive maps of 9216² floats (324 MiB per
    map and image), each kept for backward, against O(N·C) for the fused kernel."""
    naive = tiny3d(position_attention="naive", memory_limit_gib=2).train()
    with pytest.raises(MemoryBudgetError, match=r"keeps 8 maps of 9216x9216 .*use position_attention='sdpa'"):
        naive(torch.randn(1, 1, 96, 96, 64))
    (estimate,) = naive._checked.values()
    assert estimate.peak_live > 8 * 9216**2 * 4
    efficient = tiny3d(memory_limit_gib=2).train()
    assert efficient.check_memory((1, 1, 96, 96, 64)).total < 2**30


def test_refusal_names_the_batch_size_then_the_patch_size():
    model = tiny3d(memory_limit_gib=100).train()
    one = model.check_memory((1, 1, 64, 64, 64))
    per_sample, params = one.peak_live, one.parameters
    model.memory_limit_gib = (params + 2.5 * per_sample) / 2**30  # room for about 2 samples of 64³
    with pytest.raises(MemoryBudgetError, match=r"lower the batch size from 4 to 2 \(data\.batch_size\)"):
        model(torch.randn(4, 1, 64, 64, 64))
    model.memory_limit_gib = (params + 0.3 * per_sample) / 2**30  # a third of one sample: 64 * 0.67 -> 32
    with pytest.raises(
        MemoryBudgetError, match=r"use batch size 1 and an input \(data\.patch_size\) of about 32 x 32 x 32"
    ):
        model(torch.randn(1, 1, 64, 64, 64))


def test_auto_limit_uses_the_memory_available(monkeypatch):
    model = tiny3d(memory_limit_gib="auto").train()
    estimate = model.check_memory((2, 1, 32, 32, 32))  # passes on any machine that runs the tests
    resident = estimate.parameters
    monkeypatch.setattr(ms_guided_attention, "available_memory", lambda device: estimate.peak_live // 2)
    assert model.memory_limit_bytes() == resident + estimate.peak_live // 2
    with pytest.raises(MemoryBudgetError, match=r"needs about .* GiB, over available .* GiB"):
        model(torch.randn(2, 1, 32, 32, 32))
    monkeypatch.setattr(ms_guided_attention, "available_memory", lambda device: None)
    assert model.memory_limit_bytes() is None  # unknown: no check rather than a guess
    assert isinstance(model(torch.randn(2, 1, 32, 32, 32)), GuidedAttentionOutput)
