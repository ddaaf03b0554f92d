"""PAM, CAM and the semantic encoder-decoder against the formulas of DANet / Sinha & Dolz."""

import math

import pytest
import torch

from attnseg.networks.blocks.channel_attention import ChannelAttention
from attnseg.networks.blocks.position_attention import (
    PositionAttention,
    position_attention_naive,
    position_attention_sdpa,
)
from attnseg.networks.blocks.semantic_module import SemanticModule


def pam_by_formula(pam: PositionAttention, x: torch.Tensor) -> torch.Tensor:
    """DANet's PAM written out: E = qᵀk (unscaled), A = softmax over keys, out = v·Aᵀ, y = γ·out + x."""
    b, c, h, w = x.shape
    q = pam.query(x).view(b, -1, h * w)  # (B, Cq, N)
    k = pam.key(x).view(b, -1, h * w)
    v = pam.value(x).view(b, c, h * w)  # (B, C, N)
    energy = torch.einsum("bci,bcj->bij", q, k)
    attention = torch.exp(energy - energy.amax(-1, keepdim=True))
    attention = attention / attention.sum(-1, keepdim=True)
    out = torch.einsum("bcj,bij->bci", v, attention)
    return pam.gamma * out.view(b, c, h, w) + x


@pytest.mark.parametrize("implementation", ["sdpa", "naive"])
def test_pam_starts_as_identity(implementation):
    pam = PositionAttention(16, implementation=implementation)
    assert pam.gamma.item() == 0.0
    x = torch.randn(2, 16, 9, 7)
    assert torch.equal(pam(x), x)


def test_cam_starts_as_identity():
    cam = ChannelAttention()
    assert cam.gamma.item() == 0.0
    x = torch.randn(2, 16, 9, 7)
    assert torch.equal(cam(x), x)


@pytest.mark.parametrize("size", [(8, 8), (7, 9)])
@pytest.mark.parametrize("implementation", ["sdpa", "naive"])
def test_pam_equals_the_formula(implementation, size):
    pam = PositionAttention(16, implementation=implementation)
    with torch.no_grad():
        pam.gamma.fill_(0.7)
    x = torch.randn(2, 16, *size)
    torch.testing.assert_close(pam(x), pam_by_formula(pam, x), atol=1e-5, rtol=1e-5)


def test_sdpa_equals_naive_values_and_gradients():
    torch.manual_seed(1)
    q, k = torch.randn(2, 50, 4) * 3, torch.randn(2, 50, 4) * 3  # large unscaled energies
    v = torch.randn(2, 50, 32)
    grads = []
    for fn in (lambda *a: position_attention_naive(*a)[0], position_attention_sdpa):
        leaves = [t.clone().requires_grad_() for t in (q, k, v)]
        out = fn(*leaves)
        (out * torch.linspace(-1, 1, 32)).sum().backward()
        grads.append((out.detach(), *(t.grad for t in leaves)))
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_sdpa_uses_the_fused_cpu_kernel():
    """With q/k at C/8 channels, or non-contiguous v, PyTorch falls back to the math path, which stores
    the N x N map; padding q/k to C channels and making them contiguous selects the fused kernel."""
    pam = PositionAttention(64)
    q, k, v = pam._projections(torch.randn(1, 64, 16, 16, requires_grad=True))
    assert q.shape[-1] == 8 and v.stride(-1) != 1  # the case that would fall back
    out = position_attention_sdpa(q, k, v)
    kernel = out.grad_fn.next_functions[0][0]
    assert "FlashAttention" in type(kernel).__name__


def test_pam_rows_sum_to_one_over_keys():
    pam = PositionAttention(16)
    attention = pam.attention_weights(torch.randn(2, 16, 6, 5))
    assert attention.shape == (2, 30, 30)
    torch.testing.assert_close(attention.sum(-1), torch.ones(2, 30))
    assert not torch.allclose(attention.sum(-2), torch.ones(2, 30))  # normalised over keys, not queries


