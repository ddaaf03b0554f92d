"""The main job, ``attnseg demo``: the whole pipeline on a built-in real dataset, in a few minutes on a CPU.

1. prepare ``mni152-tissue`` (the MNI ICBM152 2009a T1 template, grey and white matter, cut into axial
   slabs; shipped inside the nilearn wheel) unless it is there already;
2. train a 2D Attention U-Net on the training slabs (2 mm in-plane, validation Dice every few epochs);
3. predict the held-out validation slabs with ``Predictor`` (masks on the original 1 mm grid);
4. evaluate them against the reference (Dice, HD95, ... per class) and write the reports;
5. draw the pictures: training curves, prediction vs reference overlays, the gates' attention maps.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np
import torch

from attnseg.data import load_dataset, load_splits, prepare_builtin, read_image
from attnseg.data.dataset import Dataset
from attnseg.data.preprocess import normalize
from attnseg.errors import OutputExistsError
from attnseg.evaluate import evaluate_folders, write_reports
from attnseg.inference.predictor import Predictor
from attnseg.metrics import markdown_table
from attnseg.model_dir import ModelDir
from attnseg.networks.blocks.conv import resize_to
from attnseg.training.config import load_config
from attnseg.training.run import train
from attnseg.visualize.overlay import save_attention_maps, save_comparison

DATASET = "mni152-tissue"
TARGET_DICE = 0.85
# A 2D Attention U-Net (the paper's widths, feature_scale 4) on 2 mm axial slices; sized to reach the
# target in about three minutes of training on two CPU cores.
SETTINGS = [
    "network.name=attention_unet",
    "network.spatial_dims=2",
    "network.feature_scale=4",
    "network.aux_outputs=true",
    "data.target_spacing=[2.0, 2.0, null]",
    "data.batch_size=8",
    "optimizer.lr=0.002",
    "training.iterations_per_epoch=10",
    "training.val_every=4",
    "training.seed=0",
]


def run_demo(output: str | Path = "demo_output", epochs: int = 24, overwrite: bool = False) -> int:
    started = time.perf_counter()
    output = Path(output)
    folders = {name: output / name for name in ("model", "predictions", "metrics", "pictures")}
    _claim(output, folders, overwrite)
    dataset = _dataset(output / "data" / DATASET)

    print(f"[1/4] training a 2D Attention U-Net on {dataset.root} ({epochs} epochs)")
    config = load_config(
        None,
        [*SETTINGS, f"data.dataset={dataset.root}", f"output={folders['model']}", f"training.epochs={epochs}"],
    )
    train(config)

    print("[2/4] predicting the held-out slabs on their original 1 mm grid")
    val_ids = load_splits(dataset.splits_path, dataset.case_ids)[0]["val"]
    predictor = Predictor([folders["model"]])
    predictor.predict_files(
        [p for case_id in val_ids for p in dataset.case(case_id).images], folders["predictions"], progress=False
    )

    print("[3/4] evaluating against the reference masks")
    reference = output / "reference"
    reference.mkdir()
    for case_id in val_ids:
        label = dataset.case(case_id).label
        shutil.copy(label, reference / label.name)
    report, problems = evaluate_folders(folders["predictions"], reference, dataset.labels, progress=False)
    if report is None:
        raise RuntimeError("demo predictions do not match their references: " + "; ".join(problems))
    write_reports(report, folders["metrics"])
    print(markdown_table(report))

    print("[4/4] drawing training curves, overlays and attention maps")
    shutil.copy(folders["model"] / ModelDir.PROGRESS, folders["pictures"] / "progress.png")
    for case_id in val_ids:
        _draw_case(dataset, case_id, folders, predictor)

    dice = report.foreground_mean()["Dice"]
    minutes = (time.perf_counter() - started) / 60
    verdict = "meets" if dice >= TARGET_DICE else "misses"
    print(
        f"\nmean foreground Dice on the held-out slabs: {dice:.3f} ({verdict} the {TARGET_DICE} target), "
        f"{minutes:.1f} min in all\noutputs in {output}/: model/ (a model directory for `attnseg predict`), "
        "predictions/, metrics/ (summary.json, cases.csv, summary.md), pictures/"
    )
    (folders["metrics"] / "demo.json").write_text(json.dumps({"foreground_dice": dice, "minutes": minutes}) + "\n")
    return 0


def _claim(output: Path, folders: dict[str, Path], overwrite: bool) -> None:
    """Start from empty result folders; an earlier run's results are replaced only with ``overwrite``."""
    existing = [f for f in [*folders.values(), output / "reference"] if f.exists()]
    if existing and not overwrite:
        raise OutputExistsError(f"{output} holds an earlier demo run; pass --overwrite to replace it")
    for folder in existing:
        shutil.rmtree(folder)
    for folder in folders.values():
        if folder.name != "model":
            folder.mkdir(parents=True)


def _dataset(root: Path) -> Dataset:
    if not (root / "dataset.json").exists():
        print(f"preparing the built-in dataset {DATASET} in {root}")
        prepare_builtin(DATASET, root)
    return load_dataset(root)


def _draw_case(dataset: Dataset, case_id: str, folders: dict[str, Path], predictor: Predictor) -> None:
    """Middle slice of the slab: image, reference and prediction; then the gates' α over the image."""
    case = dataset.case(case_id)
    image = read_image(case.images[0])
    reference = read_image(case.label).array[0]
    prediction = read_image(folders["predictions"] / case.label.name).array[0]
    middle = image.spatial_shape[2] // 2
    title = f"{case_id}: axial slice {middle} of the held-out slab"
    save_comparison(
        _upright(image.array[0, :, :, middle]),
        _upright(reference[:, :, middle]),
        _upright(prediction[:, :, middle]),
        dataset.labels,
        folders["pictures"] / f"{case_id}_overlay.png",
        title,
    )
    maps = {name: _upright(values) for name, values in _attention_maps(predictor, image.array, middle).items()}
    save_attention_maps(
        _upright(image.array[0, :, :, middle]), maps, folders["pictures"] / f"{case_id}_attention.png", title
    )


def _upright(axial: np.ndarray) -> np.ndarray:
    """An axial (X, Y) slice of the RAS template as a picture: X across, Y (anterior) up."""
    return axial.T[::-1]


def _attention_maps(predictor: Predictor, volume: np.ndarray, index: int) -> dict[str, np.ndarray]:
    """Each gated level's α (mean over heads) for one axial slice, resized to the slice.

    The slab is normalised as the model's plan says but kept at 1 mm: the gates are convolutional, so
    they run at any resolution, and the maps then line up with the picture voxel for voxel.
    """
    loaded = predictor.models[0]
    normalised = normalize(volume.astype(np.float32), loaded.plan.normalization)
    slice_ = torch.from_numpy(np.ascontiguousarray(normalised[:, :, :, index]))[None]
    with torch.no_grad():
        out = loaded.network(slice_, return_attention=True)
    size = slice_.shape[2:]
    return {
        f"gate {level}": resize_to(alpha.mean(1, keepdim=True), size)[0, 0].numpy()
        for level, alpha in sorted(out.attention.items())
    }
