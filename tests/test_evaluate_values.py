"""``attnseg evaluate`` refuses masks that hold values which are not classes, listing each file, its stray
values and their voxel counts with the other problems (exit 1, nothing written): metrics count such voxels
as background, so a stray 7, or a model trained with another label numbering, would score quietly wrong. A
class absent from some cases is no problem."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from attnseg.cli import main
from attnseg.data import write_image
from attnseg.data.geometry import Geometry

GEOMETRY = Geometry.create([1.0, 1.0, 1.0], [0.0, 0.0, 0.0])
LABELS = {"background": 0, "liver": 2, "tumour": 5}  # dataset.json's: not numbered 0, 1, 2


def _mask(liver: int = 2, tumour: int | None = 5) -> np.ndarray:
    """(1, 6, 6, 6): ``liver`` on a 3x3x3 cube (27 voxels), ``tumour`` on a 2x2x2 cube (8 voxels) or none."""
    mask = np.zeros((1, 6, 6, 6), np.uint8)
    mask[0, :3, :3, :3] = liver
    if tumour is not None:
        mask[0, 4:, 4:, 4:] = tumour
    return mask


def _write(folder: Path, masks: dict[str, np.ndarray]) -> Path:
    for case, mask in masks.items():
        write_image(folder / f"{case}.nii.gz", mask, GEOMETRY)
    return folder


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    """data/Dataset: labels 0/2/5 in dataset.json; case b has no tumour (a class absent from a case)."""
    root = tmp_path / "data" / "Dataset"
    _write(root / "labelsTr", {"a": _mask(), "b": _mask(tumour=None)})
    (root / "dataset.json").write_text(json.dumps({"labels": LABELS, "channel_names": {"0": "CT"}}))
    return root


def _evaluate(pred: Path, reference: Path, *options: str) -> int:
    return main(["evaluate", str(pred), str(reference), "-o", str(pred / "out"), "--no-progress", *options])


def test_a_class_absent_from_a_case_is_no_problem(dataset, tmp_path):
    """b's prediction has a tumour voxel its reference lacks: a false positive of a class, scored (Dice 0)."""
    b = _mask(tumour=None)
    b[0, 5, 5, 5] = 5
    pred = _write(tmp_path / "pred", {"a": _mask(), "b": b})
    assert _evaluate(pred, dataset) == 0
    summary = json.loads((pred / "out" / "summary.json").read_text())
    assert summary["labels"] == {"liver": 2, "tumour": 5}
    assert summary["mean"]["2"]["Dice"] == 1.0 and summary["mean"]["5"]["Dice"] == 0.5  # a: 1, b: 0


def test_a_stray_value_in_a_prediction_is_listed(dataset, tmp_path, capsys):
    a = _mask()
    a[0, 5, 0, 0] = 7
    pred = _write(tmp_path / "pred", {"a": a, "b": _mask(tumour=None)})
    assert _evaluate(pred, dataset) == 1
    err = capsys.readouterr().err
    assert "attnseg: error: 1 problem(s); nothing was evaluated:" in err
    assert f"{pred / 'a.nii.gz'}: value 7 (1 voxel) is not a class (0 background, 2 liver, 5 tumour)" in err, err
    assert not (pred / "out").exists()


@pytest.mark.parametrize("workers", ["0", "2"])
def test_a_prediction_numbered_otherwise_is_refused(dataset, tmp_path, capsys, workers):
    """A model trained with liver 1 and tumour 2: its 1s are no class (its 2s are liver's value)."""
    pred = _write(tmp_path / "pred", {"a": _mask(liver=1, tumour=2), "b": _mask(liver=1, tumour=None)})
    assert _evaluate(pred, dataset, "--num-workers", workers) == 1
    problems = [line.strip() for line in capsys.readouterr().err.splitlines()[1:]]
    assert problems == [
        f"{pred / case}.nii.gz: value 1 (27 voxels) is not a class (0 background, 2 liver, 5 tumour)"
        for case in ("a", "b")
    ]


def test_a_stray_value_in_a_reference_is_listed(dataset, tmp_path, capsys):
    reference = _mask()
    reference[0, 0, 5, 0], reference[0, 0, 5, 1] = 3, 9
    reference[0, 0, 4, 0] = 9
    write_image(dataset / "labelsTr" / "a.nii.gz", reference, GEOMETRY, overwrite=True)
    pred = _write(tmp_path / "pred", {"a": _mask(), "b": _mask(tumour=None)})
    assert _evaluate(pred, dataset) == 1
    err = capsys.readouterr().err
    assert f"{dataset / 'labelsTr' / 'a.nii.gz'}: values 3 (1 voxel), 9 (2 voxels) are not classes (0 background" in err


def test_without_a_class_list_the_references_values_are_the_classes(tmp_path, capsys):
    """No dataset.json: the classes are the values the references hold, all of them together (b's tumour
    false positive is a class a's reference holds); a value no reference holds is refused, --labels named."""
    ref = _write(tmp_path / "ref", {"a": _mask(), "b": _mask(tumour=None)})
    b = _mask(tumour=None)
    b[0, 5, 5, 5] = 5
    pred = _write(tmp_path / "pred", {"a": _mask(), "b": b})
    assert _evaluate(pred, ref) == 0
    assert json.loads((pred / "out" / "summary.json").read_text())["labels"] == {"label_2": 2, "label_5": 5}
    capsys.readouterr()

    numbered = _write(tmp_path / "numbered", {"a": _mask(liver=1, tumour=2), "b": _mask(liver=1, tumour=None)})
    assert _evaluate(numbered, ref) == 1
    err = capsys.readouterr().err
    assert (
        f"{numbered / 'a.nii.gz'}: value 1 (27 voxels) is not a class (no class list: the values the references "
        "hold, 0, 2, 5; if it is a class that no reference holds, name the classes with --labels)"
    ) in err, err
