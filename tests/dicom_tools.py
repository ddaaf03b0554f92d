"""The real DICOM tools the DICOM tests run: Debian's ``dciodvfy`` (dicom3tools) and ``Orthanc`` with its
DICOMweb plugin (orthanc, orthanc-dicomweb). ``.ci/run`` installs them and sets
ATTNSEG_REQUIRE_DICOM_TOOLS=1, so that there a missing tool fails the test; elsewhere it skips it."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

INSTALL = "apt-get install -y orthanc orthanc-dicomweb dicom3tools"
DCIODVFY_TIMEOUT_S = 60
# dciodvfy warnings that a SEG written by attnseg may get, each acceptable for the reason docs/dicom.md
# gives: the source series lacked a type 2 study attribute that a DICOMDIR would want (it stays empty in
# the SEG, as the standard allows).
ACCEPTED_WARNINGS = (
    re.compile(
        r"^Warning - Missing attribute or value that would be needed to build DICOMDIR - "
        r"(Study Date|Study Time|Study ID|Patient ID|Series Number)$"
    ),
)


def require(*tools: str) -> None:
    """Skip (or, with ATTNSEG_REQUIRE_DICOM_TOOLS=1, fail) when any of ``tools`` is not installed."""
    missing = [tool for tool in tools if _where(tool) is None]
    if not missing:
        return
    message = f"needs {', '.join(missing)} ({INSTALL})"
    if os.environ.get("ATTNSEG_REQUIRE_DICOM_TOOLS") == "1":
        pytest.fail(f"ATTNSEG_REQUIRE_DICOM_TOOLS=1 but the test {message}")
    pytest.skip(message)


def _where(tool: str) -> str | None:
    if tool == "orthanc-dicomweb":
        return ORTHANC_DICOMWEB if Path(ORTHANC_DICOMWEB).exists() else None
    return shutil.which(tool) or (tool if Path(tool).exists() else None)


ORTHANC = "/usr/sbin/Orthanc"
ORTHANC_DICOMWEB = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"


@dataclass
class Validation:
    errors: list[str]
    warnings: list[str]

    @property
    def unexplained_warnings(self) -> list[str]:
        return [w for w in self.warnings if not any(p.match(w) for p in ACCEPTED_WARNINGS)]


def dciodvfy(path: Path) -> Validation:
    """Run dciodvfy on one file: its error and warning lines."""
    require("dciodvfy")
    finished = subprocess.run(
        ["dciodvfy", str(path)], capture_output=True, text=True, timeout=DCIODVFY_TIMEOUT_S, check=False
    )
    lines = [line.strip() for line in (finished.stdout + finished.stderr).splitlines() if line.strip()]
    return Validation(
        errors=[line for line in lines if line.startswith("Error")],
        warnings=[line for line in lines if line.startswith("Warning")],
    )
