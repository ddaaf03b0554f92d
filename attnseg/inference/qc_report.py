"""The quality control of a prediction run on disk: ``qc.json`` (every case, every flag and measure,
and the run's counts) and ``qc.csv`` (one row per case, for a spreadsheet), both written atomically next
to the masks, cases that need a look first."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from attnseg.fileio import write_json, write_text
from attnseg.inference.qc import SEVERITY_RANK, CaseQC

QC_JSON = "qc.json"
QC_CSV = "qc.csv"
CSV_COLUMNS = ("case", "verdict", "predicted_dice", "dice_low", "dice_high", "flags", "reasons")


def ordered(cases: Sequence[CaseQC]) -> list[CaseQC]:
    """Failed cases first, then those to check, then the rest; lowest predicted Dice first within each."""
    return sorted(cases, key=lambda c: (-SEVERITY_RANK[c.verdict], c.predicted_dice, c.case_id))


def qc_summary(cases: Sequence[CaseQC]) -> dict[str, Any]:
    """The run's counts: cases per verdict and per flag."""
    verdicts = {v: sum(c.verdict == v for c in cases) for v in SEVERITY_RANK}
    flags: dict[str, int] = {}
    for case in cases:
        for code in {f.code for f in case.flags}:
            flags[code] = flags.get(code, 0) + 1
    return {"cases": len(cases), "verdicts": verdicts, "flags": dict(sorted(flags.items()))}


def csv_text(cases: Sequence[CaseQC]) -> str:
    """One row per case: verdict, predicted Dice and interval, flag codes and their sentences."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for case in ordered(cases):
        writer.writerow(
            [
                case.case_id,
                case.verdict,
                f"{case.predicted_dice:.4f}",
                f"{case.interval[0]:.4f}",
                f"{case.interval[1]:.4f}",
                " ".join(f.code for f in case.flags),
                "; ".join(f.message for f in case.flags),
            ]
        )
    return buffer.getvalue()


def write_qc(output: str | Path, cases: Sequence[CaseQC], run: dict[str, Any] | None = None) -> tuple[Path, Path]:
    """Write ``OUTPUT/qc.json`` and ``OUTPUT/qc.csv`` (replacing those of an earlier run)."""
    output = Path(output)
    document = {"summary": qc_summary(cases), "run": run or {}, "cases": [c.to_dict() for c in ordered(cases)]}
    json_path = write_json(output / QC_JSON, document, overwrite=True)
    csv_path = write_text(output / QC_CSV, csv_text(cases), overwrite=True)
    return json_path, csv_path
