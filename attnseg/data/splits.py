"""Case-level k-fold splits in nnU-Net's ``splits_final.json`` format: ``[{"train": [...], "val": [...]}, ...]``.

Splitting by case (never by slice or patch) keeps every slice of a case on one side, so validation
slices are never neighbours of training slices from the same scan.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from attnseg.errors import DataError
from attnseg.fileio import read_json, write_json

Split = dict[str, list[str]]
# nnU-Net's default seed for its 5-fold split.
DEFAULT_SEED = 12345


def make_splits(case_ids: Sequence[str], folds: int = 5, *, seed: int = DEFAULT_SEED) -> list[Split]:
    """Shuffle the (sorted) case ids with ``seed`` and deal them into ``folds`` validation groups.

    Deterministic given the ids and the seed; every case is in exactly one validation fold.
    """
    ids = sorted(set(case_ids))
    if len(ids) != len(case_ids):
        raise DataError("case ids must be unique")
    if folds < 2:
        raise DataError(f"need at least 2 folds, got {folds}")
    if len(ids) < folds:
        raise DataError(f"{len(ids)} case(s) cannot make {folds} folds; use fewer folds or more cases")
    order = np.random.default_rng(seed).permutation(len(ids))
    groups = np.array_split(order, folds)
    splits = []
    for group in groups:
        val = sorted(ids[i] for i in group)
        held = set(val)
        splits.append({"train": [c for c in ids if c not in held], "val": val})
    return splits


def save_splits(path: str | Path, splits: Sequence[Split], *, overwrite: bool = False) -> Path:
    """Write ``splits`` as JSON (atomic; refuses to replace unless ``overwrite``)."""
    _validate(splits, Path(path))
    return write_json(path, [dict(s) for s in splits], overwrite=overwrite)


def load_splits(path: str | Path, case_ids: Sequence[str] | None = None) -> list[Split]:
    """Read and validate a splits file; with ``case_ids``, every id it names must exist."""
    path = Path(path)
    splits = read_json(path, expect=list)
    _validate(splits, path)
    if case_ids is not None:
        known = set(case_ids)
        for index, split in enumerate(splits):
            unknown = sorted((set(split["train"]) | set(split["val"])) - known)
            if unknown:
                raise DataError(f"{path}: fold {index} names unknown cases {unknown[:5]}")
    return splits


def _validate(splits: object, path: Path) -> None:
    if not isinstance(splits, list) or not splits:
        raise DataError(f"{path}: expected a non-empty list of {{'train': [...], 'val': [...]}}")
    for index, split in enumerate(splits):
        if (
            not isinstance(split, dict)
            or not isinstance(split.get("train"), list)
            or not isinstance(split.get("val"), list)
        ):
            raise DataError(f"{path}: fold {index} must be {{'train': [...], 'val': [...]}}")
        overlap = sorted(set(split["train"]) & set(split["val"]))
        if overlap:
            raise DataError(f"{path}: fold {index} has cases in both train and val: {overlap[:5]}")
