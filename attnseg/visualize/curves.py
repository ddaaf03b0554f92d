"""Training curves (``progress.png``): loss, validation metrics and learning rate per epoch."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from matplotlib.figure import Figure

from attnseg.fileio import atomic_path


def plot_progress(history: Sequence[dict[str, float]], path: str | Path) -> None:
    """Write a two-panel figure: training loss and validation Dice (left), learning rate (right)."""
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
    with atomic_path(path, overwrite=True) as tmp:
        figure.savefig(tmp, dpi=100, format="png")
