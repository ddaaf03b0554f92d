import math

import pytest
import torch
from safetensors.torch import save_file

from attnseg.errors import DataError
from attnseg.networks.backbones import BACKBONES, adapt_first_conv, build_backbone, inflate_kernel
from attnseg.networks.utils import count_parameters
from tests.networks.parameter_counts import resnet_parameters

# torchvision's published parameter counts minus its classifier (fc: 512*1000+1000 for ResNet-18/34,
# 2048*1000+1000 for the bottleneck networks), 3 input channels.
TORCHVISION_WITHOUT_FC = {
    "resnet18": 11_689_512 - 513_000,
    "resnet34": 21_797_672 - 513_000,
    "resnet50": 25_557_032 - 2_049_000,
    "resnet101": 44_549_160 - 2_049_000,
    "resnext101_32x8d": 88_791_336 - 2_049_000,
}


@pytest.mark.parametrize(("name", "expected"), TORCHVISION_WITHOUT_FC.items())
def test_parameter_counts_match_torchvision(name, expected):
    with torch.device("meta"):
        assert count_parameters(build_backbone(name, in_channels=3)) == expected


def torchvision_keys(layers: tuple[int, ...], bottleneck: bool) -> set[str]:
    """The state-dict keys of torchvision's ResNet, written out from its layout (fc included)."""
    bn = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
    keys = {"conv1.weight", "fc.weight", "fc.bias", *(f"bn1.{p}" for p in bn)}
    convs = 3 if bottleneck else 2
    for stage, blocks in enumerate(layers, start=1):
        for b in range(blocks):
            prefix = f"layer{stage}.{b}"
            for i in range(1, convs + 1):
                keys.add(f"{prefix}.conv{i}.weight")
                keys.update(f"{prefix}.bn{i}.{p}" for p in bn)
            if b == 0 and (stage > 1 or bottleneck):
                keys.add(f"{prefix}.downsample.0.weight")
                keys.update(f"{prefix}.downsample.1.{p}" for p in bn)
    return keys


@pytest.mark.parametrize("name", ["resnet18", "resnet50", "resnext101_32x8d"])
def test_state_dict_has_torchvision_layout(name):
    spec = BACKBONES[name]
    with torch.device("meta"):
        own = set(build_backbone(name).state_dict())
    expected = torchvision_keys(spec.layers, bottleneck=spec.block.expansion == 4)
    assert own == expected - {"fc.weight", "fc.bias"}


@pytest.mark.parametrize("size", [(64, 64), (65, 97), (33, 40), (32, 200)])
@pytest.mark.parametrize(("name", "in_channels"), [("resnet18", 1), ("resnet50", 2), ("resnext101_32x8d", 3)])
def test_taps_at_strides_4_8_16_32(name, in_channels, size):
    backbone = build_backbone(name, in_channels=in_channels, width=8).eval()
    if name == "resnext101_32x8d":
        assert backbone.out_channels == (32, 64, 128, 256)  # 8 * (1, 2, 4, 8) * expansion 4
    with torch.no_grad():
        taps = backbone(torch.randn(1, in_channels, *size))
    assert len(taps) == 4
    for tap, stride, channels in zip(taps, (4, 8, 16, 32), backbone.out_channels, strict=True):
        assert tap.shape == (1, channels, *(math.ceil(s / stride) for s in size))


def test_adapt_first_conv_sums_over_rgb_and_spreads():
    weight = torch.randn(8, 3, 7, 7)
    assert adapt_first_conv(weight, 3) is weight
    torch.testing.assert_close(adapt_first_conv(weight, 1), weight.sum(1, keepdim=True))
    four = adapt_first_conv(weight, 4)
    assert four.shape == (8, 4, 7, 7)
    for c in range(4):
        torch.testing.assert_close(four[:, c], weight.sum(1) / 4)


