"""How a slice of a scan is shown: which voxel axis is cut, and the slice turned to radiological convention.

Pictures show slices as a radiologist reads them, whatever the voxel order on disk: axial slices with
anterior at the top and the patient's right on the viewer's left; coronal slices with superior at the
top, right on the left; sagittal slices with superior at the top and anterior on the left. The array is
only transposed and flipped (no resampling), so every voxel keeps its value; the pixel aspect ratio comes
from the voxel spacing, so anisotropic scans are not squashed.

Everything here reads the image's own :class:`~attnseg.data.geometry.Geometry` (world coordinates in
LPS); nothing depends on how a model's plan resamples or reorients.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from attnseg.data.geometry import Geometry
from attnseg.errors import ConfigError

# LPS world axes: x grows to the patient's Left, y to Posterior, z to Superior.
_LPS = np.eye(3)
# view -> (direction down the screen's rows, direction along its columns), in LPS
_SCREEN = {
    "axial": (_LPS[1], _LPS[0]),  # top anterior, left of the screen = patient's right
    "coronal": (-_LPS[2], _LPS[0]),  # top superior
    "sagittal": (-_LPS[2], _LPS[1]),  # top superior, anterior on the left
}
_VIEW_OF_NORMAL = ("sagittal", "coronal", "axial")  # slice normal mostly along x, y, z
_LETTERS = {(0, 1): "L", (0, -1): "R", (1, 1): "P", (1, -1): "A", (2, 1): "S", (2, -1): "I"}


@dataclass(frozen=True)
class SliceView:
    """How to cut and show one slice of a volume.

    ``axis`` is the voxel axis that is cut (None for a 2-D image); the shown picture has the voxel axis
    ``row_axis`` down the screen and ``column_axis`` across it, each flipped when ``flip_rows`` /
    ``flip_columns``; ``aspect`` is the height / width of one pixel (spacing ratio) for ``imshow``.
    ``edges`` names the anatomical direction at the (top, bottom, left, right) edges ('' when unknown).
    """

    view: str
    axis: int | None
    row_axis: int
    column_axis: int
    flip_rows: bool
    flip_columns: bool
    aspect: float
    edges: tuple[str, str, str, str]

    def cut(self, volume: np.ndarray, index: int | None) -> np.ndarray:
        """The slice ``index`` of ``volume`` (*S), turned for display (2-D images: the whole image)."""
        volume = np.asarray(volume)
        if self.axis is None:
            plane = volume
            rows, columns = self.row_axis, self.column_axis
        else:
            plane = np.take(volume, int(index), axis=self.axis)
            rows, columns = (a - (a > self.axis) for a in (self.row_axis, self.column_axis))
        plane = plane if rows < columns else plane.T
        if self.flip_rows:
            plane = plane[::-1]
        if self.flip_columns:
            plane = plane[:, ::-1]
        return np.ascontiguousarray(plane)

    @property
    def axis_name(self) -> str:
        return "" if self.axis is None else f"{self.view} slice (voxel axis {self.axis})"


def axial_axis(geometry: Geometry) -> int | None:
    """The voxel axis whose direction is closest to the body's long (superior-inferior) axis; None in 2-D."""
    if geometry.ndim != 3:
        return None
    return int(np.argmax(np.abs(geometry.direction_matrix[2])))


def slice_view(geometry: Geometry, axis: int | None = None) -> SliceView:
    """The view that cuts ``axis`` (default: the axial one) and shows it in radiological convention.

    A 2-D image is shown with its second voxel axis down the screen (as a photograph is stored) unless
    its direction says otherwise.
    """
    direction = geometry.direction_matrix
    spacing = geometry.spacing
    if geometry.ndim == 2:
        # a 2-D grid lies in the world's x-y plane: shown like an axial slice
        down, across = _SCREEN["axial"][0][:2], _SCREEN["axial"][1][:2]
        return _view("2-D", None, (0, 1), direction, spacing, down, across)
    axis = axial_axis(geometry) if axis is None else axis
    if axis not in (0, 1, 2):
        raise ConfigError(f"slice axis must be 0, 1 or 2, got {axis}")
    view = _VIEW_OF_NORMAL[int(np.argmax(np.abs(direction[:, axis])))]
    down, across = _SCREEN[view]
    in_plane = tuple(a for a in range(3) if a != axis)
    return _view(view, axis, in_plane, direction, spacing, down, across)


def _view(
    view: str,
    axis: int | None,
    in_plane: tuple[int, int],
    direction: np.ndarray,
    spacing: tuple[float, ...],
    down: np.ndarray,
    across: np.ndarray,
) -> SliceView:
    first, second = in_plane
    # the in-plane voxel axis that runs most nearly down the screen becomes the rows
    if abs(direction[:, first] @ down) >= abs(direction[:, second] @ down):
        row_axis, column_axis = first, second
    else:
        row_axis, column_axis = second, first
    flip_rows = bool(direction[:, row_axis] @ down < 0)
    flip_columns = bool(direction[:, column_axis] @ across < 0)
    edges = (*_ends(down), *_ends(across)) if len(down) == 3 else ("", "", "", "")
    return SliceView(
        view=view,
        axis=axis,
        row_axis=row_axis,
        column_axis=column_axis,
        flip_rows=flip_rows,
        flip_columns=flip_columns,
        aspect=float(spacing[row_axis] / spacing[column_axis]),
        edges=edges,
    )


def _ends(screen_direction: np.ndarray) -> tuple[str, str]:
    """Anatomical letters at the start and end of a screen direction (e.g. 'A', 'P' down an axial slice)."""
    world_axis = int(np.argmax(np.abs(screen_direction)))
    sign = int(np.sign(screen_direction[world_axis]))
    return _LETTERS[(world_axis, -sign)], _LETTERS[(world_axis, sign)]
