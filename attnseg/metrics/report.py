"""Evaluation reports over many cases: per-case per-class metrics, nnU-Net-style summary.json, CSV, Markdown.

The arrays come from the caller (the data layer reads the files and checks their geometry); this
module computes, aggregates and writes. Aggregation follows nnU-Net v2's
``compute_metrics_on_folder``: per class, the NaN-ignoring mean of each metric over cases; the
foreground mean is the mean of those class means over every class but label 0. With our empty-mask
policy the NaNs are the distances (and precision or recall) of the flagged cases, which the means
therefore skip; the reports say how many were skipped.
"""

from __future__ import annotations

import csv
import io
import math
import os
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from tqdm.auto import tqdm

from attnseg.errors import DataError
from attnseg.fileio import write_json, write_text
from attnseg.metrics.binary import (
    DEFAULT_NSD_TOLERANCE_MM,
    METRIC_KEYS,
    ClassMetrics,
    check_labels,
    check_spacing,
    label_metrics,
)

EMPTY_POLICY_TEXT = (
    "both empty: Dice/IoU/Precision/Recall/VolumeSimilarity/NSD 1, HD95/ASSD/BoundaryOffset 0; "
    "one empty: Dice/IoU/VolumeSimilarity 0, the 0/0 one of Precision/Recall NaN, HD95/ASSD/NSD/BoundaryOffset NaN, "
    "flagged in 'empty'; means skip NaN"
)
# A class's masks are "systematically shifted" when their mean boundary offset is at least this many mm and
# this share of the ASSD (EvaluationReport.systematic_shifts).
SHIFT_MIN_MM = 1.0
SHIFT_MIN_SHARE = 0.6
CSV_COLUMNS = ("case_id", "label", "label_value", "empty", *METRIC_KEYS, "prediction_file", "reference_file")
# The columns of the Markdown table: report key -> header (the NSD header gets the tolerance).
TABLE_METRICS = {
    "Dice": "Dice",
    "IoU": "IoU",
    "Precision": "Precision",
    "Recall": "Recall",
    "VolumeSimilarity": "VS",
    "HD95": "HD95 (mm)",
    "ASSD": "ASSD (mm)",
    "NSD": "NSD",
    "BoundaryOffset": "offset (mm)",
}
PIXELS_NOTE = (
    "Distances, volumes and the NSD tolerance are in pixels (px): these pictures store no pixel size. "
    "`attnseg evaluate --pixel-size MM` states it."
)
# The unit of every distance of a report: mm, or pixels for pictures that store no pixel size
# (attnseg.data.pixel_size); a report never averages the two.
MM, PIXELS = "mm", "px"
# Report keys whose names claim mm, and what they are called in a report in pixels.
_PIXEL_KEYS = {"volume_pred_mm3": "volume_pred_px", "volume_ref_mm3": "volume_ref_px"}
# cases.csv: a column is the only place its unit can be written, so the distances of a report in pixels say it.
_PIXEL_COLUMNS = {**_PIXEL_KEYS, "HD95": "HD95_px", "ASSD": "ASSD_px", "BoundaryOffset": "BoundaryOffset_px"}


@dataclass(frozen=True)
class EvaluationCase:
    """One case to evaluate: label maps ``(X, Y[, Z])`` (or ``(1, X, Y[, Z])``) and the voxel size in ``unit``
    (mm; ``'px'`` with a spacing of 1 for a picture that stores no pixel size)."""

    case_id: str
    prediction: np.ndarray
    reference: np.ndarray
    spacing: Sequence[float]
    prediction_file: str | None = None
    reference_file: str | None = None
    unit: str = MM


@dataclass(frozen=True)
class CaseResult:
    """The metrics of one case, ``{class name: ClassMetrics}`` in the order of the labels."""

    case_id: str
    metrics: dict[str, ClassMetrics]
    spacing: tuple[float, ...]
    prediction_file: str | None = None
    reference_file: str | None = None
    unit: str = MM


