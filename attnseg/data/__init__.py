"""Medical image data: geometry-aware I/O, dataset layouts and checks, plans, preprocessing, sampling.

The flow (see docs/DESIGN.md): ``read_image`` -> ``load_dataset`` / ``check_dataset`` -> ``plan_dataset``
-> ``preprocess_case`` (and ``restore_prediction`` to undo it) -> ``SliceDataset`` / ``PatchDataset``
-> ``build_augmentation``.
"""

from __future__ import annotations

import importlib
from typing import Any

# name -> module; imported on first use so that `attnseg dataset check` does not pay for MONAI and torch
_EXPORTS = {
    "AugmentConfig": "augment",
    "Augmentation": "augment",
    "build_augmentation": "augment",
    "BUILTIN": "builtin",
    "prepare_builtin": "builtin",
    "CheckReport": "check",
    "Fingerprint": "check",
    "check_dataset": "check",
    "fingerprint_dataset": "check",
    "Case": "dataset",
    "Dataset": "dataset",
    "Problem": "dataset",
    "load_dataset": "dataset",
    "write_dicom_series": "dicom",
    "Geometry": "geometry",
    "Image": "image",
    "read_case": "io",
    "read_geometry": "io",
    "read_grid": "io",
    "read_image": "io",
    "read_label": "io",
    "write_image": "io",
    "ChannelNormalization": "plan",
    "Plan": "plan",
    "plan_dataset": "plan",
    "CaseProperties": "preprocess",
    "PreprocessedCase": "preprocess",
    "load_preprocessed": "preprocess",
    "preprocess_case": "preprocess",
    "preprocess_cases": "preprocess",
    "preprocess_dataset": "preprocess",
    "restore_channel": "preprocess",
    "restore_prediction": "preprocess",
    "restore_probabilities": "preprocess",
    "PatchDataset": "sampling",
    "SliceDataset": "sampling",
    "split_cases": "sampling",
    "load_splits": "splits",
    "make_splits": "splits",
    "save_splits": "splits",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'attnseg.data' has no attribute {name!r}")
    return getattr(importlib.import_module(f"attnseg.data.{_EXPORTS[name]}"), name)


def __dir__() -> list[str]:
    return __all__
