"""DICOM series with the layouts real exports have, for the DICOM SEG tests: axial, reversed slice order,
oblique, shuffled file names, missing optional tags, several series in one folder, and series that are not
a volume (uneven spacing, gantry tilt, mixed orientations). Written with pydicom (tests.fixtures), then
edited file by file as another tool would have written them."""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pydicom

from attnseg.data.geometry import Geometry
from tests.fixtures import oblique_geometry, rotation, write_dicom_series

SHAPE = (20, 18, 6)  # the tiny inference model's training shape (X, Y, Z)
# Optional (type 2 and 3) attributes a minimal or anonymised export leaves out.
OPTIONAL = ("PatientID", "SeriesDescription", "SliceThickness", "InstanceNumber", "StudyDate", "SeriesNumber")


def scan(shape: tuple[int, ...] = SHAPE) -> np.ndarray:
    """A CT-like volume whose structure the tiny model segments (a bright blob on a dark background)."""
    grid = np.indices(shape).astype(float)
    centre = (np.array(shape) - 1) / 2
    distance = np.sqrt(sum(((g - c) / (s / 3)) ** 2 for g, c, s in zip(grid, centre, shape, strict=True)))
    return np.where(distance < 1.0, 150, 100).astype(np.int16)


def _axial() -> Geometry:
    return Geometry.create([0.8, 0.9, 2.5], [-10.0, 20.0, 30.0])


def _reversed() -> Geometry:
    """Slices written top to bottom: the slice axis points against row x column (as many scanners store)."""
    direction = np.eye(3)
    direction[2, 2] = -1.0
    return Geometry.create([0.8, 0.9, 2.5], [-10.0, 20.0, 30.0], direction)


def edit_slices(folder: Path, change: Callable[[pydicom.Dataset, int], None]) -> None:
    """Apply ``change(dataset, index)`` to every file of ``folder`` in name order, as another tool would edit them."""
    for index, path in enumerate(sorted(folder.iterdir())):
        ds = pydicom.dcmread(path)
        change(ds, index)
        ds.save_as(path, enforce_file_format=True)


def write_case(folder: Path, kind: str, series_uid: str | None = None) -> Path:
    """One series of the layout ``kind`` in ``folder`` (see :data:`GEOMETRY_CASES`)."""
    volume = scan()
    if kind == "axial":
        write_dicom_series(folder, volume, _axial(), series_uid=series_uid)
    elif kind == "reversed":
        write_dicom_series(folder, volume, _reversed(), series_uid=series_uid)
    elif kind == "oblique":
        write_dicom_series(folder, volume, oblique_geometry(), series_uid=series_uid)
    elif kind == "shuffled":
        geometry = Geometry.create([0.7, 0.7, 3.0], [5.0, -5.0, 0.0], rotation([0.0, 0.0, 0.4]))
        write_dicom_series(folder, volume, geometry, series_uid=series_uid)
        names = sorted(folder.iterdir())
        order = list(range(len(names)))
        random.Random(3).shuffle(order)
        for path in names:
            path.rename(path.with_name(f"tmp_{path.name}"))
        for new, path in zip(order, sorted(folder.iterdir()), strict=True):
            path.rename(folder / f"{new * 7919 % 1000:04d}")  # names unrelated to position, no extension
    elif kind == "missing_tags":
        write_dicom_series(folder, volume, _axial(), series_uid=series_uid)
        edit_slices(folder, lambda ds, _: [delattr(ds, k) for k in OPTIONAL if k in ds])
    else:
        raise ValueError(kind)
    return folder


GEOMETRY_CASES = ("axial", "reversed", "oblique", "shuffled", "missing_tags")


def write_not_a_volume(folder: Path, kind: str) -> Path:
    """A series that is not one volume grid: ``uneven`` spacing, gantry ``tilt``, ``mixed`` orientations."""
    write_dicom_series(folder, scan(), _axial())

    def change(ds: pydicom.Dataset, index: int) -> None:
        position = np.array([float(v) for v in ds.ImagePositionPatient])
        if kind == "uneven":
            position[2] += 0.6 * index**1.5
        elif kind == "tilt":
            position[1] += np.tan(np.radians(15)) * 2.5 * index  # each slice moved along y: a 15 degree tilt
        elif kind == "mixed" and index == 2:
            ds.ImageOrientationPatient = ["1", "0", "0", "0", "0", "-1"]
        ds.ImagePositionPatient = [f"{v:.6f}" for v in position]

    edit_slices(folder, change)
    return folder
