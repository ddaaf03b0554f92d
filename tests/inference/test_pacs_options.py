"""``attnseg predict`` with PACS options but no server URL (or a URL without its study, or both -i and a URL):
exit status 2 and one line that names the option missing or in the way, no traceback, and before any model is
loaded (the model given does not exist, so an error about it would mean the options were checked too late)."""

from __future__ import annotations

from pathlib import Path

import pytest

from attnseg.cli import main

UID = "1.2.826.0.1.3680043.8.498.1"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--study", UID], "--study given without --dicomweb URL: the PACS round trip needs the archive's DICOMweb"),
        (["--study", UID, "--series", UID, "--store"], "--study, --series, --store given without --dicomweb URL"),
        (["-i", "scans", "--store"], "--store given without --dicomweb URL"),
        (["--dicomweb-credentials", "secret.txt"], "--dicomweb-credentials given without --dicomweb URL"),
        (["--dicomweb", "http://127.0.0.1:9/dicom-web"], "--dicomweb needs --study STUDY_UID"),
        (["--dicomweb", "http://127.0.0.1:9/dicom-web", "--series", UID], "--dicomweb needs --study STUDY_UID"),
        (["--dicomweb", "http://127.0.0.1:9/dicom-web", "--study", UID, "-i", "scans"], "not both"),
        ([], "give either -i INPUT or --dicomweb URL --study UID"),
    ],
    ids=["study", "study_series_store", "input_and_store", "credentials", "no_study", "series_only", "both", "none"],
)
def test_pacs_options_without_their_url_name_what_is_missing(tmp_path: Path, capsys, options, message):
    argv = ["predict", "-m", str(tmp_path / "no_model"), "-o", str(tmp_path / "out"), *options]
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("attnseg: error: ") and message in captured.err, captured.err
    assert "Traceback" not in captured.err and "no_model" not in captured.err
    assert not (tmp_path / "out").exists()
