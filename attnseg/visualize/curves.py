"""Training curves (``progress.png``): loss, validation metrics and learning rate per epoch."""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from pathlib import Path

from matplotlib.figure import Figure

from attnseg.errors import DataError
from attnseg.fileio import atomic_path


def progress_figure(history: Sequence[dict[str, float]]) -> Figure:
    """Two panels: training loss and validation Dice (left), learning rate (right)."""
    epochs = [row["epoch"] for row in history]
    figure = Figure(figsize=(11, 4), layout="constrained")
    left, right = figure.subplots(1, 2)
    left.plot(epochs, [row["train_loss"] for row in history], label="train loss", color="tab:blue")
    left.set_xlabel("epoch")
    left.set_ylabel("loss")
    dice_keys = sorted({k for row in history for k in row if k.startswith("val_dice")})
    if dice_keys:
        twin = left.twinx()
        for key in dice_keys:
            points = [(row["epoch"], row[key]) for row in history if key in row]
            style = "-" if key == "val_dice_mean" else ":"
            twin.plot(*zip(*points, strict=True), style, marker=".", label=key.removeprefix("val_"))
        twin.set_ylabel("validation Dice")
        twin.set_ylim(0, 1)
        twin.legend(loc="lower right", fontsize="small")
    left.legend(loc="upper left", fontsize="small")
    left.set_title("training")
    right.plot(epochs, [row["lr"] for row in history], color="tab:gray")
    right.set_xlabel("epoch")
    right.set_ylabel("learning rate")
    right.set_title("schedule")
    return figure


def plot_progress(history: Sequence[dict[str, float]], path: str | Path) -> None:
    """Write :func:`progress_figure` as a PNG (rewritten after every epoch)."""
    with atomic_path(path, overwrite=True) as tmp:
        progress_figure(history).savefig(tmp, dpi=100, format="png")


def read_log(path: str | Path) -> list[dict[str, float]]:
    """The rows of a training ``log.csv`` as numbers; a column left empty in a row (no validation that
    epoch) is absent from that row, as in the trainer's history."""
    path = Path(path)
    try:
        with open(path, newline="") as stream:
            rows = list(csv.DictReader(stream))
    except OSError as error:
        raise DataError(f"{path}: cannot read the training log ({error.strerror})") from error
    history = []
    for number, row in enumerate(rows, start=2):
        try:
            history.append({key: float(value) for key, value in row.items() if key and value not in ("", None)})
        except ValueError as error:
            raise DataError(f"{path}: line {number} holds a value that is not a number ({error})") from error
    if any(not {"epoch", "train_loss", "lr"} <= set(row) for row in history):
        raise DataError(f"{path}: not a training log (needs the columns epoch, train_loss and lr)")
    return [row for row in history if not math.isnan(row["epoch"])]
