"""Small array helpers shared by the checks, preprocessing, sampling and prediction: bounding boxes, crops,
pads, class maps."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np

Box = tuple[tuple[int, int], ...]


def nonzero_bbox(array: np.ndarray) -> Box:
    """Bounding box ``((start, stop), ...)`` of voxels non-zero in any channel of ``(C, *S)``; all if none."""
    mask = array[0] != 0 if len(array) == 1 else np.any(array != 0, axis=0)
    return mask_bbox(mask) or tuple((0, int(s)) for s in mask.shape)


def mask_bbox(mask: np.ndarray) -> Box | None:
    """Bounding box ``((start, stop), ...)`` of the true voxels of a boolean ``mask``; None if there are none."""
    if not mask.any():
        return None
    flags = np.ascontiguousarray(mask).view(np.uint8)
    box = []
    for axis, size in enumerate(mask.shape):
        # (before, axis, after): the maximum over the leading axis first runs over whole contiguous rows,
        # several times faster than numpy's reduction over several axes at once
        blocks = flags.reshape(math.prod(mask.shape[:axis]), size, math.prod(mask.shape[axis + 1 :]))
        hits = np.flatnonzero(blocks.max(axis=0).max(axis=1))
        box.append((int(hits[0]), int(hits[-1]) + 1))
    return tuple(box)


# Voxels per slab of :func:`argmax_classes`: its int64 temporary stays at 32 MiB whatever the volume.
ARGMAX_SLAB_VOXELS = 1 << 22


def argmax_classes(scores: np.ndarray) -> np.ndarray:
    """The index of the largest of the class scores ``(K, *S)`` at each voxel (the first on a tie, as
    ``argmax(0)``), as ``uint8`` (``uint16`` beyond 256 classes).

    Taken slab by slab along the first spatial axis: numpy's argmax returns int64, 8 bytes a voxel, 1.3 GB
    for a 512 x 512 x 600 CT, where one byte holds the class.
    """
    dtype = np.uint8 if scores.shape[0] <= 256 else np.uint16
    out = np.empty(scores.shape[1:], dtype=dtype)
    step = max(1, ARGMAX_SLAB_VOXELS // max(1, math.prod(scores.shape[2:])))
    for start in range(0, out.shape[0], step):
        out[start : start + step] = scores[:, start : start + step].argmax(axis=0)
    return out


def argmax_channels(channels: Iterable[np.ndarray], count: int) -> np.ndarray:
    """:func:`argmax_classes` of the ``count`` class scores that ``channels`` yields one at a time (each
    ``(*S)``), without ever holding them all: a running maximum, so K channels of a CT (1.3 GB for 4
    classes, 512 x 512 x 300) cost one channel at a time plus the best scores so far.

    The same classes as ``argmax_classes(np.stack(channels))``: a later class wins only where its score is
    strictly larger (the first on a tie, as ``argmax``), and a NaN wins over any number, the first NaN
    over later ones (numpy's ``argmax`` treats NaN as the maximum). The channels are consumed: the first
    becomes the running maximum and is overwritten.
    """
    best: np.ndarray | None = None
    classes = np.empty(0, dtype=np.uint8)
    for k, score in enumerate(channels):
        if best is None:
            best = score
            classes = np.zeros(score.shape, dtype=np.uint8 if count <= 256 else np.uint16)
            continue
        better = score > best
        nan = np.isnan(score)
        if nan.any():
            better |= nan & ~np.isnan(best)
        classes[better] = k
        np.copyto(best, score, where=better)
    return classes


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
