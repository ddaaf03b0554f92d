"""Do the quality-control flags fire on the scans they name, and does the predicted Dice rank the true Dice?

Takes a model trained on a built-in dataset (``--model``; the demo's ``demo_output/model`` for
mni152-tissue), and its held-out (validation) cases, and writes each clean and in corrupted versions
with the label carried along (so the true Dice is known):

    noise          Gaussian noise, sigma 0.4-0.6 x the body's intensity range    -> noise
    bias_field     a smooth multiplicative field, x0.4 to x1.6 across the scan   -> inhomogeneity
    rescaled       intensities x 3                                               -> intensity
    contrast       inverted inside the body (a T2-like look)                     -> intensity
    wrong_affine   the header's first and last axes flipped (voxels unchanged)   -> orientation
    truncated      the field of view cut to its middle 40% along the first axis  -> size
    downsampled    every 3rd voxel in-plane (3 mm)                               -> spacing
    unrelated      smooth random texture of the same size, no anatomy            -> intensity

Each corruption has ``--seeds`` variants (random strengths within the range above differ by seed). Then
``attnseg predict`` (QC on), ``attnseg evaluate`` against the carried labels, and the table of the
issue's targets: Spearman(predicted, true Dice), the share of each corruption's cases that raise its
named flag, the share of clean cases with the verdict ok, ECE before and after temperature scaling on
the clean held-out cases, and QC's share of predict's time (clean cases, no TTA, best of 5 interleaved
runs: ``benchmarks.qc_cost``, which also times a whole head).

    python -m benchmarks.qc_flags --model demo_output/model --data demo_output/data/mni152-tissue -o /tmp/qcb
"""

from __future__ import annotations

import argparse
import json
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from attnseg.data import Geometry, Image, load_dataset, load_splits, read_image, write_image
from attnseg.evaluate import evaluate_folders, evaluate_qc
from attnseg.inference.predictor import Predictor
from attnseg.metrics.calibration import expected_calibration_error, pooled_sample
from attnseg.model_dir import ModelDir
from benchmarks.qc_cost import time_share

Corruption = Callable[[Image, np.ndarray, np.random.Generator], tuple[Image, np.ndarray]]
EXPECTED_FLAG = {
    "noise": "noise",
    "bias_field": "inhomogeneity",
    "rescaled": "intensity",
    "contrast": "intensity",
    "wrong_affine": "orientation",
    "truncated": "size",
    "downsampled": "spacing",
    "unrelated": "intensity",
}


def _range(array: np.ndarray) -> float:
    body = array[array > np.percentile(array, 50)]
    return float(np.percentile(body, 95) - np.percentile(body, 5)) or 1.0


def noise(image: Image, label: np.ndarray, rng: np.random.Generator) -> tuple[Image, np.ndarray]:
    sigma = rng.uniform(0.4, 0.6) * _range(image.array)
    return Image(image.array + rng.normal(0, sigma, image.array.shape).astype(np.float32), image.geometry), label


def bias_field(image: Image, label: np.ndarray, rng: np.random.Generator) -> tuple[Image, np.ndarray]:
    shape = image.spatial_shape
    ramp = np.linspace(-1.0, 1.0, shape[0])[:, None, None] * np.ones(shape)
    field = 1.0 + rng.uniform(0.5, 0.6) * ramp
    return Image((image.array * field).astype(np.float32), image.geometry), label


def rescaled(image: Image, label: np.ndarray, rng: np.random.Generator) -> tuple[Image, np.ndarray]:
    return Image(image.array * rng.uniform(2.5, 3.5), image.geometry), label


def contrast(image: Image, label: np.ndarray, rng: np.random.Generator) -> tuple[Image, np.ndarray]:
    array = image.array
    body = array > np.percentile(array, 30)
    inverted = np.where(body, array.max() - array + rng.uniform(0, 0.1) * array.max(), array)
    return Image(inverted.astype(np.float32), image.geometry), label


def wrong_affine(image: Image, label: np.ndarray, rng: np.random.Generator) -> tuple[Image, np.ndarray]:
    direction = np.asarray(image.geometry.direction, dtype=float) @ np.diag([-1.0, 1.0, -1.0])
    geometry = Geometry.create(image.geometry.spacing, image.geometry.origin, direction)
    return Image(image.array, geometry), label


def truncated(image: Image, label: np.ndarray, rng: np.random.Generator) -> tuple[Image, np.ndarray]:
    size = image.spatial_shape[0]
    keep = int(size * rng.uniform(0.35, 0.45))
    start = (size - keep) // 2
    geometry = image.geometry.shifted([start, 0, 0])
    return Image(image.array[:, start : start + keep], geometry), label[start : start + keep]


def downsampled(image: Image, label: np.ndarray, rng: np.random.Generator) -> tuple[Image, np.ndarray]:
    spacing = (image.geometry.spacing[0] * 3, image.geometry.spacing[1] * 3, image.geometry.spacing[2])
    geometry = image.geometry.with_spacing(spacing)
    return Image(np.ascontiguousarray(image.array[:, ::3, ::3]), geometry), np.ascontiguousarray(label[::3, ::3])


