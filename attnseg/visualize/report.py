"""``attnseg report RUN_DIR``: one self-contained HTML page with everything a run left behind.

A run folder is any of:

* a model directory written by ``attnseg train`` (``network.json``, ``plan.json``, ``config.yaml``,
  ``log.csv``...);
* a folder that holds one in ``model/``, as the demo's output does;
* an evaluation folder written by ``attnseg evaluate`` (``summary.json``);
* a predictions folder written by ``attnseg predict`` on scans without references (``qc.json``): the
  quality-control page a reader opens before trusting the masks.

Around the model directory the report also takes what lies in the run folder's conventional places:
``metrics/`` (``summary.json`` from ``attnseg evaluate -o RUN_DIR/metrics``; and its ``overlays/`` with
``--overlays``), ``pictures/`` (what the demo draws) and ``attention/`` (``attnseg visualize -o
RUN_DIR/attention``). Pictures are sorted by name into overlays (``*_overlay.png``) and attention panels
(``*_attention*.png``). Nothing is computed that is not already on disk, except the training curves,
which are redrawn from ``log.csv``, and the network's parameter count.

The quality control of a prediction run (``qc.json`` of ``attnseg predict``, beside ``summary.json``, in
the run folder or in ``predictions/``; with ``qc_evaluation.json`` of ``attnseg evaluate``, the true Dice
beside the predicted one) becomes a table, failed and flagged cases first.

Sections (each only when its source exists): summary, training curves, metrics per class, metrics per
case (worst mean Dice first), quality control, overlays, attention, configuration, plan, network and provenance.
"""

from __future__ import annotations

import datetime
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from attnseg import __version__
from attnseg.errors import DataError
from attnseg.fileio import write_text
from attnseg.metrics.report import MM, PIXELS_NOTE, TABLE_METRICS, table_headers
from attnseg.visualize import html
from attnseg.visualize.curves import progress_figure, read_log
from attnseg.visualize.drawing import figure_png
from attnseg.visualize.qc_table import qc_section

REPORT_FILE = "report.html"
MODEL_FILES = ("network.json", "plan.json")
MODEL_CARD = "MODEL_CARD.md"  # written by training (attnseg.training.model_card: a higher layer)
SUMMARY = "summary.json"
# where pictures are looked for, relative to the run folder
PICTURE_FOLDERS = ("pictures", "attention", "metrics/overlays", "overlays")
DISTANCES = ("HD95", "ASSD")
QC_FILE, QC_EVALUATION = "qc.json", "qc_evaluation.json"  # of `attnseg predict` and `attnseg evaluate`


@dataclass
class RunFolder:
    """What a run folder holds (see the module docstring)."""

    root: Path
    model: Path | None = None
    summary: Path | None = None
    overlays: list[Path] = field(default_factory=list)
    attention: list[Path] = field(default_factory=list)
    qc: Path | None = None  # qc.json of `attnseg predict`
    qc_evaluation: Path | None = None  # qc_evaluation.json of `attnseg evaluate`


def find_run(path: str | Path) -> RunFolder:
    """Recognise a run folder; raises DataError naming what was looked for when it is none."""
    root = Path(path)
    if not root.is_dir():
        raise DataError(f"{root}: no such folder")
    run = RunFolder(root)
    for candidate in (root, root / "model"):
        if all((candidate / name).is_file() for name in MODEL_FILES):
            run.model = candidate
            break
    for candidate in (root / "metrics", root):
        if (candidate / SUMMARY).is_file():
            run.summary = candidate / SUMMARY
            break
    places = [root / "metrics", root, root / "predictions"]
    if run.summary is not None:
        places.insert(0, run.summary.parent)
    run.qc = next((p / QC_FILE for p in places if (p / QC_FILE).is_file()), None)
    run.qc_evaluation = next((p / QC_EVALUATION for p in places if (p / QC_EVALUATION).is_file()), None)
    pictures = sorted({p for folder in PICTURE_FOLDERS for p in (root / folder).glob("*.png")}, key=lambda p: p.name)
    if run.summary is not None:
        pictures += sorted((run.summary.parent / "overlays").glob("*.png"))
    run.overlays = _unique(p for p in pictures if p.name.endswith("_overlay.png"))
    run.attention = _unique(p for p in pictures if "_attention" in p.name)
    if run.model is None and run.summary is None and run.qc is None:
        raise DataError(
            f"{root}: not a run folder: no model directory (network.json and plan.json, here or in model/), "
            f"no evaluation ({SUMMARY}, here or in metrics/) and no quality control ({QC_FILE} of attnseg "
            "predict, here or in predictions/)"
        )
    return run


