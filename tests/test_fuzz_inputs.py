"""Broken files through every verb: `dataset check`, `train`, `predict`, `evaluate` and `export` must refuse
each with a clean error (non-zero exit, the file named, no traceback), whatever the format.

The verbs run in-process through ``attnseg.cli.main``, which turns attnseg's errors into one line and exit
status 2 (1 for `dataset check` and `evaluate` reports with problems); any other exception escapes main()
and fails the test with the library's traceback. The broken files come from tests/fuzz_files.py.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from attnseg.cli import main
from attnseg.data.io import write_image
from attnseg.model_dir import ModelDir
from tests import fuzz_files
from tests.fixtures import nnunet_builder

TRAIN = [
    "--no-progress", "--epochs", "1",
    "--set", "network.features=[4,8,16]", "--set", "data.batch_size=2", "--set", "training.iterations_per_epoch=1",
]  # fmt: skip
BROKEN = [(ending, name) for ending in fuzz_files.ENDINGS for name in fuzz_files.broken_names(ending)]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


@pytest.fixture(scope="module")
def model(workspace: Path) -> Path:
    """A tiny trained 2D model (on volumes) for predict and export."""
    dataset = nnunet_builder(workspace)(cases=3, shape=(16, 14, 6))
    output = workspace / "model"
    assert main(["train", "--dataset", str(dataset), "--output", str(output), "--fold", "all", *TRAIN]) == 0
    return output


def _dataset(root: Path, ending: str, cases: int = 2) -> Path:
    """An nnU-Net dataset in ``ending`` whose images match fuzz_files.good_image (2-D for PNG/TIFF)."""
    for i in range(cases):
        image, geometry = fuzz_files.good_image(ending, seed=i)
        label = (image > np.median(image)).astype(np.uint8)
        write_image(root / "imagesTr" / f"case_{i:03d}_0000{ending}", image, geometry)
        write_image(root / "labelsTr" / f"case_{i:03d}{ending}", label, geometry)
    spec = {"channel_names": {"0": "MR"}, "labels": {"background": 0, "organ": 1}, "numTraining": cases}
    (root / "dataset.json").write_text(json.dumps({**spec, "file_ending": ending}))
    return root


def _assert_clean_failure(capsys: pytest.CaptureFixture, status: int, named: Path | str) -> str:
    out, err = capsys.readouterr()
    text = out + err
    assert status != 0, text[-2000:]
    assert str(named) in text, f"{named} not named in:\n{text[-2000:]}"
    assert "Traceback" not in text
    return text


def _copy(source: Path, target: Path) -> None:
    """Copy an image file, with the data file of a MetaImage .mhd header."""
    shutil.copy(source, target)
    for raw in source.parent.glob(source.name.replace(".mhd", ".*raw")):
        shutil.copy(raw, target.parent / raw.name)


def _break(path: Path, content: bytes) -> None:
    path.write_bytes(content)
    if path.name.endswith(".mhd"):  # the header names its data file: keep it a broken *header*
        for raw in path.parent.glob(path.name[: -len(".mhd")] + ".*raw"):
            raw.unlink()


@pytest.mark.parametrize(("ending", "name"), BROKEN, ids=[f"{e}-{n}" for e, n in BROKEN])
def test_broken_image_through_every_verb(tmp_path, capsys, model, ending, name):
    content = fuzz_files.broken_files(ending, tmp_path)[name]
    dataset = _dataset(tmp_path / "dataset", ending)
    image = dataset / "imagesTr" / f"case_001_0000{ending}"
    _break(image, content)

    # dataset check: the report names the file; exit status 1
    _assert_clean_failure(capsys, main(["dataset", "check", str(dataset)]), image)
    # train: refused before anything is written
    status = main(["train", "--dataset", str(dataset), "--output", str(tmp_path / "run"), *TRAIN])
    _assert_clean_failure(capsys, status, image)
    # predict: the broken input named
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    _copy(image, inputs / image.name)
    status = main(["predict", "-m", str(model), "-i", str(inputs), "-o", str(tmp_path / "out"), "--no-progress"])
    _assert_clean_failure(capsys, status, inputs / image.name)
    # evaluate: a broken prediction, then a broken reference
    predictions = tmp_path / "predictions"
    predictions.mkdir()
    reference = dataset / "labelsTr" / f"case_001{ending}"
    _copy(dataset / "labelsTr" / f"case_000{ending}", predictions / f"case_000{ending}")
    _break(predictions / f"case_001{ending}", content)
    status = main(["evaluate", str(predictions), str(dataset), "--no-progress"])
    _assert_clean_failure(capsys, status, predictions / f"case_001{ending}")
    _copy(reference, predictions / f"case_001{ending}")
    _break(reference, content)
    _assert_clean_failure(capsys, main(["evaluate", str(predictions), str(dataset), "--no-progress"]), reference)


@pytest.mark.parametrize("ending", fuzz_files.ENDINGS)
def test_damaged_headers_never_give_a_traceback(tmp_path, capsys, ending):
    """Random byte flips may leave a valid file or not; either way no verb may crash."""
    for name, content in fuzz_files.damaged_files(ending, tmp_path).items():
        dataset = _dataset(tmp_path / name, ending)
        _break(dataset / "labelsTr" / f"case_000{ending}", content)
        main(["dataset", "check", str(dataset)])
        main(["train", "--dataset", str(dataset), "--output", str(tmp_path / name / "run"), *TRAIN])
        assert "Traceback" not in "".join(capsys.readouterr())


@pytest.mark.parametrize("damage", fuzz_files.DICOM_DAMAGE)
def test_broken_dicom_series_through_check_train_and_predict(tmp_path, capsys, model, damage):
    dataset = tmp_path / "paired"
    series = fuzz_files.broken_dicom_series(dataset / "images" / "case_000", damage)
    image, geometry = fuzz_files.good_image(".nrrd")
    write_image(dataset / "labels" / "case_000.nrrd", (image > 0).astype(np.uint8), geometry)
    _assert_clean_failure(capsys, main(["dataset", "check", str(dataset)]), series)
    status = main(["train", "--dataset", str(dataset), "--output", str(tmp_path / "run"), *TRAIN])
    _assert_clean_failure(capsys, status, series)
    status = main(["predict", "-m", str(model), "-i", str(series), "-o", str(tmp_path / "out"), "--no-progress"])
    _assert_clean_failure(capsys, status, series)


JSON_DAMAGE = {
    "zero_bytes": b"",
    "binary_garbage": bytes(range(256)) * 4,
    "truncated": b'{"name": "attention_unet", "kwa',
    "wrong_type": b"[1, 2, 3]",
    "missing_keys": b'{"unexpected": true}',
}


@pytest.mark.parametrize("damage", JSON_DAMAGE)
@pytest.mark.parametrize("file", [ModelDir.PLAN, ModelDir.NETWORK, ModelDir.LABELS, ModelDir.WEIGHTS])
def test_broken_model_directory_through_predict_and_export(tmp_path, capsys, model, file, damage):
    broken = tmp_path / "model"
    shutil.copytree(model, broken)
    (broken / file).write_bytes(JSON_DAMAGE[damage])
    scan = tmp_path / "scan.nii.gz"
    write_image(scan, *fuzz_files.good_image(".nii.gz"))
    status = main(["predict", "-m", str(broken), "-i", str(scan), "-o", str(tmp_path / "out"), "--no-progress"])
    _assert_clean_failure(capsys, status, broken / file)
    if file != ModelDir.LABELS:  # export takes the labels from the plan
        _assert_clean_failure(capsys, main(["export", "-m", str(broken), "--format", "torchscript"]), broken / file)


@pytest.mark.parametrize("damage", JSON_DAMAGE)
@pytest.mark.parametrize("file", ["dataset.json", "splits.json"])
def test_broken_dataset_json_and_splits_through_check_and_train(tmp_path, capsys, file, damage):
    dataset = _dataset(tmp_path / "dataset", ".nii.gz", cases=3)
    (dataset / file).write_bytes(JSON_DAMAGE[damage])
    if file == "dataset.json":
        _assert_clean_failure(capsys, main(["dataset", "check", str(dataset)]), dataset / file)
    status = main(["train", "--dataset", str(dataset), "--output", str(tmp_path / "run"), *TRAIN])
    _assert_clean_failure(capsys, status, dataset / file)
