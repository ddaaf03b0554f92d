"""The :class:`Image` (an array with its :class:`~attnseg.data.geometry.Geometry`) and what every reader and
writer of one shares: the SimpleITK -> array conversion and the tolerance of the read-back check.

Image files (:mod:`attnseg.data.io`) and DICOM series (:mod:`attnseg.data.dicom`) both build and verify
Images; the shared part lives here, below both, so that ``io`` can hand folders to ``dicom`` without
``dicom`` importing ``io`` back.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from attnseg.data.geometry import Geometry
from attnseg.errors import DataError

# Tolerance of the read-back check after a write: 1e-6 absolute, plus 1e-6 relative for NIfTI's float32.
WRITE_ATOL = 1e-6
WRITE_RTOL = 1e-6


@dataclass
class Image:
    """An image array ``(C, X, Y[, Z])`` with its geometry; ``meta`` holds format extras (segment names...)."""

    array: np.ndarray
    geometry: Geometry
    path: Path | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.array.ndim != self.geometry.ndim + 1:
            raise ValueError(
                f"array of shape {self.array.shape} does not match a {self.geometry.ndim}-D geometry "
                "(expected channel-first (C, X, Y[, Z]))"
            )

    @property
    def channels(self) -> int:
        return int(self.array.shape[0])

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        return tuple(int(s) for s in self.array.shape[1:])

    @property
    def spatial_dims(self) -> int:
        return self.geometry.ndim

    @property
    def name(self) -> str:
        return str(self.path) if self.path is not None else "<array>"


def from_sitk(itk_image: Any, data: np.ndarray) -> tuple[np.ndarray, Geometry]:
    """SimpleITK image + its array view -> channel-first ``(C, X, Y[, Z])`` array and geometry."""
    dim = itk_image.GetDimension()
    vector = itk_image.GetNumberOfComponentsPerPixel() > 1
    spacing = itk_image.GetSpacing()
    origin = itk_image.GetOrigin()
    direction = np.asarray(itk_image.GetDirection()).reshape(dim, dim)
    if dim == 4:  # a 4-D scalar image (NRRD/MHA): the 4th axis becomes channels
        if vector:
            raise DataError("4-D vector images are not supported")
        array = np.transpose(data, (0, 3, 2, 1))  # (T, Z, Y, X) -> (T, X, Y, Z)
        return np.ascontiguousarray(array), Geometry.create(spacing[:3], origin[:3], direction[:3, :3])
    if vector:
        array = np.moveaxis(data, -1, 0)  # components first
        array = np.transpose(array, (0, *range(dim, 0, -1)))
    else:
        array = np.transpose(data, tuple(range(dim - 1, -1, -1)))[None]
    return np.ascontiguousarray(array), Geometry.create(spacing, origin, direction)
