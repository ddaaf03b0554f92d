"""Built-in real datasets, made from volumes that ship inside registry packages (never downloaded).

* ``mni152-tissue``: the MNI ICBM152 2009a nonlinear symmetric T1 template and its grey- and white-matter
  probability maps (197 x 233 x 189 voxels, 1 mm), from the nilearn wheel. Labels by thresholding the
  maps at probability 0.5: background 0, grey matter 1, white matter 2.
* ``ctchest``: a chest CT (128 x 128 x 34 voxels, 3.05 x 3.05 x 10 mm) and its 7-segment segmentation,
  from the slicerio wheel.

Both are single volumes, so each is cut into slabs of axial slices, each slab a case file with its own
correct origin; validation slabs are separated from training slabs by a gap of unused slices on both
sides, and ``splits.json`` keeps the two apart. They show the pipeline on real anatomy; they are not
clinical benchmarks (one subject, or an average of 152, and neighbouring slices are alike).
"""

from __future__ import annotations

import importlib.resources
import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from attnseg.data.geometry import Geometry
from attnseg.data.io import Image, read_image, write_image
from attnseg.data.splits import save_splits
from attnseg.errors import DataError
from attnseg.fileio import staged_folder, write_json

Role = Literal["train", "val"]


@dataclass(frozen=True)
class Slab:
    """Slices ``[start, stop)`` along the slab axis, for training or validation."""

    start: int
    stop: int
    role: Role


SlabRange = tuple[int, int]  # slices [start, stop) along the slab axis


@dataclass(frozen=True)
class Builtin:
    name: str
    title: str
    package: str
    description: str
    prepare: Callable[[Path, Sequence[SlabRange]], dict[str, Any]]
    extent: SlabRange  # the slices cut into slabs
    validation: tuple[SlabRange, ...]  # the validation slabs of the dataset as shipped


def slab_layout(first: int, stop: int, val: list[tuple[int, int]], gap: int, train_thickness: int) -> list[Slab]:
    """Validation slabs as given; ``gap`` unused slices on each side; the rest cut into training slabs
    of about ``train_thickness`` slices (evenly, so none is a sliver)."""
    slabs = [Slab(a, b, "val") for a, b in val]
    blocked = sorted((max(first, a - gap), min(stop, b + gap)) for a, b in val)
    runs, cursor = [], first
    for a, b in blocked:
        if a > cursor:
            runs.append((cursor, a))
        cursor = max(cursor, b)
    if cursor < stop:
        runs.append((cursor, stop))
    for a, b in runs:
        count = max(1, round((b - a) / train_thickness))
        edges = np.linspace(a, b, count + 1).round().astype(int)
        slabs += [Slab(int(lo), int(hi), "train") for lo, hi in itertools.pairwise(edges) if hi > lo]
    return sorted(slabs, key=lambda s: s.start)


# ---- the MNI152 tissue dataset --------------------------------------------------------------------
MNI_FILES = {kind: f"mni_icbm152_{kind}_tal_nlin_sym_09a_converted.nii.gz" for kind in ("t1", "gm", "wm")}
# Axial slabs (axis 2, inferior to superior). The brain occupies z = 0..154; z >= 155 is empty and left
# out. Three 8-slice validation slabs at low, middle and high levels (all inside the brain, where both
# tissues are present), 4 unused slices either side, 107 training slices in 10-12-slice slabs.
MNI_AXIS = 2
MNI_RANGE = (0, 155)
MNI_VAL = [(40, 48), (76, 84), (112, 120)]
MNI_GAP = 4
MNI_TRAIN_THICKNESS = 12
MNI_THRESHOLD = 0.5  # a tissue where its probability exceeds one half (the maps are stored as 0-255)


def _prepare_mni152(out: Path, validation: Sequence[SlabRange]) -> dict[str, Any]:
    t1, gm, wm = (
        read_image(_package_file("nilearn", "nilearn.datasets.data", MNI_FILES[k])) for k in ("t1", "gm", "wm")
    )
    label = mni_tissue_labels(gm.array[0], wm.array[0])
    slabs = slab_layout(*MNI_RANGE, list(validation), MNI_GAP, MNI_TRAIN_THICKNESS)
    cases = _write_slabs(out, "mni152", t1, label[None], slabs, MNI_AXIS, ".nii.gz")
    return {
        "name": "MNI152Tissue",
        "description": "MNI ICBM152 2009a T1 template cut into axial slabs; grey and white matter from its tissue maps",
        "reference": "Fonov et al., NeuroImage 2011 (doi:10.1016/j.neuroimage.2010.07.033); Fonov et al., "
        "NeuroImage 2009 (doi:10.1016/S1053-8119(09)70884-5); shipped in the nilearn wheel",
        "licence": "MNI ICBM 2009 licence (permissive, with copyright notice; see README.md); nilearn BSD-3-Clause",
        "channel_names": {"0": "T1"},
        "labels": {"background": 0, "grey_matter": 1, "white_matter": 2},
        "file_ending": ".nii.gz",
        "slabs": cases,
        "slab_axis": MNI_AXIS,
        "gap": MNI_GAP,
    }


