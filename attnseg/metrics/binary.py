"""All metrics of one class in one case, and the empty-mask policy (the only place it is decided).

Empty-mask policy (P = prediction, R = reference, for one class in one case):

==================  =========================================  ========================================
case                overlap (Dice, IoU, precision, recall, VS)  distances (HD95, ASSD, offset), NSD
==================  =========================================  ========================================
both non-empty      the formulas                               the formulas
both empty          all 1 (a correct "absent")                 HD95 = ASSD = offset = 0, NSD = 1
P empty, R not      Dice = IoU = recall = VS = 0,              NaN, and the case is flagged
                    precision NaN (no prediction to judge)     (``empty="prediction"``)
R empty, P not      Dice = IoU = precision = VS = 0,           NaN, flagged (``empty="reference"``)
                    recall NaN (nothing to recall)
==================  =========================================  ========================================

Why: a class correctly predicted absent is a success, so it scores as one (nnU-Net writes NaN there
and so drops the case from its means; we count it). With one side empty no surface distance exists;
NaN keeps the mean distances honest (a made-up penalty such as the image diagonal would dominate
them), and the ``empty`` flag makes those cases visible in every report instead of silently dropped.
Precision with no predicted voxels, and recall with no reference voxels, are 0/0; NaN rather than 0
keeps the other metric's zero from being counted twice.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np

from attnseg.errors import ConfigError, DataError
from attnseg.metrics import overlap
from attnseg.metrics.surface import assd, boundary_offset, hd95, nsd, surface_distances

Empty = Literal["none", "both", "prediction", "reference"]
DEFAULT_NSD_TOLERANCE_MM = 1.0

# Report names of the fields: nnU-Net's where it has the metric ("Dice", "IoU", "TP", ...); the others as named.
_REPORT_NAMES = {
    "dice": "Dice",
    "iou": "IoU",
    "precision": "Precision",
    "recall": "Recall",
    "volume_similarity": "VolumeSimilarity",
    "hd95": "HD95",
    "assd": "ASSD",
    "nsd": "NSD",
    "boundary_offset": "BoundaryOffset",
    "tp": "TP",
    "fp": "FP",
    "fn": "FN",
    "tn": "TN",
}
_FIELD_OF_NAME = {report: name for name, report in _REPORT_NAMES.items()}


@dataclass(frozen=True)
class ClassMetrics:
    """Every metric of one class in one case. Distances in mm, volumes in mm³ (mm² for 2D).

    ``empty`` says which side had no voxel of the class: ``"none"``, ``"both"``, ``"prediction"`` or
    ``"reference"``; the last two are the flagged cases whose distances are NaN.
    """

    dice: float
    iou: float
    precision: float
    recall: float
    volume_similarity: float
    hd95: float
    assd: float
    nsd: float
    boundary_offset: float
    tp: int
    fp: int
    fn: int
    tn: int
    n_pred: int
    n_ref: int
    volume_pred_mm3: float
    volume_ref_mm3: float
    empty: Empty

    @property
    def flagged(self) -> bool:
        """True when exactly one side is empty (distances undefined)."""
        return self.empty in ("prediction", "reference")

    def as_dict(self) -> dict[str, float | int | str]:
        """The metrics under their report names (:data:`METRIC_KEYS`), then ``"empty"``."""
        return {_REPORT_NAMES.get(name, name): value for name, value in asdict(self).items()}

    def get(self, key: str) -> float | int | str:
        """One metric by its report name (``"Dice"``, ``"HD95"``, ``"TP"``, ``"empty"``, ...)."""
        return getattr(self, _FIELD_OF_NAME.get(key, key))


METRIC_KEYS: tuple[str, ...] = tuple(
    _REPORT_NAMES.get(name, name) for name in ClassMetrics.__dataclass_fields__ if name != "empty"
)


def check_spacing(spacing: Sequence[float], ndim: int | None = None) -> tuple[float, ...]:
    """Return ``spacing`` as floats; raise DataError unless it holds ``ndim`` (default: 2 or 3) positive values."""
    try:
        values = tuple(float(s) for s in spacing)
    except (TypeError, ValueError):
        raise DataError(f"spacing must be a sequence of numbers (mm per voxel), got {spacing!r}") from None
    count_ok = len(values) in (2, 3) if ndim is None else len(values) == ndim
    if not count_ok or not all(math.isfinite(s) and s > 0 for s in values):
        expected = "2 or 3" if ndim is None else str(ndim)
        raise DataError(f"spacing must hold {expected} positive values (mm per voxel, one per axis), got {spacing!r}")
    return values


def binary_metrics(
    pred: np.ndarray,
    ref: np.ndarray,
    spacing: Sequence[float],
    nsd_tolerance_mm: float = DEFAULT_NSD_TOLERANCE_MM,
) -> ClassMetrics:
    """All metrics of a predicted against a reference boolean mask (2D or 3D), applying the empty-mask policy.

    Args:
        pred, ref: masks of the same shape; anything non-zero is foreground.
        spacing: voxel size in mm along each array axis.
        nsd_tolerance_mm: the NSD tolerance τ.
    """
    pred, ref = np.asarray(pred).astype(bool, copy=False), np.asarray(ref).astype(bool, copy=False)
    if pred.shape != ref.shape:
        raise DataError(f"prediction shape {pred.shape} differs from reference shape {ref.shape}")
    if pred.ndim not in (2, 3):
        raise DataError(f"masks must be 2D or 3D, got shape {pred.shape}")
    spacing = check_spacing(spacing, pred.ndim)
    if not (math.isfinite(nsd_tolerance_mm) and nsd_tolerance_mm >= 0):
        raise ConfigError(f"the NSD tolerance must be a non-negative number of mm, got {nsd_tolerance_mm}")

    c = overlap.overlap_counts(pred, ref)
    voxel = float(np.prod(spacing))
    counts = dict(tp=c.tp, fp=c.fp, fn=c.fn, tn=c.tn, n_pred=c.n_pred, n_ref=c.n_ref)
    volumes = dict(volume_pred_mm3=c.n_pred * voxel, volume_ref_mm3=c.n_ref * voxel)
    nan = float("nan")

    if c.n_pred == 0 and c.n_ref == 0:
        return ClassMetrics(1.0, 1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 1.0, 0.0, **counts, **volumes, empty="both")
    if c.n_pred == 0:
        return ClassMetrics(0.0, 0.0, nan, 0.0, 0.0, nan, nan, nan, nan, **counts, **volumes, empty="prediction")
    if c.n_ref == 0:
        return ClassMetrics(0.0, 0.0, 0.0, nan, 0.0, nan, nan, nan, nan, **counts, **volumes, empty="reference")

    d = surface_distances(pred, ref, spacing)
    return ClassMetrics(
        dice=overlap.dice(c),
        iou=overlap.iou(c),
        precision=overlap.precision(c),
        recall=overlap.recall(c),
        volume_similarity=overlap.volume_similarity(c),
        hd95=hd95(d),
        assd=assd(d),
        nsd=nsd(d, nsd_tolerance_mm),
        boundary_offset=boundary_offset(d),
        **counts,
        **volumes,
        empty="none",
    )


def check_labels(labels: Mapping[str, int], include_background: bool = False) -> dict[str, int]:
    """The classes to evaluate, name -> integer value; label 0 (background) is dropped unless asked for."""
    out: dict[str, int] = {}
    for name, value in labels.items():
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise ConfigError(f"label {name!r} must map to an integer value, got {value!r}")
        if int(value) in out.values():
            raise ConfigError(f"label value {int(value)} is given to more than one name in {dict(labels)}")
        if int(value) != 0 or include_background:
            out[str(name)] = int(value)
    if not out:
        raise ConfigError(f"no class to evaluate in labels {dict(labels)} (background is skipped)")
    return out


def as_label_map(array: np.ndarray, ndim: int, what: str) -> np.ndarray:
    """A label map of ``ndim`` spatial axes; a leading channel axis of size 1, ``(1, X, Y[, Z])``, is dropped."""
    array = np.asarray(array)
    if array.ndim == ndim + 1 and array.shape[0] == 1:
        array = array[0]
    if array.ndim != ndim:
        raise DataError(f"{what} has shape {array.shape}; expected a {ndim}D label map matching the spacing")
    if array.dtype.kind == "f" and not np.array_equal(array, np.round(array)):
        raise DataError(f"{what} holds non-integer values; expected a label map")
    if array.dtype.kind not in "biuf":
        raise DataError(f"{what} has dtype {array.dtype}; expected integer labels")
    return array


def label_metrics(
    pred: np.ndarray,
    ref: np.ndarray,
    labels: Mapping[str, int],
    spacing: Sequence[float],
    nsd_tolerance_mm: float = DEFAULT_NSD_TOLERANCE_MM,
    include_background: bool = False,
) -> dict[str, ClassMetrics]:
    """Per-class metrics of two label maps, ``{class name: ClassMetrics}`` in the order of ``labels``.

    Args:
        pred, ref: integer label maps, ``(X, Y[, Z])`` or ``(1, X, Y[, Z])``, same shape.
        labels: class name -> label value, e.g. ``{"background": 0, "liver": 1}``.
        spacing: voxel size in mm along each spatial axis; its length sets 2D or 3D.
        nsd_tolerance_mm: the NSD tolerance τ.
        include_background: also evaluate label 0.
    """
    classes = check_labels(labels, include_background)
    spacing = check_spacing(spacing)
    ndim = len(spacing)
    pred = as_label_map(pred, ndim, "the prediction")
    ref = as_label_map(ref, ndim, "the reference")
    if pred.shape != ref.shape:
        raise DataError(f"prediction shape {pred.shape} differs from reference shape {ref.shape}")
    return {
        name: binary_metrics(pred == value, ref == value, spacing, nsd_tolerance_mm) for name, value in classes.items()
    }
