"""(c) Accuracy at equal steps and for an equal time budget: attnseg's networks against MONAI's AttentionUnet.

Every network trains on the same data (a built-in dataset as 2D slices: ``mni152-tissue`` at the demo's
2 mm in-plane, ``ctchest`` at its own 3.05 mm), on slices of the same size (the largest automatic size,
so the multi-scale networks' multiple of 32 does not give them more context), batch 8, 10 iterations an
epoch, the same augmentation, the same loss (``--loss``, Dice + CE by default, for every network: the
multi-scale networks' is summed over their heads with the guided and reconstruction terms, the U-Nets'
over their deep-supervision outputs), the same training engine (attnseg's Trainer: measured layout and
precision) and either

* the same number of steps (``--steps``; ``training.epochs`` = steps / 10), or
* the same wall-clock budget (``--budget``; ``training.time_budget`` plans the epochs from measured step
  times, and the clock starts after the engine's layout/precision measurement),

then is scored on the held-out slabs, on the preprocessed grid: Dice and HD95 (mm) per foreground class,
averaged over the classes and slabs.

``--folds N`` cross-validates along the slab axis instead: fold k holds out the k-th of N evenly spaced
slabs (``attnseg.data.builtin.validation_folds``; ctchest's own held-out slab is fold 2 of 5), so every
level of the anatomy is scored once. A class's Dice is then pooled over the folds (2 TP / (2 TP + FP + FN)
summed over the held-out slabs, false positives on slabs without the class included) in the folds whose
training slabs hold the class (ctchest's fold 4 holds out the cervical spine, which no training slab of
it shows); the mean over classes is the network's Dice for a seed.

The optimiser is each network's own: the U-Nets the demo's
(AdamW 2e-3, poly), the multi-scale networks their registered recipe (``attnseg train --print-config``).
MONAI's AttentionUnet (``channels=(16, 32, 64, 128, 256)``, the widths of attnseg's ``feature_scale=4``)
is padded to a multiple of 16, as attnseg's networks pad internally. Mean +- standard deviation over
the seeds.

    python -m benchmarks.accuracy_budget                                    # make bench-accuracy: everything
    python -m benchmarks.accuracy_budget --datasets mni152-tissue --steps 240 --seeds 0
    python -m benchmarks.accuracy_budget --budget 5m --networks attention_unet ms_guided_cpu
    python -m benchmarks.accuracy_budget --datasets ctchest --budget 5m --folds 5 --fold 0 --seeds 0 --work W
    python -m benchmarks.accuracy_budget --datasets ctchest --budget 5m --folds 5 --work W --reuse   # the tables
"""

from __future__ import annotations

import argparse
import math
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from monai.networks.nets import AttentionUnet

from attnseg.data import prepare_builtin
from attnseg.data.builtin import validation_folds
from attnseg.distributed import DistContext
from attnseg.export import PadToMultiple
from attnseg.fileio import read_json, write_json
from attnseg.inference.volume import predict_preprocessed
from attnseg.metrics.binary import binary_metrics
from attnseg.metrics.overlap import overlap_counts
from attnseg.model_dir import ModelDir
from attnseg.networks.utils import count_parameters
from attnseg.training.budget import TimeBudget, parse_duration
from attnseg.training.config import load_config
from attnseg.training.run import build_loss, build_model, make_validator, prepare_data, training_samples
from attnseg.training.seeding import seed_everything
from attnseg.training.trainer import Trainer
from benchmarks.report import header, markdown_table

ITERATIONS = 10
DATASETS = {  # the data settings of each built-in dataset; slices of one size for every network
    "mni152-tissue": ["data.target_spacing=[2.0, 2.0, null]", "data.patch_size=[96, 96]"],
    "ctchest": ["data.patch_size=[128, 128]"],
}
SETTINGS = ["network.spatial_dims=2", "data.batch_size=8", f"training.iterations_per_epoch={ITERATIONS}"]
UNET_RECIPE = ["optimizer.lr=0.002"]  # the demo's (attnseg/demo.py): AdamW, poly
NETWORKS = {
    "attention_unet": ["network.name=attention_unet", "network.feature_scale=4", "network.aux_outputs=true",
                       *UNET_RECIPE],
    "unet": ["network.name=unet", "network.feature_scale=4", "network.aux_outputs=true", *UNET_RECIPE],
    "monai_attention_unet": ["network.name=attention_unet", *UNET_RECIPE],  # data and loss; the model is MONAI's
    "ms_guided": ["network.name=ms_guided"],  # optimiser: the network's recipe
    "ms_guided_hr": ["network.name=ms_guided_hr"],
    "ms_guided_cpu": ["network.name=ms_guided_cpu"],
}  # fmt: skip
MONAI_WIDTHS = (16, 32, 64, 128, 256)