def _torchvision_style_file(tmp_path, fmt: str):
    """A synthetic ImageNet-like state dict in torchvision's layout, classifier included."""
    source = build_backbone("resnet18", in_channels=3)
    for p in source.parameters():  # not the init values, so a silent non-load would show
        p.data.normal_(0, 0.05)
    for name, buffer in source.named_buffers():
        if "running_var" in name:
            buffer.uniform_(0.5, 2.0)
        elif "running_mean" in name:
            buffer.normal_(0, 0.1)
    state = {**source.state_dict(), "fc.weight": torch.randn(1000, 512), "fc.bias": torch.randn(1000)}
    path = tmp_path / f"resnet18_imagenet.{fmt}"
    if fmt == "safetensors":
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    else:
        torch.save(state, path)
    return source.eval(), path


@pytest.mark.parametrize("fmt", ["pth", "safetensors"])
@pytest.mark.parametrize("in_channels", [1, 3, 4])
def test_load_pretrained_adapts_conv1(tmp_path, fmt, in_channels):
    source, path = _torchvision_style_file(tmp_path, fmt)
    backbone = build_backbone("resnet18", in_channels=in_channels)
    ignored = backbone.load_pretrained(path)
    assert ignored == ["fc.bias", "fc.weight"]
    own = backbone.state_dict()
    for key, value in source.state_dict().items():
        if key != "conv1.weight":
            torch.testing.assert_close(own[key], value, msg=key)
    torch.testing.assert_close(own["conv1.weight"], adapt_first_conv(source.conv1.weight.detach(), in_channels))
    # The documented property: an input whose channels all equal a grey image g gives the pretrained
    # network's activations for the RGB image (g, g, g).
    grey = torch.randn(1, 1, 64, 64)
    with torch.no_grad():
        expected = source(grey.repeat(1, 3, 1, 1))
        got = backbone.eval()(grey.repeat(1, in_channels, 1, 1))
    for a, b in zip(got, expected, strict=True):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


def test_load_pretrained_errors_name_the_file(tmp_path):
    _, path = _torchvision_style_file(tmp_path, "pth")
    with pytest.raises(DataError, match=r"no such weights file"):
        build_backbone("resnet18").load_pretrained(tmp_path / "missing.pth")
    with pytest.raises(DataError, match=r"resnet18_imagenet\.pth: .*missing \(e\.g\. layer1\.2"):
        build_backbone("resnet34").load_pretrained(path)
    with pytest.raises(DataError, match=r"conv1\.weight has shape \(64, 1, 7, 7\), this backbone needs \(8, 1, 7, 7\)"):
        build_backbone("resnet18", in_channels=1, width=8).load_pretrained(path)
    not_a_state_dict = tmp_path / "list.pt"
    torch.save([torch.zeros(1)], not_a_state_dict)
    with pytest.raises(DataError, match=r"list\.pt: expected a state dict"):
        build_backbone("resnet18").load_pretrained(not_a_state_dict)
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"not a safetensors file")
    with pytest.raises(DataError, match=r"garbage\.safetensors: cannot read weights"):
        build_backbone("resnet18").load_pretrained(garbage)


class _Payload:
    """Any object that is not a tensor: pickled files holding it must not be executed."""

    def __reduce__(self):
        return (print, ("unpickled!",))


def test_load_pretrained_never_unpickles(tmp_path, capsys):
    path = tmp_path / "evil.pth"
    torch.save({"conv1.weight": _Payload()}, path)
    with pytest.raises(DataError, match=r"evil\.pth: cannot read weights"):
        build_backbone("resnet18").load_pretrained(path)
    assert "unpickled!" not in capsys.readouterr().out


def test_bad_configurations():
    with pytest.raises(ValueError, match="backbone must be one of resnet18"):
        build_backbone("vgg16")
    with pytest.raises(ValueError, match="no channels per group; use width >= 8"):
        build_backbone("resnext101_32x8d", width=4)
    with pytest.raises(ValueError, match="spatial_dims must be 2 or 3, got 1"):
        build_backbone("resnet18", spatial_dims=1)


