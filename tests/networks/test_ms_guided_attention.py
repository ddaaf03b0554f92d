import json
import math

import pytest
import torch

from attnseg.cli import main
from attnseg.errors import ConfigError
from attnseg.losses import GuidedAttentionLoss
from attnseg.networks import (
    GuidedAttentionOutput,
    MemoryBudgetError,
    MultiScaleGuidedAttentionNet,
    PositionAttention,
    build_network,
)
from attnseg.networks.utils import count_parameters
from tests.networks.parameter_counts import MultiScaleCounts, ms_guided_parameters

TINY = {"backbone": "resnet18", "backbone_width": 8, "head_channels": 16}  # real structure, CPU-fast


def tiny(**config) -> MultiScaleGuidedAttentionNet:
    return MultiScaleGuidedAttentionNet(**{"in_channels": 1, "out_channels": 3, **TINY, **config})


def _params_on_meta(name: str, **config) -> MultiScaleGuidedAttentionNet:
    with torch.device("meta"):
        return build_network(name, **config)


def _assert_counts_match(model: MultiScaleGuidedAttentionNet, expected: MultiScaleCounts) -> None:
    steps = model.refinement
    assert count_parameters(model.backbone) == expected.backbone
    assert count_parameters(model.projections) == expected.projections
    assert count_parameters(model.fuse) == expected.fuse
    assert sum(count_parameters(step.semantic) for step in steps) == expected.semantic
    assert sum(count_parameters(step.position) + count_parameters(step.channel) for step in steps) == expected.branches
    guidance = sum(count_parameters(step.reconstruction_conv) + count_parameters(step.fuse) for step in steps)
    assert guidance == expected.guidance
    assert count_parameters(model.feature_heads) + count_parameters(model.refined_heads) == expected.heads
    assert count_parameters(model) == expected.total


def test_preset_parameter_counts():
    """The presets' counts, part by part, against the derivation from layer shapes in
    tests/networks/parameter_counts.py (docs/ms-guided.md, "Parameter counts")."""
    light = _params_on_meta("ms_guided", in_channels=1, out_channels=5)
    faithful = _params_on_meta("ms_guided_faithful", in_channels=1)
    assert faithful.out_channels == 5  # CHAOS: background + 4 organs
    light_counts = ms_guided_parameters("resnet18", in_channels=1, out_channels=5)
    faithful_counts = ms_guided_parameters("resnext101_32x8d", in_channels=1, out_channels=5)
    _assert_counts_match(light, light_counts)
    _assert_counts_match(faithful, faithful_counts)
    # The figures docs/ms-guided.md quotes, which are these derivations' results:
    assert light_counts.total == 27_805_919 and faithful_counts.total == 103_556_063
    # The backbones: torchvision's published counts (11,689,512 and 88,791,336 for 3 input channels) less
    # the classifier (fc: 512 * 1000 + 1000, 2048 * 1000 + 1000) and two of the stem's 7 x 7 x 64 kernels.
    assert light_counts.backbone == 11_689_512 - 513_000 - 2 * 64 * 7 * 7 == 11_170_240
    assert faithful_counts.backbone == 88_791_336 - 2_049_000 - 2 * 64 * 7 * 7 == 86_736_064
    # The head is the same for both but for the projections' input widths: 16.82 M in the authors'
    # configuration, of which the two shared encoder-decoders take 13.94 M and the 16 PAM/CAM branches 1.82 M.
    assert faithful_counts.head == 16_819_999
    assert faithful_counts.semantic == 2 * 6_970_496 == 13_940_992  # 2 steps x one shared encoder-decoder
    assert faithful_counts.branches == 2 * 4 * (116_179 + 110_979) == 1_817_264  # steps x scales x (PAM + CAM)
    # Only the 1x1 projections differ: stage widths 256..2048 (bottlenecks) instead of 64..512, to 64 channels.
    assert faithful_counts.head - light_counts.head == 64 * ((256 + 512 + 1024 + 2048) - (64 + 128 + 256 + 512))


def test_unshared_semantic_modules():
    shared, separate = tiny(), tiny(share_semantic_module=False)
    assert len(shared.refinement[0].semantic) == 1 and len(separate.refinement[0].semantic) == 4
    per_module = count_parameters(shared.refinement[0].semantic)
    assert count_parameters(separate) - count_parameters(shared) == 2 * 3 * per_module


