"""Mask files of either kind, image files (NIfTI, NRRD, ...) or DICOM Segmentation (SEG) files, found in a
folder, named by case, and read onto one grid so that two masks of the same case can be compared voxel by
voxel in physical space.

A SEG carries no grid of its own beyond its frames (other tools omit the empty ones), so it is read onto the
grid of the mask it is compared with: an image file's grid when the other mask is one (the SEG's frames
must lie on it, or the pair is refused), else the smallest grid holding both SEGs' frames (they must lie on
one lattice). Two image files are compared on their own grids, which must agree (the caller checks).
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from attnseg.data.dicom_seg import is_seg_file, read_seg, seg_case_id, seg_grid
from attnseg.data.geometry import Geometry
from attnseg.data.io import is_image_file, read_grid, read_image, strip_ending
from attnseg.errors import DataError

Grid = tuple[tuple[int, ...], Geometry]
# How far (in voxels) two SEGs' frames may sit from one common lattice.
_LATTICE_ATOL = 1e-3


def is_mask_file(path: Path) -> bool:
    """An image file with a supported ending, or a ``.dcm`` file holding a DICOM SEG."""
    return is_image_file(path) or is_seg_file(path)


def mask_case_id(path: str | os.PathLike) -> str:
    """The case a mask file is named after: ``case.nii.gz``, ``case.seg.dcm`` and ``case.dcm`` -> ``case``."""
    return seg_case_id(path) if Path(path).name.lower().endswith(".dcm") else strip_ending(path)


def pair_grid(prediction: Path, reference: Path) -> Grid | None:
    """The grid to compare ``prediction`` and ``reference`` on; None for two image files (each on its own
    grid, which must be the same).

    Raises:
        DataError: a SEG's frames do not lie on the image file's grid (or have voxels outside it), or two
            SEGs' frames lie on different lattices; the message names the file.
    """
    pred_seg, ref_seg = prediction.name.lower().endswith(".dcm"), reference.name.lower().endswith(".dcm")
    if not pred_seg and not ref_seg:
        return None
    if pred_seg and ref_seg:
        return union_grid(seg_grid(reference), seg_grid(prediction), prediction)
    image, seg = (reference, prediction) if pred_seg else (prediction, reference)
    grid = read_grid(image)
    read_seg(seg, grid=grid)  # its frames must lie on the image's grid: a clear error now, not mid-run
    return grid


def read_mask(path: Path, grid: Grid | None = None, seg_labels: Mapping[str, int] | None = None) -> Any:
    """A mask file as an :class:`~attnseg.data.io.Image` ``(1, X, Y[, Z])``, a SEG placed onto ``grid``.

    ``seg_labels``: class name -> label value, to give a SEG's segments their classes' values by their
    labels; without it a segment's value is its number (1, 2, ...).
    """
    if path.name.lower().endswith(".dcm"):
        return read_seg(path, labels=seg_labels, grid=grid)
    return read_image(path)


def union_grid(first: Grid, second: Grid, path: Path) -> Grid:
    """The smallest grid on ``first``'s lattice that holds both grids' voxels.

    Raises:
        DataError: ``second``'s voxels are not on ``first``'s lattice (``path`` is named).
    """
    (shape, geometry), (other_shape, other_geometry) = first, second
    mapping = np.linalg.inv(geometry.affine) @ other_geometry.affine  # other index -> first index
    rounded = np.round(mapping)
    permutation = np.abs(rounded[:3, :3])
    if not np.allclose(mapping, rounded, atol=_LATTICE_ATOL) or not (
        np.array_equal(permutation.sum(0), np.ones(3)) and np.array_equal(permutation.sum(1), np.ones(3))
    ):
        raise DataError(
            f"{path}: its frames do not lie on the lattice of the mask it is compared with (spacing "
            f"{np.round(other_geometry.spacing, 4).tolist()} vs {np.round(geometry.spacing, 4).tolist()}, "
            f"{other_geometry.orientation()} vs {geometry.orientation()}); were they made from different series?"
        )
    corners = np.array(list(itertools.product(*[(0, n - 1) for n in other_shape])), dtype=float)
    mapped = (rounded[:3, :3] @ corners.T + rounded[:3, 3:4]).T
    low = np.minimum(mapped.min(0), 0).astype(int)
    high = np.maximum(mapped.max(0), np.asarray(shape) - 1).astype(int)
    origin = (geometry.affine @ np.append(low, 1.0))[:3]
    union = Geometry.create(geometry.spacing, origin, geometry.direction_matrix)
    return tuple(int(n) for n in high - low + 1), union
