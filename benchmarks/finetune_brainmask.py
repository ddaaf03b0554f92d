"""Fine-tuning pays: a brain mask from few cases, from scratch vs from the mni152-tissue model, at equal time.

The target task is a brain mask (grey and white matter merged into one class) on the built-in
``mni152-tissue`` slabs, with only ``--train-cases`` training slabs (a small new dataset) and the
demo's validation slabs. Each arm trains with the demo's settings under the same wall-clock budget
(``training.time_budget``): from random weights, and from the demo's grey/white-matter model
(``--init-from``: every tensor but the 3-class heads loaded), optionally with the encoder frozen for the
first epochs. Reported: the best validation Dice of the brain class, per seed, mean +- sd.

    attnseg demo                                              # the source model, demo_output/model
    python -m benchmarks.finetune_brainmask --source demo_output/model --budget 40 --seeds 0 1 2
    python -m benchmarks.finetune_brainmask --source demo_output/model --epochs 2 --arms scratch init-from
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
from pathlib import Path

import numpy as np

from attnseg.data import prepare_builtin
from attnseg.data.io import read_image, write_image
from attnseg.demo import SETTINGS as DEMO_SETTINGS
from attnseg.training.budget import parse_duration
from attnseg.training.config import load_config
from attnseg.training.run import train
from benchmarks.report import header, markdown_table

SETTINGS = [  # the demo's (attnseg/demo.py), validating every epoch
    *DEMO_SETTINGS,
    "training.val_every=1",
    "training.amp=off",  # fp32, no timed choice: both arms train the same way
    "training.layout=channels_last",
]
ARMS = {
    "scratch": [],
    "init-from": ["finetune.init_from={source}"],
    "init-from+freeze": [
        "finetune.init_from={source}",
        "finetune.freeze=encoder",
        "finetune.freeze_epochs=2",
    ],
}


def brain_mask_dataset(tissue: Path, out: Path, train_cases: int) -> Path:
    """mni152-tissue with grey and white matter merged, ``train_cases`` training slabs, the same validation."""
    split = json.loads((tissue / "splits.json").read_text())[0]
    keep = split["train"][:: max(1, len(split["train"]) // train_cases)][:train_cases]
    for folder in ("imagesTr", "labelsTr"):
        (out / folder).mkdir(parents=True)
    for case in keep + split["val"]:
        shutil.copy(tissue / "imagesTr" / f"{case}_0000.nii.gz", out / "imagesTr")
        label = read_image(tissue / "labelsTr" / f"{case}.nii.gz")
        mask = (np.asarray(label.array) > 0).astype(np.uint8)
        write_image(out / "labelsTr" / f"{case}.nii.gz", mask, label.geometry)
    spec = json.loads((tissue / "dataset.json").read_text())
    spec.update(name="MNI152BrainMask", labels={"background": 0, "brain": 1}, numTraining=len(keep) + len(split["val"]))
    spec.pop("attnseg", None)
    (out / "dataset.json").write_text(json.dumps(spec, indent=2))
    (out / "splits.json").write_text(json.dumps([{"train": keep, "val": split["val"]}], indent=2))
    return out


def run_arm(overrides: list[str], dataset: Path, output: Path, length: str, seed: int) -> float:
    """One training; ``length`` is ``training.time_budget=...`` or ``training.epochs=...``."""
    settings = [*SETTINGS, *overrides, f"data.dataset={dataset}", f"output={output}"]
    config = load_config(None, [*settings, length, f"training.seed={seed}"])
    state = train(config, show_progress=False)
    return max(row.get("val_dice_brain", float("nan")) for row in state.history)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=Path("demo_output/model"), help="the mni152-tissue model")
    parser.add_argument("--budget", default="40", help="wall time per training, e.g. 40, 2m")
    parser.add_argument(
        "--epochs",
        type=int,
        help="instead of --budget: this many epochs of 10 steps each (equal steps of the same network: equal "
        "compute, whatever else loads the machine; a frozen encoder makes a step cheaper, so not for that arm)",
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--train-cases", type=int, default=3)
    parser.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    args = parser.parse_args()
    budget = parse_duration(args.budget)
    length = f"training.epochs={args.epochs}" if args.epochs else f"training.time_budget={budget}"
    with tempfile.TemporaryDirectory() as temporary:
        root = Path(temporary)
        tissue = prepare_builtin("mni152-tissue", root / "tissue")
        dataset = brain_mask_dataset(tissue, root / "brainmask", args.train_cases)
        scores: dict[str, list[float]] = {}
        for seed in args.seeds:
            for index, arm in enumerate(args.arms):
                overrides = [o.format(source=args.source.resolve()) for o in ARMS[arm]]
                score = run_arm(overrides, dataset, root / f"run_{index}_{seed}", length, seed)
                scores.setdefault(arm, []).append(score)
                print(f"seed {seed}, {arm}: best validation Dice (brain) {score:.4f}", flush=True)
    rows = []
    for arm, values in scores.items():
        spread = statistics.stdev(values) if len(values) > 1 else 0.0
        rows.append([arm, f"{statistics.mean(values):.3f} +- {spread:.3f}", ", ".join(f"{v:.3f}" for v in values)])
    each = f"{args.epochs} epochs of 10 steps" if args.epochs else f"{budget:g} s of training"
    title = f"Brain mask from {args.train_cases} slabs, {each} each, seeds {args.seeds}"
    print(header(title))
    print(markdown_table(["start", "Dice (brain), mean +- sd", "per seed"], rows))


if __name__ == "__main__":
    main()