@dataclass
class EvaluationReport:
    """Per-case per-class results and their aggregates.

    Attributes:
        labels: the evaluated classes, name -> label value.
        nsd_tolerance_mm: the NSD tolerance used, in ``unit`` (the name is nnU-Net's and the API's).
        cases: one CaseResult per case, in the order given.
        unit: of every distance, the spacing and the NSD tolerance: ``'mm'``, or ``'px'`` (pictures).
    """

    labels: dict[str, int]
    nsd_tolerance_mm: float
    cases: list[CaseResult] = field(default_factory=list)
    unit: str = MM

    def values(self, name: str, key: str) -> np.ndarray:
        """The per-case values of metric ``key`` for class ``name``."""
        return np.array([float(c.metrics[name].get(key)) for c in self.cases], dtype=np.float64)

    def mean(self) -> dict[str, dict[str, float]]:
        """``{class name: {metric: NaN-ignoring mean over cases}}`` (NaN when no case defines it)."""
        return {
            name: {key: nan_stat(np.nanmean, self.values(name, key)) for key in METRIC_KEYS} for name in self.labels
        }

    def std(self) -> dict[str, dict[str, float]]:
        """``{class name: {metric: sample standard deviation (ddof=1) over the cases that define it}}``."""
        return {
            name: {key: nan_stat(lambda v: np.nanstd(v, ddof=1), self.values(name, key)) for key in METRIC_KEYS}
            for name in self.labels
        }

    def defined(self) -> dict[str, dict[str, int]]:
        """``{class name: {metric: number of cases where it is not NaN}}``."""
        return {
            name: {key: int(np.count_nonzero(~np.isnan(self.values(name, key)))) for key in METRIC_KEYS}
            for name in self.labels
        }

    def foreground_mean(self) -> dict[str, float]:
        """``{metric: mean of the class means over the classes whose value is not 0}`` (nnU-Net's definition)."""
        means = self.mean()
        foreground = [name for name, value in self.labels.items() if value != 0]
        return {key: nan_stat(np.mean, np.array([means[n][key] for n in foreground])) for key in METRIC_KEYS}

    def systematic_shifts(self, min_mm: float = SHIFT_MIN_MM, min_share: float = SHIFT_MIN_SHARE) -> dict[str, float]:
        """``{class name: mean boundary offset}`` for the classes whose masks lie consistently inside (< 0) or
        outside (> 0) the references: by at least ``min_mm`` on average, and by at least ``min_share`` of
        the ASSD, so that most of the surface error is that one shift, as when two label conventions differ
        (a brain mask with or without the CSF rim), not scattered misses."""
        shifts = {}
        for name, metrics in self.mean().items():
            offset, assd = metrics["BoundaryOffset"], metrics["ASSD"]
            if np.isfinite(offset) and abs(offset) >= min_mm and abs(offset) >= min_share * assd:
                shifts[name] = offset
        return shifts

    def flagged(self) -> list[dict[str, Any]]:
        """The (case, class) pairs with exactly one empty side: ``case_id``, ``label``, ``label_value``, ``empty``."""
        return [
            {"case_id": c.case_id, "label": name, "label_value": self.labels[name], "empty": m.empty}
            for c in self.cases
            for name, m in c.metrics.items()
            if m.flagged
        ]

    def empty_counts(self) -> dict[str, dict[str, int]]:
        """``{class name: {"both": n, "prediction": n, "reference": n}}``: cases per empty-mask outcome."""
        out = {name: {"both": 0, "prediction": 0, "reference": 0} for name in self.labels}
        for c in self.cases:
            for name, m in c.metrics.items():
                if m.empty != "none":
                    out[name][m.empty] += 1
        return out