# 3D --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(BACKBONES))
def test_parameter_formula_reproduces_torchvision_then_counts_3d(name):
    assert resnet_parameters(name, 3, spatial_dims=2) == TORCHVISION_WITHOUT_FC[name]
    with torch.device("meta"):
        backbone = build_backbone(name, in_channels=1, spatial_dims=3)
    assert count_parameters(backbone) == resnet_parameters(name, 1, spatial_dims=3)


def test_3d_state_dict_has_the_2d_keys_with_5d_kernels():
    with torch.device("meta"):
        two, three = build_backbone("resnet50").state_dict(), build_backbone("resnet50", spatial_dims=3).state_dict()
    assert list(two) == list(three)
    for key, value in two.items():
        expected = (*value.shape, value.shape[-1]) if value.dim() == 4 else value.shape
        assert three[key].shape == expected, key


@pytest.mark.parametrize("size", [(32, 32, 32), (33, 47, 20)])
@pytest.mark.parametrize("name", ["resnet18", "resnext101_32x8d"])
def test_3d_taps_at_strides_4_8_16_32(name, size):
    backbone = build_backbone(name, in_channels=2, width=8, spatial_dims=3).eval()
    assert isinstance(backbone.conv1, torch.nn.Conv3d) and backbone.conv1.kernel_size == (7, 7, 7)
    with torch.no_grad():
        taps = backbone(torch.randn(1, 2, *size))
    for tap, stride, channels in zip(taps, (4, 8, 16, 32), backbone.out_channels, strict=True):
        assert tap.shape == (1, channels, *(math.ceil(s / stride) for s in size))


def test_inflated_2d_weights_give_the_2d_activations_on_a_volume_constant_in_depth(tmp_path):
    """I3D's property: repeat each kernel k times along depth and divide by k, and a volume whose
    slices all equal an image gives the 2D network's features of that image, away from the ends of the
    volume (where the zero padding along depth is seen)."""
    source, path = _torchvision_style_file(tmp_path, "pth")
    backbone = build_backbone("resnet18", in_channels=1, spatial_dims=3)
    assert backbone.load_pretrained(path) == ["fc.bias", "fc.weight"]
    torch.testing.assert_close(backbone.conv1.weight, inflate_kernel(adapt_first_conv(source.conv1.weight.detach(), 1)))
    image = torch.randn(1, 1, 32, 32)
    with torch.no_grad():
        expected = source(image.repeat(1, 3, 1, 1))[0]  # layer1 of the 2D network on (g, g, g)
        volume = image.unsqueeze(2).expand(-1, -1, 96, -1, -1)  # 96 identical slices
        got = backbone.eval()(volume)[0]
    # layer1's receptive field reaches 35 input slices: at stride 4 the middle slices are clear of the ends
    for depth in (10, 12, 14):
        torch.testing.assert_close(got[:, :, depth], expected, atol=1e-4, rtol=1e-4)


def test_inflate_kernel():
    weight = torch.randn(4, 2, 3, 3)
    inflated = inflate_kernel(weight)
    assert inflated.shape == (4, 2, 3, 3, 3)
    torch.testing.assert_close(inflated.sum(2), weight)
    with pytest.raises(ValueError, match="expected a 2D conv weight"):
        inflate_kernel(inflated)


def test_3d_weights_do_not_load_into_a_2d_backbone(tmp_path):
    path = tmp_path / "r18_3d.pt"
    torch.save(build_backbone("resnet18", in_channels=1, width=8, spatial_dims=3).state_dict(), path)
    with pytest.raises(DataError, match=r"r18_3d\.pt: conv1\.weight has shape \(8, 1, 7, 7, 7\), this backbone needs"):
        build_backbone("resnet18", in_channels=1, width=8).load_pretrained(path)
    three = build_backbone("resnet18", in_channels=1, width=8, spatial_dims=3)
    assert three.load_pretrained(path) == []  # a 3D file loads as it is
