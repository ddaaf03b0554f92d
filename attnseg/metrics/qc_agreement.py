"""How well prediction's quality control foretold the true quality: the Spearman correlation between the
predicted and the true Dice of every case, and how many of the failed cases (true Dice under a
threshold) the verdicts caught (``check`` or ``fail``), and how many good cases they flagged for nothing.

A predicted Dice is useful for ranking (which masks to look at first) even where its values are off,
so the rank correlation is the measure, not the error of the values.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy import stats

# A case whose true mean Dice is below this failed (the mask needs correcting before use).
FAILURE_DICE = 0.5


def spearman(predicted: Sequence[float], true: Sequence[float]) -> float:
    """Spearman's rank correlation (ties get mean ranks); NaN with fewer than 3 cases or no spread."""
    a, b = np.asarray(predicted, dtype=float), np.asarray(true, dtype=float)
    keep = np.isfinite(a) & np.isfinite(b)
    if keep.sum() < 3 or np.ptp(a[keep]) == 0 or np.ptp(b[keep]) == 0:
        return float("nan")
    return float(stats.spearmanr(a[keep], b[keep]).statistic)


def qc_agreement(
    qc_cases: Sequence[Mapping[str, Any]], true_dice: Mapping[str, float], failure_dice: float = FAILURE_DICE
) -> dict[str, Any]:
    """Compare ``qc.json``'s cases with the true mean Dice per case id (cases on one side only are left out)."""
    rows = [
        {
            "case": case["case"],
            "verdict": case["verdict"],
            "predicted_dice": float(case["predicted_dice"]),
            "true_dice": float(true_dice[case["case"]]),
            "flags": [flag["code"] for flag in case.get("flags", [])],
        }
        for case in qc_cases
        if case["case"] in true_dice
    ]
    failed = [r for r in rows if r["true_dice"] < failure_dice]
    good = [r for r in rows if r["true_dice"] >= failure_dice]
    return {
        "cases": len(rows),
        "spearman": spearman([r["predicted_dice"] for r in rows], [r["true_dice"] for r in rows]),
        "failure_dice": failure_dice,
        "failures": len(failed),
        "failures_caught": sum(r["verdict"] != "ok" for r in failed),
        "good_cases_flagged": sum(r["verdict"] != "ok" for r in good),
        "good_cases": len(good),
        "per_case": rows,
    }
