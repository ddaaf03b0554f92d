"""End to end: the wall time of ``attnseg demo`` from nothing to its pictures.

    .venv/bin/python -m benchmarks.end_to_end [--epochs 24] [--keep DIR]

Runs ``attnseg demo`` in a fresh folder, as a user does (preparing the built-in dataset, training the
2D Attention U-Net for 24 epochs of 10 iterations, predicting the held-out slabs, evaluating, drawing),
and reports its wall time, the training's median seconds per epoch, the layout and precision the
training chose (``runtime.json``, with the step times it measured) and the Dice it reached. Predicting a
256 x 256 x 160 volume is ``benchmarks/predict_speed.py`` (``make bench-e2e`` runs both).
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.report import header, markdown_table


def run_demo(output: Path, epochs: int) -> float:
    """Seconds of wall time of one ``attnseg demo`` into ``output``."""
    command = [sys.executable, "-m", "attnseg", "demo", "--output", str(output), "--epochs", str(epochs), "--overwrite"]
    start = time.perf_counter()
    subprocess.run(command, check=True, timeout=4 * 3600, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def report(output: Path, seconds: float) -> str:
    model = output / "model"
    with open(model / "log.csv") as handle:
        epochs = [float(row["seconds"]) for row in csv.DictReader(handle)]
    runtime = json.loads((model / "runtime.json").read_text())
    dice = json.loads((output / "metrics" / "demo.json").read_text())["foreground_dice"]
    measured = ", ".join(f"{name} {ms:.0f} ms" for name, ms in runtime.get("step_ms", {}).items()) or "not measured"
    rows = [
        ["wall time, from nothing to the pictures", f"{seconds / 60:.1f} min"],
        ["training epochs (10 iterations of batch 8)", f"{len(epochs)}, median {statistics.median(epochs):.1f} s"],
        ["layout/precision chosen by `attnseg train`", f"{runtime['layout']}/{runtime['amp']} ({runtime['reason']})"],
        ["training steps it measured", measured],
        ["mean foreground Dice, held-out slabs", f"{dice:.3f}"],
    ]
    return markdown_table(["attnseg demo", ""], rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=24, help="demo epochs (default 24, the demo's)")
    parser.add_argument(
        "--keep", type=Path, help="run in this folder and keep it; a dataset prepared there earlier is reused"
    )
    args = parser.parse_args()
    print(header("End to end: attnseg demo"))
    with tempfile.TemporaryDirectory() as folder:
        output = args.keep or Path(folder) / "demo"
        seconds = run_demo(output, args.epochs)
        print(report(output, seconds))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
