"""``attnseg predict`` and ``attnseg evaluate`` on a CT of clinical size, against an earlier attnseg.

    .venv/bin/python -m benchmarks.ct_scale [--baseline-ref e62135e] [--slices 300] [--repeats 3] [--work DIR]

A clinical user predicts on CT volumes of 512 x 512 x 300-600 slices (0.7 x 0.7 x 1.25 mm, int16, stored
LPS), not the small volumes of the tests. This writes such a volume (:mod:`benchmarks.ct_phantom`: a body
ellipse, a spine, liver, kidneys and spleen) and its reference mask, trains a small 3D Attention U-Net for a
few steps on four 3 mm phantoms (the model's plan resamples the CT to 3 mm, reorients it to RAS and undoes
both), then runs, as separate processes, ``attnseg predict`` (with and without ``--tta``, with and without
``--no-qc``: without quality control the mask is made without the probabilities) and ``attnseg
evaluate --sides`` once with the code of ``--baseline-ref`` (exported with ``git archive``) and once with
this checkout, interleaved, ``--repeats`` times. Each process's wall time, CPU time (user + system: another
user's load moves it less) and peak resident set (``wait4``'s ``ru_maxrss``, what ``/usr/bin/time -v``
reports) are printed as medians with same-run ratios, and the outputs are compared: the masks byte for byte,
``qc.json`` and the evaluation's ``summary.json`` exactly.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from attnseg.data import read_image
from benchmarks.ct_phantom import write_dataset, write_phantom
from benchmarks.report import header, markdown_table, ratio

ROOT = Path(__file__).resolve().parent.parent
SPACING = (0.7, 0.7, 1.25)
TRAIN_SETTINGS = [
    "--network", "attention_unet", "--spatial-dims", "3", "--fold", "all", "--epochs", "6", "--no-progress",
    "--set", "data.patch_size=[64,64,64]", "--set", "data.batch_size=2", "--set", "network.feature_scale=8",
    "--set", "training.iterations_per_epoch=10",
]  # fmt: skip


def run(tree: Path, args: list[str], log: Path) -> tuple[float, float, float]:
    """(wall s, CPU s, peak RSS MiB) of ``python -m attnseg ARGS`` run in ``tree`` (``-m`` puts the working
    directory first on the path, before PYTHONPATH and the installed package)."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    started = time.perf_counter()
    with open(log, "w") as out:
        command = [sys.executable, "-m", "attnseg", *args]
        process = subprocess.Popen(command, env=env, stdout=out, stderr=out, cwd=tree)
        _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    if status != 0:
        raise RuntimeError(f"attnseg {' '.join(args)} failed; see {log}")
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024