def _unique(paths) -> list[Path]:
    seen: dict[Path, None] = {}
    for path in paths:
        seen.setdefault(path.resolve(), None)
    return list(seen)


def write_report(run_dir: str | Path, output: str | Path | None = None, overwrite: bool = False) -> Path:
    """Write the report of ``run_dir`` to ``output`` (default ``RUN_DIR/report.html``); returns its path."""
    run = find_run(run_dir)
    output = Path(output) if output is not None else run.root / REPORT_FILE
    return write_text(output, render_report(run), overwrite=overwrite)


def render_report(run: RunFolder) -> str:
    """The report of ``run`` as one HTML document."""
    model = _ModelFiles(run.model) if run.model is not None else None
    summary = _read_json(run.summary) if run.summary is not None else None
    history = read_log(run.model / "log.csv") if run.model is not None and (run.model / "log.csv").is_file() else []
    qc = _read_json(run.qc) if run.qc is not None else None
    sections = [("summary", "Summary", _summary_section(run, model, summary, history, qc))]
    if history:
        sections.append(("training", "Training curves", _training_section(history)))
    if summary is not None:
        sections.append(("metrics-class", "Metrics per class", _class_section(summary)))
        sections.append(("metrics-case", "Metrics per case", _case_section(summary)))
    if qc is not None:
        evaluation = _read_json(run.qc_evaluation) if run.qc_evaluation is not None else None
        sections.append(("quality-control", "Quality control", qc_section(qc, evaluation)))
    if run.overlays:
        sections.append(("overlays", "Overlays", _pictures(run.overlays, _OVERLAY_NOTE)))
    if run.attention:
        sections.append(("attention", "Attention", _pictures(run.attention, _ATTENTION_NOTE)))
    if model is not None:
        sections.append(("configuration", "Configuration", _configuration_section(model)))
        sections.append(("plan", "Plan", _plan_section(model)))
        sections.append(("network", "Network and provenance", _network_section(model)))
    card = run.model / MODEL_CARD if run.model is not None else None
    if card is not None and card.is_file():
        sections.append(("model-card", "Model card", _model_card_section(card)))
    now = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    subtitle = f"{run.root.resolve()} · written {now} by attnseg {__version__}"
    return html.page(f"attnseg report: {run.root.resolve().name}", subtitle, sections)


# ---------------------------------------------------------------------------------------------------
# sources
# ---------------------------------------------------------------------------------------------------
def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise DataError(f"{path}: not valid JSON ({error.msg} at line {error.lineno})") from error


class _ModelFiles:
    """The files of a model directory, each read once, any of them possibly missing."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.network = _read_json(path / "network.json")
        self.plan = _read_json(path / "plan.json")
        self.labels = _read_json(path / "labels.json") if (path / "labels.json").is_file() else None
        self.metadata = _read_json(path / "metadata.json") if (path / "metadata.json").is_file() else {}
        config = path / "config.yaml"
        self.config = config.read_text() if config.is_file() else None

    def parameters(self) -> int | None:
        """The network's parameter count, built on the meta device (nothing allocated); None if it cannot be."""
        import torch

        from attnseg.networks.registry import build_network
        from attnseg.networks.utils import count_parameters

        try:
            with torch.device("meta"):
                network = build_network(
                    self.network["name"], fit_weights=self._weight_shapes(), **self.network.get("kwargs", {})
                )
                return count_parameters(network)
        except Exception:  # a network that cannot be built here (e.g. a backbone file elsewhere): no count
            return None

    def _weight_shapes(self) -> dict | None:
        """The weights' names and shapes, as meta tensors, read from the file's header only (a model of a
        former preset is counted as it was trained); None without a weights file."""
        import torch
        from safetensors import safe_open

        path = self.path / "weights.safetensors"
        if not path.is_file():
            return None
        with safe_open(str(path), framework="pt") as weights:
            names = weights.keys()  # a safetensors handle is not iterable
            return {key: torch.empty(weights.get_slice(key).get_shape(), device="meta") for key in names}


