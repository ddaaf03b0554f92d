"""Which slices to show: those with the most of something (predicted foreground, disagreement), spread out.

Taking the top scores alone would often give neighbouring slices that look alike; slices are therefore
picked greedily, best first, at least ``gap`` slices apart (by default a sixth of the volume for three
slices), and returned in anatomical order.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from attnseg.errors import ConfigError

DEFAULT_COUNT = 3


def slice_scores(mask: np.ndarray, axis: int) -> np.ndarray:
    """How many voxels of ``mask`` (*S, boolean) lie in each slice across ``axis``."""
    others = tuple(a for a in range(mask.ndim) if a != axis)
    return np.count_nonzero(mask, axis=others)


def top_slices(scores: Sequence[float], count: int = DEFAULT_COUNT, gap: int | None = None) -> list[int]:
    """Up to ``count`` slice indices, highest score first picked, at least ``gap`` apart, sorted.

    Slices scoring 0 are taken only when nothing scores more; the default gap is ``len // (2 count)``.
    """
    scores = np.asarray(scores, dtype=float)
    if count < 1:
        raise ValueError(f"count must be at least 1, got {count}")
    gap = max(1, len(scores) // (2 * count)) if gap is None else max(1, gap)
    order = np.argsort(-scores, kind="stable")
    if scores[order[0]] <= 0:  # nothing to find: the middle slice
        return [len(scores) // 2]
    chosen: list[int] = []
    for index in order:
        if scores[index] <= 0 or len(chosen) == count:
            break
        if all(abs(int(index) - c) >= gap for c in chosen):
            chosen.append(int(index))
    return sorted(chosen)


def most_foreground(mask: np.ndarray, axis: int, count: int = DEFAULT_COUNT) -> list[int]:
    """The slices with the most foreground (label != 0) in ``mask`` (*S)."""
    return top_slices(slice_scores(np.asarray(mask) != 0, axis), count)


def most_disagreement(
    prediction: np.ndarray, reference: np.ndarray, axis: int, count: int = DEFAULT_COUNT
) -> list[int]:
    """The slices where ``prediction`` and ``reference`` (*S label maps) differ in the most voxels; where
    they agree everywhere, the slices with the most reference foreground."""
    prediction, reference = np.asarray(prediction), np.asarray(reference)
    differs = slice_scores(prediction != reference, axis)
    if differs.any():
        return top_slices(differs, count)
    return most_foreground(reference, axis, count)


def check_slices(indices: Sequence[int], length: int, axis: int | None) -> list[int]:
    """``indices`` as ints within 0..length-1 (negative ones count from the end), else a ConfigError."""
    out = []
    for index in indices:
        resolved = int(index) + length if int(index) < 0 else int(index)
        if not 0 <= resolved < length:
            raise ConfigError(f"slice {index} is outside 0..{length - 1} along voxel axis {axis}")
        out.append(resolved)
    return out


def chosen_slices(
    slices: Sequence[int] | None, axis: int | None, shape: Sequence[int], pick: Callable[[int], Sequence[int]]
) -> list[int | None]:
    """The slices to show across voxel ``axis`` of an array of ``shape``: ``[None]`` for a 2-D image (no
    axis to cut), ``slices`` checked (see :func:`check_slices`), or, for None, those ``pick(axis)`` finds."""
    if axis is None:
        return [None]
    if slices is None:
        return list(pick(axis))
    return list(check_slices(slices, shape[axis], axis))
