"""Segmentation metrics with physical spacing, per case and per class, and the reports built on them.

* :mod:`~attnseg.metrics.overlap`: Dice, IoU, precision, recall, volume similarity from voxel counts;
* :mod:`~attnseg.metrics.surface`: HD95, ASSD, NSD and the boundary offset on boundary voxels, in mm (MONAI);
* :mod:`~attnseg.metrics.binary`: everything for one class in one case, and the empty-mask policy;
* :mod:`~attnseg.metrics.report`: many cases, summary.json (nnU-Net v2 keys), CSV and Markdown;
* :mod:`~attnseg.metrics.sides`: the boundary offset by side of the patient, and pieces missed whole.
"""

from attnseg.metrics.binary import (
    DEFAULT_NSD_TOLERANCE_MM,
    METRIC_KEYS,
    ClassMetrics,
    binary_metrics,
    label_metrics,
)
from attnseg.metrics.overlap import OverlapCounts, overlap_counts
from attnseg.metrics.report import (
    CSV_COLUMNS,
    CaseResult,
    EvaluationCase,
    EvaluationReport,
    case_csv,
    evaluate_case,
    evaluate_cases,
    markdown_table,
    summary_dict,
    write_case_csv,
    write_markdown,
    write_summary_json,
)
from attnseg.metrics.surface import SurfaceDistances, assd, boundary_offset, hd95, nsd, surface_distances

__all__ = [
    "CSV_COLUMNS",
    "DEFAULT_NSD_TOLERANCE_MM",
    "METRIC_KEYS",
    "CaseResult",
    "ClassMetrics",
    "EvaluationCase",
    "EvaluationReport",
    "OverlapCounts",
    "SurfaceDistances",
    "assd",
    "binary_metrics",
    "boundary_offset",
    "case_csv",
    "evaluate_case",
    "evaluate_cases",
    "hd95",
    "label_metrics",
    "markdown_table",
    "nsd",
    "overlap_counts",
    "summary_dict",
    "surface_distances",
    "write_case_csv",
    "write_markdown",
    "write_summary_json",
]