def monai_attention_unet(in_channels: int, out_channels: int) -> torch.nn.Module:
    network = AttentionUnet(2, in_channels, out_channels, channels=MONAI_WIDTHS, strides=(2, 2, 2, 2))
    return PadToMultiple(network, 16)


def scores(model: torch.nn.Module, config, data) -> dict:
    """Mean over held-out slabs and foreground classes of Dice and HD95 (mm; a class predicted nowhere
    or absent from the reference has no HD95 and is left out of its mean), and each class's Dice: a mean
    over a few classes can hang on one of them (ctchest's vertebral levels, docs/choosing-a-network.md).
    Also, for pooling over folds, each class's true and false positives and false negatives summed over the
    held-out slabs (``counts``) and the classes the training slabs hold (``trained``)."""
    dices, distances, per_class = [], [], {}
    model.eval()
    names = data.plan.class_names
    counts = {name: [0, 0, 0] for name in names[1:]}
    for case in data.val_cases:
        probabilities = predict_preprocessed(model, case.image, data.plan, batch_size=config.data.batch_size)
        prediction = probabilities.argmax(0).numpy()
        reference = np.asarray(case.label)
        for index in range(1, data.plan.num_classes):
            predicted, present = prediction == index, reference == index
            c = overlap_counts(predicted, present)
            counts[names[index]] = [a + b for a, b in zip(counts[names[index]], (c.tp, c.fp, c.fn), strict=True)]
            if not present.any():
                continue
            metrics = binary_metrics(predicted, present, case.properties.spacing)
            dices.append(metrics.dice)
            per_class.setdefault(names[index], []).append(metrics.dice)
            if math.isfinite(metrics.hd95):
                distances.append(metrics.hd95)
    trained = set().union(*(np.unique(np.asarray(case.label)).tolist() for case in data.train_cases))
    return {
        "dice": float(np.mean(dices)),
        "hd95": float(np.mean(distances)) if distances else math.nan,
        "class_dice": {name: float(np.mean(values)) for name, values in per_class.items()},
        "counts": counts,
        "trained": [names[index] for index in sorted(trained) if index > 0],
    }


def pooled(folds: list[dict]) -> dict:
    """One seed's cross-validation: each class's Dice from its counts summed over the folds whose training
    slabs hold it (a class none of those folds' held-out slabs holds is left out, whatever is predicted, so
    every network is scored on the same classes) and their mean; HD95, steps and wall time the folds' mean."""
    totals: dict[str, list[int]] = {}
    for result in folds:
        for name in result["trained"]:
            totals[name] = [a + b for a, b in zip(totals.get(name, [0, 0, 0]), result["counts"][name], strict=True)]
    class_dice = {name: 2 * tp / (2 * tp + fp + fn) for name, (tp, fp, fn) in totals.items() if tp + fn}
    distances = [r["hd95"] for r in folds if math.isfinite(r["hd95"])]
    return {
        "dice": float(np.mean(list(class_dice.values()))),
        "hd95": float(np.mean(distances)) if distances else math.nan,
        "class_dice": class_dice,
        "steps": float(np.mean([r["steps"] for r in folds])),
        "seconds": float(np.mean([r["seconds"] for r in folds])),
        "parameters": folds[0]["parameters"],
        "runtime": ", ".join(sorted({r["runtime"] for r in folds})),
    }


