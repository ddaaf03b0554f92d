"""Shared test set-up: deterministic seeds and small CPU workloads."""

from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from attnseg.data.geometry import Geometry
from tests.fixtures import nnunet_builder, oblique_geometry

# Tests use small tensors, where one thread is as fast as two and immune to oversubscription when
# other processes share the cores (two OpenMP threads on a busy 2-core machine can be 50x slower).
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture
def oblique() -> Geometry:
    """An oblique, anisotropic grid with an origin that is not float32-representable."""
    return oblique_geometry()


@pytest.fixture
def make_nnunet(tmp_path: Path) -> Callable[..., Path]:
    """Build a tiny nnU-Net v2 raw dataset in tmp_path; returns its folder."""
    return nnunet_builder(tmp_path)