# ---------------------------------------------------------------------------------------------------
# sections
# ---------------------------------------------------------------------------------------------------
_OVERLAY_NOTE = (
    "Reference outlines solid, prediction dashed, one colour per class; the right panel fills the errors "
    "(missed: in the reference only; extra: in the prediction only; wrong class). Slices: where the two "
    "disagree most, in radiological convention (patient's right on the left)."
)
_ATTENTION_NOTE = (
    "Attention maps over the scan (viridis: dark = low, yellow = high), on the slices with the most predicted "
    "foreground. Gate coefficients α lie in [0, 1]; the guided network's maps are shown relative to their "
    "99.5th percentile over the scan."
)


def _summary_section(run: RunFolder, model, summary, history, qc: dict[str, Any] | None = None) -> str:
    items = []
    if model is not None:
        items.append(("network", str(model.network.get("name"))))
        parameters = model.parameters()
        if parameters is not None:
            items.append(("parameters", f"{parameters:,}"))
    if history:
        items.append(("epochs trained", f"{int(history[-1]['epoch'])}"))
        best = _best_epoch(history)
        if best is not None:
            items.append((f"best validation Dice (epoch {int(best['epoch'])})", f"{best['val_dice_mean']:.3f}"))
    if summary is not None:
        foreground = summary.get("foreground_mean", {})
        items.append(("cases evaluated", str(summary.get("n_cases", len(summary.get("metric_per_case", []))))))
        items.append(("foreground mean Dice", html.number(foreground.get("Dice"))))
        items.append((f"foreground mean HD95 ({_unit(summary)})", html.number(foreground.get("HD95"), 2)))
    if summary is None and qc is not None:  # predictions without references: the verdicts are the news
        counts = qc.get("summary", {})
        verdicts = counts.get("verdicts", {})
        items.append(("cases predicted", str(counts.get("cases", len(qc.get("cases", []))))))
        items.extend((f"verdict {verdict}", str(verdicts.get(verdict, 0))) for verdict in ("fail", "check", "ok"))
    sources = [f"model directory: {run.model}" if run.model else "no model directory"]
    sources.append(f"evaluation: {run.summary}" if run.summary else "no evaluation (summary.json) found")
    if run.qc is not None:
        sources.append(f"quality control: {run.qc}")
    note = f'<p class="note">{html.escape("; ".join(sources))}.</p>'
    if run.model is not None and (run.model / MODEL_CARD).is_file():
        note += f'<p class="note">The model\'s card: <a href="#model-card">{MODEL_CARD}</a> (below).</p>'
    return html.cards(items) + note


def _model_card_section(card: Path) -> str:
    """The model directory's MODEL_CARD.md as written (attnseg.training.model_card), so that the report,
    one self-contained file, carries what the model is and is not for."""
    note = f'<p class="note">{html.escape(str(card))}</p>'
    return note + html.preformatted(card.read_text(encoding="utf-8"))


def _best_epoch(history: list[dict[str, float]]) -> dict[str, float] | None:
    validated = [row for row in history if "val_dice_mean" in row and not math.isnan(row["val_dice_mean"])]
    return max(validated, key=lambda row: row["val_dice_mean"]) if validated else None


def _training_section(history: list[dict[str, float]]) -> str:
    body = html.image(
        figure_png(progress_figure(history)), "training curves", "Training loss, validation Dice, learning rate."
    )
    best = _best_epoch(history)
    if best is not None:
        keys = [k for k in best if k.startswith("val_dice_")]
        rows = [[k.removeprefix("val_dice_"), html.Cell(html.number(best[k]), bar=best[k])] for k in keys]
        body += html.table(
            ["class", "validation Dice"], rows, caption=f"At the best epoch, {int(best['epoch'])} (weights kept)"
        )
    return body