def mni_tissue_labels(gm: np.ndarray, wm: np.ndarray) -> np.ndarray:
    """Grey matter (1) where its probability exceeds ``MNI_THRESHOLD`` and white matter's; white matter (2)
    likewise; else background. The maps hold probabilities scaled to 0-255."""
    gm = np.asarray(gm, dtype=np.float32) / 255.0
    wm = np.asarray(wm, dtype=np.float32) / 255.0
    label = np.zeros(gm.shape, dtype=np.uint8)
    label[(gm > MNI_THRESHOLD) & (gm >= wm)] = 1
    label[(wm > MNI_THRESHOLD) & (wm > gm)] = 2
    return label


# ---- the chest CT dataset -------------------------------------------------------------------------
# Axial slabs (axis 2, 34 slices of 10 mm, inferior to superior): one 6-slice validation slab in the
# mid-chest (lungs, ribs, thoracic spine, soft tissue), 2 unused slices (20 mm) either side, 24 training
# slices in 6-slice slabs. The cervical spine (top slices) and lumbar spine (bottom slices) appear in
# training slabs only.
CT_AXIS = 2
CT_RANGE = (0, 34)
CT_VAL = [(14, 20)]
CT_GAP = 2
CT_TRAIN_THICKNESS = 6


def _prepare_ctchest(out: Path, validation: Sequence[SlabRange]) -> dict[str, Any]:
    ct = read_image(_package_file("slicerio", "slicerio.data", "CTChest4.nrrd"))
    if ct.spatial_shape[CT_AXIS] != CT_RANGE[1]:
        raise DataError(f"{ct.path}: {ct.spatial_shape[CT_AXIS]} axial slices, expected {CT_RANGE[1]}; "
                        "this slicerio release ships another scan")  # fmt: skip
    seg = read_image(_package_file("slicerio", "slicerio.data", "Segmentation.seg.nrrd"), multichannel=False)
    segments = seg.meta.get("segments") or {}
    labels = {"background": 0, **{name: int(value) for name, value in sorted(segments.items(), key=lambda kv: kv[1])}}
    found = {int(v) for v in np.unique(seg.array)}
    if not found <= set(labels.values()):
        raise DataError(f"{seg.path}: label values {sorted(found - set(labels.values()))} have no segment name")
    slabs = slab_layout(*CT_RANGE, list(validation), CT_GAP, CT_TRAIN_THICKNESS)
    cases = _write_slabs(out, "ctchest", ct, seg.array.astype(np.uint8), slabs, CT_AXIS, ".nrrd")
    return {
        "name": "CTChest",
        "description": "Chest CT cut into axial slabs, with a 7-segment segmentation (3D Slicer format)",
        "reference": "CTChest4.nrrd and Segmentation.seg.nrrd, test data shipped in the slicerio wheel",
        "licence": "slicerio: MIT (see README.md)",
        "channel_names": {"0": "CT"},
        "labels": labels,
        "file_ending": ".nrrd",
        "slabs": cases,
        "slab_axis": CT_AXIS,
        "gap": CT_GAP,
    }


BUILTIN: dict[str, Builtin] = {
    "mni152-tissue": Builtin(
        "mni152-tissue",
        "MNI ICBM152 2009a T1 template: background / grey matter / white matter",
        "nilearn",
        "197 x 233 x 189 at 1 mm; axial slabs, three held out for validation",
        _prepare_mni152,
        MNI_RANGE,
        tuple(MNI_VAL),
    ),
    "ctchest": Builtin(
        "ctchest",
        "chest CT with 7 segments (ribs, vertebral columns, lungs, soft tissue)",
        "slicerio",
        "128 x 128 x 34 at 3.05 x 3.05 x 10 mm; axial slabs, one held out for validation",
        _prepare_ctchest,
        CT_RANGE,
        tuple(CT_VAL),
    ),
}