def unrelated(image: Image, label: np.ndarray, rng: np.random.Generator) -> tuple[Image, np.ndarray]:
    from scipy import ndimage

    texture = ndimage.gaussian_filter(rng.normal(0, 1, image.array.shape[1:]), 4) * 20 * image.array.std()
    return Image(texture[None].astype(np.float32), image.geometry), label


CORRUPTIONS: dict[str, Corruption] = {
    "noise": noise,
    "bias_field": bias_field,
    "rescaled": rescaled,
    "contrast": contrast,
    "wrong_affine": wrong_affine,
    "truncated": truncated,
    "downsampled": downsampled,
    "unrelated": unrelated,
}


def write_cases(data: Path, out: Path, seeds: int) -> dict[str, str]:
    """Clean and corrupted held-out cases into OUT/inputs and OUT/labels; case id -> corruption."""
    dataset = load_dataset(data)
    val_ids = load_splits(dataset.splits_path, dataset.case_ids)[0]["val"]
    kinds = {}
    for case_id in val_ids:
        image, label = dataset.read_case(case_id)
        variants = [("clean", 0)] + [(name, seed) for name in CORRUPTIONS for seed in range(seeds)]
        for name, seed in variants:
            rng = np.random.default_rng(zlib.crc32(f"{case_id}/{name}/{seed}".encode()))
            corrupted, labels = (
                (image, label.array[0]) if name == "clean" else CORRUPTIONS[name](image, label.array[0], rng)
            )
            new_id = f"{case_id}_{name}{seed}"
            write_image(out / "inputs" / f"{new_id}_0000.nii.gz", corrupted.array, corrupted.geometry, overwrite=True)
            write_image(
                out / "labels" / f"{new_id}.nii.gz", labels[None].astype(np.uint8), corrupted.geometry, overwrite=True
            )
            kinds[new_id] = name
    return kinds


def ece_on_clean(model: Path, out: Path, kinds: dict[str, str]) -> dict[str, float]:
    """ECE of the clean cases' probabilities, calibrated (as written) and undone (T -> 1)."""
    temperature = ModelDir(model).temperature()
    clean = [case for case, kind in kinds.items() if kind == "clean"]
    predictor = Predictor([model], device="cpu", quality_control=False)
    probabilities, labels = [], []
    for case in clean:
        _, p = predictor.predict_image(read_image(out / "inputs" / f"{case}_0000.nii.gz"))
        label = read_image(out / "labels" / f"{case}.nii.gz").array[0]
        probabilities.append(p)
        labels.append(np.searchsorted(predictor.models[0].plan.class_values, label))
    p, y = pooled_sample(probabilities, labels)
    raw = torch.softmax(torch.log(torch.from_numpy(p).clamp_min(1e-7)) * temperature, dim=1).numpy()
    return {
        "temperature": temperature,
        "ece_before": expected_calibration_error(raw, y),
        "ece_after": expected_calibration_error(p, y),
    }


def qc_time_share(model: Path, out: Path, kinds: dict[str, str]) -> dict[str, float]:
    """QC's share of predict's time on the clean cases (no TTA; see ``benchmarks.qc_cost``)."""
    inputs = [out / "inputs" / f"{case}_0000.nii.gz" for case, kind in kinds.items() if kind == "clean"]
    return time_share(model, inputs, out / "timing")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--data", type=Path, required=True, help="the built-in dataset the model was trained on")
    parser.add_argument("-o", "--output", type=Path, required=True)
    parser.add_argument("--seeds", type=int, default=2, help="variants per corruption and case (default 2)")
    args = parser.parse_args()
    out = args.output
    kinds = write_cases(args.data, out, args.seeds)
    Predictor([args.model], device="cpu").predict_files(
        out / "inputs", out / "predictions", progress=False, overwrite=True
    )
    report, problems = evaluate_folders(out / "predictions", out / "labels", progress=False)
    if report is None:
        raise SystemExit("; ".join(problems))
    agreement = evaluate_qc(report, out / "predictions", out, overwrite=True)
    results = {"cases": len(kinds), "spearman": agreement["spearman"], "flag_rates": {}, "per_kind_true_dice": {}}
    rows = agreement["per_case"]
    for kind, flag in EXPECTED_FLAG.items():
        mine = [r for r in rows if kinds[r["case"]] == kind]
        results["flag_rates"][kind] = {
            "flag": flag,
            "raised": sum(flag in r["flags"] for r in mine),
            "cases": len(mine),
        }
    clean = [r for r in rows if kinds[r["case"]] == "clean"]
    results["clean_ok"] = {"ok": sum(r["verdict"] == "ok" for r in clean), "cases": len(clean)}
    for kind in ["clean", *CORRUPTIONS]:
        mine = [r for r in rows if kinds[r["case"]] == kind]
        results["per_kind_true_dice"][kind] = {
            "true": float(np.mean([r["true_dice"] for r in mine])),
            "predicted": float(np.mean([r["predicted_dice"] for r in mine])),
        }
    results["calibration"] = ece_on_clean(args.model, out, kinds)
    results["timing"] = qc_time_share(args.model, out, kinds)
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
