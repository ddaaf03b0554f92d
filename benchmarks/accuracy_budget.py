"""(c) Accuracy for an equal time budget: attnseg's networks against MONAI's AttentionUnet, trained the same way.

Every network trains on the same data (the built-in ``mni152-tissue`` dataset in the demo's setting: 2 mm
axial slices, batch 8, the demo's learning rate), with the same augmentation, the same training engine
(attnseg's Trainer: measured layout and precision, the poly schedule) and the same wall-clock budget
(``training.time_budget``, which plans the epochs from measured step times), then is scored by the same
validation (Dice per class on the held-out slabs, on the preprocessed grid). MONAI's AttentionUnet
(``channels=(16, 32, 64, 128, 256)``, the widths of attnseg's ``feature_scale=4``) is wrapped to pad its
input to a multiple of 16, as attnseg's networks do internally. Three seeds; mean +- standard deviation.

    python -m benchmarks.accuracy_budget                       # 40 s each, 3 seeds, 4 networks (~12 min)
    python -m benchmarks.accuracy_budget --budget 2m --seeds 0 # closer to the demo's training time
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
from monai.networks.nets import AttentionUnet

from attnseg.data import prepare_builtin
from attnseg.distributed import DistContext
from attnseg.export import PadToMultiple
from attnseg.model_dir import ModelDir
from attnseg.networks.utils import count_parameters
from attnseg.training.budget import TimeBudget, parse_duration
from attnseg.training.config import load_config
from attnseg.training.run import build_loss, build_model, make_validator, prepare_data, training_samples
from attnseg.training.seeding import seed_everything
from attnseg.training.trainer import Trainer
from benchmarks.report import header, markdown_table

DATASET = "mni152-tissue"
SETTINGS = [  # the demo's (attnseg/demo.py), the network aside
    "network.spatial_dims=2",
    "data.target_spacing=[2.0, 2.0, null]",
    "data.batch_size=8",
    "optimizer.lr=0.002",
    "training.iterations_per_epoch=10",
]
NETWORKS = {
    "attention_unet": ["network.name=attention_unet", "network.feature_scale=4", "network.aux_outputs=true"],
    "unet": ["network.name=unet", "network.feature_scale=4", "network.aux_outputs=true"],
    "ms_guided": ["network.name=ms_guided", "loss.name=ce"],
    "monai_attention_unet": ["network.name=attention_unet"],  # the config's data and loss; the model is MONAI's
}
MONAI_WIDTHS = (16, 32, 64, 128, 256)


def monai_attention_unet(in_channels: int, out_channels: int) -> torch.nn.Module:
    network = AttentionUnet(2, in_channels, out_channels, channels=MONAI_WIDTHS, strides=(2, 2, 2, 2))
    return PadToMultiple(network, 16)


def run(name: str, dataset: Path, budget: float, seed: int, output: Path) -> dict:
    config = load_config(None, [*SETTINGS, *NETWORKS[name], f"data.dataset={dataset}", f"output={output}",
                                f"training.seed={seed}"])  # fmt: skip
    seed_everything(seed)
    data = prepare_data(config)
    if name == "monai_attention_unet":
        model = monai_attention_unet(data.plan.num_channels, data.plan.num_classes)
    else:
        model = build_model(config, data.plan)
    validate = make_validator(config, data.plan, data.val_cases, torch.device("cpu"))
    trainer = Trainer(
        config,
        model,
        build_loss(config, model),
        training_samples(config, data, DistContext()),
        ModelDir(output),
        validate=validate,
        show_progress=False,
    )
    # the clock starts once the engine has measured its layout and precision: every network gets the same
    # training time, whatever that measurement cost it
    trainer.budget = TimeBudget.starting_now(budget)
    started = time.perf_counter()
    state = trainer.fit()
    seconds = time.perf_counter() - started
    trainer.close()
    final = validate(trainer.network.eval())
    return {"dice": final["val_dice_mean"], "epochs": state.epoch, "seconds": seconds,
            "parameters": count_parameters(trainer.network)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget", default="40s", help="training wall time per run (default 40s)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--networks", nargs="+", default=list(NETWORKS), choices=list(NETWORKS))
    args = parser.parse_args()
    budget = parse_duration(args.budget)
    with tempfile.TemporaryDirectory(prefix="attnseg-accuracy-") as work:
        dataset = prepare_builtin(DATASET, Path(work) / DATASET)
        results: dict[str, list[dict]] = {}
        for name in args.networks:
            for seed in args.seeds:
                results.setdefault(name, []).append(run(name, dataset, budget, seed, Path(work) / f"{name}-{seed}"))
                print(f"{name} seed {seed}: {results[name][-1]}", flush=True)
    print()
    print(header(f"Accuracy for an equal time budget ({args.budget} of training), {DATASET}, demo setting"))
    reference = statistics.mean(r["dice"] for r in results.get("monai_attention_unet", results[args.networks[0]]))
    rows = []
    for name, runs in results.items():
        dice = [r["dice"] for r in runs]
        spread = statistics.stdev(dice) if len(dice) > 1 else 0.0
        rows.append([
            name, f"{runs[0]['parameters'] / 1e6:.2f} M", f"{statistics.mean(dice):.3f} ± {spread:.3f}",
            f"{statistics.mean(dice) - reference:+.3f}", f"{statistics.mean(r['epochs'] for r in runs):.1f}",
            f"{statistics.mean(r['seconds'] for r in runs):.0f} s",
        ])  # fmt: skip
    headers = ["network", "parameters", f"validation Dice ({len(args.seeds)} seeds)", "vs MONAI", "epochs", "wall"]
    print(markdown_table(headers, rows))


if __name__ == "__main__":
    main()