@pytest.mark.parametrize("kv_pool", [1, 2, 3])
def test_pam_on_a_constant_input_gives_v(kv_pool):
    """Every position has the same q, k, v: attention is uniform and out_i = v for every i."""
    pam = PositionAttention(16, kv_pool=kv_pool)
    with torch.no_grad():
        pam.gamma.fill_(1.0)
    x = torch.randn(1, 16, 1, 1).expand(2, 16, 7, 8).contiguous()
    v = pam.value(x)
    torch.testing.assert_close(pam(x) - x, v, atol=1e-5, rtol=1e-5)


def test_pam_key_value_pooling():
    pam = PositionAttention(16, kv_pool=2)
    x = torch.randn(2, 16, 7, 8)
    attention = pam.attention_weights(x)
    assert attention.shape == (2, 56, math.ceil(7 / 2) * math.ceil(8 / 2))
    torch.testing.assert_close(attention.sum(-1), torch.ones(2, 56))
    naive = PositionAttention(16, implementation="naive", kv_pool=2)
    naive.load_state_dict(pam.state_dict())
    with torch.no_grad():
        pam.gamma.fill_(0.5)
        naive.gamma.fill_(0.5)
    torch.testing.assert_close(pam(x), naive(x), atol=1e-5, rtol=1e-5)


def test_pam_bad_arguments():
    with pytest.raises(ValueError, match="implementation must be one of"):
        PositionAttention(16, implementation="flash")
    with pytest.raises(ValueError, match="kv_pool must be >= 1"):
        PositionAttention(16, kv_pool=0)


def test_cam_equals_the_formula():
    cam = ChannelAttention()
    with torch.no_grad():
        cam.gamma.fill_(0.3)
    x = torch.randn(2, 6, 5, 4)
    flat = x.view(2, 6, 20)
    energy = flat @ flat.transpose(1, 2)
    energy = energy.max(-1, keepdim=True).values - energy  # DANet's rowmax trick
    attention = torch.softmax(energy, -1)
    expected = 0.3 * (attention @ flat).view_as(x) + x
    torch.testing.assert_close(cam(x), expected)
    torch.testing.assert_close(cam.attention_weights(x).sum(-1), torch.ones(2, 6))
    assert list(cam.parameters()) == [cam.gamma]  # no projections


@pytest.mark.parametrize(("size", "latent"), [((16, 16), (4, 4)), ((24, 12), (6, 3)), ((10, 14), (2, 3))])
def test_semantic_module_shapes(size, latent):
    module = SemanticModule(8)
    x = torch.randn(2, 8, *size)
    z, recon = module(x)
    assert z.shape == (2, 32, *latent)  # 4d channels at 1/4 resolution
    assert recon.shape == x.shape


