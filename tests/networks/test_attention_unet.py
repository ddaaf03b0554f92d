import copy

import pytest
import torch

from attnseg.networks import AttentionUNet, SegmentationOutput, UNet, build_network
from attnseg.networks.registry import NETWORKS
from attnseg.networks.utils import count_parameters

SMALL = (4, 8, 16, 32, 64)  # real structure, tiny widths: fast on a CPU


def _params_on_meta(name: str, **config) -> int:
    with torch.device("meta"):
        return count_parameters(build_network(name, **config))


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("unet", 5_888_004),  # paper: 5.88 M
        ("attention_unet", 6_473_322),  # authors' current code (2 heads, decoder gating)
        ("attention_unet_single", 6_214_151),  # authors' single-attention model (1 head per level)
        ("attention_unet_global", 6_411_498),  # authors' earlier code: the paper's 6.40 M
    ],
)
def test_paper_parameter_counts(name, expected):
    """Sources: Oktay et al., "Attention U-Net", MIDL 2018 (arXiv 1804.03999), Table 2 (5.88 M, 6.40 M,
    3D, 4 classes, feature scale 4), and the authors' code, ozan-oktay/Attention-Gated-Networks, for the
    exact counts of its variants (docs/attention-unet.md lists them)."""
    assert _params_on_meta(name, spatial_dims=3, in_channels=1, out_channels=4, feature_scale=4) == expected


def test_capacity_control_unets_match_paper_table_2():
    """Oktay et al., MIDL 2018, Table 2: the "bigger" and "huge" U-Nets, 6.44 M and 10.40 M."""
    assert _params_on_meta("unet", spatial_dims=3, out_channels=4, feature_scale=3.82) == 6_444_328
    assert _params_on_meta("unet", spatial_dims=3, out_channels=4, feature_scale=3) == 10_403_190


@pytest.mark.parametrize(
    ("dims", "size"),
    [(2, (64, 64)), (2, (37, 50)), (2, (1, 17)), (3, (16, 16, 16)), (3, (19, 12, 21))],
)
@pytest.mark.parametrize("name", ["unet", "attention_unet", "attention_unet_global", "attention_unet_additive"])
def test_output_has_input_size(name, dims, size):
    model = build_network(name, spatial_dims=dims, in_channels=2, out_channels=3, features=SMALL).eval()
    with torch.no_grad():
        logits = model(torch.randn(2, 2, *size))
    assert isinstance(logits, torch.Tensor)
    assert logits.shape == (2, 3, *size)


