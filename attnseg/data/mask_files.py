"""Mask files of either kind, image files (NIfTI, NRRD, ...) or DICOM Segmentation (SEG) files, found in a
folder, named by case, and read onto one grid so that two masks of the same case can be compared voxel by
voxel in physical space.

A SEG's frames need not cover its scan (other tools omit the empty ones, and may store them in any order),
so a SEG is placed by its frames' positions onto the grid of its *source series*, the series its Referenced
Series Sequence names, found by SeriesInstanceUID (:class:`SourceSeries`: in the folders the user gives and
in the SEG's own folder). Against an image file, the grid is the image file's, which must then be the source
series' grid (the same voxels, in any axis order). Two SEGs are compared on their source series' grid;
without it, on the grid of the one whose frames cover every slice it references (attnseg's do), and when
neither does, the pair is refused naming the missing series: a grid made of the frames alone would be
cropped to where something was segmented. Two image files are compared on their own grids, which must
agree (the caller checks).
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from attnseg.data.dicom import read_dicom_series
from attnseg.data.dicom_seg import is_seg_file, read_seg, seg_case_id, seg_grid, seg_sources
from attnseg.data.dicom_tree import series_folders
from attnseg.data.geometry import Geometry
from attnseg.data.io import is_image_file, read_grid, read_label, strip_ending
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


class SourceSeries:
    """The DICOM image series that SEGs were made from, found by the SeriesInstanceUIDs their Referenced
    Series Sequence names: in ``folders`` (DICOM series folders or trees), then in the SEG's own folder and
    below (an archive export holds both). Each folder is indexed once (headers only) and each series' grid
    read once, however many SEGs reference it.

    Raises:
        DataError: one of ``folders`` is not a folder.
    """

    def __init__(self, folders: Iterable[str | os.PathLike] = ()) -> None:
        self.folders = [Path(folder) for folder in folders]
        for folder in self.folders:
            if not folder.is_dir():
                raise DataError(f"{folder}: not a folder of DICOM series (given as a SEG's source series)")
        self._index: dict[Path, dict[str, Path]] = {}
        self._grids: dict[str, Grid] = {}

    def grid(self, seg: Path) -> Grid | None:
        """The grid of ``seg``'s source series; None when no series it references is found."""
        for uid in seg_sources(seg).series_uids:
            if uid not in self._grids:
                folder = self._find(uid, seg.parent)
                if folder is None:
                    continue
                image = read_dicom_series(folder, uid)
                self._grids[uid] = (image.spatial_shape, image.geometry)
            return self._grids[uid]
        return None

    def missing(self, segs: Iterable[Path]) -> str:
        """Which series ``segs`` need and where they were looked for: for an error message."""
        segs = list(segs)
        uids = sorted({uid for seg in segs for uid in seg_sources(seg).series_uids})
        places = dict.fromkeys(str(folder) for folder in (*self.folders, *(seg.parent for seg in segs)))
        named = " or ".join(uids) or "none named: no Referenced Series Sequence"
        return f"their source series (SeriesInstanceUID {named}) is not in {', '.join(places)}"

    def _find(self, uid: str, beside: Path) -> Path | None:
        for root in (*self.folders, beside):
            if root not in self._index:
                self._index[root] = series_folders(root)
            if uid in self._index[root]:
                return self._index[root][uid]
        return None


def pair_grid(
    prediction: Path,
    reference: Path,
    sources: SourceSeries | None = None,
    seg_labels: Mapping[str, int] | None = None,
) -> Grid | None:
    """The grid to compare ``prediction`` and ``reference`` on (see the module docstring); None for two
    image files (each on its own grid, which must be the same). ``sources``: where SEGs' source series are
    looked for (default: the SEGs' own folders). ``seg_labels``: the classes a SEG's segments must be
    among, by label (as :func:`read_mask` will give them their values), checked here with the rest.

    Raises:
        DataError: a SEG's frames do not lie on the grid (or have voxels outside it); an image file's grid
            is not its SEG's source series'; two SEGs whose frames miss slices, without their source series;
            a segment that is not a class of ``seg_labels``. The message names the file.
    """
    segs = [path for path in (prediction, reference) if path.name.lower().endswith(".dcm")]
    if not segs:
        return None
    sources = sources or SourceSeries()
    source = next((grid for grid in map(sources.grid, segs) if grid is not None), None)
    if len(segs) == 1:
        image = reference if segs[0] == prediction else prediction
        grid = read_grid(image)
        if source is not None and not _same_voxels(source, grid):
            raise DataError(
                f"{image}: its grid {tuple(grid[0])} is not the grid {tuple(source[0])} of the series "
                f"{segs[0].name} was made from; were they made from different series?"
            )
    else:
        grid = source or _seg_pair_grid(prediction, reference, sources)
    for seg in segs:
        read_seg(seg, seg_labels, grid)  # frames on the grid, segments classes: a clear error now, not mid-run
    return grid


def _seg_pair_grid(prediction: Path, reference: Path, sources: SourceSeries) -> Grid:
    """Two SEGs without their source series: the grid holding both, if one of them covers its series."""
    if not any(seg_sources(seg).complete for seg in (prediction, reference)):
        raise DataError(
            f"{prediction}: neither it nor {reference.name} has frames for every slice, and "
            f"{sources.missing([prediction, reference])}; pass the folder holding it (attnseg evaluate "
            "--source-series DIR) so that both are placed on the series' full grid rather than a cropped one"
        )
    return union_grid(seg_grid(reference), seg_grid(prediction), prediction)


def _same_voxels(first: Grid, second: Grid) -> bool:
    """Whether two grids hold the same voxels, in any axis order."""
    if len(first[0]) != 3 or len(second[0]) != 3:
        return False
    try:
        union = union_grid(first, second, Path())
    except DataError:
        return False
    return tuple(union[0]) == tuple(first[0]) and int(np.prod(second[0])) == int(np.prod(first[0]))


def read_mask(path: Path, grid: Grid | None = None, seg_labels: Mapping[str, int] | None = None) -> Any:
    """A mask file as an :class:`~attnseg.data.io.Image` ``(1, X, Y[, Z])``, a SEG placed onto ``grid``.

    ``seg_labels``: class name -> label value, to give a SEG's segments their classes' values by their
    labels; without it a segment's value is its number (1, 2, ...).
    """
    if path.name.lower().endswith(".dcm"):
        return read_seg(path, labels=seg_labels, grid=grid)
    return read_label(path)


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