def nan_stat(fn: Any, values: np.ndarray) -> float:
    """``fn(values)`` as a float, NaN (without a RuntimeWarning) when no value is defined."""
    if values.size == 0 or np.all(np.isnan(values)):
        return float("nan")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # ddof=1 with one defined value
        return float(fn(values))


def _as_case(item: EvaluationCase | Sequence[Any]) -> EvaluationCase:
    if isinstance(item, EvaluationCase):
        return item
    if isinstance(item, Sequence) and 4 <= len(item) <= 6:
        return EvaluationCase(*item)
    raise DataError(
        "each case must be an EvaluationCase or a tuple (case_id, prediction, reference, spacing"
        f"[, prediction_file, reference_file]), got {type(item).__name__}"
    )


def evaluate_cases(
    cases: Iterable[EvaluationCase | CaseResult | Sequence[Any]],
    labels: Mapping[str, int],
    nsd_tolerance_mm: float = DEFAULT_NSD_TOLERANCE_MM,
    include_background: bool = False,
    progress: bool = False,
) -> EvaluationReport:
    """Evaluate every case, per class.

    Args:
        cases: EvaluationCase objects, or tuples ``(case_id, prediction, reference, spacing[,
            prediction_file, reference_file])``; a generator is consumed lazily, one case in memory at a time.
            Cases already evaluated elsewhere (CaseResult from :func:`evaluate_case`, e.g. in worker
            processes, with the same labels and tolerance) are taken as they are.
        labels: class name -> label value; label 0 is skipped unless ``include_background``.
        nsd_tolerance_mm: the NSD tolerance τ in mm.
        include_background: also evaluate label 0.
        progress: show a progress bar over cases (tqdm, on stderr).

    Raises:
        DataError: no case, a repeated case id, or a case whose arrays or spacing do not fit (the
            message names the case).
    """
    classes = check_labels(labels, include_background)
    report = EvaluationReport(labels=classes, nsd_tolerance_mm=float(nsd_tolerance_mm))
    seen: set[str] = set()
    for item in tqdm(cases, desc="evaluate", unit="case", disable=not progress):
        result = item if isinstance(item, CaseResult) else evaluate_case(item, classes, nsd_tolerance_mm)
        if result.case_id in seen:
            raise DataError(f"case {result.case_id!r} is given twice")
        seen.add(result.case_id)
        report.cases.append(result)
    if not report.cases:
        raise DataError("no case to evaluate")
    report.unit = common_unit(report.cases)
    return report


class Measured(Protocol):
    """A case with a distance unit: an EvaluationCase, a CaseResult, or a pair of files yet to be read."""

    @property
    def case_id(self) -> str: ...

    @property
    def unit(self) -> str: ...


def common_unit(cases: Iterable[Measured]) -> str:
    """The distance unit all ``cases`` share; DataError naming the cases of each unit when they mix mm and
    pixels: a mean over both would be a number in no unit at all."""
    by_unit: dict[str, list[str]] = {}
    for case in cases:
        by_unit.setdefault(case.unit, []).append(str(case.case_id))
    if len(by_unit) == 1:
        return next(iter(by_unit))
    listed = "; ".join(
        f"{len(ids)} in {unit} ({', '.join(ids[:5])}{', ...' if len(ids) > 5 else ''})" for unit, ids in by_unit.items()
    )
    raise DataError(
        f"the cases mix distance units: {listed}. Pictures that store no pixel size are measured in pixels; "
        "evaluate them apart from the others, or state their pixel size (attnseg evaluate --pixel-size)"
    )