@pytest.mark.parametrize("dims", [2, 3])
def test_training_output_aux_and_attention_shapes(dims):
    size = (37, 45) if dims == 2 else (13, 18, 11)
    model = AttentionUNet(dims, 1, 3, features=SMALL, aux_outputs=True).train()
    out = model(torch.randn(2, 1, *size), return_attention=True)
    assert isinstance(out, SegmentationOutput)
    assert out.logits.shape == (2, 3, *size)
    expected_aux = [tuple(-(-s // 2**k) for s in size) for k in (1, 2, 3)]
    assert [tuple(a.shape[2:]) for a in out.aux_logits] == expected_aux
    assert sorted(out.attention) == ["level2", "level3", "level4"]
    for level, alpha in out.attention.items():
        k = int(level[-1]) - 1
        assert alpha.shape == (2, 2, *(-(-s // 2**k) for s in size))  # 2 heads, skip resolution
        assert alpha.min() >= 0 and alpha.max() <= 1


def test_eval_returns_attention_only_on_request():
    model = AttentionUNet(2, 1, 2, features=SMALL).eval()
    x = torch.randn(1, 1, 32, 32)
    with torch.no_grad():
        assert isinstance(model(x), torch.Tensor)
        out = model(x, return_attention=True)
    assert isinstance(out, SegmentationOutput)
    assert set(out.attention) == {"level2", "level3", "level4"}
    assert out.aux_logits == []


def test_attention_levels_are_configurable():
    model = AttentionUNet(2, 1, 2, features=SMALL, attention_levels=(1, 3)).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 1, 32, 32), return_attention=True)
    assert set(out.attention) == {"level1", "level3"}
    assert out.attention["level1"].shape[2:] == (32, 32)
    assert model.gating is None  # the deepest level is not gated: no bottleneck projection


def test_unet_has_no_gates():
    model = UNet(2, 1, 2, features=SMALL).eval()
    assert len(model.gates) == 0 and model.gating is None
    with torch.no_grad():
        assert model(torch.randn(1, 1, 32, 32), return_attention=True).attention == {}


def test_odd_input_is_zero_padded_then_cropped_back():
    model = AttentionUNet(2, 1, 2, features=SMALL).eval()
    x = torch.randn(1, 1, 30, 45)
    padded = torch.nn.functional.pad(x, (0, 3, 0, 2))  # to 32 x 48, the next multiples of 16
    with torch.no_grad():
        torch.testing.assert_close(model(x), model(padded)[:, :, :30, :45])
    assert model.size_multiple == 16


@pytest.mark.parametrize(
    "config",
    [
        {"name": "unet", "aux_outputs": True},
        {"name": "attention_unet", "aux_outputs": True},
        {"name": "attention_unet_global", "aux_outputs": True},
        {"name": "attention_unet_additive", "aux_outputs": True, "psi_norm": True},
        {"name": "attention_unet", "deep_supervision": False, "attention_levels": (1, 2, 3, 4)},
        {"name": "attention_unet_single", "norm": "instance", "aux_outputs": True},
        {"name": "attention_unet", "norm": "group", "aux_outputs": True},
    ],
)
def test_every_parameter_gets_a_gradient(config):
    config = dict(config)
    model = build_network(config.pop("name"), spatial_dims=2, in_channels=1, out_channels=3, features=SMALL, **config)
    out = model.train()(torch.randn(2, 1, 35, 29))
    loss = out.logits.square().mean() + sum(a.square().mean() for a in out.aux_logits)
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.any(p.grad != 0)]
    assert missing == []


def test_torch_export_round_trip(tmp_path):
    model = AttentionUNet(2, 1, 3, features=SMALL).eval()
    x = torch.randn(2, 1, 40, 40)
    program = torch.export.export(model, (x,))
    path = tmp_path / "attention_unet.pt2"
    torch.export.save(program, path)
    loaded = torch.export.load(path).module()
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), atol=1e-5, rtol=1e-5)


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning", "ignore::DeprecationWarning")
def test_torchscript_trace_round_trip(tmp_path):
    model = AttentionUNet(3, 1, 2, features=SMALL).eval()
    x = torch.randn(1, 1, 16, 16, 16)
    with torch.no_grad():
        traced = torch.jit.trace(model, x)
    path = tmp_path / "attention_unet.ts"
    traced.save(str(path))
    loaded = torch.jit.load(str(path))
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), atol=1e-5, rtol=1e-5)


def test_wrong_input_gets_a_clear_error():
    model = AttentionUNet(3, 2, 2, features=SMALL)
    with pytest.raises(ValueError, match=r"expects a 3D input shaped \(batch, 2, X, Y, Z\)"):
        model(torch.randn(1, 2, 16, 16))
    with pytest.raises(ValueError, match=r"built for 2 input channel\(s\).*got 1 channel"):
        model(torch.randn(1, 1, 16, 16, 16))


def test_bad_configuration_errors():
    with pytest.raises(ValueError, match="attention_levels"):
        AttentionUNet(2, 1, 2, features=SMALL, attention_levels=(5,))
    with pytest.raises(ValueError, match="spatial_dims"):
        AttentionUNet(1, 1, 2)
    with pytest.raises(ValueError, match="norm"):
        AttentionUNet(2, 1, 2, features=SMALL, norm="layer")
    with pytest.raises(ValueError, match="gating"):
        AttentionUNet(2, 1, 2, features=SMALL, gating="local")


def test_registry_rejects_unknown_names_and_keys():
    from attnseg.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown network"):
        build_network("resnet")
    with pytest.raises(ConfigError, match="does not take gate_heads"):
        build_network("unet", gate_heads=2)
    assert {"unet", "attention_unet"} <= set(NETWORKS)


