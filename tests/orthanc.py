"""A real DICOMweb server for the tests: Debian's Orthanc with its DICOMweb plugin, started on a free
localhost port with a temporary storage folder, configuration and user, and stopped afterwards."""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import requests

from tests.dicom_tools import ORTHANC, ORTHANC_DICOMWEB, require

USER, PASSWORD = "attnseg", "not-a-real-s3cret"
START_TIMEOUT_S = 60
REQUEST_TIMEOUT_S = 30


@dataclass
class Orthanc:
    root: str  # http://127.0.0.1:PORT

    @property
    def dicomweb(self) -> str:
        return f"{self.root}/dicom-web"

    def upload(self, path: Path) -> None:
        """Store one file through Orthanc's own REST API (not DICOMweb: independent of the code under test)."""
        response = requests.post(
            f"{self.root}/instances", data=path.read_bytes(), auth=(USER, PASSWORD), timeout=REQUEST_TIMEOUT_S
        )
        response.raise_for_status()

    def download(self, sop_instance_uid: str) -> bytes:
        """The stored file of one instance, by its SOPInstanceUID (Orthanc's REST API)."""
        found = requests.post(
            f"{self.root}/tools/lookup", data=sop_instance_uid, auth=(USER, PASSWORD), timeout=REQUEST_TIMEOUT_S
        ).json()
        [instance] = [item for item in found if item["Type"] == "Instance"]
        response = requests.get(
            f"{self.root}/instances/{instance['ID']}/file", auth=(USER, PASSWORD), timeout=REQUEST_TIMEOUT_S
        )
        response.raise_for_status()
        return response.content

    def series_count(self, study_uid: str) -> int:
        """How many series the study has on the server (Orthanc's REST API)."""
        found = requests.post(
            f"{self.root}/tools/lookup", data=study_uid, auth=(USER, PASSWORD), timeout=REQUEST_TIMEOUT_S
        ).json()
        [study] = [item for item in found if item["Type"] == "Study"]
        response = requests.get(f"{self.root}/studies/{study['ID']}", auth=(USER, PASSWORD), timeout=REQUEST_TIMEOUT_S)
        response.raise_for_status()
        return len(response.json()["Series"])


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextlib.contextmanager
def running_orthanc(folder: Path, **settings: object) -> Iterator[Orthanc]:
    """Orthanc on a free port, storing in ``folder``, with ``settings`` added to its configuration;
    stopped (and waited for) on exit."""
    require(ORTHANC, "orthanc-dicomweb")
    port = free_port()
    storage = folder / "storage"
    storage.mkdir(parents=True)
    config = {
        "Name": "attnseg-test",
        "StorageDirectory": str(storage),
        "IndexDirectory": str(storage),
        "HttpPort": port,
        "DicomServerEnabled": False,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": True,
        "RegisteredUsers": {USER: PASSWORD},
        "Plugins": [ORTHANC_DICOMWEB],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
        **settings,
    }
    (folder / "orthanc.json").write_text(json.dumps(config))
    log = open(folder / "orthanc.log", "wb")  # noqa: SIM115 (closed below, after the process)
    process = subprocess.Popen([ORTHANC, str(folder / "orthanc.json")], stdout=log, stderr=subprocess.STDOUT)
    server = Orthanc(f"http://127.0.0.1:{port}")
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"Orthanc exited with {process.returncode}: {(folder / 'orthanc.log').read_text()}")
            with contextlib.suppress(requests.exceptions.ConnectionError):
                if requests.get(f"{server.root}/system", auth=(USER, PASSWORD), timeout=2).ok:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"Orthanc did not answer within {START_TIMEOUT_S} s")
            time.sleep(0.2)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=20)
        log.close()
