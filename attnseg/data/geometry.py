"""Where an image's voxels sit in the world: spacing, origin and direction, and the equivalent affine.

Convention: **ITK / DICOM / NRRD, world coordinates in LPS** (x grows to the patient's Left, y to
Posterior, z to Superior), the convention of SimpleITK, DICOM and most NRRD files. NIfTI (nibabel,
MONAI) uses RAS; :meth:`Geometry.ras_affine` and :meth:`Geometry.from_ras_affine` convert (they negate
the first two world axes, nothing else).

For a voxel index ``i`` (0-based, in the array's axis order ``(X, Y[, Z])`` as read, channels excluded)::

    world_LPS = origin + direction @ (spacing * i)

``direction`` holds the unit axis vectors as *columns* (ITK's matrix, not its flattened tuple order
in SimpleITK, which is row-major over the same matrix). The affine is the homogeneous form of the same
map, ``(ndim + 1) x (ndim + 1)``: 4x4 for volumes, 3x3 for 2D images.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

# Negating x and y maps LPS to RAS and back (it is its own inverse).
_LPS_TO_RAS = (-1.0, -1.0, 1.0)


@dataclass(frozen=True)
class Geometry:
    """Spacing (mm), origin (mm, LPS) and direction cosines (columns) of an image grid.

    Immutable (plain tuples); build it with :meth:`create`, :meth:`from_affine`,
    :meth:`from_ras_affine` or :meth:`from_dict`.
    """

    spacing: tuple[float, ...]
    origin: tuple[float, ...]
    direction: tuple[tuple[float, ...], ...]  # row-major ndim x ndim matrix; columns are the axes

    def __post_init__(self) -> None:
        n = len(self.spacing)
        if n not in (2, 3):
            raise ValueError(f"Geometry supports 2 or 3 spatial dimensions, got spacing {self.spacing}")
        if len(self.origin) != n or len(self.direction) != n or any(len(row) != n for row in self.direction):
            raise ValueError(f"inconsistent geometry: spacing {self.spacing}, origin {self.origin}, {self.direction}")
        if not all(np.isfinite(self.spacing)) or min(self.spacing) <= 0:
            raise ValueError(f"spacing must be positive and finite, got {self.spacing}")
        if not np.all(np.isfinite(self.origin)) or not np.all(np.isfinite(self.direction)):
            raise ValueError("origin and direction must be finite")

    # ---- construction -------------------------------------------------------------------------
    @classmethod
    def create(
        cls,
        spacing: Sequence[float],
        origin: Sequence[float] | None = None,
        direction: Sequence[Sequence[float]] | np.ndarray | None = None,
    ) -> Geometry:
        """From spacing and optional origin (default 0) and direction matrix (default identity)."""
        n = len(spacing)
        origin = np.zeros(n) if origin is None else np.asarray(origin, dtype=float)
        direction = np.eye(n) if direction is None else np.asarray(direction, dtype=float).reshape(n, n)
        return cls(
            spacing=tuple(float(s) for s in spacing),
            origin=tuple(float(o) for o in origin),
            direction=tuple(tuple(float(v) for v in row) for row in direction),
        )

    @classmethod
    def identity(cls, ndim: int) -> Geometry:
        """Unit spacing, zero origin, identity direction: what a PNG or a bare array has."""
        return cls.create([1.0] * ndim)

    @classmethod
    def from_affine(cls, affine: np.ndarray | Sequence[Sequence[float]]) -> Geometry:
        """From an LPS homogeneous affine; spacing is the length of each column, direction the unit columns."""
        affine = np.asarray(affine, dtype=float)
        n = affine.shape[0] - 1
        if affine.shape != (n + 1, n + 1) or n not in (2, 3):
            raise ValueError(f"an affine must be 3x3 or 4x4, got shape {affine.shape}")
        linear = affine[:n, :n]
        spacing = np.linalg.norm(linear, axis=0)
        if np.any(spacing == 0):
            raise ValueError(f"degenerate affine (a zero column):\n{affine}")
        return cls.create(spacing, affine[:n, n], linear / spacing)

    @classmethod
    def from_ras_affine(cls, affine: np.ndarray | Sequence[Sequence[float]]) -> Geometry:
        """From a RAS affine (NIfTI, nibabel, MONAI ``affine``)."""
        return cls.from_affine(ras_lps_flip(np.asarray(affine, dtype=float)))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Geometry:
        """Inverse of :meth:`to_dict`."""
        if data.get("convention", "LPS") != "LPS":
            raise ValueError(f"unknown geometry convention {data.get('convention')!r} (expected 'LPS')")
        return cls.create(data["spacing"], data["origin"], data["direction"])

    # ---- views --------------------------------------------------------------------------------
    @property
    def ndim(self) -> int:
        return len(self.spacing)

    @property
    def direction_matrix(self) -> np.ndarray:
        return np.asarray(self.direction, dtype=float)

    @property
    def affine(self) -> np.ndarray:
        """The LPS homogeneous affine, ``(ndim + 1) x (ndim + 1)``."""
        n = self.ndim
        affine = np.eye(n + 1)
        affine[:n, :n] = self.direction_matrix * np.asarray(self.spacing)
        affine[:n, n] = self.origin
        return affine

    @property
    def ras_affine(self) -> np.ndarray:
        """The RAS affine (what nibabel and MONAI call ``affine``)."""
        return ras_lps_flip(self.affine)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict: ``{"convention": "LPS", "spacing", "origin", "direction"}``."""
        return {
            "convention": "LPS",
            "spacing": list(self.spacing),
            "origin": list(self.origin),
            "direction": [list(row) for row in self.direction],
        }

    # ---- comparisons and derived grids ------------------------------------------------------------
    def allclose(self, other: Geometry, atol: float = 1e-6, rtol: float = 0.0) -> bool:
        """Same grid to within ``atol`` (+ ``rtol`` x magnitude) on spacing, origin and direction."""
        if self.ndim != other.ndim:
            return False
        pairs = (
            (self.spacing, other.spacing),
            (self.origin, other.origin),
            (self.direction, other.direction),
        )
        return all(np.allclose(a, b, atol=atol, rtol=rtol) for a, b in pairs)

    def differences(self, other: Geometry, atol: float = 1e-6) -> list[str]:
        """Human-readable list of what differs (empty when :meth:`allclose`), for error messages."""
        if self.ndim != other.ndim:
            return [f"{self.ndim}-D vs {other.ndim}-D"]
        out = []
        for name in ("spacing", "origin", "direction"):
            a, b = np.asarray(getattr(self, name)), np.asarray(getattr(other, name))
            if not np.allclose(a, b, atol=atol, rtol=0.0):
                out.append(f"{name} {_fmt(a)} vs {_fmt(b)}")
        return out

    def index_to_world(self, index: Sequence[float] | np.ndarray) -> np.ndarray:
        """World (LPS) coordinates of continuous voxel indices ``(..., ndim)``."""
        index = np.asarray(index, dtype=float)
        return np.asarray(self.origin) + (index * np.asarray(self.spacing)) @ self.direction_matrix.T

    def world_to_index(self, point: Sequence[float] | np.ndarray) -> np.ndarray:
        """Continuous voxel indices of world (LPS) points ``(..., ndim)``."""
        point = np.asarray(point, dtype=float) - np.asarray(self.origin)
        return (point @ np.linalg.inv(self.direction_matrix).T) / np.asarray(self.spacing)

    def shifted(self, start: Sequence[int]) -> Geometry:
        """The geometry of a crop that starts at voxel ``start``: same axes, origin moved to that voxel."""
        return Geometry.create(self.spacing, self.index_to_world(start), self.direction)

    def with_spacing(self, spacing: Sequence[float]) -> Geometry:
        """Same origin and direction, another spacing."""
        return Geometry.create(spacing, self.origin, self.direction)

    def orientation(self) -> str:
        """The closest anatomical orientation code: the direction each voxel axis increases towards, e.g.
        ``'LPS'`` (DICOM) or ``'RAS'`` (nibabel's canonical); the same letters as nibabel's ``aff2axcodes``."""
        if self.ndim != 3:
            return ""
        letters = ("LR", "PA", "SI")  # LPS positive direction first
        direction = self.direction_matrix
        return "".join(
            letters[world][0 if direction[world, axis] > 0 else 1]
            for axis, world in enumerate(nearest_world_axes(direction))
        )


