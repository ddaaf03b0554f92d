"""The report's quality-control table: every case of ``qc.json`` (written by `attnseg predict`), failed
and flagged cases first, with the predicted Dice, its interval, the true Dice when `attnseg evaluate`
compared them (``qc_evaluation.json``), and what is wrong in words."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from attnseg.visualize import html

SEVERITY = {"fail": 0, "check": 1, "ok": 2}


def flagged_first(cases: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """fail, then check, then ok; lowest predicted Dice first within each."""

    def key(case: Mapping[str, Any]) -> tuple[int, float, str]:
        dice = case.get("predicted_dice")
        dice = dice if isinstance(dice, (int, float)) and not math.isnan(dice) else -1.0
        return SEVERITY.get(case.get("verdict", "ok"), 2), dice, str(case.get("case", ""))

    return sorted(cases, key=key)


def qc_section(qc: Mapping[str, Any], evaluation: Mapping[str, Any] | None = None) -> str:
    """The table, and a line on how well the predicted Dice ranked the true one when it is known."""
    true_dice = {row["case"]: row["true_dice"] for row in (evaluation or {}).get("per_case", [])}
    headers = ["case", "verdict", "predicted Dice", "interval"]
    headers += ["true Dice"] if true_dice else []
    headers.append("why")
    rows = []
    for case in flagged_first(qc.get("cases", [])):
        low, high = (case.get("interval") or [None, None])[:2]
        verdict = case.get("verdict", "")
        row: list[html.Cell | str] = [
            str(case.get("case", "")),
            html.Cell(verdict, css_class="flag text" if verdict != "ok" else "text"),
            html.Cell(html.number(case.get("predicted_dice")), bar=case.get("predicted_dice")),
            f"{html.number(low, 2)}-{html.number(high, 2)}",
        ]
        if true_dice:
            value = true_dice.get(case.get("case"))
            row.append(html.Cell(html.number(value), bar=value))
        reasons = "; ".join(flag.get("message", "") for flag in case.get("flags", []))
        row.append(html.Cell(reasons, css_class="flag text" if reasons else "text"))
        rows.append(row)
    counts = (qc.get("summary") or {}).get("verdicts", {})
    caption = ", ".join(f"{counts.get(v, 0)} {v}" for v in ("fail", "check", "ok")) + "; flagged cases first."
    note = ""
    if evaluation:
        note = (
            f'<p class="note">Spearman correlation of predicted and true Dice: '
            f"{html.number(evaluation.get('spearman'), 2)} over {evaluation.get('cases')} cases; the verdicts "
            f"flagged {evaluation.get('failures_caught')} of {evaluation.get('failures')} failed cases (true Dice "
            f"under {evaluation.get('failure_dice')}) and {evaluation.get('good_cases_flagged')} of "
            f"{evaluation.get('good_cases')} good ones.</p>"
        )
    return html.table(headers, rows, table_id="quality-control", caption=caption) + note