def validation_folds(name: str, folds: int) -> list[list[SlabRange]]:
    """``folds`` layouts of built-in dataset ``name`` for cross-validation along its slab axis: fold k holds
    out one slab as thick as the dataset's first validation slab, the k-th of ``folds`` evenly spaced from
    the first slice to the last (ctchest, 5 folds: slices 0-5, 7-12, 14-19 (the dataset as shipped),
    21-26 and 28-33). Pass a layout to :func:`prepare_builtin` as ``validation``.

    A single volume has no other cases to hold out, and one validation slab scores one level of the
    anatomy: on ctchest, one vertebral level decided a comparison of networks (docs/choosing-a-network.md).
    """
    spec = _spec(name)
    first, stop = spec.extent
    thickness = spec.validation[0][1] - spec.validation[0][0]
    if not 2 <= folds <= (stop - first) // thickness:
        raise DataError(f"{name}: {folds} folds of {thickness} slices do not fit {stop - first} slices")
    starts = np.linspace(first, stop - thickness, folds).round().astype(int)
    return [[(int(a), int(a) + thickness)] for a in starts]


def _check_validation(name: str, spec: Builtin, validation: Sequence[SlabRange]) -> list[SlabRange]:
    slabs = sorted((int(a), int(b)) for a, b in validation)
    first, stop = spec.extent
    if not slabs or any(not first <= a < b <= stop for a, b in slabs):
        raise DataError(f"{name}: validation slabs {slabs} must be non-empty ranges of slices in [{first}, {stop})")
    if any(b > c for (_, b), (c, _) in itertools.pairwise(slabs)):
        raise DataError(f"{name}: validation slabs {slabs} overlap")
    return slabs


def _spec(name: str) -> Builtin:
    if name not in BUILTIN:
        raise DataError(f"unknown built-in dataset '{name}'; choose one of: {', '.join(BUILTIN)}")
    return BUILTIN[name]


def prepare_builtin(
    name: str, out: str | Path, *, overwrite: bool = False, validation: Sequence[SlabRange] | None = None
) -> Path:
    """Write built-in dataset ``name`` to ``out`` in nnU-Net v2 raw format (+ splits.json, README.md).

    ``validation``: the validation slabs, ``(start, stop)`` slice ranges along the slab axis, instead of the
    dataset's own (:func:`validation_folds` makes a cross-validation's); the rest is cut into training slabs
    as usual, a gap of unused slices either side of each validation slab.

    The dataset is assembled in a temporary folder beside ``out`` and renamed into place. An existing
    ``out`` is replaced only with ``overwrite`` and only if it holds a dataset (a dataset.json).
    """
    spec = _spec(name)
    validation = _check_validation(name, spec, spec.validation if validation is None else validation)
    out = Path(out)
    if out.exists():
        if not overwrite:
            raise DataError(f"{out} exists; pass --overwrite to replace it")
        if not (out / "dataset.json").exists():
            raise DataError(
                f"{out} exists and holds no dataset.json; refusing to replace a folder that is not a dataset"
            )
    with staged_folder(out) as staging:
        info = spec.prepare(staging, validation)
        slabs = info.pop("slabs")
        train = [s["id"] for s in slabs if s["role"] == "train"]
        val = [s["id"] for s in slabs if s["role"] == "val"]
        if not train:
            raise DataError(f"{name}: validation slabs {validation} and their gaps leave no slices to train on")
        dataset_json = {
            **{k: info[k] for k in ("name", "description", "reference", "licence")},
            "channel_names": info["channel_names"],
            "labels": info["labels"],
            "numTraining": len(slabs),
            "file_ending": info["file_ending"],
            "attnseg": {
                "builtin": name,
                "slab_axis": info["slab_axis"],
                "gap_slices": info["gap"],
                "slabs": slabs,
            },
        }
        write_json(staging / "dataset.json", dataset_json)
        save_splits(staging / "splits.json", [{"train": train, "val": val}])
        (staging / "README.md").write_text(_readme(name, info, slabs))
    return out


def _write_slabs(
    out: Path, prefix: str, image: Image, label: np.ndarray, slabs: list[Slab], axis: int, ending: str
) -> list[dict[str, Any]]:
    """One case per slab: ``imagesTr/ID_0000<ending>`` and ``labelsTr/ID<ending>``, origins moved to the slab."""
    cases = []
    for slab in slabs:
        case_id = f"{prefix}_z{slab.start:03d}"
        index = [slice(None)] * (image.spatial_dims + 1)
        index[axis + 1] = slice(slab.start, slab.stop)
        start = [0] * image.spatial_dims
        start[axis] = slab.start
        geometry: Geometry = image.geometry.shifted(start)
        write_image(out / "imagesTr" / f"{case_id}_0000{ending}", image.array[tuple(index)], geometry)
        write_image(out / "labelsTr" / f"{case_id}{ending}", label[tuple(index)], geometry)
        cases.append({"id": case_id, "start": slab.start, "stop": slab.stop, "role": slab.role})
    return cases


