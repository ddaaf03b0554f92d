"""Prediction over folders in one process: failures, --skip-existing, background loading.
The same code under torchrun is tested in test_sharded.py."""

import os
import shutil

import numpy as np
import pytest

from attnseg.cli import main
from attnseg.data import read_image
from attnseg.errors import DataError
from attnseg.inference.batch import largest_first, predict_cases
from attnseg.inference.predictor import Predictor
from tests.fixtures import oblique_geometry, synthetic_case, write_dicom_series


@pytest.fixture
def scans(tiny_dataset, tmp_path):
    """The tiny dataset's 5 scans in a folder of their own."""
    folder = tmp_path / "scans"
    shutil.copytree(tiny_dataset / "imagesTr", folder)
    return folder


def _predict(model, scans, out, *extra):
    return main(["predict", "-m", str(model), "-i", str(scans), "-o", str(out), "--no-progress", *extra])


def _stats(folder):
    """name -> (inode, modification time in ns) of everything in ``folder``, hidden files included."""
    return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in sorted(folder.iterdir())}


def test_largest_first_is_the_claim_order():
    assert largest_first([10, 50, 20, 50, 5], [0, 1, 2, 3]) == [1, 3, 2, 0]  # 4 is not to do; ties by index


def test_a_failing_case_is_reported_and_the_others_are_written(trained_model, scans, tmp_path, capsys):
    good = (scans / "case_000_0000.nii.gz").read_bytes()
    (scans / "case_bad_0000.nii.gz").write_bytes(good[: len(good) // 2])  # a copy cut short
    assert _predict(trained_model, scans, tmp_path / "out") == 1
    captured = capsys.readouterr()
    assert "attnseg: case case_bad failed: " in captured.err  # at once, while the run goes on
    assert "wrote 5 mask(s)" in captured.out
    assert "1 case(s) FAILED:\n  case_bad: " in captured.out
    assert "case_bad_0000.nii.gz: cannot read NIfTI file" in captured.out
    masks = [f"case_{i:03d}.nii.gz" for i in range(5)]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [*masks, "qc.csv", "qc.json"]  # QC of the 5
    with pytest.raises(DataError, match=r"1 of 6 case\(s\) failed: case_bad: .*case_bad_0000\.nii\.gz"):
        Predictor([trained_model]).predict_files(scans, tmp_path / "library", progress=False)
    assert len(list((tmp_path / "library").iterdir())) == 5 + 2  # and qc.json, qc.csv


def test_a_rerun_with_skip_existing_writes_nothing(trained_model, scans, tmp_path, capsys):
    out = tmp_path / "out"
    assert _predict(trained_model, scans, out, "--probabilities") == 0
    before = _stats(out)
    capsys.readouterr()
    assert _predict(trained_model, scans, out, "--probabilities", "--skip-existing") == 0
    printed = capsys.readouterr().out
    assert printed.startswith("wrote 0 mask(s)") and "skipped 5 case(s) whose outputs were complete" in printed
    assert _stats(out) == before  # not one file written, replaced or left behind


def test_skip_existing_writes_only_the_missing_outputs(trained_model, scans, tmp_path):
    out = tmp_path / "out"
    assert _predict(trained_model, scans, out) == 0
    masks = {name: stat for name, stat in _stats(out).items() if not name.startswith("qc.")}  # QC: rewritten
    report = predict_cases(Predictor([trained_model]), scans, out, skip_existing=True, save_probabilities=True)
    assert report.predicted == 5 and report.written == [] and report.skipped == []
    assert {name: stat for name, stat in _stats(out).items() if name in masks} == masks  # masks untouched
    assert len(list(out.glob("*_probabilities.nii.gz"))) == 5


def test_outputs_in_the_way_stop_the_run_before_any_case(trained_model, scans, tmp_path, capsys):
    out = tmp_path / "out"
    assert _predict(trained_model, scans / "case_003_0000.nii.gz", out) == 0
    assert _predict(trained_model, scans, out) == 2
    error = capsys.readouterr().err
    assert "case_003.nii.gz exists; pass overwrite=True" in error and "--skip-existing" in error
    assert sorted(p.name for p in out.iterdir()) == ["case_003.nii.gz", "qc.csv", "qc.json"]  # the first run's


def test_background_loading_changes_nothing(trained_model, scans, tmp_path):
    """Every case through loader threads and the writer thread, or all in turn: the same files, and the
    same arrays as predict_image."""
    predictor = Predictor([trained_model])
    for workers in (0, 2):
        report = predict_cases(predictor, scans, tmp_path / f"w{workers}", num_workers=workers, progress=False)
        assert report.predicted == 5 and report.failures == []
    for name in os.listdir(tmp_path / "w0"):
        assert (tmp_path / "w0" / name).read_bytes() == (tmp_path / "w2" / name).read_bytes()
    mask, _ = predictor.predict_image(read_image(scans / "case_004_0000.nii.gz"))
    np.testing.assert_array_equal(read_image(tmp_path / "w2" / "case_004.nii.gz").array, mask)


def test_dicom_series_outputs_resume_too(trained_model, tmp_path):
    """A DICOM series mask counts as done once its folder holds its slices (it is renamed into place
    whole); an empty folder, as a killed write would never leave but a user might, is written into."""
    image, _ = synthetic_case((20, 18, 6), np.random.default_rng(3))
    for name in ("s1", "s2"):
        write_dicom_series(tmp_path / "dicom" / name, image.astype(np.int16), oblique_geometry())
    out = tmp_path / "out"
    (out / "s2").mkdir(parents=True)
    args = ["--format", "dicom", "--probabilities", "--skip-existing"]
    assert _predict(trained_model, tmp_path / "dicom" / "s1", out, *args[:3]) == 0
    before = _stats(out / "s1")
    inputs = [str(tmp_path / "dicom" / name) for name in ("s1", "s2")]
    report = predict_cases(Predictor([trained_model]), inputs, out, skip_existing=True, output_ending="dicom",
                           save_probabilities=True, progress=False)  # fmt: skip
    assert [p.name for p in report.written] == ["s2"] and report.skipped == ["s1"]
    assert _stats(out / "s1") == before and len(list((out / "s2").iterdir())) == 6
    assert main(["predict", "-m", str(trained_model), "-i", *inputs, "-o", str(out), *args]) == 0  # nothing to do
    assert _stats(out / "s1") == before