def run(name: str, dataset: str, path: Path, seed: int, output: Path, steps: int | None, budget: float | None,
        loss: str, extra: list[str] = ()) -> dict:  # fmt: skip
    epochs = max(1, round(steps / ITERATIONS)) if steps else None
    # equal steps: validate once, at the end (the scores below are of the last weights in any case)
    length = [f"training.epochs={epochs}", f"training.val_every={epochs}"] if epochs else []
    settings = [*SETTINGS, *DATASETS[dataset], *NETWORKS[name], *length, f"loss.name={loss}"]
    config = load_config(None, [*settings, f"data.dataset={path}", f"output={output}", f"training.seed={seed}", *extra])
    seed_everything(seed)
    data = prepare_data(config)
    if name == "monai_attention_unet":
        model = monai_attention_unet(data.plan.num_channels, data.plan.num_classes)
    else:
        model = build_model(config, data.plan)
    trainer = Trainer(
        config,
        model,
        build_loss(config, model),
        training_samples(config, data, DistContext()),
        ModelDir(output),
        validate=make_validator(config, data.plan, data.val_cases, torch.device("cpu")),
        show_progress=False,
    )
    if budget is not None:
        # the clock starts once the engine has measured its layout and precision: every network gets the
        # same training time, whatever that measurement cost it
        trainer.budget = TimeBudget.starting_now(budget)
    started = time.perf_counter()
    state = trainer.fit()
    seconds = time.perf_counter() - started
    trainer.close()
    runtime = getattr(trainer, "runtime", None)
    return {**scores(trainer.network, config, data), "steps": state.epoch * ITERATIONS, "seconds": seconds,
            "parameters": count_parameters(trainer.network), "runtime": getattr(runtime, "name", "?")}  # fmt: skip


def _mean_sd(values: list[float], digits: int) -> str:
    values = [v for v in values if math.isfinite(v)]
    if not values:
        return "n/a"
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.{digits}f} ± {spread:.{digits}f}"


def table(results: dict[str, list[dict]], seeds: int) -> str:
    reference = results.get("attention_unet")
    reference_dice = statistics.mean(r["dice"] for r in reference) if reference else None
    rows = []
    for name, runs in results.items():
        dice = statistics.mean(r["dice"] for r in runs)
        rows.append([
            name, f"{runs[0]['parameters'] / 1e6:.2f} M", _mean_sd([r["dice"] for r in runs], 3),
            "n/a" if reference_dice is None else f"{dice - reference_dice:+.3f}",
            _mean_sd([r["hd95"] for r in runs], 1), f"{statistics.mean(r['steps'] for r in runs):.0f}",
            f"{statistics.mean(r['seconds'] for r in runs):.0f} s",
            ", ".join(sorted({r.get("runtime", "?") for r in runs})),
        ])  # fmt: skip
    headers = ["network", "parameters", f"Dice ({seeds} seeds)", "vs attention_unet", "HD95 (mm)", "steps", "wall",
               "layout/precision (measured)"]  # fmt: skip
    return markdown_table(headers, rows)


def class_table(results: dict[str, list[dict]]) -> str:
    """Each class's Dice, mean ± sd over the seeds, a row per network."""
    names = list(dict.fromkeys(name for runs in results.values() for r in runs for name in r["class_dice"]))
    rows = [
        [network, *(_mean_sd([r["class_dice"][name] for r in runs if name in r["class_dice"]], 3) for name in names)]
        for network, runs in results.items()
    ]
    return markdown_table(["network", *names], rows)


def fold_table(results: dict[str, dict[int, list[dict]]], folds: list[int]) -> str:
    """Each fold's Dice (the mean over its held-out slab's classes), mean ± sd over the seeds."""
    rows = [
        [network, *(_mean_sd([runs[i]["dice"] for runs in by_seed.values()], 3) for i in range(len(folds)))]
        for network, by_seed in results.items()
    ]
    return markdown_table(["network", *(f"fold {k}" for k in folds)], rows)


RESULT = "benchmark-result.json"  # in each run's folder: what --reuse reads back


def prepared_datasets(dataset: str, work: Path, folds: int, chosen: list[int] | None) -> dict[int, Path]:
    """The dataset as shipped (``folds`` 1), or each chosen fold's layout, prepared under ``work`` once."""
    layouts = [None] if folds == 1 else validation_folds(dataset, folds)
    paths = {}
    for k in range(len(layouts)) if chosen is None else chosen:
        if not 0 <= k < len(layouts):
            raise SystemExit(f"--fold {k}: {dataset} has folds 0-{len(layouts) - 1}")
        path = work / (dataset if folds == 1 else f"{dataset}-fold{k}of{folds}")
        if not (path / "dataset.json").exists():
            prepare_builtin(dataset, path, overwrite=path.exists(), validation=layouts[k])
        paths[k] = path
    return paths


