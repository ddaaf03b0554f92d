"""MODEL_CARD.md: what a model directory holds, said for a person who did not train it.

Written at the end of every training: the data it learnt from (cases, their fingerprint: spacing,
shape, orientation, intensities), the recipe (network, plan, optimiser, epochs), the validation Dice per
class of the kept weights, how long training took and on what machine, what the model is not for
(inputs outside the fingerprint), and the weights' SHA-256, so a copy can be checked against it. The
HTML report links it; a MONAI Bundle carries it as its docs/README.md.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
from dataclasses import dataclass, field

import numpy as np
import torch

from attnseg.data.check import Fingerprint
from attnseg.data.margin import margin_note
from attnseg.data.plan import Plan
from attnseg.fileio import write_text
from attnseg.model_dir import ModelDir, provenance
from attnseg.training.config import Config
from attnseg.training.trainer import TrainState

MODEL_CARD = "MODEL_CARD.md"


@dataclass
class CardInputs:
    """Everything the card says that the model directory does not already hold."""

    config: Config
    plan: Plan
    dataset: str
    train_cases: list[str]
    val_cases: list[str]
    state: TrainState
    seconds: float
    device: str
    fingerprint: Fingerprint | None = None
    extra: dict[str, str] = field(default_factory=dict)


def machine(device: torch.device) -> str:
    """The device and host a run trained on, in words."""
    cpu = platform.processor() or platform.machine()
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu
    return f"{device.type} ({name}), {os.cpu_count()} CPU core(s), {platform.system()} {platform.release()}"


def fingerprint_id(fingerprint: Fingerprint) -> str:
    """A short hash of the cases' geometry and label counts: two cards with the same id saw the same data."""
    rows = [
        [c.id, list(c.spacing), list(c.shape), c.orientation, sorted(c.class_voxels.items())] for c in fingerprint.cases
    ]
    return hashlib.sha256(json.dumps(rows, sort_keys=True).encode()).hexdigest()[:16]


def _range(values: np.ndarray) -> str:
    low, high = values.min(0), values.max(0)
    return " x ".join(f"{a:g}" if a == b else f"{a:g}-{b:g}" for a, b in zip(low, high, strict=True))


def data_section(inputs: CardInputs) -> list[str]:
    plan, fp = inputs.plan, inputs.fingerprint
    classes = ", ".join(f"{name} ({value})" for name, value in plan.labels.items())
    lines = [
        "## Data",
        "",
        f"- dataset: `{inputs.dataset}`",
        f"- cases: {len(inputs.train_cases)} training, {len(inputs.val_cases)} validation",
        f"- channels: {', '.join(plan.channel_names)}; classes: {classes}",
    ]
    margin = margin_note(inputs.dataset)
    if margin is not None:
        lines.append(f"- labels: {margin}")
    if fp is not None:
        orientations = sorted({c.orientation for c in fp.cases})
        lines += [
            f"- fingerprint: `{fingerprint_id(fp)}` ({len(fp.cases)} cases)",
            f"- spacing (mm): {_range(fp.spacings())}; shape (voxels): {_range(fp.shapes())}",
            f"- orientation(s) on disk: {', '.join(orientations)}",
        ]
        for channel, name in enumerate(plan.channel_names):
            stats = [c.channel_stats[channel] for c in fp.cases if channel < len(c.channel_stats)]
            if stats:
                low, high = min(s["min"] for s in stats), max(s["max"] for s in stats)
                lines.append(f"- intensities of {name}: {low:g} to {high:g}")
    return [*lines, ""]


def recipe_section(inputs: CardInputs) -> list[str]:
    config, plan = inputs.config, inputs.plan
    spacing = " x ".join("-" if s is None else f"{s:g}" for s in plan.target_spacing)
    norms = ", ".join(n.scheme for n in plan.normalization)
    patch = " x ".join(map(str, plan.patch_size))
    lines = [
        "## Recipe",
        "",
        f"- network: `{config.network.name}`, {plan.spatial_dims}D, patch/slice {patch}",
        f"- preprocessing: orientation {plan.orientation or 'as on disk'}, spacing {spacing} mm, normalisation {norms}",
        f"- optimiser {config.optimizer.name} (lr {config.optimizer.lr:g}), scheduler {config.scheduler.name}, "
        f"loss {config.loss.name}, batch {config.data.batch_size}, seed {config.training.seed}",
        f"- epochs: {inputs.state.epoch} of {config.training.iterations_per_epoch} steps",
    ]
    if config.finetune.init_from is not None:
        frozen = f"; encoder frozen ({config.finetune.freeze_epochs or 'all'} epochs)" if config.finetune.freeze else ""
        lines.append(f"- fine-tuned from `{config.finetune.init_from}` (init.json lists the tensors loaded){frozen}")
    return [*lines, "- the full configuration: config.yaml", ""]


def metrics_section(inputs: CardInputs) -> list[str]:
    state = inputs.state
    row = next((r for r in state.history if r["epoch"] == state.best_epoch), None)
    if row is None:
        return ["## Validation", "", "No validation (no held-out cases): the last epoch's weights are kept.", ""]
    lines = [
        "## Validation",
        "",
        f"Dice of the kept weights (epoch {state.best_epoch}) on {len(inputs.val_cases)} case(s):",
        "",
    ]
    lines += ["| class | Dice |", "|---|---|"]
    for name in inputs.plan.class_names[1:]:
        lines.append(f"| {name} | {row.get(f'val_dice_{name}', float('nan')):.4f} |")
    return [*lines, f"| mean | {row.get('val_dice_mean', float('nan')):.4f} |", ""]


def limits_section(inputs: CardInputs) -> list[str]:
    fp = inputs.fingerprint
    channels = ", ".join(inputs.plan.channel_names)
    lines = [
        "## Not for",
        "",
        "- diagnosis or treatment decisions: a research model, not a certified device",
        f"- other channels or modalities than {channels}, or other classes than those above",
    ]
    if fp is not None:
        lines.append(
            f"- images outside the training fingerprint: spacing outside {_range(fp.spacings())} mm, "
            "other anatomy, contrast or scanners than the training cases"
        )
    return [*lines, ""]


def render(inputs: CardInputs, model_dir: ModelDir) -> str:
    meta = provenance()
    lines = [f"# Model card: {model_dir.path.name}", ""]
    lines += data_section(inputs) + recipe_section(inputs) + metrics_section(inputs) + limits_section(inputs)
    lines += [
        "## Training",
        "",
        f"- time: {inputs.seconds / 60:.1f} min on {inputs.device}",
        f"- attnseg {meta['attnseg_version']} (git {meta['git_revision'] or 'unknown'}), "
        f"torch {meta['torch_version']}, Python {meta['python_version']}; written {meta['created']}",
        "",
        "## Weights",
        "",
        f"- `{ModelDir.WEIGHTS}` SHA-256: `{model_dir.weights_sha256()}`",
        "",
    ]
    return "\n".join(lines)


def write_model_card(model_dir: ModelDir, inputs: CardInputs) -> None:
    """MODEL_CARD.md in ``model_dir`` (rewritten when a run finishes again)."""
    write_text(model_dir.file(MODEL_CARD), render(inputs, model_dir), overwrite=True)
