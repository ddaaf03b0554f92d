"""Grow or shrink the labels of a dataset by a margin in millimetres: one label convention into another.

Reference masks of the same structure follow different conventions. FSL BET's brain mask of the Colin27
head hugs the cortex; ITK's skull-stripped reference and deepbet's and SynthStrip's masks follow the inner
skull, over the cerebrospinal fluid between the two: on Colin27 itself BET's mask lies 2.9 mm inside
deepbet's (the boundary offset of attnseg.metrics.surface). A network learns the convention of the masks
it is trained on (issue 19: a model trained on Colin27 misses that rim on another head whose reference
includes it, Dice 0.904 with recall 0.829 after a 5-minute budget; trained on Colin27's mask grown by 3 mm,
0.943 with recall 0.956). Radiotherapy's margins (a clinical target volume grown into a planning target
volume) are the same operation.

The margin is applied on each label's own voxel grid, in millimetres (Euclidean distance between voxel
centres scaled by the spacing, ``scipy.ndimage.distance_transform_edt``):

* **grow** (``mm > 0``): a background voxel within ``mm`` of a voxel of a chosen class takes the nearest
  such class. Other foreground classes are never overwritten.
* **shrink** (``mm < 0``): a voxel of a chosen class within ``|mm|`` of the background becomes background.
  Borders between two foreground classes do not move.
* ``into`` names classes that count as background for this: the chosen classes grow into them too, and
  shrinking gives a chosen class's rim to the nearest of them or the background. A tumour inside a liver
  moves only with ``into=[liver]``: grown by 3 mm it takes liver voxels, shrunk by 2 mm it gives its rim to
  the liver rather than leaving a hole of background. Without it, a class that borders no background (every
  border with other classes) does not move at all, and :func:`write_with_margin` records 0 voxels changed.

The new dataset is a copy of the old one (every file copied, or with ``link_images`` hard-linked where the
file system allows: no extra space, but a program that rewrites an image of the copy in place rewrites the
source's too; ``dataset.json`` and ``splits.json`` kept) with the labels rewritten in their own format, and
``label_margin.json`` records what was done. It is written in a temporary folder beside ``out`` and renamed
into place, so ``out`` is never left half written.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from scipy.ndimage import distance_transform_edt
from tqdm.auto import tqdm

from attnseg.data.dataset import Dataset, load_dataset
from attnseg.data.io import read_label, write_image
from attnseg.errors import DataError, OutputExistsError
from attnseg.fileio import staged_folder, write_json

MARGIN_RECORD = "label_margin.json"


def apply_margin(
    labels: np.ndarray,
    spacing: Sequence[float],
    mm: float,
    values: Sequence[int] | None = None,
    into: Sequence[int] = (),
) -> np.ndarray:
    """``labels`` (label values, spatial axes only) with the classes ``values`` (None: every non-zero value)
    grown (``mm > 0``) or shrunk (``mm < 0``) by ``|mm|`` millimetres against the background and the classes
    ``into`` (see the module's docstring); ``spacing`` is the voxel size along each axis."""
    if labels.ndim != len(spacing):
        raise ValueError(f"labels of {labels.ndim} axes need {labels.ndim} spacings, got {tuple(spacing)}")
    chosen = labels != 0
    if values is not None:
        chosen &= np.isin(labels, list(values))
    open_ = ~chosen & ((labels == 0) | np.isin(labels, list(into)))  # where a chosen class's border may go
    out = labels.copy()
    if mm == 0 or not chosen.any() or not open_.any():
        return out
    sampling = [float(s) for s in spacing]
    # growing: an open voxel takes the class of the nearest chosen voxel; shrinking: a chosen voxel takes the
    # class of the nearest open voxel (the background, or a class of ``into``)
    source = chosen if mm > 0 else open_
    movable = open_ if mm > 0 else chosen
    distance, nearest = distance_transform_edt(~source, sampling=sampling, return_indices=True)
    moved = movable & (distance <= abs(mm) * (1 + 1e-9))
    out[moved] = labels[tuple(axis[moved] for axis in nearest)]
    return out


def write_with_margin(
    source: str | Path,
    out: str | Path,
    mm: float,
    *,
    label_names: Sequence[str] | None = None,
    into_names: Sequence[str] = (),
    overwrite: bool = False,
    progress: bool = False,
    link_images: bool = False,
) -> Path:
    """Copy the dataset at ``source`` to ``out`` with its labels grown or shrunk by ``mm`` millimetres.

    ``label_names`` limits the margin to those classes (dataset.json's names); None moves every foreground
    class. ``into_names``: classes the chosen ones grow into and give their rim to when shrunk, as they do the
    background (a tumour's liver). ``out`` must not exist unless ``overwrite`` (and then it must hold a
    dataset). ``progress`` shows a progress bar over the labels (tqdm, on stderr). ``link_images`` hard-links
    the files instead of copying them (the labels are written anew either way).

    Raises:
        DataError: an unreadable dataset or label file, a margin that is not finite or is zero, an unknown
            label name, ``out`` inside ``source``; the message names the file or the name.
    """
    if not np.isfinite(mm) or mm == 0:
        raise DataError(f"a label margin must be a non-zero number of millimetres, got {mm}")
    dataset = load_dataset(source)
    values = _chosen_values(dataset, label_names)
    into = _chosen_values(dataset, into_names) if into_names else []
    if values is None and into:
        raise DataError("--into needs --labels: with every label moved, no label is left to move into")
    if values is not None and set(values) & set(into):
        raise DataError(f"a label cannot both move and be moved into: {sorted(set(label_names) & set(into_names))}")
    out = Path(out).resolve()
    if out == dataset.root.resolve() or dataset.root.resolve() in out.parents:
        raise DataError(f"{out}: write the new dataset outside {dataset.root}")
    _check_target(out, overwrite)
    with staged_folder(out) as copy:
        copy_function = _link_or_copy if link_images else shutil.copy2
        shutil.copytree(dataset.root, copy, copy_function=copy_function, dirs_exist_ok=True)
        moved = {}
        for case in tqdm(dataset.cases, desc="margin", unit="label", disable=not progress):
            if case.label is not None:
                target = copy / _inside(case.label, dataset.root)
                moved[case.id] = _rewrite_label(case.label, target, mm, values, into)
        chosen = "every foreground label" if values is None else sorted(values)
        record = {"source": str(dataset.root.resolve()), "margin_mm": mm, "label_values": chosen}
        if into:
            record["into_values"] = sorted(into)
        write_json(copy / MARGIN_RECORD, {**record, "voxels_changed": moved}, overwrite=True)
    return out


def margin_note(root: str | Path) -> str | None:
    """What a dataset written by :func:`write_with_margin` says of its labels (``label_margin.json``), in
    one line for a model card; None for any other dataset."""
    path = Path(root) / MARGIN_RECORD
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
        mm, source, which = float(record["margin_mm"]), record["source"], record["label_values"]
    except (OSError, ValueError, KeyError, TypeError):
        return f"moved by a margin, but {path} cannot be read"
    verb = "grown" if mm > 0 else "shrunk"
    classes = "" if isinstance(which, str) else f" (label values {', '.join(str(v) for v in which)})"
    into = record.get("into_values")
    against = f" against the background and label values {', '.join(str(v) for v in into)}" if into else ""
    return f"{verb} by {abs(mm):g} mm{classes}{against} from `{source}` (`attnseg dataset margin`, {MARGIN_RECORD})"


def _chosen_values(dataset: Dataset, label_names: Sequence[str] | None) -> list[int] | None:
    """The label values the margin moves; None: every foreground value."""
    labels = dataset.labels
    if label_names is None:
        return None
    if labels is None:
        raise DataError(f"{dataset.root}: label names need a dataset.json that names the labels")
    unknown = [n for n in label_names if n not in labels or labels[n] == 0]
    if unknown:
        known = [n for n, v in labels.items() if v != 0]
        raise DataError(f"{dataset.root}: no foreground label named {unknown}; the labels are {known}")
    return [labels[n] for n in label_names]


def _check_target(out: Path, overwrite: bool) -> None:
    if not out.exists():
        return
    if not overwrite:
        raise OutputExistsError(f"{out} exists; pass --overwrite to replace it")
    if not any((out / marker).exists() for marker in ("dataset.json", "imagesTr", "images")):
        raise DataError(f"{out} exists and holds no dataset; refusing to replace a folder that is not a dataset")


def _inside(path: Path, root: Path) -> Path:
    """``path`` relative to the dataset folder: a label elsewhere would not be in the copy."""
    try:
        return path.resolve().relative_to(root.resolve())
    except ValueError:
        raise DataError(f"{path}: a label outside the dataset folder {root}; copy it in first") from None


def _rewrite_label(original: Path, target: Path, mm: float, values: Sequence[int] | None, into: Sequence[int]) -> int:
    """Write ``original`` with the margin applied to ``target``; the number of voxels that changed."""
    label = read_label(original)
    array = np.asarray(label.array[0])
    moved = apply_margin(array, label.geometry.spacing, mm, values, into)
    write_image(target, moved[None], label.geometry, overwrite=True)
    return int(np.count_nonzero(moved != array))


def _link_or_copy(source: str, target: str) -> None:
    """Hard-link a file (the copy costs no space); copy it across file systems."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)
