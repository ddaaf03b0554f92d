"""Tiny trained models of both families (through `attnseg train`, a few seconds each) on a tiny oblique,
anisotropic dataset, shared by the visualisation and report tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from attnseg.cli import main
from tests.fixtures import nnunet_builder, oblique_geometry

# training.amp=off: fp32 every run, as the tests' hand computations (a timed choice could pick bf16)
SHORT = ["--epochs", "1", "--no-progress", "--set", "training.val_every=1", "--set", "training.amp=off"]
TINY_UNET = [
    "--set",
    "network.features=[4,8,16]",
    "--set",
    "data.batch_size=4",
    "--set",
    "training.iterations_per_epoch=3",
]
TINY_GUIDED = [
    "--network", "ms_guided",
    "--set", "network.backbone_width=8",
    "--set", "network.head_channels=8",
    "--set", "data.batch_size=2",
    "--set", "training.iterations_per_epoch=2",
]  # fmt: skip


@pytest.fixture(scope="session")
def scans(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return nnunet_builder(tmp_path_factory.mktemp("data"))(
        cases=4, shape=(20, 18, 6), geometry=oblique_geometry(), name="Dataset003_Visual"
    )


def _train(tmp_path_factory: pytest.TempPathFactory, scans: Path, name: str, *options: str) -> Path:
    output = tmp_path_factory.mktemp("runs") / name
    assert main(["train", "--dataset", str(scans), "--output", str(output), *SHORT, *options]) == 0
    return output


@pytest.fixture(scope="session")
def gates_2d(tmp_path_factory, scans) -> Path:
    return _train(tmp_path_factory, scans, "gates_2d", *TINY_UNET)


@pytest.fixture(scope="session")
def gates_3d(tmp_path_factory, scans) -> Path:
    return _train(tmp_path_factory, scans, "gates_3d", "--spatial-dims", "3", *TINY_UNET)


@pytest.fixture(scope="session")
def guided_2d(tmp_path_factory, scans) -> Path:
    return _train(tmp_path_factory, scans, "guided_2d", *TINY_GUIDED)


@pytest.fixture(scope="session")
def plain_unet(tmp_path_factory, scans) -> Path:
    return _train(tmp_path_factory, scans, "unet", "--network", "unet", *TINY_UNET)


@pytest.fixture(scope="session")
def run_folder(tmp_path_factory, scans, gates_2d) -> Path:
    """A run folder as the docs describe it: model/, metrics/ (evaluate -o ... --overlays), attention/."""
    import shutil

    root = tmp_path_factory.mktemp("run") / "run"
    shutil.copytree(gates_2d, root / "model")
    predictions = root / "predictions"
    assert (
        main(
            [
                "predict",
                "-m",
                str(root / "model"),
                "-i",
                str(scans / "imagesTr"),
                "-o",
                str(predictions),
                "--no-progress",
            ]
        )
        == 0
    )
    evaluate = ["evaluate", str(predictions), str(scans), "-o", str(root / "metrics"), "--overlays", "--no-progress"]
    assert main(evaluate) == 0
    scan = scans / "imagesTr" / "case_000_0000.nii.gz"
    assert (
        main(["visualize", "-m", str(root / "model"), "-i", str(scan), "-o", str(root / "attention"), "--count", "2"])
        == 0
    )
    return root