def export_tree(ref: str, folder: Path) -> Path:
    """The ``attnseg`` package of ``ref``, exported from this repository (the working tree is not touched)."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", ref, "attnseg"], check=True, capture_output=True)
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive.stdout, check=True)
    return folder


def prepare(work: Path, slices: int) -> tuple[Path, Path, Path]:
    """(model directory, folder with the CT, folder with its reference mask), made once per ``work``."""
    model, scans, reference = work / "model", work / "scans", work / "reference"
    if not (model / "plan.json").exists():
        dataset = write_dataset(work / "dataset", 4, (112, 80, 100), (3.0, 3.0, 3.0))
        run(
            ROOT,
            ["train", "--dataset", str(dataset), "--output", str(model), "--overwrite", *TRAIN_SETTINGS],
            work / "train.log",
        )
    scan = scans / "ct_0000.nii.gz"
    if not scan.exists() or read_image(scan).spatial_shape[2] != slices:
        scans.mkdir(parents=True, exist_ok=True)
        reference.mkdir(parents=True, exist_ok=True)
        write_phantom(scan, reference / "ct.nii.gz", (512, 512, slices), SPACING, seed=7)
    return model, scans, reference


def same_outputs(a: Path, b: Path) -> str:
    """Whether two runs' outputs agree: masks voxel for voxel (with dtype and geometry), the reports (JSON,
    CSV) character for character, every figure to its last printed digit."""
    for name in ("ct.nii.gz",):
        first, second = read_image(a / name), read_image(b / name)
        if first.array.dtype != second.array.dtype or not np.array_equal(first.array, second.array):
            return "masks DIFFER"
        if first.geometry != second.geometry:
            return "geometries DIFFER"
    reports = ("qc.json", "evaluation/summary.json", "evaluation/cases.csv", "evaluation/sides.csv")
    for name in (*reports, "evaluation/pieces_missed.csv", "evaluation/summary.md"):
        if not (a / name).exists():
            continue
        if (a / name).read_text().replace(str(a), "") != (b / name).read_text().replace(str(b), ""):
            return f"{name} DIFFERS"  # the reports name their own folder: that alone may differ
    return "identical"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline-ref", default="e62135e", help="git commit to compare with (default e62135e)")
    parser.add_argument("--slices", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-tta", action="store_true", help="skip the --tta runs (8 mirrored copies)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/attnseg_ct_scale"))
    args = parser.parse_args()
    work = args.work.resolve()  # the runs start in the trees they time
    work.mkdir(parents=True, exist_ok=True)
    model, scans, reference = prepare(work, args.slices)
    trees = {"baseline": export_tree(args.baseline_ref, work / "baseline_tree"), "current": ROOT}
    commands = {"predict": [], "predict --no-qc": ["--no-qc"]}
    if not args.no_tta:
        commands.update({"predict --tta": ["--tta"], "predict --tta --no-qc": ["--tta", "--no-qc"]})
    figures: dict[tuple[str, str], list[tuple[float, float, float]]] = {}
    agreement = {}
    for attempt in range(args.repeats):
        for command, extra in commands.items():
            suffix = "".join(f"_{option.strip('-').replace('-', '_')}" for option in extra)  # _tta_no_qc
            for name, tree in trees.items():
                out = work / f"{name}{suffix}"
                shutil.rmtree(out, ignore_errors=True)
                predict = ["predict", "-m", str(model), "-i", str(scans), "-o", str(out), "--no-progress", *extra]
                figures.setdefault((command, name), []).append(run(tree, predict, work / f"{name}.log"))
                if not extra:
                    evaluate = [
                        "evaluate",
                        str(out),
                        str(reference),
                        "--labels",
                        str(work / "dataset" / "dataset.json"),
                    ]
                    evaluate += ["-o", str(out / "evaluation"), "--sides", "--images", str(scans), "--no-progress"]
                    figures.setdefault(("evaluate --sides", name), []).append(run(tree, evaluate, work / f"{name}.log"))
            if attempt == 0:
                agreement[command] = same_outputs(work / f"baseline{suffix}", work / f"current{suffix}")
    rows = []
    for command in [*commands, "evaluate --sides"]:
        base, current = figures[(command, "baseline")], figures[(command, "current")]
        med = [[statistics.median(f[i] for f in runs) for i in range(3)] for runs in (base, current)]
        rows.append(
            [
                command,
                f"{med[0][0]:.1f} / {med[1][0]:.1f} ({ratio(med[1][0], med[0][0])})",
                f"{med[0][1]:.1f} / {med[1][1]:.1f} ({ratio(med[1][1], med[0][1])})",
                f"{med[0][2]:,.0f} / {med[1][2]:,.0f} ({ratio(med[1][2], med[0][2])})",
                agreement.get(command, agreement["predict"]),
            ]
        )
    size = f"A 512 x 512 x {args.slices} CT (0.7 x 0.7 x 1.25 mm, int16, LPS)"
    print(header(f"{size}: baseline {args.baseline_ref} vs this checkout"))
    print(f"3D Attention U-Net (feature_scale 8, 4 classes) on a 3 mm plan, patches 64^3; median of {args.repeats}\n")
    headers = ["command", "wall s (baseline / now)", "CPU s", "peak RSS MiB", "outputs"]
    print(markdown_table(headers, rows))


if __name__ == "__main__":
    main()
