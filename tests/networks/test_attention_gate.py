import pytest
import torch
import torch.nn.functional as F

from attnseg.networks.blocks.attention_gate import AttentionGate, MultiHeadAttentionGate

INTERP = {2: "bilinear", 3: "trilinear"}
CONV = {2: F.conv2d, 3: F.conv3d}


def _inputs(dims: int, skip_size: tuple[int, ...], gate_size: tuple[int, ...], cx: int = 4, cg: int = 6):
    return torch.randn(2, cx, *skip_size), torch.randn(2, cg, *gate_size)


@pytest.mark.parametrize(
    ("dims", "skip_size", "gate_size"),
    [(2, (16, 16), (8, 8)), (2, (17, 23), (9, 12)), (3, (8, 10, 6), (4, 5, 3)), (3, (9, 7, 5), (5, 4, 3))],
)
@pytest.mark.parametrize("style", ["grid", "additive"])
def test_alpha_in_unit_interval_shaped_like_skip(dims, skip_size, gate_size, style):
    gate = AttentionGate(dims, 4, 6, inter_channels=3, style=style).eval()
    x, g = _inputs(dims, skip_size, gate_size)
    y, alpha = gate(x, g)
    assert y.shape == x.shape
    assert alpha.shape == (2, 1, *skip_size)
    assert alpha.min() > 0 and alpha.max() < 1


@pytest.mark.parametrize("style", ["grid", "additive"])
def test_alpha_can_fall_below_half(style):
    # A double sigmoid would keep every coefficient above 0.5 whatever the logits; ours must not.
    gate = AttentionGate(2, 4, 6, style=style, psi_bias=-6.0).eval()
    x, g = _inputs(2, (16, 16), (8, 8))
    _, alpha = gate(0.01 * x, 0.01 * g)
    assert alpha.max() < 0.05


def test_open_gate_initialisation():
    gate = AttentionGate(2, 4, 6, psi_bias=3.0).eval()
    x, g = _inputs(2, (16, 16), (8, 8))
    _, alpha = gate(0.01 * x, 0.01 * g)
    assert alpha.min() > 0.9


@pytest.mark.parametrize("dims", [2, 3])
def test_grid_gate_matches_reference_formula(dims):
    """θ strided on x, φ(g) resized onto θ's grid, ReLU, ψ, one sigmoid, α resized to x, W(α·x)."""
    gate = AttentionGate(dims, 4, 6, inter_channels=5, style="grid").eval()
    skip = (10, 14) if dims == 2 else (6, 10, 8)
    coarse = (4, 8) if dims == 2 else (3, 4, 5)  # deliberately not skip/2: exercises both resizes
    x, g = _inputs(dims, skip, coarse)
    conv, mode = CONV[dims], INTERP[dims]

    theta = conv(x, gate.theta.weight, None, stride=2)
    phi = conv(g, gate.phi.weight, gate.phi.bias)
    phi = F.interpolate(phi, size=theta.shape[2:], mode=mode, align_corners=False)
    psi = gate.psi[0]
    a = torch.sigmoid(conv(F.relu(theta + phi), psi.weight, psi.bias))
    alpha = F.interpolate(a, size=x.shape[2:], mode=mode, align_corners=False)
    expected = gate.output_transform(alpha * x)

    y, got_alpha = gate(x, g)
    torch.testing.assert_close(got_alpha, alpha)
    torch.testing.assert_close(y, expected)
    assert gate.theta.bias is None and gate.theta.kernel_size == (2,) * dims
    assert gate.theta.stride == (2,) * dims


def test_grid_output_is_transform_of_gated_skip():
    gate = AttentionGate(2, 4, 6).eval()
    x, g = _inputs(2, (12, 12), (6, 6))
    y, alpha = gate(x, g)
    torch.testing.assert_close(y, gate.output_transform(alpha * x))


def test_additive_gate_returns_gated_skip():
    gate = AttentionGate(3, 4, 6, style="additive").eval()
    x, g = _inputs(3, (8, 8, 8), (4, 4, 4))
    y, alpha = gate(x, g)
    torch.testing.assert_close(y, alpha * x)


def test_psi_norm_is_optional():
    plain = AttentionGate(2, 4, 6)
    normed = AttentionGate(2, 4, 6, psi_norm=True)
    assert len(plain.psi) == 1
    assert isinstance(normed.psi[1], torch.nn.BatchNorm2d)


@pytest.mark.parametrize("heads", [1, 2, 3])
def test_multi_head_gate_fuses_heads(heads):
    block = MultiHeadAttentionGate(2, 4, 6, heads=heads).eval()
    x, g = _inputs(2, (16, 12), (8, 6))
    y, alpha = block(x, g)
    assert y.shape == x.shape
    assert alpha.shape == (2, heads, 16, 12)
    assert block.combine[0].in_channels == 4 * heads
    assert torch.all(y >= 0)  # the fusion ends in ReLU


@pytest.mark.parametrize("dims", [2, 3])
def test_stacked_heads_compute_each_heads_own_gate(dims):
    """θ, φ and ψ of all heads in one convolution each give every head its own α and gated skip."""
    block = MultiHeadAttentionGate(dims, 4, 6, heads=3, inter_channels=5).train()
    assert block.stacked
    x, g = _inputs(dims, (10, 14) if dims == 2 else (6, 10, 8), (4, 8) if dims == 2 else (3, 4, 5))
    outputs, alphas = zip(*(gate(x, g) for gate in block.gates), strict=True)
    expected = block.combine[2](block.combine[1](block.combine[0](torch.cat(outputs, 1))))
    y, alpha = block(x, g)
    torch.testing.assert_close(alpha, torch.cat(alphas, 1))
    torch.testing.assert_close(y, expected, rtol=1e-5, atol=1e-5)
    assert not MultiHeadAttentionGate(dims, 4, 6, heads=3, psi_norm=True).stacked


def test_bad_gate_arguments():
    with pytest.raises(ValueError, match="gate style"):
        AttentionGate(2, 4, 6, style="dot")
    with pytest.raises(ValueError, match="heads"):
        MultiHeadAttentionGate(2, 4, 6, heads=0)