def evaluate_case(
    item: EvaluationCase | Sequence[Any], classes: Mapping[str, int], nsd_tolerance_mm: float
) -> CaseResult:
    """The metrics of one case for ``classes`` (checked labels, e.g. from ``check_labels``), every class
    of ``classes`` included; errors name the case and its files."""
    case = _as_case(item)
    case_id = str(case.case_id)
    if case.unit not in (MM, PIXELS):
        raise DataError(f"case {case_id!r}: unknown distance unit {case.unit!r} (expected {MM!r} or {PIXELS!r})")
    try:
        spacing = check_spacing(case.spacing)
        metrics = label_metrics(
            case.prediction, case.reference, classes, spacing, nsd_tolerance_mm, include_background=True
        )
    except DataError as error:
        files = ", ".join(f for f in (case.prediction_file, case.reference_file) if f)
        raise DataError(f"case {case_id!r}" + (f" ({files})" if files else "") + f": {error}") from error
    return CaseResult(case_id, metrics, spacing, case.prediction_file, case.reference_file, case.unit)


def _json_number(value: Any) -> Any:
    """Plain Python numbers for json (NaN stays NaN, as in nnU-Net's summary.json)."""
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    return value


def summary_dict(report: EvaluationReport) -> dict[str, Any]:
    """The summary.json content: nnU-Net v2's keys first, then ours.

    * ``foreground_mean``: ``{metric: value}``;
    * ``mean``: ``{"<label value>": {metric: value}}`` (keys are the label values as strings, as nnU-Net);
    * ``metric_per_case``: ``[{"prediction_file", "reference_file", "case_id", "spacing",
      "metrics": {"<label value>": {metric: value, ..., "empty": ...}}}]``;
    * ours: ``std`` and ``n_defined`` (same layout as ``mean``), ``labels`` (name -> value),
      ``nsd_tolerance_mm``, ``n_cases``, ``empty_counts`` (``{"<label value>": {"both", "prediction",
      "reference"}}``), ``flagged`` (list from :meth:`EvaluationReport.flagged`), ``empty_policy``,
      ``distance_unit`` (``"mm"``).

    A report in pixels (pictures that store no pixel size) says ``"distance_unit": "px"``, and its keys that
    name mm are named in pixels: ``nsd_tolerance_px``, ``volume_pred_px``, ``volume_ref_px``.
    """
    key_of = {name: str(value) for name, value in report.labels.items()}
    renamed = _PIXEL_KEYS if report.unit == PIXELS else {}

    def numbers(metrics: Mapping[str, Any]) -> dict[str, Any]:
        return {renamed.get(k, k): _json_number(v) for k, v in metrics.items()}

    def by_value(per_name: Mapping[str, Any]) -> dict[str, Any]:
        return {key_of[name]: numbers(d) for name, d in per_name.items()}

    per_case = [
        {
            "prediction_file": c.prediction_file,
            "reference_file": c.reference_file,
            "case_id": c.case_id,
            "spacing": list(c.spacing),
            "metrics": {key_of[n]: numbers(m.as_dict()) for n, m in c.metrics.items()},
        }
        for c in report.cases
    ]
    return {
        "foreground_mean": {k: _json_number(v) for k, v in report.foreground_mean().items()},
        "mean": by_value(report.mean()),
        "metric_per_case": per_case,
        "std": by_value(report.std()),
        "n_defined": by_value(report.defined()),
        "labels": dict(report.labels),
        f"nsd_tolerance_{report.unit}": report.nsd_tolerance_mm,
        "n_cases": len(report.cases),
        "empty_counts": by_value(report.empty_counts()),
        "flagged": report.flagged(),
        "empty_policy": EMPTY_POLICY_TEXT,
        "distance_unit": report.unit,
    }


def write_summary_json(report: EvaluationReport, path: str | os.PathLike[str], overwrite: bool = False) -> Path:
    """Write :func:`summary_dict` to ``path`` atomically (NaN as the token ``NaN``, as nnU-Net does)."""
    return write_json(path, summary_dict(report), overwrite=overwrite, allow_nan=True)