def _class_section(summary: dict[str, Any]) -> str:
    labels = summary.get("labels") or {}
    names = {str(value): name for name, value in labels.items()}
    unit = _unit(summary)
    headers = ["class", *table_headers(unit, summary.get(f"nsd_tolerance_{unit}")).values()]
    headers.append("empty P/R/both")
    rows = []
    for value, means in summary.get("mean", {}).items():
        stds = summary.get("std", {}).get(value, {})
        empty = summary.get("empty_counts", {}).get(value, {})
        row: list[html.Cell | str] = [names.get(value, f"label {value}")]
        for key in TABLE_METRICS:
            digits = 2 if key in DISTANCES else 3
            mean, std = means.get(key), stds.get(key)
            text = html.number(mean, digits)
            if text != "n/a" and std is not None and not math.isnan(std):
                text += f" ± {std:.{digits}f}"
            row.append(html.Cell(text, bar=mean if key == "Dice" and mean is not None else None))
        row.append(f"{empty.get('prediction', 0)}/{empty.get('reference', 0)}/{empty.get('both', 0)}")
        rows.append(row)
    foreground = summary.get("foreground_mean", {})
    rows.append(
        [html.Cell("foreground mean", css_class="text")]
        + [html.number(foreground.get(k), 2 if k in DISTANCES else 3) for k in TABLE_METRICS]
        + [""]
    )
    caption = f"Mean ± sample standard deviation over {summary.get('n_cases', 'the')} cases; distances in {unit}."
    policy = summary.get("empty_policy")
    note = f'<p class="note">Empty masks: {html.escape(policy)}.</p>' if policy else ""
    if unit != MM:
        note += f'<p class="note">{html.escape(PIXELS_NOTE)}</p>'

    return html.table(headers, rows, table_id="metrics-per-class", caption=caption) + note


def _case_section(summary: dict[str, Any]) -> str:
    labels = summary.get("labels") or {}
    names = {str(value): name for name, value in labels.items()}
    per_case = summary.get("metric_per_case", [])
    values = list(summary.get("mean", {}))

    def mean_dice(case: dict[str, Any]) -> float:
        scores = [case["metrics"].get(v, {}).get("Dice") for v in values]
        scores = [s for s in scores if isinstance(s, (int, float)) and not math.isnan(s)]
        return sum(scores) / len(scores) if scores else float("nan")

    ordered = sorted(per_case, key=lambda c: (math.isnan(mean_dice(c)), mean_dice(c)))
    headers = ["case", "mean Dice"]
    for value in values:
        headers += [f"{names.get(value, value)} Dice", f"{names.get(value, value)} HD95 ({_unit(summary)})"]
    headers.append("flags")
    rows = []
    for case in ordered:
        row: list[html.Cell | str] = [
            case.get("case_id", ""),
            html.Cell(html.number(mean_dice(case)), bar=mean_dice(case)),
        ]
        flags = []
        for value in values:
            metrics = case["metrics"].get(value, {})
            dice = metrics.get("Dice")
            row.append(html.Cell(html.number(dice), bar=dice if isinstance(dice, (int, float)) else None))
            row.append(html.number(metrics.get("HD95"), 2))
            if metrics.get("empty") in ("prediction", "reference"):
                flags.append(f"{names.get(value, value)}: empty {metrics['empty']}")
        row.append(html.Cell("; ".join(flags), css_class="flag text" if flags else "text"))
        rows.append(row)
    caption = f"{len(per_case)} cases, worst mean Dice first."
    return html.table(headers, rows, table_id="metrics-per-case", caption=caption)


def _unit(summary: dict[str, Any]) -> str:
    """The distance unit of an evaluation: its ``distance_unit``, mm for summaries written before it existed."""
    return str(summary.get("distance_unit", MM))


def _pictures(paths: list[Path], note: str) -> str:
    figures = "".join(html.image(path.read_bytes(), path.stem, path.name) for path in paths)
    return f'<p class="note">{html.escape(note)}</p>{figures}'


def _configuration_section(model: _ModelFiles) -> str:
    if model.config is None:
        return '<p class="note">config.yaml is missing from the model directory.</p>'
    return html.preformatted(model.config)


def _plan_section(model: _ModelFiles) -> str:
    rows = [[key, _compact(value)] for key, value in model.plan.items()]
    return (
        '<p class="note">The preprocessing the model expects (plan.json): prediction applies it and undoes it.</p>'
        + html.table(["key", "value"], [[r[0], html.Cell(r[1], css_class="text")] for r in rows], table_id="plan")
        + html.details("plan.json", html.preformatted(json.dumps(model.plan, indent=2)))
    )


def _network_section(model: _ModelFiles) -> str:
    rows = [["network", html.Cell(str(model.network.get("name")), css_class="text")]]
    rows += [
        [key, html.Cell(_compact(value), css_class="text")] for key, value in model.network.get("kwargs", {}).items()
    ]
    if model.labels is not None:
        rows.append(["labels", html.Cell(_compact(model.labels), css_class="text")])
    rows += [[key, html.Cell(str(value), css_class="text")] for key, value in model.metadata.items()]
    return html.table(["", "value"], rows, table_id="network")


def _compact(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, separators=(", ", ": "))
