"""``evaluate`` with DICOM SEG files on either side: a SEG prediction against NIfTI references, NIfTI
predictions against SEG references, and SEG against SEG give exactly the metrics of the NIfTI pair, although
the NIfTI files are stored in another voxel order (RAS) than the SEGs' frames (the DICOM series' order): the
comparison is made in physical space, on one grid. A SEG made from another series is refused, named."""

from __future__ import annotations

import dataclasses
import json
import warnings
from pathlib import Path

import numpy as np
import pytest

from attnseg.cli import main
from attnseg.data.dicom import read_dicom_series
from attnseg.data.dicom_seg import Algorithm, EmptySegmentWarning, write_seg
from attnseg.data.io import write_image
from attnseg.data.orientation import reorientation
from attnseg.evaluate import evaluate_folders
from tests.dicom_series import write_case

LABELS = {"background": 0, "liver": 1, "lesion": 2}
ALGORITHM = Algorithm("attnseg", "9.9", "tiny", ("ab" * 32,))
KINDS = ("reversed", "oblique")  # slices against row x column; an oblique grid


def _masks(shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Reference and prediction (1, X, Y, Z): asymmetric along every axis, the prediction shifted and
    with a false positive, so that any flip, transpose or offset changes the metrics."""
    x, y, z = np.indices(shape)
    reference = np.zeros(shape, np.uint8)
    reference[(x < shape[0] // 2) & (y > 2) & (z >= 1)] = 1
    reference[(x > shape[0] - 6) & (y < 5) & (z <= 2)] = 2
    prediction = np.roll(reference, 1, axis=0)
    prediction[(x == 2) & (y == 1)] = 2
    return reference[None], prediction[None]


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """nifti_pred/, nifti_ref/ (RAS voxel order), seg_pred/, seg_ref/ (on the series), one case per kind."""
    root = tmp_path_factory.mktemp("evaluate_seg")
    out = {name: root / name for name in ("nifti_pred", "nifti_ref", "seg_pred", "seg_ref")}
    for kind in KINDS:
        image = read_dicom_series(write_case(root / "series" / kind, kind))
        reference, prediction = _masks(image.spatial_shape)
        ras = reorientation(image.geometry, "RAS")
        assert not ras.identity  # the NIfTI files really are in another voxel order than the SEGs
        ras_geometry = ras.geometry(image.geometry, image.spatial_shape)
        for side, mask in (("ref", reference), ("pred", prediction)):
            write_image(out[f"nifti_{side}"] / f"{kind}.nii.gz", ras.apply(mask), ras_geometry)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", EmptySegmentWarning)
                write_seg(out[f"seg_{side}"] / f"{kind}.seg.dcm", mask, image, LABELS, ALGORITHM)
    (root / "labels.json").write_text(json.dumps(LABELS))
    out["labels"] = root / "labels.json"
    out["root"] = root
    return out


def _metrics(predictions: Path, reference: Path, labels: dict[str, int] | None = LABELS) -> dict:
    report, problems = evaluate_folders(predictions, reference, labels, progress=False)
    assert problems == []
    return {case.case_id: {n: dataclasses.asdict(m) for n, m in case.metrics.items()} for case in report.cases}


def _assert_same(got: dict, expected: dict) -> None:
    """Equal metrics; volumes to 1e-6 relative, NIfTI storing its spacing as float32."""
    assert got.keys() == expected.keys()
    for case, classes in expected.items():
        for name, metrics in classes.items():
            numbers = {k: v for k, v in metrics.items() if not isinstance(v, str)}
            words = {k: v for k, v in metrics.items() if isinstance(v, str)}
            assert {k: got[case][name][k] for k in words} == words, (case, name)
            assert {k: got[case][name][k] for k in numbers} == pytest.approx(numbers, rel=1e-6, nan_ok=True)


@pytest.mark.parametrize(
    ("predictions", "reference"),
    [("seg_pred", "nifti_ref"), ("nifti_pred", "seg_ref"), ("seg_pred", "seg_ref")],
)
def test_seg_on_either_side_gives_the_nifti_pair_metrics(folders, predictions, reference):
    expected = _metrics(folders["nifti_pred"], folders["nifti_ref"])
    dice = expected["oblique"]["liver"]["dice"]
    assert 0.5 < dice < 1.0 and expected["reversed"]["lesion"]["fp"] > 0  # a real difference to measure
    _assert_same(_metrics(folders[predictions], folders[reference]), expected)


def test_without_labels_segments_are_taken_by_number(folders):
    by_number = _metrics(folders["seg_pred"], folders["nifti_ref"], labels=None)
    expected = _metrics(folders["nifti_pred"], folders["nifti_ref"], labels=None)
    assert set(expected["oblique"]) == {"label_1", "label_2"}  # foreground classes
    _assert_same(by_number, expected)


def test_cli_evaluates_seg_references(folders, capsys):
    out = folders["root"] / "reports"
    argv = ["evaluate", str(folders["nifti_pred"]), str(folders["seg_ref"]), "--labels", str(folders["labels"])]
    assert main([*argv, "-o", str(out), "--no-progress", "--overlays"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    expected = _metrics(folders["nifti_pred"], folders["nifti_ref"])
    mean = np.mean([expected[kind]["liver"]["dice"] for kind in KINDS])
    assert summary["mean"]["1"]["Dice"] == pytest.approx(mean)
    assert sorted(p.name for p in (out / "overlays").iterdir()) == [f"{kind}_overlay.png" for kind in sorted(KINDS)]
    capsys.readouterr()


def test_a_seg_from_another_series_is_refused_naming_it(folders, tmp_path):
    swapped = tmp_path / "swapped"
    swapped.mkdir()
    for kind, other in zip(KINDS, reversed(KINDS), strict=True):
        (swapped / f"{kind}.seg.dcm").write_bytes((folders["seg_pred"] / f"{other}.seg.dcm").read_bytes())
    report, problems = evaluate_folders(swapped, folders["nifti_ref"], LABELS, progress=False)
    assert report is None and len(problems) == 2
    assert all("seg.dcm: the SEG's frames do not lie on the scan's grid" in p for p in problems), problems


def test_a_segment_that_is_not_a_class_is_listed_before_anything_is_evaluated(folders, tmp_path, capsys):
    """The model's labels (the SEGs' segments: liver, lesion) against classes that call the lesion tumour: each
    SEG is named in the up-front list (exit 1), not one failure mid-run."""
    labels = tmp_path / "labels.json"
    labels.write_text(json.dumps({"background": 0, "liver": 1, "tumour": 2}))
    argv = ["evaluate", str(folders["seg_pred"]), str(folders["nifti_ref"]), "--labels", str(labels)]
    assert main([*argv, "-o", str(tmp_path / "out"), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "2 problem(s); nothing was evaluated" in err
    for kind in KINDS:
        seg = folders["seg_pred"] / f"{kind}.seg.dcm"
        assert f"{seg}: segment 2 'lesion' is not a class of the labels (background, liver, tumour)" in err, err
    assert not (tmp_path / "out").exists()
