"""Accuracy for an equal wall-clock training budget: the 3D multi-scale guided network against the 3D
Attention U-Net on the built-in chest CT (``ctchest``), each trained by ``attnseg train`` (issue 14).

    .venv/bin/python benchmarks/ms_guided_3d_accuracy.py --budget-minutes 10 [--seeds 0 1 2]

Both networks get what ``attnseg train`` gives a 3D network: the nnU-Net-style plan (3.05 x 3.05 x 10
mm, CT normalisation, patches from the plan: 128 x 128 x 16 for the Attention U-Net, rounded to the
multi-scale network's multiple, 128 x 128 x 32), foreground oversampling, the default augmentation,
Dice + CE (the guided network adds its guided and reconstruction terms), AdamW at 1e-3 with the poly
schedule, batch 2, and the same seed. The budget is training time: each network's training step is
timed first (3 steps after a warm-up, on batches from its own sampler, in this process; all networks
one after the other before any training, so they see the machine's load alike), the number of
iterations that fits the budget follows, and ``attnseg train`` runs that many (epochs of
``--iterations-per-epoch``; the learning-rate schedule spans exactly the run) and validates once, at
the end, on the held-out slab (slices 14-19, whole slab, sliding window). The trainer itself has no
time limit here: the budget is turned into epochs before it starts.

Printed: the machine, the library versions, each network's parameters, step time, iterations, the
measured run time (training and the final validation, from the run's log.csv), and the validation Dice
per class and mean (mean +- std over seeds). ``ms_guided_narrow`` (``--networks``) is the same network
at a quarter of the widths, about 1/16 of the FLOPs. The
dataset is one patient with neighbouring slices alike: it says whether the networks learn in a given
time on a CPU, not how they would do on new patients.
"""

from __future__ import annotations

import argparse
import csv
import math
import statistics
import tempfile
import time
from pathlib import Path

import torch

from attnseg.data import prepare_builtin
from attnseg.distributed import DistContext
from attnseg.networks.utils import count_parameters
from attnseg.training.config import load_config
from attnseg.training.run import build_loss, build_model, prepare_data, train, training_samples
from benchmarks.report import header

NETWORKS = {
    "attention_unet": ["network.name=attention_unet", "network.feature_scale=4", "network.aux_outputs=true"],
    "ms_guided": ["network.name=ms_guided"],
    # the same network at a quarter of the widths (head 16, backbone stem 16): about 1/16 of the FLOPs
    "ms_guided_narrow": ["network.name=ms_guided", "network.head_channels=16", "network.backbone_width=16"],
}
COMMON = [
    "network.spatial_dims=3",
    "data.batch_size=2",
    "loss.name=dice_ce",
    "optimizer.name=adamw",
    "optimizer.lr=0.001",
    "scheduler.name=poly",
]


def settings(network: str, dataset: Path, output: Path, seed: int) -> list[str]:
    return [*NETWORKS[network], *COMMON, f"data.dataset={dataset}", f"output={output}", f"training.seed={seed}"]


def step_seconds(network: str, dataset: Path, seed: int, steps: int = 3) -> tuple[float, int]:
    """Median time of a training step (forward, loss, backward, clipping, AdamW) on real batches, as
    the trainer runs it, and the network's parameter count."""
    config = load_config(None, settings(network, dataset, Path(tempfile.mkdtemp()), seed))
    data = prepare_data(config)
    model = build_model(config, data.plan).train()
    loss_fn = build_loss(config, model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.optimizer.lr)
    samples = training_samples(config, data, DistContext())
    loader = torch.utils.data.DataLoader(samples, batch_size=config.data.batch_size)
    times = []
    for index, batch in enumerate(loader):
        if index > steps:
            break
        started = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        loss_fn(model(batch["image"]), batch["label"]).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 12.0)
        optimizer.step()
        if index > 0:  # the first step warms up oneDNN and the allocator
            times.append(time.perf_counter() - started)
    return statistics.median(times), count_parameters(model)


def run(network: str, dataset: Path, output: Path, seed: int, budget: float, per_epoch: int, seconds: float) -> dict:
    iterations = max(per_epoch, round(budget / seconds / per_epoch) * per_epoch)
    epochs = iterations // per_epoch
    overrides = [
        f"training.iterations_per_epoch={per_epoch}",
        f"training.epochs={epochs}",
        f"training.val_every={epochs}",
    ]
    config = load_config(None, [*settings(network, dataset, output, seed), *overrides])
    print(f"{network}, seed {seed}: {seconds:.1f} s per step -> {iterations} iterations ({epochs} epochs)", flush=True)
    train(config, overwrite=True, show_progress=False)
    rows = list(csv.DictReader((output / "log.csv").open()))
    trained = sum(float(r["seconds"]) for r in rows)
    dice = {k.removeprefix("val_dice_"): float(v) for k, v in rows[-1].items() if k.startswith("val_dice_") and v}
    return {"step": seconds, "iterations": iterations, "seconds": trained, "dice": dice}


def mean_std(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budget-minutes", type=float, default=10.0, help="training time per network and seed")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--iterations-per-epoch", type=int, default=5)
    parser.add_argument("--data", type=Path, default=None, help="a prepared ctchest folder (default: prepared here)")
    parser.add_argument("--work", type=Path, default=None, help="where the runs go (default: a temporary folder)")
    parser.add_argument(
        "--networks",
        nargs="+",
        default=["attention_unet", "ms_guided"],
        choices=list(NETWORKS),
        help="(default: %(default)s)",
    )
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    work = args.work or Path(tempfile.mkdtemp(prefix="ms3d_"))
    dataset = args.data or work / "ctchest"
    if not (dataset / "dataset.json").exists():
        prepare_builtin("ctchest", dataset)
    budget = 60 * args.budget_minutes

    # every network's step is timed first, one after the other, so that they see the machine's load alike
    calibration = {name: step_seconds(name, dataset, args.seeds[0]) for name in args.networks}
    results: dict[str, list[dict]] = {name: [] for name in args.networks}
    for seed in args.seeds:
        for name in args.networks:
            output = work / f"{name}_seed{seed}"
            seconds = calibration[name][0]
            results[name].append(run(name, dataset, output, seed, budget, args.iterations_per_epoch, seconds))

    print("\n" + header("MS guided network, 3D, accuracy for an equal time budget"))
    print(
        f"ctchest, 3D, {args.budget_minutes:g} min of training per network and seed, seeds {args.seeds}; "
        f"validation Dice on the held-out slab (mean over seeds ± std)\n"
    )
    classes = list(next(iter(results.values()))[0]["dice"])
    print("| network | parameters | s / step | iterations | run time | " + " | ".join(classes) + " |")
    print("|---|---|---|---|---|" + "---|" * len(classes))
    for name, runs in results.items():
        cells = [mean_std([r["dice"][c] for r in runs if not math.isnan(r["dice"][c])] or [math.nan]) for c in classes]
        print(
            f"| {name} | {calibration[name][1] / 1e6:.2f} M | {statistics.mean(r['step'] for r in runs):.1f} "
            f"| {statistics.mean(r['iterations'] for r in runs):.0f} "
            f"| {statistics.mean(r['seconds'] for r in runs) / 60:.1f} min | " + " | ".join(cells) + " |"
        )
    print(f"\nruns kept in {work}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
