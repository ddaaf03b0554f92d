"""Archives that answer a search a page at a time: through a relay that adds ``limit=1`` to every QIDO-RS
search (tests/relay.py) in front of the test's real Orthanc, every series of the study and every instance of
each is still found and predicted; an Orthanc whose search caps its results (LimitFindInstances) gives an
error that says so, not a 'partial retrieval'."""

from __future__ import annotations

import warnings
from pathlib import Path

import pydicom
import pytest

from attnseg.data.dicom_seg import EmptySegmentWarning
from attnseg.data.dicomweb import Credentials
from attnseg.errors import DataError
from attnseg.inference.pacs import PacsResult, predict_from_pacs
from attnseg.inference.predictor import Predictor
from tests.orthanc import PASSWORD, USER, Orthanc, running_orthanc
from tests.relay import Rule, running_relay

GOOD = Credentials(user=USER, password=PASSWORD)
SEARCH = r"^GET /dicom-web/studies/[\d.]+/series(/[\d.]+/instances)?(\?|$)"  # QIDO-RS: series, instances


def _predict(predictor: Predictor, url: str, study_uid: str, out: Path) -> PacsResult:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", EmptySegmentWarning)
        return predict_from_pacs(predictor, url, study_uid, out, credentials=GOOD, progress=False, backoff_s=0.01)


def test_a_study_answered_one_result_per_page_is_found_whole(trained_model, orthanc: Orthanc, study, tmp_path):
    study_uid, folders = study
    rules = [Rule(SEARCH, limit=1)]
    with running_relay(orthanc.root, rules) as relay:
        result = _predict(Predictor([trained_model], device="cpu"), f"{relay.root}/dicom-web", study_uid, tmp_path)
    assert len(result.segs) == len(folders) == 2  # both series, though each answer held one
    for seg in result.segs:
        referenced = pydicom.dcmread(seg.path, stop_before_pixels=True).ReferencedSeriesSequence[0]
        assert len(referenced.ReferencedInstanceSequence) == 6  # every slice, though listed one per page
    # pages asked for: the series 1, 2 and an empty third; each series' instances 1..6 and an empty seventh
    assert rules[0].seen == 3 + 2 * 7


def test_an_archive_that_caps_its_search_results_is_named(trained_model, study, tmp_path):
    study_uid, folders = study
    with running_orthanc(tmp_path / "capped", LimitFindInstances=2) as capped:
        for path in sorted(folders[0].iterdir()):
            capped.upload(path)
        capped_search = r"has 6 instance\(s\) but the archive's search lists [0-5] .*LimitFindInstances"
        with pytest.raises(DataError, match=capped_search):
            _predict(Predictor([trained_model], device="cpu"), capped.dicomweb, study_uid, tmp_path / "out")
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").rglob("*.dcm"))  # nothing retrieved
