"""The report in a real browser: headless Chromium from the Debian packages (CI installs them in .ci/run)
opens it with every network lookup failing, and must show the metrics table and every picture, log no
console error, render a screenshot that is not blank, and leave no process behind."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from attnseg.visualize.report import write_report
from tests.processes import REPO, run_with_stack_dump

HERE = Path(__file__).resolve().parent
BROWSER = (Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver"))


def _browser_or_skip() -> None:
    """CI (ATTNSEG_REQUIRE_BROWSER=1, set by .ci/run) must have the browser; elsewhere its absence skips."""
    missing = [str(p) for p in BROWSER if not p.exists()]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("selenium (the dev extra)")
    if missing and os.environ.get("ATTNSEG_REQUIRE_BROWSER") == "1":
        pytest.fail(f"the browser test needs {', '.join(missing)}: apt-get install -y chromium chromium-driver")
    if missing:
        pytest.skip(f"needs {', '.join(missing)} (apt-get install -y chromium chromium-driver)")


def _session_members(session: int) -> list[int]:
    """Processes still in the session the check ran in (the browser and its driver must be gone)."""
    members = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[3]) == session and fields[0] != "Z":
                members.append(int(entry.name))
    return members


def test_report_opens_in_headless_chromium(run_folder, tmp_path):
    _browser_or_skip()
    page = write_report(run_folder, tmp_path / "report.html")
    screenshot = tmp_path / "screenshot.png"
    command = [sys.executable, str(HERE / "browser_check.py"), str(page), str(screenshot)]
    env = {**os.environ, "PYTHONPATH": str(REPO), "SE_OFFLINE": "true"}
    finished = run_with_stack_dump(command, timeout=180, env=env)
    assert finished.returncode == 0, finished.stderr[-4000:]
    result = json.loads(finished.stdout.strip().splitlines()[-1])

    errors = [entry for entry in result["console"] if entry["level"] in ("SEVERE", "ERROR")]
    assert errors == [], errors
    assert result["title"] == "attnseg report: run"
    assert result["metrics_table"]
    assert [row.split()[0] for row in result["metrics_rows"]] == ["organ", "lesion", "foreground"]
    assert len(result["images"]) == 1 + 4 + 1 and all(result["images"])  # curves, overlays, attention

    with Image.open(screenshot) as shot:
        pixels = np.asarray(shot.convert("RGB"), dtype=np.float64)
    assert pixels.shape[0] > 500 and pixels.shape[1] > 500
    assert pixels.std() > 20  # not a blank page
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 200  # text, tables and pictures, not a flat colour

    # the browser and its driver ran in the check's own session; none of them may outlive it
    deadline = time.monotonic() + 10
    while (leftovers := _session_members(result["session"])) and time.monotonic() < deadline:
        time.sleep(0.2)
    for pid in leftovers:
        os.kill(pid, signal.SIGKILL)
    assert leftovers == [], f"browser processes left behind: {leftovers}"