def run_or_reuse(output: Path, reuse: bool, *args) -> dict:
    """:func:`run` into ``output``; with ``reuse``, the result an earlier run left there, if it finished."""
    if reuse and (output / RESULT).exists():
        return read_json(output / RESULT)
    result = run(*args)
    write_json(output / RESULT, result, overwrite=True)
    return result


def report(results: dict[str, dict[int, list[dict]]], title: str, folds: list[int] | None, seeds: int) -> None:
    """The tables of one dataset and condition: ``results`` network -> seed -> a result per fold."""
    if folds is None:
        combined = {network: [runs[0] for runs in by_seed.values()] for network, by_seed in results.items()}
    else:
        combined = {network: [pooled(runs) for runs in by_seed.values()] for network, by_seed in results.items()}
    print()
    print(header(title))
    print(table(combined, seeds))
    print()
    print(class_table(combined))
    if folds is not None:
        print()
        print(fold_table(results, folds))
    print(flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    parser.add_argument("--steps", type=int, nargs="*", default=None,
                        help="equal steps: one or more step counts (default with no --budget: 240)")  # fmt: skip
    parser.add_argument("--budget", nargs="*", default=None, help="equal training wall time(s), e.g. 40s 5m")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--networks", nargs="+", default=list(NETWORKS), choices=list(NETWORKS))
    parser.add_argument("--loss", default="dice_ce", help="the segmentation loss of every network (default dice_ce)")
    parser.add_argument("--folds", type=int, default=1, metavar="N",
                        help="cross-validate over N evenly spaced held-out slabs (default 1: as shipped)")  # fmt: skip
    parser.add_argument("--fold", type=int, nargs="+", default=None, metavar="K",
                        help="with --folds: run only these folds (0-based; default all), pooled")  # fmt: skip
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a configuration override for every network (a variant: the table says so)")  # fmt: skip
    parser.add_argument("--work", type=Path, default=None, help="keep datasets and runs here (default: a temp dir)")
    parser.add_argument("--reuse", action="store_true",
                        help=f"with --work: reuse the result of a run that finished there ({RESULT}) instead of "
                        "running it again (e.g. to tabulate folds or seeds run by separate commands)")  # fmt: skip
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.steps is None and args.budget is None:
        args.steps, args.budget = [240], ["5m"]
    conditions = [("steps", s, f"{s} steps") for s in args.steps or []]
    conditions += [("budget", parse_duration(b), f"{b} of training") for b in args.budget or []]
    with tempfile.TemporaryDirectory(prefix="attnseg-accuracy-") as temporary:
        work = args.work or Path(temporary)
        for dataset in args.datasets:
            paths = prepared_datasets(dataset, work, args.folds, args.fold)
            for condition in conditions:
                run_condition(args, dataset, paths, condition, work)


def run_condition(args: argparse.Namespace, dataset: str, paths: dict[int, Path], condition: tuple, work: Path) -> None:
    """Every network and seed on each fold's data for one condition (steps or budget), then the tables."""
    kind, amount, text = condition
    steps, budget = (amount, None) if kind == "steps" else (None, amount)
    variant = "-".join(args.set).replace("/", "_")
    results: dict[str, dict[int, list[dict]]] = {}
    for k, path in paths.items():
        for name in args.networks:
            for seed in args.seeds:
                output = work / f"{path.name}-{name}-{kind}{amount:g}-{seed}{variant}"
                run_args = (name, dataset, path, seed, output, steps, budget, args.loss, args.set)
                result = run_or_reuse(output, args.reuse, *run_args)
                results.setdefault(name, {}).setdefault(seed, []).append(result)
                where = "" if args.folds == 1 else f" fold {k}"
                print(f"{dataset}{where} {text} {name} seed {seed}: {result}", flush=True)
    folds = None if args.folds == 1 else list(paths)
    split = "" if folds is None else f", folds {', '.join(map(str, folds))} of {args.folds} pooled"
    extra = f", with {' '.join(args.set)}" if args.set else ""
    threads = torch.get_num_threads()
    title = f"Accuracy at {text}, {dataset} (2D slices){split}, loss {args.loss}, {threads} thread(s){extra}"
    report(results, title, folds, len(args.seeds))


if __name__ == "__main__":
    main()
