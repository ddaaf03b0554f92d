import math

import pytest
import torch
from safetensors.torch import save_file

from attnseg.errors import DataError
from attnseg.networks.backbones import BACKBONES, adapt_first_conv, build_backbone
from attnseg.networks.utils import count_parameters

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
