"""What quality control adds to ``attnseg predict``'s wall time (issue 22: at most 10% without TTA).

The same cases are predicted with QC on and off by two predictors built once (the models loaded, the
fingerprint read), the runs interleaved (off, on, off, on...) so that a change in the machine's load hits
both alike, and the best of ``--repeats`` of each is kept: the share is best(on) / best(off) - 1, a
same-run ratio. Every run writes its masks into a fresh folder, as a user's run would.

Two sets of cases: the files given with ``--inputs`` (e.g. the held-out slabs of ``benchmarks/qc_flags``),
and with ``--head`` the whole MNI152 T1 head (197 x 233 x 189 voxels at 1 mm, from the nilearn wheel), a
realistic size, where the network costs more but QC is linear in voxels too. ``--mirror`` times the run
with mirroring TTA (then QC also measures how much the mirrored copies disagree).

    python -m benchmarks.qc_cost --model MODEL --inputs /tmp/qcb/inputs/*clean0_0000.nii.gz --head -o /tmp/qcc
"""

from __future__ import annotations

import argparse
import importlib.resources
import os
import shutil
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from attnseg.data import read_image, write_image
from attnseg.data.builtin import MNI_FILES
from attnseg.fileio import write_json
from attnseg.inference.predictor import Predictor
from benchmarks.report import header, markdown_table

TARGET = 0.10  # QC adds at most 10% to predict's time without TTA (issue 22)


def time_share(
    model: Path, inputs: Sequence[Path], work: Path, repeats: int = 5, mirror: bool = False
) -> dict[str, float]:
    """predict's best wall time over ``inputs`` without and with QC (interleaved runs) and QC's share of
    it; the same for the process's CPU time (all threads), which another user's load disturbs less."""
    predictors = {qc: Predictor([model], device="cpu", mirror=mirror, quality_control=qc) for qc in (False, True)}
    checks = _count_check_time(predictors[True])
    wall = {False: float("inf"), True: float("inf")}
    cpu = dict(wall)
    checks_cpu = float("inf")
    for attempt in range(repeats):
        for qc, predictor in predictors.items():
            out = work / f"run_qc{int(qc)}_{attempt}"
            shutil.rmtree(out, ignore_errors=True)
            checks.clear()
            started, started_cpu = time.perf_counter(), time.process_time()
            predictor.predict_files(list(inputs), out, progress=False)
            wall[qc] = min(wall[qc], time.perf_counter() - started)
            cpu[qc] = min(cpu[qc], time.process_time() - started_cpu)
            if qc:
                checks_cpu = min(checks_cpu, sum(checks))
            shutil.rmtree(out, ignore_errors=True)
    return {
        "checks_cpu": checks_cpu,
        "checks_cpu_share": checks_cpu / cpu[False],
        "without_qc": wall[False],
        "with_qc": wall[True],
        "qc_share": wall[True] / wall[False] - 1.0,
        "cpu_without_qc": cpu[False],
        "cpu_with_qc": cpu[True],
        "qc_cpu_share": cpu[True] / cpu[False] - 1.0,
    }


def _count_check_time(predictor: Predictor) -> list[float]:
    """The CPU time (of the thread that runs them) of each case's checks (``Predictor.assess``), collected
    in the list returned: a figure the machine's other load barely moves, unlike the whole run's times."""
    spent: list[float] = []
    assess = predictor.assess

    def timed(*args: object) -> object:
        started = time.thread_time()
        try:
            return assess(*args)  # type: ignore[arg-type]
        finally:
            spent.append(time.thread_time() - started)

    predictor.assess = timed  # type: ignore[method-assign]
    return spent


def write_head(work: Path) -> Path:
    """The MNI152 T1 head, whole (1 mm), as a case file in ``work``."""
    source = Path(str(importlib.resources.files("nilearn.datasets.data").joinpath(MNI_FILES["t1"])))
    image = read_image(source)
    path = work / "inputs_head" / "mni152_head_0000.nii.gz"
    write_image(path, image.array, image.geometry, overwrite=True)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--inputs", type=Path, nargs="*", default=[], help="case files (one channel each)")
    parser.add_argument("--head", action="store_true", help="also the whole MNI152 head at 1 mm")
    parser.add_argument("--repeats", type=int, default=5, help="runs with and without QC each (best kept)")
    parser.add_argument("--mirror", action="store_true", help="with mirroring TTA")
    parser.add_argument("-o", "--output", type=Path, required=True, help="work folder; results.json goes here")
    args = parser.parse_args()
    sets = {"inputs": list(args.inputs)} if args.inputs else {}
    if args.head:
        sets["head"] = [write_head(args.output)]
    if not sets:
        raise SystemExit("give --inputs, --head or both")
    load_before = os.getloadavg()[0]
    results = {}
    for name, inputs in sets.items():
        voxels = [int(np.prod(read_image(path).spatial_shape)) for path in inputs]
        results[name] = {
            "cases": len(inputs),
            "voxels_per_case": int(np.mean(voxels)),
            **time_share(args.model, inputs, args.output, args.repeats, args.mirror),
        }
    load = {"before": load_before, "after": os.getloadavg()[0]}
    write_json(args.output / "qc_cost.json", {"mirror": args.mirror, "load_average": load, **results}, overwrite=True)
    rows = [
        [
            name,
            r["cases"],
            f"{r['voxels_per_case']:,}",
            f"{r['without_qc']:.3f}",
            f"{r['with_qc']:.3f}",
            f"{r['qc_share']:+.1%}",
            f"{r['qc_cpu_share']:+.1%}",
            f"{r['checks_cpu'] / r['cases'] * 1000:.1f} ms ({r['checks_cpu_share']:.1%})",
            "yes" if r["qc_share"] <= TARGET or args.mirror else "**no**",
        ]
        for name, r in results.items()
    ]
    print(header(f"Quality control's share of predict's time ({'mirror TTA' if args.mirror else 'no TTA'})"))
    print(f"- load average (1 min): {load['before']:.2f} before, {load['after']:.2f} after")
    print(f"- best of {args.repeats} interleaved runs each; the checks' CPU time is the thread's, in the run with QC\n")
    titles = [
        "cases",
        "n",
        "voxels per case",
        "without QC (s)",
        "with QC (s)",
        "QC adds",
        "CPU time",
        "checks' CPU a case (share)",
        f"<= {TARGET:.0%}",
    ]
    print(markdown_table(titles, rows))


if __name__ == "__main__":
    main()
