"""Finding the DICOM image series in a folder tree, as an archive export or a PACS download lays them out.

A folder of slices is one series; an export is often a tree (``PATIENT/STUDY/SERIES/``) or one folder
holding the files of several series side by side. :func:`find_dicom_series` lists every image series
(slices with an ImagePositionPatient; SEG, SR and other non-image objects are not series to segment)
with a case name for its outputs, from the headers alone (no pixel data); :func:`series_folders` finds
a series by its SeriesInstanceUID (the source series a SEG references).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class SeriesLocation:
    """One image series: its folder, and its SeriesInstanceUID when that folder holds other series too."""

    case_id: str
    folder: Path
    series_uid: str | None  # None: the folder holds this series only (read the whole folder)


def find_dicom_series(root: Path) -> list[SeriesLocation]:
    """Every image series under ``root`` (``root`` included), in folder order, then series number order.

    Case names: the folder's path below ``root`` joined with ``_`` (``root``'s own name for ``root``), plus
    ``_<SeriesNumber>`` (or the series' place) when one folder holds several series. An empty list means no
    DICOM image slice was found anywhere (reading ``root`` as a series then says what is wrong).
    """
    found: list[SeriesLocation] = []
    for folder in _folders(root):
        series = _series_in(folder)
        if not series:
            continue
        relative = folder.relative_to(root).parts
        base = _name("_".join(relative) if relative else root.name)
        if len(series) == 1:
            found.append(SeriesLocation(base, folder, None))
            continue
        for place, (uid, number) in enumerate(series, start=1):
            found.append(SeriesLocation(f"{base}_{number if number is not None else place}", folder, uid))
    ids = [s.case_id for s in found]
    return [  # two series with the same number in one folder: tell them apart by their UIDs
        SeriesLocation(f"{s.case_id}_{s.series_uid.rsplit('.', 1)[-1]}", s.folder, s.series_uid)
        if ids.count(s.case_id) > 1 and s.series_uid
        else s
        for s in found
    ]


def series_folders(root: Path) -> dict[str, Path]:
    """SeriesInstanceUID -> the folder holding its slices, for every image series under ``root`` (``root``
    included): how the source series of a SEG is found by the UID it references. A series found in two
    folders (an export copied twice) is taken from the first, in folder order."""
    found: dict[str, Path] = {}
    for folder in _folders(root):
        for uid, _ in _series_in(folder):
            found.setdefault(uid, folder)
    return found


def _folders(root: Path) -> list[Path]:
    """``root`` and every folder below it, hidden ones left out, in path order."""
    return [root, *sorted(p for p in root.rglob("*") if p.is_dir() and not p.name.startswith("."))]


def _series_in(folder: Path) -> list[tuple[str, int | None]]:
    """(SeriesInstanceUID, SeriesNumber) of the image series whose slices lie directly in ``folder``."""
    import pydicom

    series: dict[str, int | None] = {}
    for path in sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")):
        try:
            header = pydicom.dcmread(
                path,
                stop_before_pixels=True,
                specific_tags=["SeriesInstanceUID", "SeriesNumber", "ImagePositionPatient"],
            )
        except Exception:  # not DICOM (a README, a DICOMDIR's extras) or damaged: reading the series says so
            continue
        if "ImagePositionPatient" not in header:
            continue
        uid = str(header.get("SeriesInstanceUID", ""))
        number = header.get("SeriesNumber")
        series.setdefault(uid, int(number) if number not in (None, "") else None)
    return sorted(series.items(), key=lambda item: (item[1] is None, item[1] or 0, item[0]))


def _name(text: str) -> str:
    """A case name usable as a file name."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "series"
