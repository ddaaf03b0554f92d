"""The training step names a batch that batch normalisation cannot train on, instead of torch's traceback."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from attnseg.errors import ConfigError
from attnseg.runtime import Runtime
from attnseg.training.step import TrainStep


def _step(model: nn.Module) -> TrainStep:
    loss = nn.MSELoss()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    return TrainStep(
        model, lambda out, label: loss(out.flatten(), label.flatten()), optimizer, Runtime("cpu", "contiguous")
    )


def _deepest_one_voxel() -> nn.Module:
    """A network whose deepest map is one voxel per channel, normalised by batch norm (as a ResNet's at 32^3)."""
    return nn.Sequential(nn.Conv3d(1, 2, 1), nn.AdaptiveAvgPool3d(1), nn.BatchNorm3d(2))


def test_a_batch_of_one_on_a_one_voxel_map_is_refused_saying_what_to_change():
    with pytest.raises(ConfigError, match=r"batch of \(1, 1, 4, 4, 4\).*batch of 2 or more.*larger patch"):
        _step(_deepest_one_voxel())(torch.randn(1, 1, 4, 4, 4), torch.zeros(2))


def test_a_batch_of_two_trains():
    loss = _step(_deepest_one_voxel())(torch.randn(2, 1, 4, 4, 4), torch.zeros(4))
    assert torch.isfinite(loss)


def test_other_value_errors_pass_through():
    class Broken(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            raise ValueError("something else")

    with pytest.raises(ValueError, match="something else") as caught:
        _step(nn.Sequential(nn.Conv3d(1, 1, 1), Broken()))(torch.randn(1, 1, 2, 2, 2), torch.zeros(1))
    assert not isinstance(caught.value, ConfigError)
