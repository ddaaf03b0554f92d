"""The HTML report: what it finds in a run folder, the numbers it shows, and that it needs nothing outside."""

import re

import numpy as np
import pytest

from attnseg.cli import main
from attnseg.errors import DataError
from attnseg.evaluate import write_reports
from attnseg.metrics import evaluate_cases
from attnseg.visualize.report import find_run, render_report, write_report


def _hand_made_evaluation(folder):
    """Two cases whose Dice is known by hand: 2|P∩R| / (|P| + |R|) = 2*2/(3+3) = 0.667 and 1.0."""
    reference = np.zeros((4, 4), np.uint8)
    reference[0, :3] = 1
    shifted = np.zeros((4, 4), np.uint8)
    shifted[0, 1:4] = 1
    cases = [("<b>bold</b>", shifted, reference, (1.0, 1.0)), ("perfect", reference, reference, (1.0, 1.0))]
    report = evaluate_cases(cases, {"background": 0, "liver": 1})
    write_reports(report, folder)


def test_an_evaluation_folder_with_hand_computed_metrics(tmp_path):
    _hand_made_evaluation(tmp_path)
    run = find_run(tmp_path)
    assert run.model is None and run.summary == tmp_path / "summary.json"
    page = render_report(run)
    per_class = re.search(r'<table id="metrics-per-class">.*?</table>', page, re.S).group(0)
    assert "0.833 ± 0.236" in per_class  # mean and sample std of (0.667, 1.0)
    per_case = re.search(r'<table id="metrics-per-case">.*?</table>', page, re.S).group(0)
    rows = re.findall(r"<tr><td[^>]*>([^<]*)</td>", per_case)
    assert rows == ["&lt;b&gt;bold&lt;/b&gt;", "perfect"]  # worst first, and escaped
    assert "<b>bold" not in page
    assert 'id="training"' not in page  # no model directory: no curves


def test_a_model_directory_alone(gates_2d):
    run = find_run(gates_2d)
    assert run.model == gates_2d and run.summary is None
    page = render_report(run)
    for section in ("summary", "training", "configuration", "plan", "network"):
        assert f'<section id="{section}">' in page
    assert "attention_unet" in page and "best validation Dice" in page


def test_a_full_run_folder_is_self_contained(run_folder, tmp_path, capsys):
    run = find_run(run_folder)
    assert run.model == run_folder / "model"
    assert [p.name for p in run.overlays] == [f"case_{i:03d}_overlay.png" for i in range(4)]
    assert [p.name for p in run.attention] == ["case_000_attention.png"]
    output = tmp_path / "report.html"
    assert main(["report", str(run_folder), "-o", str(output)]) == 0
    assert f"wrote {output}" in capsys.readouterr().out
    page = output.read_text()
    for section in ("summary", "training", "metrics-class", "metrics-case", "overlays", "attention", "plan"):
        assert f'<section id="{section}">' in page
    images = re.findall(r'<img src="([^"]*)"', page)
    assert len(images) == 1 + 4 + 1  # curves, overlays, attention
    assert all(src.startswith("data:image/png;base64,") for src in images)
    # nothing to fetch: no external URL, script or stylesheet
    assert not re.search(r"""(src|href)=["'](?!data:|#)""", page)
    assert "<script" not in page and "http://" not in page and "https://" not in page
    assert main(["report", str(run_folder), "-o", str(output)]) == 2
    assert "report.html exists; pass overwrite=True" in capsys.readouterr().err


def test_not_a_run_folder(tmp_path):
    with pytest.raises(DataError, match="not a run folder: no model directory"):
        write_report(tmp_path)
    with pytest.raises(DataError, match="no such folder"):
        find_run(tmp_path / "missing")


def test_a_model_of_a_former_preset_is_counted_as_it_was_trained(tmp_path):
    """The parameter count comes from the preset the weights fit (read from the weights file's header),
    not from what the preset's name means today."""
    import json

    from attnseg.model_dir import ModelDir
    from attnseg.networks import MultiScaleGuidedAttentionNet
    from attnseg.networks.registry import get_spec
    from attnseg.networks.utils import count_parameters
    from attnseg.visualize.report import _ModelFiles

    io = {"spatial_dims": 2, "in_channels": 1, "out_channels": 3}
    spec = get_spec("ms_guided_cpu")
    former = MultiScaleGuidedAttentionNet(**{**spec.former_presets[0], **io})
    current = MultiScaleGuidedAttentionNet(**{**spec.preset, **io})
    directory = ModelDir(tmp_path)
    directory.file(ModelDir.NETWORK).write_text(json.dumps({"name": "ms_guided_cpu", "kwargs": io}))
    directory.file(ModelDir.PLAN).write_text("{}")
    directory.save_weights(former)
    assert _ModelFiles(tmp_path).parameters() == count_parameters(former) != count_parameters(current)


def test_a_predictions_folder_without_references_reports_its_quality_control(tmp_path, capsys):
    """New scans have no references: the report of `attnseg predict`'s folder is its qc.json, worst first."""
    from attnseg.inference.qc import CaseQC, Flag
    from attnseg.inference.qc_report import write_qc

    cases = [
        CaseQC("fine", [], 0.91, (0.85, 0.95)),
        CaseQC("tilted", [Flag("orientation", "check", "orientation PRS; training scans were LPS")], 0.8, (0.6, 0.9)),
        CaseQC("<noise>", [Flag("empty", "fail", "no foreground")], 0.0, (0.0, 0.5)),
    ]
    write_qc(tmp_path, cases)
    run = find_run(tmp_path)
    assert run.model is None and run.summary is None and run.qc == tmp_path / "qc.json"
    assert main(["report", str(tmp_path)]) == 0
    page = (tmp_path / "report.html").read_text()
    summary = page[page.index('<section id="summary">') : page.index("</section>")]
    for label, count in (("cases predicted", 3), ("verdict fail", 1), ("verdict check", 1), ("verdict ok", 1)):
        assert f'<div class="value">{count}</div><div class="label">{label}</div>' in summary, label
    table = page[page.index('id="quality-control"') :]
    assert table.index("&lt;noise&gt;") < table.index("tilted") < table.index("fine")  # fail, check, ok
    assert "orientation PRS; training scans were LPS" in table
    assert "<noise>" not in page
