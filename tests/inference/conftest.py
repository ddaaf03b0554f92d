"""A trained model directory shared by the inference tests: a tiny 2D Attention U-Net trained for two
short epochs on a tiny oblique, anisotropic nnU-Net dataset through `attnseg train`; and for the PACS
tests, a real Orthanc (one per test module) holding a study of two series."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest

from attnseg.cli import main
from tests.dicom_series import write_case
from tests.fixtures import nnunet_builder, oblique_geometry
from tests.orthanc import Orthanc, running_orthanc

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


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Orthanc]:
    """A real Orthanc with DICOMweb on a free port, for the tests of one module."""
    with running_orthanc(tmp_path_factory.mktemp("orthanc")) as server:
        yield server


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory, orthanc: Orthanc) -> tuple[str, list[Path]]:
    """One study of two series (oblique, reversed slice order) uploaded to Orthanc; (study UID, folders)."""
    root = tmp_path_factory.mktemp("study")
    study_uid, frame = pydicom.uid.generate_uid(), pydicom.uid.generate_uid()
    folders = []
    for number, kind in enumerate(("oblique", "reversed"), start=1):
        folder = write_case(root / kind, kind)
        series_frame = frame if number == 1 else pydicom.uid.generate_uid()
        for path in sorted(folder.iterdir()):
            ds = pydicom.dcmread(path)
            ds.StudyInstanceUID, ds.SeriesNumber = study_uid, number
            ds.FrameOfReferenceUID = series_frame
            ds.save_as(path, enforce_file_format=True)
            orthanc.upload(path)
        folders.append(folder)
    return study_uid, folders
