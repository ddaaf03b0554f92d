"""The PACS round trip against a real Orthanc (DICOMweb plugin) started by the test: upload a study,
retrieve it over WADO-RS, predict, store the SEG back over STOW-RS, fetch it from Orthanc and compare it,
in physical space, with predict's NIfTI mask of the same series; every SEG passes dciodvfy. And the
failures: a server that is down, a study that does not exist, a series that is not an image, wrong
credentials (never echoed)."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest

from attnseg.data.dicom_seg import EmptySegmentWarning
from attnseg.data.dicomweb import Credentials, load_credentials
from attnseg.errors import ConfigError, DataError
from attnseg.inference.pacs import predict_from_pacs
from attnseg.inference.predictor import Predictor
from tests.data.test_dicom_seg import assert_seg_equals_nifti, assert_valid
from tests.orthanc import PASSWORD, USER, free_port

GOOD = Credentials(user=USER, password=PASSWORD)


def _predict(predictor: Predictor, orthanc, study_uid: str, out: Path, **options):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", EmptySegmentWarning)
        return predict_from_pacs(
            predictor, orthanc.dicomweb, study_uid, out, credentials=GOOD, progress=False, **options
        )


def test_round_trip_stores_segs_that_equal_the_nifti_masks(trained_model, orthanc, study, tmp_path):
    study_uid, folders = study
    predictor = Predictor([trained_model], device="cpu")
    result = _predict(predictor, orthanc, study_uid, tmp_path / "out", store=True)
    assert result.stored and len(result.segs) == 2
    local = predictor.predict_files(folders, tmp_path / "nifti", output_ending=".nii.gz", progress=False)
    by_series = {pydicom.dcmread(next(f.iterdir())).SeriesInstanceUID: n for f, n in zip(folders, local, strict=True)}
    for seg in result.segs:
        fetched = tmp_path / f"fetched_{seg.sop_instance_uid}.dcm"
        fetched.write_bytes(orthanc.download(seg.sop_instance_uid))  # the SEG as the archive stores it
        header = pydicom.dcmread(fetched, stop_before_pixels=True)
        source_series = header.ReferencedSeriesSequence[0].SeriesInstanceUID
        assert header.StudyInstanceUID == study_uid and header.SeriesInstanceUID == seg.series_instance_uid
        assert_seg_equals_nifti(fetched, by_series[source_series], predictor.labels)
        assert_valid(fetched)
    summary = result.summary(orthanc.dicomweb)
    assert all(seg.sop_instance_uid in summary and seg.series_instance_uid in summary for seg in result.segs)


def test_one_series_and_a_series_that_is_not_an_image(trained_model, orthanc, study, tmp_path):
    study_uid, folders = study
    predictor = Predictor([trained_model], device="cpu")
    series_uid = pydicom.dcmread(next(folders[0].iterdir())).SeriesInstanceUID
    result = _predict(predictor, orthanc, study_uid, tmp_path / "one", series_uid=series_uid, store=True)
    assert [seg.path.name for seg in result.segs] == [f"{series_uid}.seg.dcm"]
    seg_series = result.segs[0].series_instance_uid  # now on the server: a SEG series, not an image
    with pytest.raises(DataError, match=rf"series {seg_series} is not an image series \(SEG\)"):
        _predict(predictor, orthanc, study_uid, tmp_path / "two", series_uid=seg_series)
    assert not (tmp_path / "two").exists() or not any((tmp_path / "two").iterdir())


def test_clear_errors_and_credentials_never_echoed(trained_model, orthanc, study, tmp_path, monkeypatch):
    predictor = Predictor([trained_model], device="cpu")
    with pytest.raises(DataError, match=r"study 1\.2\.3\.4 not found"):
        _predict(predictor, orthanc, "1.2.3.4", tmp_path / "a")
    down = f"http://127.0.0.1:{free_port()}/dicom-web"
    with pytest.raises(DataError, match=r"the server does not answer \(ConnectionError, after retries\)"):
        predict_from_pacs(predictor, down, study[0], tmp_path / "b", retries=2, backoff_s=0.01, progress=False)
    wrong = Credentials(user=USER, password="wrong-password-xyz")
    with pytest.raises(DataError, match=r"HTTP 401: not authorised") as caught:
        predict_from_pacs(predictor, orthanc.dicomweb, study[0], tmp_path / "c", credentials=wrong, progress=False)
    assert "wrong-password-xyz" not in str(caught.value) and "wrong-password-xyz" not in repr(wrong)
    monkeypatch.setenv("ATTNSEG_DICOMWEB_CREDENTIALS", f"{USER}:{PASSWORD}")
    assert load_credentials() == GOOD
    (tmp_path / "token").write_text("Bearer abc\n")
    assert load_credentials(tmp_path / "token").token == "abc"
    (tmp_path / "bad").write_text("no-colon-secret")
    with pytest.raises(ConfigError, match=r"bad: expected 'user:password' or 'Bearer TOKEN'") as caught:
        load_credentials(tmp_path / "bad")
    assert "no-colon-secret" not in str(caught.value)
    assert not np.any([p.name.endswith(".seg.dcm") for p in tmp_path.rglob("*")])  # nothing written on failure


def test_command_line_round_trip_prints_the_new_uids(trained_model, orthanc, study, tmp_path, monkeypatch, capsys):
    from attnseg.cli import main

    monkeypatch.setenv("ATTNSEG_DICOMWEB_CREDENTIALS", f"{USER}:{PASSWORD}")
    args = ["predict", "-m", str(trained_model), "--dicomweb", orthanc.dicomweb, "--study", study[0]]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", EmptySegmentWarning)
        assert main([*args, "-o", str(tmp_path / "out"), "--store", "--no-progress"]) == 0
    printed = capsys.readouterr()
    segs = sorted((tmp_path / "out").glob("*.seg.dcm"))
    assert len(segs) == 2 and PASSWORD not in printed.out + printed.err
    for path in segs:
        header = pydicom.dcmread(path, stop_before_pixels=True)
        assert header.SOPInstanceUID in printed.out and header.SeriesInstanceUID in printed.out
        stored = pydicom.dcmread(io.BytesIO(orthanc.download(header.SOPInstanceUID)), stop_before_pixels=True)
        assert stored.SeriesInstanceUID == header.SeriesInstanceUID  # on the archive