def test_semantic_module_layout():
    """Two encoder levels with max-pool, two decoder levels with 2x2 stride-2 transposed convs."""
    module = SemanticModule(128)
    pools = [m for m in module.modules() if isinstance(m, torch.nn.MaxPool2d)]
    ups = [m for m in module.modules() if isinstance(m, torch.nn.ConvTranspose2d)]
    assert len(pools) == 2 and len(ups) == 2
    assert all(u.kernel_size == (2, 2) and u.stride == (2, 2) for u in ups)
    assert [u.out_channels for u in ups] == [256, 128]
    convs = [m.out_channels for m in module.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs == [256, 256, 512, 512, 256, 256, 128, 128]


# 3D ---------------------------------------------------------------------------------------------------


def pam3d_by_formula(pam: PositionAttention, x: torch.Tensor) -> torch.Tensor:
    """The same formula over the D·H·W positions of a volume."""
    b = x.shape[0]
    n = x.shape[2:].numel()
    q, k, v = (proj(x).reshape(b, -1, n) for proj in (pam.query, pam.key, pam.value))
    energy = torch.einsum("bci,bcj->bij", q, k)
    attention = torch.softmax(energy.double(), -1).float()
    out = torch.einsum("bcj,bij->bci", v, attention)
    return pam.gamma * out.reshape(x.shape) + x


@pytest.mark.parametrize("implementation", ["sdpa", "naive"])
@pytest.mark.parametrize("size", [(4, 6, 5), (6, 6, 6)])
def test_pam_3d_equals_the_formula(implementation, size):
    pam = PositionAttention(16, implementation=implementation, spatial_dims=3)
    assert isinstance(pam.query, torch.nn.Conv3d)
    with torch.no_grad():
        pam.gamma.fill_(0.7)
    x = torch.randn(2, 16, *size)
    torch.testing.assert_close(pam(x), pam3d_by_formula(pam, x), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kv_pool", [1, 2])
def test_pam_3d_memory_efficient_equals_naive_with_gradients(kv_pool):
    """On a small 3D grid (6 x 7 x 5 = 210 positions), channels-last input, γ != 0: outputs and the
    gradients of the input and of every parameter agree."""
    sdpa = PositionAttention(32, implementation="sdpa", kv_pool=kv_pool, spatial_dims=3)
    naive = PositionAttention(32, implementation="naive", kv_pool=kv_pool, spatial_dims=3)
    with torch.no_grad():
        sdpa.gamma.fill_(0.8)
    naive.load_state_dict(sdpa.state_dict())
    x = (torch.randn(2, 32, 6, 7, 5) * 2).contiguous(memory_format=torch.channels_last_3d)
    results = []
    for module in (sdpa, naive):
        leaf = x.clone().requires_grad_()
        out = module(leaf)
        (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
        results.append((out.detach(), leaf.grad, *(p.grad for p in module.parameters())))
    for a, b in zip(*results, strict=True):  # float32 sums over 420 positions: rounding near 1e-4
        torch.testing.assert_close(a, b, atol=2e-4, rtol=1e-3)


def test_sdpa_uses_the_fused_cpu_kernel_in_3d():
    pam = PositionAttention(64, spatial_dims=3)
    q, k, v = pam._projections(torch.randn(1, 64, 6, 8, 8, requires_grad=True))
    assert q.shape == (1, 384, 8)
    out = position_attention_sdpa(q, k, v)
    assert "FlashAttention" in type(out.grad_fn.next_functions[0][0]).__name__


def test_pam_3d_key_value_pooling():
    pam = PositionAttention(16, kv_pool=2, spatial_dims=3)
    attention = pam.attention_weights(torch.randn(2, 16, 5, 6, 7))
    assert attention.shape == (2, 5 * 6 * 7, 3 * 3 * 4)  # ceil(S / 2) keys along every axis: p³ fewer
    torch.testing.assert_close(attention.sum(-1), torch.ones(2, 210))


def test_pam_3d_output_keeps_a_channels_last_layout():
    pam = PositionAttention(16, spatial_dims=3)
    with torch.no_grad():
        pam.gamma.fill_(1.0)
    x = torch.randn(1, 16, 4, 5, 6).contiguous(memory_format=torch.channels_last_3d)
    assert pam(x).is_contiguous(memory_format=torch.channels_last_3d)


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last_3d])
def test_cam_3d_equals_the_formula_in_both_layouts(layout):
    cam = ChannelAttention()
    with torch.no_grad():
        cam.gamma.fill_(0.3)
    x = torch.randn(2, 6, 3, 4, 5)
    flat = x.reshape(2, 6, 60)
    energy = flat @ flat.transpose(1, 2)
    attention = torch.softmax(energy.max(-1, keepdim=True).values - energy, -1)
    expected = 0.3 * (attention @ flat).reshape(x.shape) + x
    out = cam(x.contiguous(memory_format=layout))
    torch.testing.assert_close(out, expected)
    assert out.is_contiguous(memory_format=layout)


@pytest.mark.parametrize(("size", "latent"), [((16, 16, 8), (4, 4, 2)), ((10, 14, 12), (2, 3, 3))])
def test_semantic_module_3d(size, latent):
    module = SemanticModule(8, spatial_dims=3)
    z, recon = module(torch.randn(2, 8, *size))
    assert z.shape == (2, 32, *latent) and recon.shape == (2, 8, *size)
    ups = [m for m in module.modules() if isinstance(m, torch.nn.ConvTranspose3d)]
    assert [u.kernel_size for u in ups] == [(2, 2, 2)] * 2
    assert len([m for m in module.modules() if isinstance(m, torch.nn.MaxPool3d)]) == 2
