"""A trained model directory shared by the inference tests: a tiny 2D Attention U-Net trained for two
short epochs on a tiny oblique, anisotropic nnU-Net dataset through `attnseg train`."""

from __future__ import annotations

from pathlib import Path

import pytest

from attnseg.cli import main
from tests.fixtures import nnunet_builder, oblique_geometry

TINY = [
    "--set", "network.features=[4,8,16]",
    "--set", "data.batch_size=4",
    "--set", "training.iterations_per_epoch=3",
    "--set", "training.val_every=1",
    "--set", "training.amp=off",  # fp32 every run: a timed bf16/fp32 choice made tests compare unlike numbers
]  # fmt: skip


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return nnunet_builder(tmp_path_factory.mktemp("data"))(
        cases=5, shape=(20, 18, 6), geometry=oblique_geometry(), name="Dataset002_Oblique"
    )


@pytest.fixture(scope="session")
def trained_model(tmp_path_factory: pytest.TempPathFactory, tiny_dataset: Path) -> Path:
    output = tmp_path_factory.mktemp("runs") / "tiny"
    args = ["train", "--dataset", str(tiny_dataset), "--output", str(output), "--epochs", "2", "--no-progress"]
    assert main([*args, *TINY]) == 0
    return output
