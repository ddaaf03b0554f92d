"""Evaluation over cases: aggregation as nnU-Net's, and the CSV, summary.json and Markdown outputs."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest

from attnseg.errors import DataError, OutputExistsError
from attnseg.metrics import (
    CSV_COLUMNS,
    METRIC_KEYS,
    EvaluationCase,
    evaluate_cases,
    markdown_table,
    summary_dict,
    write_case_csv,
    write_markdown,
    write_summary_json,
)

LABELS = {"background": 0, "liver": 1, "tumour": 2}
SPACING = (1.0, 1.0, 3.0)


def cube(lo: int, hi: int, value: int = 1, shape: tuple[int, ...] = (14, 14, 14)) -> np.ndarray:
    out = np.zeros(shape, np.uint8)
    out[lo:hi, lo:hi, lo:hi] = value
    return out


@pytest.fixture()
def cases() -> list[EvaluationCase]:
    """Three cases with hand-known liver metrics and each tumour outcome of the empty-mask policy."""
    ref_a = cube(2, 12)
    pred_a = np.roll(ref_a, 1, axis=2)  # the cube-shift case: Dice 0.9, HD95 3, ASSD 416/488
    ref_a[5:7, 5:7, 5:7] = 2
    pred_a[5:7, 5:7, 5:7] = 2  # tumour exact
    ref_b = cube(2, 12)
    pred_b = cube(2, 12)  # liver exact; tumour absent on both sides
    ref_c = cube(2, 12)
    pred_c = cube(2, 12)
    ref_c[3:5, 3:5, 3:5] = 2  # tumour missed
    return [
        EvaluationCase("a", pred_a, ref_a, SPACING, "pred/a.nii.gz", "ref/a.nii.gz"),
        EvaluationCase("b", pred_b, ref_b, SPACING, "pred/b.nii.gz", "ref/b.nii.gz"),
        ("c", pred_c, ref_c, SPACING),  # plain tuples work too
    ]


def test_per_case_results_and_means(cases: list) -> None:
    report = evaluate_cases(cases, LABELS, nsd_tolerance_mm=1.5)
    assert [c.case_id for c in report.cases] == ["a", "b", "c"]
    assert report.labels == {"liver": 1, "tumour": 2}
    liver_a = report.cases[0].metrics["liver"]
    # the cube-shift case, with the tumour voxels (inside both cubes) taken out of the liver class
    assert liver_a.dice == pytest.approx(2 * (900 - 8) / (2 * 992))
    assert report.cases[1].metrics["tumour"].empty == "both"
    assert report.cases[2].metrics["tumour"].empty == "prediction"

    mean = report.mean()
    dice_tumour = [1.0, 1.0, 0.0]  # exact, both empty (counts as 1), missed (0)
    assert mean["tumour"]["Dice"] == pytest.approx(np.mean(dice_tumour))
    assert mean["tumour"]["HD95"] == 0.0  # the missed case's NaN is skipped
    assert report.defined()["tumour"]["HD95"] == 2
    liver_c = 2 * 992 / (1000 + 992)  # the missed tumour is liver in the prediction
    assert mean["liver"]["Dice"] == pytest.approx(np.mean([liver_a.dice, 1.0, liver_c]))
    assert report.std()["tumour"]["Dice"] == pytest.approx(np.std(dice_tumour, ddof=1))
    fg = report.foreground_mean()
    assert fg["Dice"] == pytest.approx((mean["liver"]["Dice"] + mean["tumour"]["Dice"]) / 2)
    assert report.flagged() == [{"case_id": "c", "label": "tumour", "label_value": 2, "empty": "prediction"}]
    assert report.empty_counts()["tumour"] == {"both": 1, "prediction": 1, "reference": 0}


def test_summary_json_has_nnunet_keys_and_our_extras(cases: list, tmp_path: Path) -> None:
    report = evaluate_cases(cases, LABELS)
    path = write_summary_json(report, tmp_path / "summary.json")
    data = json.loads(path.read_text())
    assert list(data)[:3] == ["foreground_mean", "mean", "metric_per_case"]
    # nnU-Net v2 layout: mean keyed by str(label value); per case the files and metrics by str(label value)
    assert set(data["mean"]) == {"1", "2"}
    for key in ("Dice", "IoU", "TP", "FP", "FN", "TN", "n_pred", "n_ref"):
        assert key in data["mean"]["1"] and key in data["foreground_mean"]
    first = data["metric_per_case"][0]
    assert first["prediction_file"] == "pred/a.nii.gz" and first["reference_file"] == "ref/a.nii.gz"
    assert set(first["metrics"]) == {"1", "2"} and first["metrics"]["1"]["empty"] == "none"
    assert data["metric_per_case"][2]["prediction_file"] is None
    missed = data["metric_per_case"][2]["metrics"]["2"]
    assert missed["empty"] == "prediction" and missed["Dice"] == 0.0 and math.isnan(missed["HD95"])
    assert data["labels"] == {"liver": 1, "tumour": 2}
    assert data["flagged"] == [{"case_id": "c", "label": "tumour", "label_value": 2, "empty": "prediction"}]
    assert data["empty_counts"]["2"] == {"both": 1, "prediction": 1, "reference": 0}
    assert data["n_cases"] == 3 and data["nsd_tolerance_mm"] == 1.0
    assert set(data["std"]["1"]) == set(METRIC_KEYS)
    assert data["mean"]["2"]["Dice"] == pytest.approx(report.mean()["tumour"]["Dice"])
    assert summary_dict(report)["mean"]["1"]["Dice"] == data["mean"]["1"]["Dice"]


def test_case_csv_one_row_per_case_and_class(cases: list, tmp_path: Path) -> None:
    report = evaluate_cases(cases, LABELS)
    path = write_case_csv(report, tmp_path / "cases.csv")
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert tuple(rows[0]) == CSV_COLUMNS
    assert [(r["case_id"], r["label"]) for r in rows] == [
        ("a", "liver"),
        ("a", "tumour"),
        ("b", "liver"),
        ("b", "tumour"),
        ("c", "liver"),
        ("c", "tumour"),
    ]
    assert rows[5]["empty"] == "prediction" and rows[5]["HD95"] == "nan" and float(rows[5]["Dice"]) == 0.0
    assert rows[3]["empty"] == "both" and float(rows[3]["NSD"]) == 1.0
    assert float(rows[0]["ASSD"]) == pytest.approx(report.cases[0].metrics["liver"].assd)
    assert rows[0]["prediction_file"] == "pred/a.nii.gz" and rows[4]["prediction_file"] == ""


def test_markdown_table(cases: list, tmp_path: Path) -> None:
    report = evaluate_cases(cases, LABELS, nsd_tolerance_mm=2.0)
    table = markdown_table(report)
    lines = table.splitlines()
    assert lines[0].startswith("| class | Dice | IoU |") and "NSD@2mm" in lines[0]
    tumour = next(line for line in lines if line.startswith("| tumour |"))
    mean, std = report.mean()["tumour"]["Dice"], report.std()["tumour"]["Dice"]
    assert f"{mean:.3f} ± {std:.3f}" in tumour
    assert tumour.endswith("| 1/0/1 |")  # prediction empty once, reference never, both once
    assert any(line.startswith("| foreground mean |") for line in lines)
    assert "3 cases" in table
    assert write_markdown(report, tmp_path / "summary.md").read_text() == table


def test_outputs_are_not_overwritten_unless_asked(cases: list, tmp_path: Path) -> None:
    report = evaluate_cases(cases, LABELS)
    target = tmp_path / "summary.json"
    target.write_text("keep")
    with pytest.raises(OutputExistsError, match="exists; pass overwrite=True"):
        write_summary_json(report, target)
    assert target.read_text() == "keep"
    write_summary_json(report, target, overwrite=True)
    assert json.loads(target.read_text())["n_cases"] == 3
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]  # no temporary file left behind


def test_errors_name_the_case(cases: list) -> None:
    bad = EvaluationCase("d", np.zeros((14, 14, 13), np.uint8), cube(2, 12), SPACING, "p/d.nii.gz", "r/d.nii.gz")
    with pytest.raises(DataError, match=r"case 'd' \(p/d.nii.gz, r/d.nii.gz\): prediction shape"):
        evaluate_cases([*cases, bad], LABELS)
    with pytest.raises(DataError, match="case 'a' is given twice"):
        evaluate_cases([cases[0], cases[0]], LABELS)
    with pytest.raises(DataError, match="case 'a': spacing"):
        evaluate_cases([EvaluationCase("a", cube(2, 12), cube(2, 12), (1.0, -1.0, 1.0))], LABELS)
    with pytest.raises(DataError, match="no case"):
        evaluate_cases([], LABELS)


def test_2d_cases_and_a_generator_with_progress_bar() -> None:
    def generate():
        for i in range(3):
            ref = np.zeros((16, 16), np.int64)
            ref[4:10, 4:10] = 1
            yield EvaluationCase(f"slice{i}", np.roll(ref, i, axis=0), ref, (0.5, 0.5))

    report = evaluate_cases(generate(), {"organ": 1}, progress=True)
    hd = [c.metrics["organ"].hd95 for c in report.cases]
    assert hd == pytest.approx([0.0, 0.5, 1.0])