def _plain_block(block, x):
    """ConvNormAct as conv, norm, activation modules called in turn (no folding, no channel parts)."""
    for layer in block:
        x = layer(x)
    return x


def _plain_gate(block, x, g):
    """The multi-head grid gate written out: per head θ, φ, ReLU, ψ, sigmoid, resize, W(α·x); then the
    concatenation of the heads through the 1x1 conv + norm + ReLU."""
    outputs = []
    for head in block.gates:
        theta = head.theta(x)
        phi = torch.nn.functional.interpolate(head.phi(g), size=theta.shape[2:], mode=INTERP[x.dim()])
        alpha = torch.sigmoid(head.psi(torch.relu(theta + phi)))
        alpha = torch.nn.functional.interpolate(alpha, size=x.shape[2:], mode=INTERP[x.dim()])
        outputs.append(_plain_block(head.output_transform, alpha * x))
    return _plain_block(block.combine, torch.cat(outputs, 1))


def _plain_forward(model, x):
    """The authors' forward pass, with every concatenation built: encoder, decoder gating, resize and
    concatenate, double conv; fused deep supervision over the concatenated, resized level logits."""
    resize = torch.nn.functional.interpolate
    size = x.shape[2:]
    x = torch.nn.functional.pad(x, [p for s in reversed(size) for p in (0, (-s) % model.size_multiple)])
    skips = []
    for i, block in enumerate(model.encoder):
        x = _plain_block(block[1], _plain_block(block[0], x if i == 0 else model.pool(x)))
        skips.append(x)
    coarse = skips.pop()
    projected = _plain_block(model.gating, coarse)
    decoded = {}
    for level in range(model.levels, 0, -1):
        skip = skips[level - 1]
        if str(level) in model.gates:
            skip = _plain_gate(model.gates[str(level)], skip, projected if level == model.levels else coarse)
        up = resize(coarse, size=skip.shape[2:], mode=INTERP[x.dim()])
        double = model.decoder[str(level)].conv
        coarse = decoded[level] = _plain_block(double[1], _plain_block(double[0], torch.cat([skip, up], 1)))
    heads = [model.heads[str(level)](decoded[level]) for level in range(1, model.levels + 1)]
    full = decoded[1].shape[2:]
    logits = model.fuse(torch.cat([resize(h, size=full, mode=INTERP[x.dim()]) for h in heads], 1))
    return logits[(slice(None), slice(None), *(slice(0, s) for s in size))], heads


INTERP = {4: "bilinear", 5: "trilinear"}


@pytest.mark.parametrize(("dims", "size"), [(2, (37, 45)), (3, (13, 18, 11))])
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("channels_last", [False, True])
def test_fast_paths_compute_the_plain_forward_pass(dims, size, training, channels_last):
    """Channel parts instead of concatenations, deep supervision fused level by level, batch norm folded
    in eval mode: the same logits and gradients as the plain formulas, in either memory layout."""
    torch.manual_seed(0)
    model = AttentionUNet(dims, 2, 3, features=SMALL, aux_outputs=True)
    with torch.no_grad():  # running statistics away from the identity, so folding is exercised
        for module in model.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2)
    plain = copy.deepcopy(model).train(training)
    model.train(training)
    x = torch.randn(2, 2, *size)
    if channels_last:
        layout = torch.channels_last if dims == 2 else torch.channels_last_3d
        model, x = model.to(memory_format=layout), x.contiguous(memory_format=layout)
    expected, heads = _plain_forward(plain, x)
    out = model(x)
    logits = out.logits if training else out
    torch.testing.assert_close(logits, expected, rtol=1e-4, atol=1e-4)
    if training:
        for aux, head in zip(out.aux_logits, heads[1:], strict=True):
            torch.testing.assert_close(aux, head[(slice(None), slice(None), *(slice(0, s) for s in aux.shape[2:]))])
        expected.square().mean().backward()
        logits.square().mean().backward()
        for (name, p), q in zip(model.named_parameters(), plain.parameters(), strict=True):
            torch.testing.assert_close(p.grad, q.grad, rtol=1e-3, atol=1e-5, msg=name)
