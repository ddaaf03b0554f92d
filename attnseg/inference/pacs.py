"""``attnseg predict --dicomweb URL --study UID [--series UID] -o OUT [--store]``: a PACS round trip.

1. Find the study's image series on the DICOMweb server (QIDO-RS). Their SEGs' names follow from the
   search alone, so the outputs are checked before anything is downloaded: a SEG in the way stops the
   run after that one search (unless ``overwrite``), and with ``skip_existing`` a series whose SEG is
   complete is not retrieved at all. Then retrieve each series to predict (WADO-RS) into a temporary
   folder: every instance the archive lists must arrive, else the run stops (a partial series would give
   a mask with slices missing).
2. Predict every series, writing one DICOM SEG per series to ``OUT/<SeriesInstanceUID>.seg.dcm`` (in the
   scan's study and Frame of Reference; see :mod:`attnseg.data.dicom_seg`).
3. With ``store``, only when every series was predicted: send all the SEGs back in one STOW-RS request
   (those kept by ``skip_existing`` too: a run killed before it stored leaves them unsent, and storing an
   instance again is harmless), so that a failed case leaves nothing half-stored on the archive.

The retrieved scans are deleted at the end; the SEGs stay in OUT.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from attnseg.data.dicom_seg import SEG_ENDING, WrittenSeg
from attnseg.data.dicomweb import Credentials, DicomWeb
from attnseg.inference.cases import DICOM_SEG_FORMAT, CaseOutputs, existing_outputs_error, outputs_to_write

if TYPE_CHECKING:
    from attnseg.inference.predictor import Predictor


@dataclass(frozen=True)
class PacsResult:
    """The SEGs a round trip wrote (their UIDs), those it kept (``skip_existing``), and whether they were
    stored on the server."""

    segs: list[WrittenSeg]
    stored: bool
    kept: list[Path] = field(default_factory=list)

    def summary(self, url: str) -> str:
        where = f"stored on {url}" if self.stored else "written (not stored: pass --store)"
        lines = [f"{len(self.segs)} DICOM SEG(s) {where}:"]
        lines += [
            f"  {seg.path.name}: SeriesInstanceUID {seg.series_instance_uid} SOPInstanceUID {seg.sop_instance_uid}"
            for seg in self.segs
        ]
        if self.kept:
            lines.append(f"{len(self.kept)} complete SEG(s) kept, their series not retrieved (--skip-existing):")
            lines += [f"  {path.name}" for path in self.kept]
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
    skip_existing: bool = False,
    progress: bool = True,
    retries: int = 4,
    backoff_s: float = 0.5,
) -> PacsResult:
    """Retrieve, predict, and (``store``) store back; see the module docstring.

    Raises:
        DataError: the server is down, the study or series is missing or not an image, a retrieval was
            partial, a case failed, or the server refused a SEG.
        OutputExistsError: a SEG exists in ``output`` and neither ``overwrite`` nor ``skip_existing`` was
            given, or (``skip_existing`` alone) one exists but is not complete; raised before any retrieval.
    """
    server = DicomWeb(url, credentials, retries=retries, backoff_s=backoff_s)
    output = Path(output)
    decided: dict[str, Path | None] = {}  # series UID -> its SEG to keep, or None: to predict

    def decide(uids: list[str]) -> None:  # after the search for the series, before any instance is listed
        decided.update(_series_to_predict(uids, output, overwrite, skip_existing))

    series = server.image_series(study_uid, series_uid, on_found=decide)
    todo = [item for item in series if decided[item.series_uid] is None]
    kept = [seg for item in series if (seg := decided[item.series_uid]) is not None]
    output.mkdir(parents=True, exist_ok=True)
    first = len(predictor.written_segs)
    if todo:
        with tempfile.TemporaryDirectory(prefix=".attnseg-dicomweb-", dir=output) as scratch:
            folders = [Path(scratch) / item.series_uid for item in todo]
            for item, folder in zip(todo, folders, strict=True):
                server.retrieve_series(study_uid, item, folder)
            predictor.predict_files(
                folders, output, overwrite=overwrite, output_ending=DICOM_SEG_FORMAT, progress=progress
            )
    segs = predictor.written_segs[first:]
    if store:
        server.store([seg.path for seg in segs] + kept)
    return PacsResult(segs, store, kept)


def _series_to_predict(uids: list[str], output: Path, overwrite: bool, skip_existing: bool) -> dict[str, Path | None]:
    """For each series UID, its complete SEG to keep, or None: the series is to be retrieved and predicted.
    Decided from the SEGs' names alone (``OUTPUT/<SeriesInstanceUID>.seg.dcm``, as
    :func:`~attnseg.inference.cases.output_paths` names a DICOM series' SEG) by the rules of a local run
    (:func:`~attnseg.inference.cases.outputs_to_write`).

    Raises:
        OutputExistsError: a SEG is in the way (the run would otherwise download the study first).
    """
    decided: dict[str, Path | None] = {}
    problems = []
    for uid in uids:
        seg = output / f"{uid}{SEG_ENDING}"
        to_write, problem = outputs_to_write(CaseOutputs(seg, None, dicom=False), overwrite, skip_existing)
        if problem is not None:
            problems.append(problem)
        decided[uid] = None if to_write else seg
    if problems:
        raise existing_outputs_error(problems, skip_existing)
    return decided
