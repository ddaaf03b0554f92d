"""Retries and partial retrievals in the PACS round trip, through a relay (tests/relay.py: a real HTTP server
in the test process) in front of the test's real Orthanc: a server that answers 503 a few times is retried
with backoff until it answers (the attempts counted), and one that keeps failing gives a clear error; a
series whose transfer is cut short gives a clear error and nothing is stored on the archive."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

from attnseg.data.dicom_seg import EmptySegmentWarning
from attnseg.data.dicomweb import Credentials
from attnseg.errors import DataError
from attnseg.inference.pacs import PacsResult, predict_from_pacs
from attnseg.inference.predictor import Predictor
from tests.orthanc import PASSWORD, USER, Orthanc
from tests.relay import Rule, running_relay

GOOD = Credentials(user=USER, password=PASSWORD)
RETRIEVE = r"^GET /dicom-web/studies/[\d.]+/series/[\d.]+$"  # WADO-RS: one series' instances
STORE = r"^POST /dicom-web/studies$"  # STOW-RS
BACKOFF_S = 0.01  # the waits double: 0.01, 0.02, 0.04... s


def _predict(predictor: Predictor, url: str, study_uid: str, out: Path, **options: object) -> PacsResult:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", EmptySegmentWarning)
        return predict_from_pacs(
            predictor, url, study_uid, out, credentials=GOOD, progress=False, backoff_s=BACKOFF_S, **options
        )


def test_transient_503s_are_retried_until_the_server_answers(trained_model, orthanc: Orthanc, study, tmp_path):
    study_uid, folders = study
    before = orthanc.series_count(study_uid)
    rules = [Rule(RETRIEVE, fail=3), Rule(STORE, fail=2)]
    with running_relay(orthanc.root, rules) as relay:
        url = f"{relay.root}/dicom-web"
        result = _predict(Predictor([trained_model], device="cpu"), url, study_uid, tmp_path, store=True)
    assert result.stored and len(result.segs) == len(folders)
    retrieve, store = rules
    assert retrieve.seen == 3 + len(folders)  # three 503s, then one good answer per series
    assert store.seen == 2 + 1  # two 503s, then the one STOW request of all the SEGs
    assert orthanc.series_count(study_uid) == before + len(folders)  # the SEGs arrived, once each


def test_a_server_that_keeps_failing_gives_up_after_the_retries(trained_model, orthanc: Orthanc, study, tmp_path):
    study_uid, _ = study
    before = orthanc.series_count(study_uid)
    rules = [Rule(RETRIEVE, fail=1000)]
    with running_relay(orthanc.root, rules) as relay:
        url = f"{relay.root}/dicom-web"
        with pytest.raises(DataError, match=r"retrieving series [\d.]+: HTTP 503 after retries"):
            _predict(Predictor([trained_model], device="cpu"), url, study_uid, tmp_path, store=True, retries=2)
    assert rules[0].seen == 1 + 2  # the first attempt and two retries, then no more
    assert orthanc.series_count(study_uid) == before
    assert not list(tmp_path.rglob("*.seg.dcm"))


@pytest.mark.parametrize("cut", [0.5, 0.97])
def test_a_series_cut_short_is_an_error_and_nothing_is_stored(trained_model, orthanc: Orthanc, study, tmp_path, cut):
    study_uid, _ = study
    before = orthanc.series_count(study_uid)
    rules = [Rule(RETRIEVE, cut=cut), Rule(STORE)]
    with running_relay(orthanc.root, rules) as relay:
        url = f"{relay.root}/dicom-web"
        with pytest.raises(DataError, match=r"partial retrieval of series [\d.]+: the transfer broke off"):
            _predict(Predictor([trained_model], device="cpu"), url, study_uid, tmp_path, store=True, retries=1)
    assert rules[0].seen >= 1 and rules[1].seen == 0  # retrieval tried, no STOW request ever sent
    assert orthanc.series_count(study_uid) == before
    assert not list(tmp_path.rglob("*.seg.dcm")) and not list(tmp_path.rglob("*.dcm"))  # scratch removed too
