"""Cases per minute of `attnseg predict` on a folder of volumes: one process, then two under torchrun.

    .venv/bin/python benchmarks/predict_throughput.py [--cases 8] [--repeats 3] [--nproc 2]

A 2D Attention U-Net of the demo's size (random weights: speed does not depend on them) segments
``--cases`` volumes of 128 x 128 x 24..56 voxels (sizes differ, as in a real folder). Three settings,
each run ``--repeats`` times into a fresh folder, as the commands a user types:

* one process with one thread, ``--num-workers 0``: read, preprocess, predict and write each case in
  turn (the baseline);
* one process with one thread, the default: a background thread reads and preprocesses the next case
  while the network runs, another writes the last one;
* ``torchrun --nproc_per_node=NPROC``: the cases shared out over NPROC processes, one thread each (what
  torchrun sets: ``OMP_NUM_THREADS=1``);
* one process with torch's default number of threads (every core), for comparison.

Cases per minute are the run's own figure (from the first case claimed to the last written); the
command's wall time also counts starting Python, torch and the processes. Printed as a Markdown table
with medians and ratios to the baseline, after the machine and versions.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import numpy as np
import torch

import attnseg
from attnseg.data import Geometry, write_image

sys.path.insert(0, str(Path(__file__).parent))
from predict_speed import make_model_dir  # the demo-sized model directory

REPO = Path(__file__).resolve().parents[1]


def make_volumes(folder: Path, count: int) -> None:
    rng = np.random.default_rng(0)
    for i in range(count):
        depth = 24 + (i * 11) % 33  # 24..56 slices
        volume = rng.normal(100, 20, (1, 128, 128, depth)).astype(np.float32)
        write_image(folder / f"scan{i:03d}.nii.gz", volume, Geometry.create((1.0, 1.0, 1.0)))


def run(command: list[str], env: dict[str, str]) -> tuple[float, float]:
    """(cases per minute as the run reports it, wall seconds of the whole command)."""
    started = time.perf_counter()
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=3600, cwd=REPO)
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{result.stdout}\n{result.stderr[-4000:]}")
    return float(re.search(r"([\d.]+) cases/min", result.stdout).group(1)), seconds


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    with open("/proc/cpuinfo") as info:  # Linux: the model name is clearer than platform's
        names = [line.split(":", 1)[1].strip() for line in info if line.startswith("model name")]
    cpu = names[0] if names else cpu
    revision = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=REPO)
    return (
        f"{date.today()}, {cpu}, {os.cpu_count()} logical cores, Python {platform.python_version()}, "
        f"torch {torch.__version__}, attnseg {attnseg.__version__} ({revision.stdout.strip() or 'no git'})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--nproc", type=int, default=2, help="processes of the torchrun setting (default 2)")
    args = parser.parse_args()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        model = make_model_dir(root / "model").path
        make_volumes(root / "scans", args.cases)
        predict = ["-m", "attnseg", "predict", "-m", str(model), "-i", str(root / "scans"), "--no-progress"]
        predict += ["--device", "cpu"]
        torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={args.nproc}"]
        python = [sys.executable, *predict]
        one_thread = {**env, "OMP_NUM_THREADS": "1"}
        settings = {  # name -> (command, environment)
            "1 process, 1 thread, --num-workers 0 (baseline)": ([*python, "--num-workers", "0"], one_thread),
            "1 process, 1 thread, background loading (default)": (python, one_thread),
            f"{args.nproc} processes (torchrun), 1 thread each": ([*torchrun, *predict], one_thread),
            f"1 process, {torch.get_num_threads()} threads (torch's default)": (python, env),
        }
        figures: dict[str, list[tuple[float, float]]] = {name: [] for name in settings}
        for repeat in range(args.repeats):  # settings interleaved, so that load changes hit them alike
            for index, (name, (command, environment)) in enumerate(settings.items()):
                figures[name].append(run([*command, "-o", str(root / f"out{repeat}_{index}")], environment))
    print(f"{machine()}\n")
    print(f"{args.cases} volumes of 128 x 128 x 24..56, 2D Attention U-Net (demo size), median of {args.repeats}\n")
    print("| setting | cases/min | ratio | command wall time (s) |")
    print("|---|---|---|---|")
    baseline = statistics.median(rate for rate, _ in next(iter(figures.values())))
    for name, values in figures.items():
        rate = statistics.median(r for r, _ in values)
        wall = statistics.median(s for _, s in values)
        print(f"| {name} | {rate:.1f} | {rate / baseline:.2f}x | {wall:.1f} |")


if __name__ == "__main__":
    main()
