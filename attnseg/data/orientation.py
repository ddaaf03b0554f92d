"""One canonical voxel order for every volume (RAS), reached and undone exactly.

A scan may store its voxel axes in any of 48 orders and directions: DICOM and ITK write LPS, NIfTI tools
RAS or LAS, some sagittal protocols LSA or PIR. A 2D network slices along one array axis, so without a
common order a sagittally stored head is sliced coronally by a model trained on axial slices, and a 3D
network sees mirrored anatomy. Planning, training and prediction therefore work on volumes reoriented
so that voxel axis 0 increases towards the patient's Right, axis 1 towards Anterior and axis 2 towards
Superior (nibabel's canonical "RAS+", the orientation of MNI space). The plan records it.

Reorienting only transposes and flips the array: nothing is interpolated, and :meth:`Reorientation.undo`
gives back the original array bit for bit, so masks and probability maps go back to the input's own grid
exactly. An oblique scan takes the nearest axis order (each voxel axis goes to the world axis it is most
aligned with, see :func:`attnseg.data.geometry.nearest_world_axes`) and keeps its obliquity in the
geometry; it is not resampled onto a straight grid.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from attnseg.data.geometry import Geometry, nearest_world_axes
from attnseg.errors import ConfigError

CANONICAL = "RAS"
# Orientation letters -> (LPS world axis, sign of the direction in LPS coordinates).
_LETTERS = {"L": (0, 1), "R": (0, -1), "P": (1, 1), "A": (1, -1), "S": (2, 1), "I": (2, -1)}


@dataclass(frozen=True)
class Reorientation:
    """From a volume's stored voxel order to a target order: canonical axis ``k`` is stored axis
    ``axes[k]``, reversed when ``flips[k]``."""

    axes: tuple[int, ...]
    flips: tuple[bool, ...]

    @property
    def identity(self) -> bool:
        return self.axes == tuple(range(len(self.axes))) and not any(self.flips)

    def shape(self, shape: Sequence[int]) -> tuple[int, ...]:
        """The spatial shape after reorienting."""
        return tuple(int(shape[a]) for a in self.axes)

    def apply(self, array: np.ndarray, leading: int = 1) -> np.ndarray:
        """Reorient ``array`` whose spatial axes follow ``leading`` others (channels: 1; a bare volume: 0)."""
        return np.ascontiguousarray(self.view(array, leading))

    def view(self, array: np.ndarray, leading: int = 1) -> np.ndarray:
        """:meth:`apply` without the copy: a view of ``array`` in the target order. Writing into it fills
        ``array`` in its stored order, so a result can be assembled in the stored order directly instead of
        being copied there afterwards (:meth:`undo`)."""
        order = (*range(leading), *(leading + a for a in self.axes))
        out = np.transpose(array, order)
        flipped = tuple(leading + k for k, flip in enumerate(self.flips) if flip)
        return np.flip(out, flipped) if flipped else out

    def undo(self, array: np.ndarray, leading: int = 1) -> np.ndarray:
        """The inverse of :meth:`apply`: back to the stored voxel order."""
        flipped = tuple(leading + k for k, flip in enumerate(self.flips) if flip)
        out = np.flip(array, flipped) if flipped else array
        inverse = np.argsort(self.axes)
        out = np.transpose(out, (*range(leading), *(leading + int(a) for a in inverse)))
        return np.ascontiguousarray(out)

    def geometry(self, geometry: Geometry, shape: Sequence[int]) -> Geometry:
        """The geometry of the reoriented grid: the same voxels in the same places, listed in the new order."""
        direction = geometry.direction_matrix
        columns = [direction[:, a] * (-1.0 if flip else 1.0) for a, flip in zip(self.axes, self.flips, strict=True)]
        first = [0] * len(shape)  # the stored index of the voxel that becomes index 0
        for a, flip in zip(self.axes, self.flips, strict=True):
            first[a] = int(shape[a]) - 1 if flip else 0
        return Geometry.create(
            [geometry.spacing[a] for a in self.axes], geometry.index_to_world(first), np.stack(columns, axis=1)
        )

    def to_dict(self) -> dict[str, Any]:
        return {"axes": list(self.axes), "flips": list(self.flips)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Reorientation:
        return cls(tuple(int(a) for a in data["axes"]), tuple(bool(f) for f in data["flips"]))


def check_orientation_code(code: str) -> str:
    """``code`` upper-cased if it names three different world axes (``"RAS"``, ``"LPS"``, ``"PIR"``...)."""
    code = code.upper()
    if len(code) != 3 or any(c not in _LETTERS for c in code) or len({_LETTERS[c][0] for c in code}) != 3:
        raise ConfigError(f"orientation {code!r} is not a code such as RAS or LPS (one of L/R, P/A, S/I each)")
    return code


def reorientation(geometry: Geometry, target: str = CANONICAL) -> Reorientation:
    """How to bring a 3-D volume of ``geometry`` into the ``target`` voxel order."""
    if geometry.ndim != 3:
        raise ConfigError(f"reorientation needs a 3-D geometry, got {geometry.ndim}-D")
    target = check_orientation_code(target)
    world_of_axis = nearest_world_axes(geometry.direction_matrix)
    axis_of_world = {world: axis for axis, world in enumerate(world_of_axis)}
    axes, flips = [], []
    for letter in target:
        world, sign = _LETTERS[letter]
        axis = axis_of_world[world]
        axes.append(axis)
        flips.append(bool(np.sign(geometry.direction_matrix[world, axis]) != sign))
    return Reorientation(tuple(axes), tuple(flips))
