"""Temperature scaling at the end of training: one temperature fitted on the validation cases, kept in
``MODEL/calibration.json`` with the ECE before and after, and applied by the predictor to every
probability it writes (see :mod:`attnseg.metrics.calibration` for why and how)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from attnseg.data import Plan, PreprocessedCase
from attnseg.fileio import write_json
from attnseg.inference.volume import predict_preprocessed
from attnseg.metrics.calibration import (
    LOG_T_RANGE,
    expected_calibration_error,
    fit_temperature,
    pooled_sample,
    scaled,
)
from attnseg.model_dir import ModelDir

RANGE_LIMIT_TOLERANCE = 0.01  # of the log-temperature range: how close to an end counts as at it


def calibrate(
    model: nn.Module, plan: Plan, cases: Sequence[PreprocessedCase], batch_size: int, device: torch.device
) -> dict[str, Any] | None:
    """The temperature and the ECE before and after it, on ``cases`` (labelled, preprocessed); None
    without cases."""
    cases = [case for case in cases if case.label is not None]
    if not cases:
        return None
    model.eval()
    probabilities, labels = [], []
    for case in cases:
        predicted = predict_preprocessed(model, case.image, plan, batch_size=batch_size, device=device)
        probabilities.append(predicted.numpy())
        labels.append(np.asarray(case.label))
    p, y = pooled_sample(probabilities, labels)
    return temperature_record(p, y, [case.id for case in cases])


def temperature_record(p: np.ndarray, y: np.ndarray, case_ids: Sequence[str]) -> dict[str, Any]:
    """``calibration.json``'s content for the pooled probabilities ``p`` ``(N, K)`` and labels ``y`` of the
    validation cases: the fitted temperature, whether it is applied, and the ECE before and after."""
    fitted = fit_temperature(p, y)
    before, after = expected_calibration_error(p, y), expected_calibration_error(scaled(p, fitted), y)
    # The fit minimises the likelihood, not the ECE; on few validation voxels the two can disagree. A
    # temperature that makes the calibration it is kept for worse, on the very cases it was fitted on, is
    # not applied (the quality control's predicted Dice reads the calibrated probabilities).
    kept = after <= before
    return {
        "temperature": fitted if kept else 1.0,
        "fitted_temperature": fitted,
        "kept": kept,
        "at_range_limit": range_limit(fitted),
        "ece_before": before,
        "ece_after": after if kept else before,
        "ece_fitted": after,
        "fitted_on": list(case_ids),
        "voxels": len(y),
    }


def range_limit(temperature: float) -> str | None:
    """``"high"`` or ``"low"`` when the fit ended at that end of the search range, else None. At the top the
    likelihood was still falling as the probabilities flattened: the model is barely trained (or its
    validation cases unlike its training ones), not merely overconfident, and its predicted Dice is low."""
    log_t = float(np.log(temperature))
    low, high = LOG_T_RANGE
    tolerance = RANGE_LIMIT_TOLERANCE * (high - low)
    if log_t >= high - tolerance:
        return "high"
    if log_t <= low + tolerance:
        return "low"
    return None


def calibration_line(result: dict[str, Any]) -> str:
    """What training prints of its calibration: the temperature, the ECE before and after, and a fit at the
    range's end named for what it means."""
    cases = f"{len(result['fitted_on'])} validation case(s)"
    if not result.get("kept", True):
        return (
            f"calibration: temperature {result['fitted_temperature']:.3g} fitted on {cases} would raise the ECE "
            f"{result['ece_before']:.3f} -> {result['ece_fitted']:.3f}; not applied (temperature 1)"
        )
    ece = f"ECE {result['ece_before']:.3f} -> {result['ece_after']:.3f}"
    line = f"calibration: temperature {result['temperature']:.3g} on {cases}; {ece}"
    if result.get("at_range_limit") == "high":
        line += (
            " (at the top of its range: the model is barely trained, or its validation cases unlike its training ones)"
        )
    elif result.get("at_range_limit") == "low":
        line += " (at the bottom of its range: the probabilities are sharpened as far as allowed)"
    return line


def keep_calibration(
    model_dir: ModelDir,
    model: nn.Module,
    plan: Plan,
    cases: Sequence[PreprocessedCase],
    batch_size: int,
    device: torch.device,
) -> dict[str, Any] | None:
    """Fit with the model's selected weights (best validation, as predict uses) and write
    ``calibration.json``; None (nothing written) without validation cases."""
    if not cases:
        return None
    model_dir.load_weights(model)
    result = calibrate(model.to(device), plan, cases, batch_size, device)
    if result is not None:
        write_json(model_dir.file(ModelDir.CALIBRATION), result, overwrite=True)
    return result