def _package_file(package: str, module: str, name: str) -> Path:
    """A data file inside an installed wheel; :class:`DataError` saying what to install when missing."""
    try:
        path = Path(str(importlib.resources.files(module).joinpath(name)))
    except ModuleNotFoundError as error:
        raise DataError(
            f"this dataset is read from the '{package}' package, which is not installed: pip install 'attnseg[data]'"
        ) from error
    if not path.is_file():
        raise DataError(
            f"{path}: missing from the installed '{package}' package; reinstall it (pip install '{package}')"
        )
    return path


def _readme(name: str, info: dict[str, Any], slabs: list[dict[str, Any]]) -> str:
    rows = "\n".join(
        f"| {s['id']} | {s['start']}-{s['stop'] - 1} | {s['stop'] - s['start']} | {s['role']} |" for s in slabs
    )
    labels = ", ".join(f"{v} = {k}" for k, v in info["labels"].items())
    train = sum(s["stop"] - s["start"] for s in slabs if s["role"] == "train")
    val = sum(s["stop"] - s["start"] for s in slabs if s["role"] == "val")
    return f"""# {info["name"]} (`attnseg dataset prepare {name}`)

{info["description"]}.

**What this is for.** It demonstrates the attnseg pipeline on real anatomy. It is *not* a clinical
benchmark: it comes from a single volume, and neighbouring slices look alike, so scores on it say
that the pipeline works, not how a model would do on new patients.

## Source

{_SOURCES[name]}

## Licence

{_LICENCES[name]}

## Layout

nnU-Net v2 raw format: `imagesTr/<case>_0000{info["file_ending"]}`, `labelsTr/<case>{info["file_ending"]}`,
`dataset.json`, and `splits.json` with one fold (nnU-Net's format). Labels: {labels}.

The volume is cut into slabs of consecutive slices along image axis {info["slab_axis"]} (axial). Each slab
is a case with its own origin, so it sits exactly where it was in the original scan. Validation slabs
are separated from training slabs by {info["gap"]} unused slices on each side: {train} training slices,
{val} validation slices.

| case | slices | count | role |
|---|---|---|---|
{rows}
"""


_SOURCES = {
    "mni152-tissue": (
        "The MNI ICBM152 2009a nonlinear symmetric template (T1, grey- and white-matter probability maps), as "
        "shipped inside the nilearn wheel: `nilearn/datasets/data/mni_icbm152_{t1,gm,wm}_tal_nlin_sym_09a_converted"
        ".nii.gz` (197 x 233 x 189 voxels, 1 mm, values 0-255). The T1 is skull-stripped. Labels: grey matter "
        "where its probability exceeds 0.5 (and white matter's), white matter likewise, background elsewhere.\n\n"
        "Fonov V, Evans AC, Botteron K, Almli CR, McKinstry RC, Collins DL. Unbiased average age-appropriate "
        "atlases for pediatric studies. NeuroImage 54(1), 2011. Fonov VS, Evans AC, McKinstry RC, Almli CR, "
        "Collins DL. Unbiased nonlinear average age-appropriate brain templates from birth to adulthood. "
        "NeuroImage 47, Supplement 1, 2009."
    ),
    "ctchest": (
        "`slicerio/data/CTChest4.nrrd` (a chest CT, 128 x 128 x 34 voxels, 3.05 x 3.05 x 10 mm, LPS axes "
        "flipped in x and y) and `slicerio/data/Segmentation.seg.nrrd` (its 3D Slicer segmentation: ribs, "
        "cervical, thoracic and lumbar vertebral column, right lung, left lung, tissue), test data shipped "
        "inside the slicerio wheel (repository lassoan/slicerio). The scan appears to be a downsampled copy "
        "of 3D Slicer's CTChest sample data set."
    ),
}
_LICENCES = {
    "mni152-tissue": (
        "The template carries the MNI ICBM 2009 copyright notice: Copyright (C) 1993-2009 Louis Collins, "
        "McConnell Brain Imaging Centre, Montreal Neurological Institute, McGill University. Permission to "
        "use, copy, modify, and distribute this software and its documentation for any purpose and without "
        "fee is hereby granted, provided that the above copyright notice appear in all copies. The authors "
        "and McGill University make no representations about the suitability of this software for any "
        'purpose. It is provided "as is" without express or implied warranty. nilearn itself is '
        "BSD-3-Clause."
    ),
    "ctchest": (
        "Distributed inside slicerio under the MIT licence (Copyright (c) Andras Lasso and contributors). "
        "The underlying scan is 3D Slicer sample data; check its terms before any use beyond demonstration."
    ),
}
