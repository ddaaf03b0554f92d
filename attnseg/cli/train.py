"""``attnseg train [CONFIG]``: train a network on a dataset folder; the output folder becomes a model directory.
Flags such as ``--epochs`` are shortcuts for configuration keys (``SHORTCUTS``), applied as ``--set`` is."""

from __future__ import annotations

import argparse
from pathlib import Path

from attnseg.cli.options import Verbs

# command-line flag -> configuration key it overrides
SHORTCUTS = {
    "dataset": "data.dataset",
    "output": "output",
    "fold": "data.fold",
    "network": "network.name",
    "spatial_dims": "network.spatial_dims",
    "epochs": "training.epochs",
    "seed": "training.seed",
    "deterministic": "training.deterministic",
    "device": "training.device",
    "time_budget": "training.time_budget",
    "init_from": "finetune.init_from",
    "freeze": "finetune.freeze",
    "freeze_epochs": "finetune.freeze_epochs",
    "keep_source_plan": "finetune.keep_source_plan",
}

EPILOG = """examples:
  attnseg train --dataset data/mni152 --output runs/mni --epochs 20
  attnseg train configs/attention_unet_2d.yaml --dataset data/Dataset001_Liver --output runs/liver_f0 --fold 0
  attnseg train configs/attention_unet_2d.yaml --set optimizer.lr=3e-4 --set data.batch_size=4 --print-config
  attnseg train configs/attention_unet_2d.yaml --output runs/liver_f0 --resume     # continue after a crash
  attnseg train --dataset data/brainmask --output runs/bm --init-from runs/mni --freeze encoder --freeze-epochs 2
  torchrun --nproc_per_node=4 -m attnseg train configs/attention_unet_3d_paper.yaml --output runs/ct   # 4 GPUs

The configuration is YAML with the sections network, data, optimizer, scheduler, loss, training (see
--print-config for every key, its value and where it came from: user, the network's own recipe, or the
default). Unknown keys and wrong types are errors that name the key. A network may bring its own training
recipe (the multi-scale networks: Adam, lr 5e-4, betas (0.9, 0.99), no weight decay or clipping, CE); it
fills the keys you have not set.
The output folder becomes a model directory for `attnseg predict`: config.yaml, network.json, plan.json,
labels.json, weights.safetensors (best validation Dice), checkpoint/last.pt (resume), runtime.json (memory
layout and mixed precision, and why), calibration.json, postprocessing.json, MODEL_CARD.md, log.csv,
progress.png, tensorboard/, and .train.lock (held while the run writes: a second run on it is refused).

Speed: training.layout (channels_last, contiguous) and training.amp (bf16, fp16, off) default to auto: a
few training steps of every candidate are timed on the first batch and the fastest is kept (bf16 or fp16
on CUDA; fp32 or, where the CPU has bf16 kernels, bf16 on a CPU). --deterministic takes channels-last
and the device's default precision without timing. `attnseg profile NETWORK --train` shows the choice.
"""


def add_parser(verbs: Verbs) -> None:
    train = verbs.add_parser(
        "train",
        help="train a network on a dataset folder",
        description=(
            "Train a network from the registry on an nnU-Net / Decathlon / paired-folder dataset: plan the "
            "preprocessing from the dataset's fingerprint, take one fold of its splits.json (5 case-level folds "
            "are made when it has none), sample slices (2D networks) or patches (3D networks) with foreground "
            "oversampling and augmentation, and validate on whole cases (slices reassembled into volumes) with "
            "Dice per class. Memory layout and mixed precision chosen by measurement (see below); DDP under "
            "torchrun."
        ),
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    train.add_argument("config", nargs="?", type=Path, help="YAML configuration (default: all defaults)")
    train.add_argument("--dataset", help="dataset folder (data.dataset)")
    train.add_argument("--output", help="model directory to write (output)")
    train.add_argument(
        "--fold",
        type=_fold,
        help="fold of splits.json to validate on (data.fold, default 0); 'all': train on every case with no "
        "validation and keep the last epoch's weights (one labelled case, or a final model)",
    )
    train.add_argument("--network", help="network name from `attnseg models` (network.name)")
    train.add_argument("--spatial-dims", type=int, choices=(2, 3), help="2D on slices or 3D on patches")
    train.add_argument("--epochs", type=int, help="training.epochs")
    train.add_argument(
        "--time-budget",
        metavar="DURATION",
        help="finish the whole run within this wall time, e.g. 300, 90s, 5m, 1.5h (training.time_budget): epochs "
        "are planned from step times measured on this machine and the run stops on time, keeping the best model; "
        "a 2D run whose spacing is left to the plan trains at a coarser in-plane spacing (at most 2x) when fewer "
        "than 1000 steps would fit at the data's own",
    )
    _add_finetune_options(train)
    train.add_argument("--seed", type=int, help="training.seed")
    train.add_argument("--deterministic", action="store_true", default=None, help="deterministic kernels")
    train.add_argument("--device", help="auto, cpu, cuda, cuda:1 (training.device)")
    train.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override any key, e.g. optimizer.lr=3e-4"
    )
    train.add_argument("--resume", action="store_true", help="continue the run in --output from its checkpoint")
    train.add_argument("--overwrite", action="store_true", help="start again in an --output that holds a run")
    train.add_argument(
        "--print-config",
        action="store_true",
        help="print the effective configuration, each key with where its value came from (user, network recipe, "
        "default), and exit",
    )
    train.add_argument("--no-progress", action="store_true", help="no progress bar (logs, CI)")
    train.set_defaults(func=run)


def _add_finetune_options(train: argparse.ArgumentParser) -> None:
    """Starting from another model: which tensors, which frozen, whose plan (docs/training.md)."""
    train.add_argument(
        "--init-from",
        metavar="MODEL",
        help="start from this model directory's (or weights file's) tensors wherever name and shape match; "
        "the rest (another number of classes or channels) starts fresh; the model directory's init.json lists "
        "both (finetune.init_from)",
    )
    train.add_argument(
        "--freeze", choices=("encoder",), help="keep the encoder fixed (finetune.freeze), see --freeze-epochs"
    )
    train.add_argument(
        "--freeze-epochs", type=int, metavar="N", help="release the freeze after N epochs (default: the whole run)"
    )
    train.add_argument(
        "--keep-source-plan",
        action="store_true",
        default=None,
        help="take spacing and normalisation from --init-from's plan, not from the new dataset",
    )


def run(args: argparse.Namespace) -> int:
    from attnseg.training.config import load_config
    from attnseg.training.run import train

    overrides = list(args.set)
    for flag, key in SHORTCUTS.items():
        value = getattr(args, flag)
        if value is not None and value is not False:
            overrides.append(f"{key}={value}")
    config = load_config(args.config, overrides)
    if args.print_config:
        print(config.to_annotated_yaml(), end="")
        return 0
    state = train(
        config,
        resume=args.resume,
        overwrite=args.overwrite,
        show_progress=not args.no_progress,
        started=getattr(args, "started", None),
    )
    if state.best_epoch:
        weights = f"weights of the best validation Dice, {state.best_metric:.4f} at epoch {state.best_epoch}"
    else:
        weights = "no validation: weights of the last epoch"
    print(f"finished {state.epoch} epoch(s); {weights}; model directory: {config.output}")
    return 0


def _fold(text: str) -> int | str:
    """``--fold``: a fold number, or 'all' (every case trains, none validates); else an error naming the value."""
    if text == "all":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a fold number or 'all', got {text!r}") from None