def nearest_world_axes(direction: np.ndarray) -> list[int]:
    """For each voxel axis (column of ``direction``), the world axis it is most aligned with, one each.

    Pairs are taken by decreasing alignment (largest |cosine| first), so an oblique grid always gets a
    valid permutation, the same one whichever order its axes are stored in (exact 45-degree ties break by
    index).
    """
    direction = np.abs(np.asarray(direction, dtype=float))
    n = direction.shape[0]
    pairs = sorted(((direction[w, a], a, w) for a in range(n) for w in range(n)), key=lambda p: (-p[0], p[1], p[2]))
    world_of_axis: dict[int, int] = {}
    for _, axis, world in pairs:
        if axis not in world_of_axis and world not in world_of_axis.values():
            world_of_axis[axis] = world
    return [world_of_axis[a] for a in range(n)]


def ras_lps_flip(affine: np.ndarray) -> np.ndarray:
    """Convert a homogeneous affine between LPS and RAS world coordinates (self-inverse)."""
    affine = np.array(affine, dtype=float)
    n = affine.shape[0] - 1
    flip = np.diag([*_LPS_TO_RAS[:n], 1.0]) if n == 3 else np.diag([-1.0, -1.0, 1.0])
    return flip @ affine


def _fmt(values: np.ndarray) -> str:
    return np.array2string(np.asarray(values), precision=6, separator=", ", max_line_width=10_000)
