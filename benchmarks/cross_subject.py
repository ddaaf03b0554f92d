"""What a recipe does on unseen subjects and scanners: train on the proxy's one head, predict and evaluate the
unseen heads, exactly as a user would with the command line (benchmarks/head_proxy.py builds the data).

    python benchmarks/head_proxy.py /tmp/proxy
    python benchmarks/cross_subject.py /tmp/proxy --budget 5m                                   # the defaults
    python benchmarks/cross_subject.py /tmp/proxy --budget 5m --name zscore --set "data.normalization=zscore"

Prints one row per run: Dice per unseen head, mean, recall, training wall time; and appends it as JSON to
OUT/results.jsonl so that several recipes can be compared in one table (``--table``).
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent


def attnseg(*args: str) -> str:
    """Run the command line, echo its output as it comes and return it."""
    with subprocess.Popen([sys.executable, "-m", "attnseg", *args], cwd=HERE.parent, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT) as process:  # fmt: skip
        lines = []
        for line in process.stdout:
            print(line, end="", flush=True)
            lines.append(line)
    if process.returncode:
        raise subprocess.CalledProcessError(process.returncode, ["attnseg", *args])
    return "".join(lines)


def steps_taken(model: Path, output: str, iterations: int | None) -> int | None:
    """Training steps a run took: epochs in its log.csv times the steps per epoch (the last plan printed under a
    time budget, which may shorten epochs)."""
    log = model / "log.csv"
    if not log.exists():
        return None
    epochs = len(log.read_text().strip().splitlines()) - 1
    planned = re.findall(r"an epoch of (\d+) steps", output)
    per_epoch = int(planned[-1]) if planned else iterations
    return epochs * per_epoch if per_epoch else None


def run(proxy: Path, name: str, budget: str, overrides: list[str], seed: int, steps: str | None = None) -> dict:
    """One recipe: ``budget`` of wall time, or ``steps`` (``EPOCHSxITERATIONS``) to compare recipes on a busy
    machine, where equal steps are fairer than equal seconds."""
    work = proxy / "runs" / name
    model, predictions = work / "model", work / "predictions"
    sets = [item for text in overrides for item in ("--set", text)]
    if steps:
        epochs, iterations = steps.lower().split("x")
        length = ["--epochs", epochs, "--set", f"training.iterations_per_epoch={iterations}"]
    else:
        length = ["--time-budget", budget]
    started = time.perf_counter()
    output = attnseg("train", "--dataset", str(proxy / "train"), "--output", str(model), "--fold", "all", *length,
            "--seed", str(seed), "--no-progress", "--overwrite", *sets)  # fmt: skip
    train_seconds = time.perf_counter() - started
    attnseg("predict", "-m", str(model), "-i", str(proxy / "test" / "images"), "-o", str(predictions),
            "--overwrite", "--no-progress")  # fmt: skip
    attnseg("evaluate", str(predictions), str(proxy / "test" / "labels"), "--sides", "--images",
            str(proxy / "test" / "images"), "--overwrite", "--no-progress")  # fmt: skip
    summary = json.loads((predictions / "summary.json").read_text().replace("NaN", "null"))
    per_case = {
        case["case_id"]: {k: case["metrics"]["1"][k] for k in ("Dice", "Precision", "Recall", "BoundaryOffset")}
        for case in summary["metric_per_case"]
    }
    return {
        "name": name,
        "budget": steps or budget,
        "seed": seed,
        "overrides": overrides,
        "train_seconds": round(train_seconds, 1),
        "steps": steps_taken(model, output, int(iterations) if steps else None),
        "dice_mean": summary["mean"]["1"]["Dice"],
        "cases": per_case,
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads",
    }


def table(rows: list[dict]) -> str:
    cases = sorted({c for r in rows for c in r["cases"]})
    head = "| recipe | " + " | ".join(cases) + " | mean Dice | min recall | training |"
    lines = [head, "|" + "---|" * (len(cases) + 4)]
    for r in rows:
        dice = " | ".join(f"{r['cases'][c]['Dice']:.3f}" if c in r["cases"] else "" for c in cases)
        recall = min(v["Recall"] for v in r["cases"].values())
        lines.append(f"| {r['name']} | {dice} | {r['dice_mean']:.3f} | {recall:.3f} | {r['train_seconds']:.0f} s |")
    return "\n".join(lines)


def append_result(results: Path, row: dict) -> None:
    """One run's row, appended to the JSON-lines file the tables are made from."""
    with open(results, "a") as stream:
        stream.write(json.dumps(row) + "\n")


def read_results(results: Path) -> list[dict]:
    return [json.loads(line) for line in results.read_text().splitlines() if line.strip()]


def add_recipe_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of one recipe run, shared with benchmarks/real_heads.py."""
    parser.add_argument("--name", default="defaults")
    parser.add_argument("--budget", default="5m")
    parser.add_argument("--steps", help="EPOCHSxITERATIONS instead of a time budget, e.g. 8x25")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--set", action="append", default=[], help="a configuration override for train")
    parser.add_argument("--table", action="store_true", help="only print the table of the results so far")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("proxy", type=Path)
    add_recipe_arguments(parser)
    args = parser.parse_args()
    results = args.proxy / "results.jsonl"
    if not args.table:
        append_result(results, run(args.proxy, args.name, args.budget, args.set, args.seed, args.steps))
    print(table(read_results(results)))


if __name__ == "__main__":
    main()
