"""``attnseg predict --dicomweb URL --study UID [--series UID] -o OUT [--store]``: a PACS round trip.

1. Find the study's image series on the DICOMweb server (QIDO-RS) and retrieve each one (WADO-RS) into
   a temporary folder: every instance the archive lists must arrive, else the run stops (a partial
   series would give a mask with slices missing).
2. Predict every series, writing one DICOM SEG per series to ``OUT/<SeriesInstanceUID>.seg.dcm`` (in the
   scan's study and Frame of Reference; see :mod:`attnseg.data.dicom_seg`).
3. With ``store``, only when every series was predicted: send all the SEGs back in one STOW-RS request,
   so that a failed case leaves nothing half-stored on the archive.

The retrieved scans are deleted at the end; the SEGs stay in OUT.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from attnseg.data.dicom_seg import WrittenSeg
from attnseg.data.dicomweb import Credentials, DicomWeb
from attnseg.inference.cases import DICOM_SEG_FORMAT

if TYPE_CHECKING:
    from attnseg.inference.predictor import Predictor


@dataclass(frozen=True)
class PacsResult:
    """The SEGs a round trip wrote (their UIDs) and whether they were stored on the server."""

    segs: list[WrittenSeg]
    stored: bool

    def summary(self, url: str) -> str:
        where = f"stored on {url}" if self.stored else "written (not stored: pass --store)"
        lines = [f"{len(self.segs)} DICOM SEG(s) {where}:"]
        lines += [
            f"  {seg.path.name}: SeriesInstanceUID {seg.series_instance_uid} SOPInstanceUID {seg.sop_instance_uid}"
            for seg in self.segs
        ]
        return "\n".join(lines)


def predict_from_pacs(
    predictor: Predictor,
    url: str,
    study_uid: str,
    output: str | Path,
    *,
    series_uid: str | None = None,
    store: bool = False,
    credentials: Credentials | None = None,
    overwrite: bool = False,
    progress: bool = True,
    retries: int = 4,
    backoff_s: float = 0.5,
) -> PacsResult:
    """Retrieve, predict, and (``store``) store back; see the module docstring.

    Raises:
        DataError: the server is down, the study or series is missing or not an image, a retrieval was
            partial, a case failed, or the server refused a SEG.
        OutputExistsError: a SEG exists in ``output`` and ``overwrite`` is False.
    """
    server = DicomWeb(url, credentials, retries=retries, backoff_s=backoff_s)
    series = server.image_series(study_uid, series_uid)
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    first = len(predictor.written_segs)
    with tempfile.TemporaryDirectory(prefix=".attnseg-dicomweb-", dir=output) as scratch:
        folders = [Path(scratch) / item.series_uid for item in series]
        for item, folder in zip(series, folders, strict=True):
            server.retrieve_series(study_uid, item, folder)
        predictor.predict_files(folders, output, overwrite=overwrite, output_ending=DICOM_SEG_FORMAT, progress=progress)
    segs = predictor.written_segs[first:]
    if store:
        server.store([seg.path for seg in segs])
    return PacsResult(segs, store)
