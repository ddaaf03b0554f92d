"""Overlap metrics from the confusion counts of two binary masks.

These are the plain formulas: a 0/0 gives NaN. What a metric is worth when a mask is empty is decided
in one place, :func:`attnseg.metrics.binary.binary_metrics`, which never calls these with an empty
union.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class OverlapCounts:
    """Voxel counts of a prediction P against a reference R: TP = |P∩R|, FP = |P\\R|, FN = |R\\P|, TN = rest."""

    tp: int
    fp: int
    fn: int
    tn: int

    @property
    def n_pred(self) -> int:
        return self.tp + self.fp

    @property
    def n_ref(self) -> int:
        return self.tp + self.fn


def overlap_counts(pred: np.ndarray, ref: np.ndarray) -> OverlapCounts:
    """Confusion counts of two boolean masks of the same shape."""
    tp = int(np.count_nonzero(pred & ref))
    n_pred = int(np.count_nonzero(pred))
    n_ref = int(np.count_nonzero(ref))
    fp, fn = n_pred - tp, n_ref - tp
    return OverlapCounts(tp=tp, fp=fp, fn=fn, tn=int(pred.size) - tp - fp - fn)


def _ratio(numerator: float, denominator: float) -> float:
    return float(numerator) / denominator if denominator else float("nan")


def dice(c: OverlapCounts) -> float:
    """Dice = 2|P∩R| / (|P| + |R|)."""
    return _ratio(2 * c.tp, 2 * c.tp + c.fp + c.fn)


def iou(c: OverlapCounts) -> float:
    """IoU (Jaccard) = |P∩R| / |P∪R|."""
    return _ratio(c.tp, c.tp + c.fp + c.fn)


def precision(c: OverlapCounts) -> float:
    """Precision (positive predictive value) = |P∩R| / |P|."""
    return _ratio(c.tp, c.n_pred)


def recall(c: OverlapCounts) -> float:
    """Recall (sensitivity) = |P∩R| / |R|."""
    return _ratio(c.tp, c.n_ref)


def volume_similarity(c: OverlapCounts) -> float:
    """Volume similarity = 1 - ||P| - |R|| / (|P| + |R|) (Taha & Hanbury 2015); 1 for equal volumes.

    Voxel counts stand for volumes: within one case every voxel has the same size.
    """
    return 1.0 - _ratio(abs(c.n_pred - c.n_ref), c.n_pred + c.n_ref)
