"""Small array helpers shared by the checks, preprocessing and sampling: bounding boxes, crops, pads."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

Box = tuple[tuple[int, int], ...]


def nonzero_bbox(array: np.ndarray) -> Box:
    """Bounding box ``((start, stop), ...)`` of voxels non-zero in any channel of ``(C, *S)``; all if none."""
    mask = array[0] != 0 if len(array) == 1 else np.any(array != 0, axis=0)
    if not mask.any():
        return tuple((0, int(s)) for s in mask.shape)
    flags = mask.view(np.uint8)
    box = []
    for axis, size in enumerate(mask.shape):
        # (before, axis, after): the maximum over the leading axis first runs over whole contiguous rows,
        # several times faster than numpy's reduction over several axes at once
        blocks = flags.reshape(math.prod(mask.shape[:axis]), size, math.prod(mask.shape[axis + 1 :]))
        hits = np.flatnonzero(blocks.max(axis=0).max(axis=1))
        box.append((int(hits[0]), int(hits[-1]) + 1))
    return tuple(box)


def crop(array: np.ndarray, box: Box) -> np.ndarray:
    """``array[..., start:stop, ...]`` over the trailing ``len(box)`` axes."""
    lead = (slice(None),) * (array.ndim - len(box))
    return array[lead + tuple(slice(a, b) for a, b in box)]


def window(array: np.ndarray, start: Sequence[int], size: Sequence[int], value: float = 0) -> np.ndarray:
    """The ``size`` window at ``start`` (may reach outside) over the trailing axes, padded with ``value``."""
    spatial = array.shape[array.ndim - len(size) :]
    inside, pad = [], [(0, 0)] * (array.ndim - len(size))
    for s, n, dim in zip(start, size, spatial, strict=True):
        lo = min(max(s, 0), dim)
        hi = max(min(s + n, dim), lo)
        before = min(lo - s, n) if s < lo else 0
        inside.append((lo, hi))
        pad.append((before, n - before - (hi - lo)))
    piece = crop(array, tuple(inside))
    if any(p != (0, 0) for p in pad):
        piece = np.pad(piece, pad, constant_values=value)
    return piece
