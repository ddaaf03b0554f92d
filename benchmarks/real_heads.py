"""Brain extraction on a real head the model has never seen (issue 19): two real heads, with their skulls and
reference brain masks, each the one training case for a model that is tested on the other.

* **Colin27** (``ch2``): one young man scanned 27 times, averaged; 1 mm isotropic, stored RAS (Debian's
  ``mricron-data``, ``/usr/share/mricron/templates``). Reference: FSL BET's brain, ``ch2bet`` > 0 (the same
  grid; ``ch2bet`` equals ``ch2`` inside it and is 0 outside).
* **ITK's example head** (``KmeansTest_T1UCharRaw``): another person, 2 x 2 x 3 mm (thick coronal slices),
  stored LSA (Debian's ``insighttoolkit4-examples``). Reference: ``KmeansTest_T1RawSkullStrip`` > 0.

The two references follow different conventions (Colin27's BET mask hugs the cortex, ITK's reference
follows the inner skull over the CSF), and the heads differ in contrast, resolution, field of view and
anatomy: this is the development benchmark for "another person, another scanner". Install the data with

    sudo apt-get install mricron-data insighttoolkit4-examples

then build the two one-case datasets and run a recipe in both directions through the command line, exactly
as ``benchmarks/cross_subject.py`` does (train ``--fold all``, predict, evaluate):

    python -m benchmarks.real_heads /tmp/real                                    # the defaults, --time-budget 5m
    OMP_NUM_THREADS=1 python -m benchmarks.real_heads /tmp/real --steps 8x25 --name defaults-200  # equal steps
    OMP_NUM_THREADS=1 python -m benchmarks.real_heads /tmp/real --steps 8x25 --name no-elastic \
        --set data.augmentation.elastic_prob=0
    python -m benchmarks.real_heads /tmp/real --table

``--margin MM`` trains on the training head's labels grown (or shrunk) by MM millimetres, as
``attnseg dataset margin`` writes them (``OUT/<direction>/margin<MM>/train``; the test head is unchanged):
the two references follow different conventions, and this states the one wanted, e.g. Colin27's BET mask
moved out to the inner skull that ITK's reference follows:

    python -m benchmarks.real_heads /tmp/real --direction colin27_to_itk --margin 3 --name margin3

Prints Dice, precision, recall and the boundary offset (mm; < 0: the mask lies inside the reference) per
direction and appends one row per direction to OUT/results.jsonl; each run's ``attnseg evaluate --sides``
also prints (and writes beside the masks, in sides.csv and pieces_missed.csv) the offset by side of the
patient and the pieces of the test head's reference missed whole.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from attnseg.data.io import read_image, write_image
from attnseg.data.margin import write_with_margin
from benchmarks.cross_subject import add_recipe_arguments, append_result, read_results, run

COLIN = Path("/usr/share/mricron/templates")
ITK = Path("/usr/share/doc/insighttoolkit4-examples/examples/Data")
HEADS = {
    "colin27": (COLIN / "ch2.nii.gz", COLIN / "ch2bet.nii.gz"),
    "itk": (ITK / "KmeansTest_T1UCharRaw.nii.gz", ITK / "KmeansTest_T1RawSkullStrip.nii.gz"),
}
DIRECTIONS = [("colin27", "itk"), ("itk", "colin27")]
# --steps mode has no budget to choose the training resolution: it trains Colin27 (1 mm) at 2 x 2 mm in-plane, as
# --time-budget 5m does on a 2-core CPU ("training at 2 x 2 mm in-plane"); ITK's head keeps its 2 x 3 mm.
BUDGET_SPACING = "data.target_spacing=[2,2,null]"


def head(name: str) -> tuple:
    """(image, mask, geometry) of a head as stored: the image as float32, the mask = reference > 0."""
    image_path, reference_path = HEADS[name]
    for path in (image_path, reference_path):
        if not path.exists():
            raise SystemExit(f"{path} is missing: sudo apt-get install mricron-data insighttoolkit4-examples")
    image, reference = read_image(image_path), read_image(reference_path)
    if image.array.shape != reference.array.shape:
        raise SystemExit(f"{name}: image {image.array.shape} and reference {reference.array.shape} differ")
    return image.array.astype(np.float32), (reference.array > 0).astype(np.uint8), image.geometry


def build(out: Path) -> None:
    """OUT/<train>_to_<test>/{train (a one-case nnU-Net dataset), test/images, test/labels}."""
    for train, test in DIRECTIONS:
        root = out / f"{train}_to_{test}"
        if (root / "train" / "dataset.json").exists():
            continue
        image, mask, geometry = head(train)
        write_image(root / "train" / "imagesTr" / f"{train}_0000.nii.gz", image, geometry, overwrite=True)
        write_image(root / "train" / "labelsTr" / f"{train}.nii.gz", mask, geometry, overwrite=True)
        spec = {
            "name": f"RealHead_{train}",
            "description": f"{train} with its skull; label: its reference brain mask (benchmarks/real_heads.py)",
            "channel_names": {"0": "T1"},
            "labels": {"background": 0, "brain": 1},
            "numTraining": 1,
            "file_ending": ".nii.gz",
        }
        (root / "train" / "dataset.json").write_text(json.dumps(spec, indent=2))
        image, mask, geometry = head(test)
        write_image(root / "test" / "images" / f"{test}_0000.nii.gz", image, geometry, overwrite=True)
        write_image(root / "test" / "labels" / f"{test}.nii.gz", mask, geometry, overwrite=True)


def with_margin(root: Path, mm: float) -> Path:
    """``root``'s direction with its training labels grown by ``mm`` (written once): ``root/margin<mm>``, whose
    ``test`` is a link to ``root/test``."""
    moved = root / f"margin{mm:g}"
    if not (moved / "train" / "dataset.json").exists():
        write_with_margin(root / "train", moved / "train", mm, overwrite=(moved / "train").exists())
    if not (moved / "test").exists():
        (moved / "test").symlink_to(root / "test", target_is_directory=True)
    return moved


def table(rows: list[dict]) -> str:
    lines = [
        "| recipe | direction | Dice | precision | recall | offset (mm) | steps | training |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        (case,) = r["cases"].values()
        offset = case.get("BoundaryOffset")
        lines.append(
            f"| {r['name']} | {r['direction']} | {case['Dice']:.3f} | {case['Precision']:.3f} | "
            f"{case['Recall']:.3f} | {'n/a' if offset is None else f'{offset:+.2f}'} | "
            f"{r.get('steps') or r['budget']} | {r['train_seconds']:.0f} s |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path)
    add_recipe_arguments(parser)
    parser.add_argument("--direction", choices=[f"{a}_to_{b}" for a, b in DIRECTIONS], action="append")
    parser.add_argument("--margin", type=float, help="grow (> 0) or shrink the training labels by MM millimetres")
    args = parser.parse_args()
    results = args.out / "results.jsonl"
    if not args.table:
        build(args.out)
        for train, test in DIRECTIONS:
            direction = f"{train}_to_{test}"
            if args.direction and direction not in args.direction:
                continue
            overrides = list(args.set)
            if args.steps and train == "colin27" and not any(o.startswith("data.target_spacing") for o in overrides):
                overrides.append(BUDGET_SPACING)  # what --time-budget 5m chooses for Colin27 on a 2-core CPU
            root = args.out / direction if not args.margin else with_margin(args.out / direction, args.margin)
            row = run(root, args.name, args.budget, overrides, args.seed, args.steps)
            row["direction"] = f"{train} -> {test}"
            row["margin_mm"] = args.margin or 0.0
            print(table([row]), flush=True)
            append_result(results, row)
    print(table(read_results(results)))


if __name__ == "__main__":
    main()
