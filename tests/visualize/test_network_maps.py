"""The maps `attnseg visualize` collects from a network, at the input's resolution and in the right place."""

import math

import pytest
import torch
from torch import nn

from attnseg.inference.volume import map_volume
from attnseg.networks import build_network
from attnseg.networks.outputs import GuidedAttentionOutput
from attnseg.visualize.network_maps import PREDICTION, MapChannels, stride_of, to_input_size


def test_stride_of():
    assert stride_of([5, 5], [5, 5]) == 1
    assert stride_of([3], [5]) == 2
    assert stride_of([2], [5]) == 4
    assert stride_of([10, 8], [37, 29]) == 4  # ceil(37/4) = 10, ceil(29/4) = 8
    with pytest.raises(ValueError, match="not a strided view"):
        stride_of([3], [100])


@pytest.mark.parametrize(("size", "stride"), [(37, 4), (29, 2), (16, 4)])
def test_each_map_voxel_lands_over_the_input_voxels_it_covers(size, stride):
    """A ramp map (value = map index) must read, at input voxel j, the map coordinate of j's centre:
    (j + 0.5) / stride - 0.5, wherever the map is not clamped at its borders."""
    cells = math.ceil(size / stride)
    ramp = torch.arange(cells, dtype=torch.float32).reshape(1, 1, cells, 1)
    resized = to_input_size(ramp, [size, 1])[0, 0, :, 0]
    assert resized.shape == (size,)
    expected = (torch.arange(size) + 0.5) / stride - 0.5
    interior = (expected >= 0) & (expected <= cells - 1)
    torch.testing.assert_close(resized[interior], expected[interior])


@torch.no_grad()
def test_attention_unet_gates_every_level_and_head():
    network = build_network("attention_unet", spatial_dims=2, out_channels=3, features=[4, 8, 16, 32]).eval()
    channels = MapChannels(network)
    x = torch.randn(2, 1, 37, 29)
    stacked = channels(x)
    layout = channels.layout
    assert layout.probabilities == [PREDICTION]
    assert layout.maps == [f"gate level{level} head{head}" for level in (2, 3) for head in (1, 2)]
    assert stacked.shape == (2, 3 + 4, 37, 29)
    assert layout.map_channels() == slice(3, 7)
    where = layout.slices()
    torch.testing.assert_close(stacked[:, where[PREDICTION]], network(x).softmax(1))
    alpha = network(x, return_attention=True).attention["level3"]  # (2, 2 heads, 10, 8): stride 4
    torch.testing.assert_close(stacked[:, where["gate level3 head2"]], to_input_size(alpha[:, 1:2], [37, 29]))
    assert float(stacked[:, 3:].min()) >= 0 and float(stacked[:, 3:].max()) <= 1  # α in (0, 1)


@torch.no_grad()
def test_plain_unet_has_no_maps():
    channels = MapChannels(build_network("unet", spatial_dims=2, out_channels=2, features=[4, 8, 16]).eval())
    assert channels(torch.randn(1, 1, 16, 16)).shape == (1, 2, 16, 16)
    assert channels.layout.maps == []


@torch.no_grad()
def test_guided_network_maps_per_step_scale_and_branch():
    network = build_network("ms_guided", out_channels=3, backbone_width=8, head_channels=8).eval()
    channels = MapChannels(network)
    x = torch.randn(1, 1, 70, 45)
    stacked = channels(x)
    layout = channels.layout
    kinds = ("position", "channel", "combined")
    assert layout.maps == [f"step{t} scale{s} {k}" for t in (1, 2) for s in range(1, 5) for k in kinds]
    assert layout.probabilities == [PREDICTION] + [f"scale{s} {PREDICTION}" for s in range(1, 5)]
    assert stacked.shape == (1, 5 * 3 + 24, 70, 45)
    assert layout.map_channels() == slice(15, 39)
    out = network(x, return_attention=True)
    where = layout.slices()
    features = out.attention["step2.scale3.guided"]  # (1, 8, 18, 12): A_s at stride 4
    rms = features.pow(2).mean(1, keepdim=True).sqrt()
    torch.testing.assert_close(stacked[:, where["step2 scale3 combined"]], to_input_size(rms, [70, 45]))
    torch.testing.assert_close(stacked[:, where["scale3 prediction"]], out.refined_logits[2].softmax(1))
    average = torch.stack(out.refined_logits).mean(0).softmax(1)
    torch.testing.assert_close(stacked[:, where[PREDICTION]], average)


class _Guided3D(nn.Module):
    """A stand-in for a 3D multi-scale guided network: the same output structure in 3D (two scales, one
    step, maps at stride 4), so the visualisation's generality is checked without building that network."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Conv3d(1, 4, 3, padding=1)
        self.heads = nn.ModuleList(nn.Conv3d(4, 2, 1) for _ in range(2))

    def forward(self, x: torch.Tensor, return_attention: bool = False) -> GuidedAttentionOutput:
        features = self.features(x)
        refined = [head(features) for head in self.heads]
        coarse = nn.functional.avg_pool3d(features, 4, ceil_mode=True)
        attention = {f"step1.scale{s}.{kind}": coarse * s for s in (1, 2) for kind in ("position", "channel", "guided")}
        return GuidedAttentionOutput(torch.stack(refined).mean(0), refined_logits=refined, attention=attention)


def test_a_3d_guided_network_works_by_sliding_window():
    channels = MapChannels(_Guided3D().eval())
    volume = torch.randn(1, 21, 18, 13)
    stacked = map_volume(channels, volume, spatial_dims=3, patch_size=(12, 12, 8), batch_size=2)
    assert stacked.shape == (3 * 2 + 6, 21, 18, 13)
    assert channels.layout.maps[-1] == "step1 scale2 combined"
    assert torch.isfinite(stacked).all()
    torch.testing.assert_close(stacked[:2].sum(0), torch.ones(21, 18, 13))  # blended probabilities still sum to 1
