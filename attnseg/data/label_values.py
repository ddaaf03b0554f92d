"""The values a label map holds that are not classes, and how many voxels hold each.

Metrics compare a mask with its reference class by class, so a voxel whose value is no class counts as
background on both sides: a stray 7, or a whole prediction numbered by another label list (a model trained
with liver 1 against references with liver 2), would score quietly wrong. The check runs on the array
already read for the metrics, never by reading the file again (reading a 512 x 512 x 200 uint8 ``.nii.gz``
takes about 1 s), and costs a few milliseconds there: the values that could be stray are those between the
mask's smallest and largest that are no class, each counted with one comparison, where counting every
value takes 60 ms (``np.bincount`` by chunks) and ``np.unique`` 140 ms.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np

# Values listed by name in a message; more are counted ("and 40 more values").
_SHOWN = 10
# Up to this many values that could be stray are counted one comparison each (6 ms on a 512 x 512 x 200 mask);
# more, every value at once.
_FEW = 8
# np.bincount widens its input to int64: a whole CT mask's copy (420 MB) is paged in afresh on every call (0.9 s
# where these 8 MB chunks take 60 ms).
_CHUNK = 1 << 20


def value_counts(array: np.ndarray) -> dict[int | float, int]:
    """Voxels per value of ``array``; a whole number is an ``int`` key, whatever the dtype (a float mask's 2.0
    is class 2), anything else (0.5, NaN) a ``float`` key."""
    flat = np.asarray(array).ravel()
    if flat.dtype.kind == "b" or flat.dtype in (np.uint8, np.uint16):  # what masks are stored as: the fast path
        counts = np.zeros(2 if flat.dtype.kind == "b" else np.iinfo(flat.dtype).max + 1, np.int64)
        for start in range(0, flat.size, _CHUNK):
            part = np.bincount(flat[start : start + _CHUNK])
            counts[: part.size] += part
        return {int(value): int(counts[value]) for value in np.flatnonzero(counts)}
    values, counts = np.unique(flat, return_counts=True)
    return {_number(value): int(count) for value, count in zip(values.tolist(), counts.tolist(), strict=True)}


def stray_values(array: np.ndarray, classes: Iterable[int]) -> dict[int | float, int]:
    """Voxels per value of ``array`` that is not one of ``classes``; background (0) always is one, named or
    not. Keys as :func:`value_counts`'."""
    allowed = {0, *(int(value) for value in classes)}
    flat = np.asarray(array).ravel()
    if flat.dtype.kind in "biu" and flat.size:  # integers: only the values between the extremes can be there
        low, high = int(flat.min()), int(flat.max())
        candidates = [value for value in range(low, high + 1) if value not in allowed] if high - low <= 64 else None
        if candidates is not None and len(candidates) <= _FEW:
            counts = {value: int(np.count_nonzero(flat == value)) for value in candidates}
            return {value: count for value, count in counts.items() if count}
    return {value: count for value, count in value_counts(flat).items() if value not in allowed}


def describe_stray(stray: Mapping[int | float, int]) -> str:
    """``value 7 (1 voxel) is`` or ``values 3 (1 voxel), 9 (2 voxels) are``, for a message saying what they are
    not; at most ten values, then how many more."""
    items = [f"{value:g} ({count:,} voxel{'' if count == 1 else 's'})" for value, count in sorted(stray.items())]
    listed = ", ".join(items[:_SHOWN]) + (f" and {len(items) - _SHOWN} more values" if len(items) > _SHOWN else "")
    return f"value {listed} is" if len(items) == 1 else f"values {listed} are"


def _number(value: float) -> int | float:
    return int(value) if float(value).is_integer() else float(value)