@pytest.mark.parametrize("size", [(64, 64), (70, 50), (33, 47), (96, 32)])
def test_eval_output_has_input_size(size):
    model = tiny(in_channels=2).eval()
    with torch.no_grad():
        logits = model(torch.randn(2, 2, *size))
    assert isinstance(logits, torch.Tensor)
    assert logits.shape == (2, 3, *size)


@pytest.mark.parametrize("size", [(64, 64), (45, 70)])
def test_training_output(size):
    model = tiny(in_channels=1, out_channels=4).train()
    out = model(torch.randn(2, 1, *size))
    assert isinstance(out, GuidedAttentionOutput)
    assert len(out.head_logits) == 8 and len(out.feature_logits) == 4 and len(out.refined_logits) == 4
    assert all(t.shape == (2, 4, *size) for t in out.head_logits)
    torch.testing.assert_close(out.logits, torch.stack(out.refined_logits).mean(0))
    grid = [math.ceil(s / 32) * 8 for s in size]  # stride 4 of the input padded to a multiple of 32
    assert [len(step) for step in out.latents] == [4, 4]
    assert [len(step) for step in out.reconstructions] == [4, 4]
    assert [len(step) for step in out.module_inputs] == [4, 4]
    for step in range(2):
        for scale in range(4):
            assert out.module_inputs[step][scale].shape == (2, 32, *grid)  # [F'_s, F_MS]: 2 x 16 channels
            assert out.reconstructions[step][scale].shape == (2, 32, *grid)
            assert out.latents[step][scale].shape == (2, 128, grid[0] // 4, grid[1] // 4)  # 4 x 32 channels
    assert out.attention == {}


def test_eval_output_is_the_mean_of_the_refined_logits():
    model = tiny().eval()
    x = torch.randn(2, 1, 50, 61)
    with torch.no_grad():
        logits = model(x)
        out = model(x, return_attention=True)
    assert isinstance(out, GuidedAttentionOutput)
    torch.testing.assert_close(logits, torch.stack(out.refined_logits).mean(0), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(logits, out.logits, atol=1e-5, rtol=1e-5)


def test_attention_maps_per_step_and_scale():
    model = tiny(steps=3).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 1, 70, 50), return_attention=True)
    expected = {
        f"step{t}.scale{s}.{kind}"
        for t in (1, 2, 3)
        for s in (1, 2, 3, 4)
        for kind in ("position", "channel", "guided")
    }
    assert set(out.attention) == expected
    assert all(a.shape == (1, 16, 18, 13) for a in out.attention.values())  # ceil(70/4) x ceil(50/4)
    assert [len(step) for step in out.latents] == [4, 4, 4]


def test_position_attention_runs_on_the_stride_4_grid():
    model = tiny().eval()
    grids = []
    for module in model.modules():
        if isinstance(module, PositionAttention):
            module.register_forward_hook(lambda m, args, out: grids.append(tuple(args[0].shape[2:])))
    with torch.no_grad():
        model(torch.randn(1, 1, 256, 256))
    assert len(grids) == 8  # 4 scales x 2 steps
    assert all(h * w <= (256 // 4) * (256 // 4) for h, w in grids)
    assert set(grids) == {(64, 64)}  # N = 4096, as the paper's 256² inputs


def test_odd_input_is_zero_padded_then_cropped_back():
    model = tiny().eval()
    x = torch.randn(1, 1, 50, 70)
    padded = torch.nn.functional.pad(x, (0, 26, 0, 14))  # to 64 x 96, the next multiples of 32
    with torch.no_grad():
        torch.testing.assert_close(model(x), model(padded)[:, :, :50, :70])
    assert model.size_multiple == 32


@pytest.mark.parametrize(
    "config",
    [{}, {"share_semantic_module": False}, {"steps": 1}, {"steps": 3}, {"position_attention": "naive", "kv_pool": 2}],
)
def test_every_parameter_gets_a_gradient(config):
    """No dead modules (DistributedDataParallel needs this). With γ = 0 the q/k/v projections get an
    exactly zero gradient by design, so they are checked with γ != 0."""
    model = tiny(**config).train()
    x, target = torch.randn(2, 1, 64, 48), torch.randint(0, 3, (2, 64, 48))
    GuidedAttentionLoss()(model(x), target).backward()
    assert [n for n, p in model.named_parameters() if p.grad is None] == []
    model.zero_grad(set_to_none=True)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("gamma"):
                p.fill_(0.5)
    GuidedAttentionLoss()(model(x), target).backward()
    assert [n for n, p in model.named_parameters() if p.grad is None or not torch.any(p.grad != 0)] == []


def test_torch_export_round_trip(tmp_path):
    model = tiny(memory_limit_gib=4).eval()  # the eager pre-flight check stays out of the exported graph
    x = torch.randn(2, 1, 64, 64)
    program = torch.export.export(model, (x,))
    path = tmp_path / "ms_guided.pt2"
    torch.export.save(program, path)
    loaded = torch.export.load(path).module()
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), atol=1e-5, rtol=1e-5)