def case_rows(report: EvaluationReport) -> list[dict[str, Any]]:
    """One row per (case, class) with the :func:`csv_columns` of the report's unit."""
    renamed = _PIXEL_COLUMNS if report.unit == PIXELS else {}
    return [
        {
            "case_id": c.case_id,
            "label": name,
            "label_value": report.labels[name],
            **{renamed.get(k, k): v for k, v in m.as_dict().items()},
            "prediction_file": c.prediction_file or "",
            "reference_file": c.reference_file or "",
        }
        for c in report.cases
        for name, m in c.metrics.items()
    ]


def csv_columns(unit: str = MM) -> tuple[str, ...]:
    """The per-case CSV's columns: :data:`CSV_COLUMNS`, whose distances and volumes are named in pixels
    (``HD95_px``, ``volume_pred_px``...) when ``unit`` is ``'px'``, so that no column in pixels reads as mm."""
    renamed = _PIXEL_COLUMNS if unit == PIXELS else {}
    return tuple(renamed.get(column, column) for column in CSV_COLUMNS)


def case_csv(report: EvaluationReport) -> str:
    """The per-case CSV as text: a header of :func:`csv_columns`, one row per (case, class); NaN as ``nan``."""
    return csv_text(case_rows(report), csv_columns(report.unit))


def csv_text(rows: Iterable[Mapping[str, Any]], columns: Sequence[str]) -> str:
    """Rows as CSV text under a header of ``columns``, ``\\n`` line ends."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def write_case_csv(report: EvaluationReport, path: str | os.PathLike[str], overwrite: bool = False) -> Path:
    """Write :func:`case_csv` to ``path`` atomically."""
    return write_text(path, case_csv(report), overwrite=overwrite)


def _cell(mean: float, std: float, digits: int) -> str:
    if math.isnan(mean):
        return "n/a"
    if math.isnan(std):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def table_headers(unit: str = MM, nsd_tolerance: float | None = None) -> dict[str, str]:
    """:data:`TABLE_METRICS` with the distances' ``unit`` written in (``HD95 (px)``), and the NSD header with its
    tolerance (``NSD@1mm``, ``NSD@2px``) when one is given."""
    headers = {key: header.replace(f"({MM})", f"({unit})") for key, header in TABLE_METRICS.items()}
    if nsd_tolerance:
        headers["NSD"] = f"NSD@{nsd_tolerance:g}{unit}"
    return headers


def markdown_table(report: EvaluationReport) -> str:
    """Mean ± sample std per class and metric over the cases, a foreground-mean row, and the empty-mask counts.

    Distances are in the report's unit (mm; pixels for pictures that store no pixel size, said under the
    table) with 2 decimals, the rest with 3. The ``empty P/R/both`` column counts the
    cases whose prediction, reference or both had no voxel of the class; the flagged ones (P, R) are
    left out of the distance means.
    """
    means, stds, empties = report.mean(), report.std(), report.empty_counts()
    headers = table_headers(report.unit, report.nsd_tolerance_mm)
    digits = {k: 2 if k in ("HD95", "ASSD", "BoundaryOffset") else 3 for k in headers}
    lines = [
        "| class | " + " | ".join(headers.values()) + " | empty P/R/both |",
        "|---|" + "---|" * (len(headers) + 1),
    ]
    for name in report.labels:
        cells = [_cell(means[name][k], stds[name][k], digits[k]) for k in headers]
        e = empties[name]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {e['prediction']}/{e['reference']}/{e['both']} |")
    foreground = report.foreground_mean()
    cells = [_cell(foreground[k], float("nan"), digits[k]) for k in headers]
    lines.append("| foreground mean | " + " | ".join(cells) + " | |")
    text = "\n".join(lines) + f"\n\n{len(report.cases)} cases. Empty masks: {EMPTY_POLICY_TEXT}.\n"
    return text + (PIXELS_NOTE + "\n" if report.unit == PIXELS else "")


def write_markdown(report: EvaluationReport, path: str | os.PathLike[str], overwrite: bool = False) -> Path:
    """Write :func:`markdown_table` to ``path`` atomically."""
    return write_text(path, markdown_table(report), overwrite=overwrite)
