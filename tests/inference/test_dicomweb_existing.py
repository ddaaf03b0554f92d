"""A PACS prediction into an output that already holds the study's SEGs, against the test's real Orthanc
through a relay that counts the requests (tests/relay.py): without --overwrite the run is refused after
the one search for the study's series, having listed and retrieved nothing (it used to download every
instance of the study first); --skip-existing retrieves only the series whose SEG is missing (and stores
the kept SEGs with the new one); --overwrite retrieves every series again."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

from attnseg.cli import main
from attnseg.data.dicom_seg import EmptySegmentWarning
from attnseg.data.dicomweb import Credentials
from attnseg.errors import OutputExistsError
from attnseg.inference.pacs import PacsResult, predict_from_pacs
from attnseg.inference.predictor import Predictor
from tests.orthanc import PASSWORD, USER, Orthanc
from tests.relay import Rule, running_relay

GOOD = Credentials(user=USER, password=PASSWORD)
RETRIEVE = r"^GET /dicom-web/studies/[\d.]+/series/[\d.]+$"  # WADO-RS: one series' instances
SEARCH = r"^GET /dicom-web/studies/[\d.]+/series(\?|$)"  # QIDO-RS: the study's series
LIST = r"^GET /dicom-web/studies/[\d.]+/series/[\d.]+/instances"  # QIDO-RS: one series' instances
STORE = r"^POST /dicom-web/studies$"  # STOW-RS


def _predict(predictor: Predictor, url: str, study_uid: str, out: Path, **options: object) -> PacsResult:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", EmptySegmentWarning)
        return predict_from_pacs(
            predictor, url, study_uid, out, credentials=GOOD, progress=False, backoff_s=0.01, **options
        )


def _files(folder: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir())}


def test_a_run_into_existing_segs_is_refused_before_any_retrieval(
    trained_model, orthanc: Orthanc, study, tmp_path, monkeypatch, capsys
):
    study_uid, folders = study
    out = tmp_path / "out"
    first = _predict(Predictor([trained_model], device="cpu"), orthanc.dicomweb, study_uid, out)
    assert len(first.segs) == len(folders) == 2
    before = _files(out)
    retrieve, search, listing = rules = [Rule(RETRIEVE), Rule(SEARCH), Rule(LIST)]
    monkeypatch.setenv("ATTNSEG_DICOMWEB_CREDENTIALS", f"{USER}:{PASSWORD}")
    with running_relay(orthanc.root, rules) as relay:
        url = f"{relay.root}/dicom-web"
        argv = ["predict", "-m", str(trained_model), "--dicomweb", url, "--study", study_uid, "-o", str(out)]
        assert main([*argv, "--no-progress"]) == 2
        message = capsys.readouterr().err
        assert f"{out / first.segs[0].path.name} exists; pass overwrite=True (--overwrite" in message, message
        assert "(and 1 more); or pass skip_existing=True (--skip-existing)" in message, message
        assert (retrieve.seen, search.seen, listing.seen) == (0, 2, 0)  # one search (and its empty 2nd page)

        first.segs[0].path.write_bytes(b"not a SEG")  # a damaged output: --skip-existing alone refuses it too
        with pytest.raises(OutputExistsError, match=r"exists but is not a DICOM Segmentation file; delete it"):
            _predict(Predictor([trained_model], device="cpu"), url, study_uid, out, skip_existing=True)
        assert (retrieve.seen, search.seen, listing.seen) == (0, 4, 0)
    assert _files(out).keys() == before.keys()  # nothing added (no scratch folder left), nothing replaced
    assert _files(out)[first.segs[1].path.name] == before[first.segs[1].path.name]


def test_skip_existing_retrieves_only_the_missing_series_and_overwrite_every_one(
    trained_model, orthanc: Orthanc, study, tmp_path
):
    study_uid, _ = study
    out = tmp_path / "out"
    predictor = Predictor([trained_model], device="cpu")
    missing, kept = (seg.path for seg in _predict(predictor, orthanc.dicomweb, study_uid, out).segs)
    missing.unlink()
    series_before = orthanc.series_count(study_uid)
    retrieve, store = rules = [Rule(RETRIEVE), Rule(STORE)]
    with running_relay(orthanc.root, rules) as relay:
        url = f"{relay.root}/dicom-web"
        result = _predict(predictor, url, study_uid, out, skip_existing=True, store=True)
        assert retrieve.seen == 1 and [seg.path for seg in result.segs] == [missing] and result.kept == [kept]
        assert orthanc.series_count(study_uid) == series_before + 2  # the kept SEG was stored with the new one
        assert "1 complete SEG(s) kept" in result.summary(url) and kept.name in result.summary(url)

        again = _predict(predictor, url, study_uid, out, skip_existing=True, store=True)
        assert retrieve.seen == 1 and again.segs == [] and sorted(again.kept) == sorted([missing, kept])
        assert store.seen == 2 and orthanc.series_count(study_uid) == series_before + 2  # stored again: no change

        replaced = _predict(predictor, url, study_uid, out, overwrite=True)
        assert retrieve.seen == 1 + 2 and sorted(seg.path for seg in replaced.segs) == sorted([missing, kept])