def test_pretrained_backbone_is_loaded(tmp_path):
    source = tiny(backbone_width=64).backbone
    path = tmp_path / "backbone.pt"
    torch.save({**source.state_dict(), "fc.weight": torch.zeros(1000, 512), "fc.bias": torch.zeros(1000)}, path)
    model = tiny(backbone_width=64, pretrained_backbone=str(path))
    for key, value in source.state_dict().items():
        torch.testing.assert_close(model.backbone.state_dict()[key], value)


def test_bad_configuration_and_input():
    with pytest.raises(ValueError, match="spatial_dims must be 2 or 3, got 1"):
        tiny(spatial_dims=1)
    with pytest.raises(ConfigError, match=r"supports spatial_dims \(2, 3\), got 4"):
        build_network("ms_guided", spatial_dims=4)
    with pytest.raises(ValueError, match="memory_limit_gib must be positive or 'auto'"):
        tiny(memory_limit_gib=0)
    with pytest.raises(ConfigError, match="does not take feature_scale"):
        build_network("ms_guided", feature_scale=4)
    with pytest.raises(ValueError, match="steps must be >= 1"):
        tiny(steps=0)
    model = tiny(in_channels=2)
    with pytest.raises(ValueError, match=r"built for 2 input channel\(s\)"):
        model(torch.randn(1, 1, 32, 32))
    with pytest.raises(ValueError, match=r"expects a 2D input shaped \(batch, 2, X, Y\)"):
        model(torch.randn(1, 2, 16, 16, 16))


def test_memory_check_refuses_before_allocating():
    """Naive position attention at 512² keeps 8 maps of 16384² per image: 16 GiB at batch 2. The check
    replays the step on the meta device and refuses it; nothing is allocated."""
    naive = tiny(position_attention="naive", memory_limit_gib=4).train()
    with pytest.raises(MemoryBudgetError, match=r"needs about \d+\.\d GiB, over the memory limit of 4 GiB.*sdpa"):
        naive(torch.randn(2, 1, 512, 512))
    (estimate,) = naive._checked.values()  # the estimate behind the refusal, cached per input shape
    assert estimate.peak_live > 16 * 2**30
    efficient = tiny(memory_limit_gib=4).train()
    assert efficient.check_memory((2, 1, 512, 512)).total < 2 * 2**30  # same step without N x N maps
    assert issubclass(MemoryBudgetError, ConfigError)


def test_memory_check_passes_a_configuration_that_fits():
    model = tiny(memory_limit_gib=2).train()
    out = model(torch.randn(1, 1, 64, 64))
    assert isinstance(out, GuidedAttentionOutput)
    assert len(model._checked) == 1


def test_models_verb_lists_the_presets(capsys):
    assert main(["models", "--classes", "5", "--json"]) == 0
    counts = {row["name"]: row["parameters"] for row in json.loads(capsys.readouterr().out)["networks"]}
    assert counts["ms_guided"] == ms_guided_parameters("resnet18", 1, 5).total == 27_805_919
    assert counts["ms_guided_faithful"] == ms_guided_parameters("resnext101_32x8d", 1, 5).total == 103_556_063
    assert main(["models", "--spatial-dims", "3", "--classes", "5", "--json"]) == 0
    counts = {row["name"]: row["parameters"] for row in json.loads(capsys.readouterr().out)["networks"]}
    # cubic kernels: about 3x the 2D count (27 / 9 taps); derived with spatial_dims=3
    assert counts["ms_guided"] == ms_guided_parameters("resnet18", 1, 5, spatial_dims=3).total == 82_080_351
    faithful_3d = ms_guided_parameters("resnext101_32x8d", 1, 5, spatial_dims=3).total
    assert counts["ms_guided_faithful"] == faithful_3d == 157_203_807
