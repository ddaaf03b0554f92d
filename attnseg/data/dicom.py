"""DICOM series: a folder of slices -> one :class:`~attnseg.data.io.Image`, after checking the slices.

pydicom reads the headers (no pixels) to check that the folder holds one series of parallel slices,
evenly spaced, none missing and none duplicated; SimpleITK (GDCM) then reads the pixels in slice order,
applying the rescale slope and intercept, and computes the geometry from the slice positions.
A missing slice would otherwise silently stretch the anatomy; a duplicated one shifts it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from attnseg.errors import DataError

# Two slices closer than this fraction of the typical step are duplicates; a step this much
# longer than the typical one means slices are missing; steps must agree to 1% otherwise.
_DUPLICATE_FRACTION = 0.1
_GAP_FACTOR = 1.5
_EVEN_TOLERANCE = 0.01


@dataclass(frozen=True)
class _Slice:
    path: Path
    position: np.ndarray  # ImagePositionPatient (mm, LPS)
    orientation: np.ndarray  # ImageOrientationPatient (row cosines, column cosines)
    series: str
    description: str


def read_dicom_series(folder: Path):
    """Read the single DICOM series in ``folder`` (files of any name; non-DICOM files are ignored)."""
    import SimpleITK as sitk

    from attnseg.data.io import Image, _from_sitk

    slices = _read_headers(folder)
    ordered = _check_and_sort(folder, slices)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames([str(s.path) for s in ordered])
    try:
        itk_image = reader.Execute()
        data = sitk.GetArrayFromImage(itk_image)
    except RuntimeError as error:
        raise DataError(
            f"{folder}: cannot read the DICOM pixel data ({str(error).strip().splitlines()[-1]})"
        ) from error
    array, geometry = _from_sitk(itk_image, data)
    meta = {"series_description": ordered[0].description, "files": [s.path.name for s in ordered]}
    return Image(array=array, geometry=geometry, path=folder, meta=meta)


def _read_headers(folder: Path) -> list[_Slice]:
    import pydicom
    from pydicom.errors import InvalidDicomError

    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    if not files:
        raise DataError(f"{folder}: empty folder (expected the slices of one DICOM series)")
    slices = []
    for path in files:
        try:
            header = pydicom.dcmread(path, stop_before_pixels=True)
        except (InvalidDicomError, OSError, EOFError, ValueError):
            continue  # README, DICOMDIR viewers' extras, ...: not slices
        if "PixelData" not in header and "ImagePositionPatient" not in header:
            continue
        for keyword in ("ImagePositionPatient", "ImageOrientationPatient"):
            if keyword not in header:
                raise DataError(f"{path}: DICOM slice without {keyword}; cannot place it in the volume")
        slices.append(
            _Slice(
                path=path,
                position=np.asarray(header.ImagePositionPatient, dtype=float),
                orientation=np.asarray(header.ImageOrientationPatient, dtype=float),
                series=str(header.get("SeriesInstanceUID", "")),
                description=str(header.get("SeriesDescription", "")),
            )
        )
    if not slices:
        raise DataError(f"{folder}: no DICOM slices found among {len(files)} file(s)")
    return slices


def _check_and_sort(folder: Path, slices: list[_Slice]) -> list[_Slice]:
    series = sorted({s.series for s in slices})
    if len(series) > 1:
        described = ", ".join(sorted({s.description or s.series for s in slices}))
        raise DataError(f"{folder}: {len(series)} DICOM series in one folder ({described}); put each in its own folder")
    orientation = slices[0].orientation
    for s in slices[1:]:
        if not np.allclose(s.orientation, orientation, atol=1e-4):
            raise DataError(f"{s.path}: slice orientation differs from {slices[0].path.name}; not one volume")
    normal = np.cross(orientation[:3], orientation[3:])
    distance = np.array([float(s.position @ normal) for s in slices])
    order = np.argsort(distance, kind="stable")
    ordered = [slices[i] for i in order]
    distance = distance[order]
    if len(ordered) < 2:
        return ordered
    steps = np.diff(distance)
    positive = steps[steps > 1e-6]
    typical = float(np.median(positive)) if positive.size else 0.0
    for i, step in enumerate(steps):
        if typical == 0.0 or step < _DUPLICATE_FRACTION * typical:
            raise DataError(
                f"{folder}: duplicated slice at {distance[i]:.3f} mm: {ordered[i].path.name} and "
                f"{ordered[i + 1].path.name}; remove one"
            )
    for i, step in enumerate(steps):
        if step > _GAP_FACTOR * typical:
            missing = round(step / typical) - 1
            raise DataError(
                f"{folder}: {missing} missing slice(s) between {ordered[i].path.name} ({distance[i]:.3f} mm) and "
                f"{ordered[i + 1].path.name} ({distance[i + 1]:.3f} mm); slices are {typical:.3f} mm apart"
            )
    if np.any(np.abs(steps - typical) > _EVEN_TOLERANCE * typical):
        raise DataError(
            f"{folder}: uneven slice spacing ({steps.min():.3f} to {steps.max():.3f} mm); "
            "resample the series to even spacing first"
        )
    return ordered
