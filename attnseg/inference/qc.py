"""Quality control of one predicted case: is the scan like the training scans, is the mask plausible,
how sure was the network, and one verdict (ok / check / fail) a reader acts on.

Every flag names what is wrong in words (``"spacing 3.0 mm outside the training range 0.9-1.1 mm"``),
compares the case with the model's training fingerprint (:mod:`attnseg.data.training_fingerprint`), and
carries a severity: ``check`` (look at this mask before using it) or ``fail`` (do not use it without
correcting it). The verdict is the worst severity; ``ok`` without flags.

The predicted Dice is the expected Dice of the mask if the network's probabilities were right: per
foreground class, the soft Dice 2 sum(p m) / (sum(p) + sum(m)) of the probabilities p against the mask
m (1 when the network is sure of every voxel, lower the more voxels it hesitated about), averaged over
classes, then lowered for every flag (a confident mask of a scan unlike the training scans is still
doubtful): times :data:`FLAG_FACTOR` per ``check``, :data:`FAIL_FACTOR` per ``fail``. With mirror TTA or
an ensemble, the mutual Dice of the members' masks bounds it too. The interval is the estimate plus or
minus half its distance from 1 (at least :data:`MIN_HALF_WIDTH`): wide where the network hesitated.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from attnseg.data import Image
from attnseg.data.training_fingerprint import (
    body_percentiles,
    border_share,
    intensity_distance,
    mask_measures,
    standardized,
    texture_measures,
)

# How far outside the training range a spacing or extent may be before it is flagged (relative).
GEOMETRY_MARGIN = 0.25
# A class volume outside [min / VOLUME_MARGIN, max * VOLUME_MARGIN] of training is flagged.
VOLUME_MARGIN = 1.5
# A direction matrix further than this from orthonormal cannot be a scanner's.
ORTHONORMAL_TOLERANCE = 1e-3
# The share of a class's voxels on the image border above which the mask is "cut by the field of view",
# unless training masks touched it as much (then BORDER_MARGIN x the training's largest share).
BORDER_SHARE = 0.01
BORDER_MARGIN = 2.0
FLAG_FACTOR = 0.85
FAIL_FACTOR = 0.5
MIN_HALF_WIDTH = 0.02
# A predicted Dice under this is flagged "low confidence" (check).
LOW_DICE = 0.7
SEVERITY_RANK = {"ok": 0, "check": 1, "fail": 2}


@dataclass(frozen=True)
class Flag:
    """One finding: a short code (stable, for scripts), ``check`` or ``fail``, and the sentence."""

    code: str
    severity: str
    message: str


@dataclass
class CaseQC:
    """The quality control of one case."""

    case_id: str
    flags: list[Flag] = field(default_factory=list)
    predicted_dice: float = float("nan")
    interval: tuple[float, float] = (float("nan"), float("nan"))
    measures: dict[str, Any] = field(default_factory=dict)

    @property
    def verdict(self) -> str:
        """The worst severity among the flags; ``ok`` without any."""
        return max((f.severity for f in self.flags), key=SEVERITY_RANK.__getitem__, default="ok")

    def to_dict(self) -> dict[str, Any]:
        return {
            "case": self.case_id,
            "verdict": self.verdict,
            "predicted_dice": self.predicted_dice,
            "interval": list(self.interval),
            "flags": [{"code": f.code, "severity": f.severity, "message": f.message} for f in self.flags],
            "measures": self.measures,
        }


def header_flags(image: Image) -> list[Flag]:
    """A header that cannot be right: a direction matrix that is not orthonormal (zero and negative
    spacings cannot be read at all: the reader refuses them)."""
    direction = np.asarray(image.geometry.direction, dtype=float)
    error = float(np.abs(direction.T @ direction - np.eye(len(direction))).max())
    if error > ORTHONORMAL_TOLERANCE:
        return [Flag("impossible_header", "fail", f"the direction matrix is not orthonormal (off by {error:.3g})")]
    return []


def input_flags(image: Image, fingerprint: Mapping[str, Any], measures: dict[str, Any]) -> list[Flag]:
    """The scan against the training fingerprint: channels, orientation, spacing, extent, intensities."""
    flags = header_flags(image)
    if image.channels != fingerprint["channels"]:
        flags.append(
            Flag("channels", "fail", f"{image.channels} channel(s); the model was trained on {fingerprint['channels']}")
        )
        return flags
    orientations = fingerprint.get("orientations") or []
    if image.spatial_dims == 3 and orientations and image.geometry.orientation() not in orientations:
        flags.append(
            Flag(
                "orientation",
                "check",
                f"orientation {image.geometry.orientation()}; training scans were {', '.join(orientations)}",
            )
        )
    spacing = [float(s) for s in image.geometry.spacing]
    extent = [n * s for n, s in zip(image.spatial_shape, spacing, strict=True)]
    flags += _range_flags("spacing", "spacing", spacing, fingerprint["spacing"], "mm")
    flags += _range_flags("size", "field of view", extent, fingerprint["extent_mm"], "mm")
    flags += _intensity_flags(image, fingerprint["intensity"], measures)
    if "texture" in fingerprint:
        flags += _texture_flags(image, fingerprint["texture"], measures)
    return flags


TEXTURE_WORDS = {
    "noise": ("noise", "noisier than any training scan (noise {value:.3f}, training up to {threshold:.3f})"),
    "drift": (
        "inhomogeneity",
        "intensities drift across the scan more than in any training scan (a bias field? drift {value:.2f}, "
        "training up to {threshold:.2f})",
    ),
}


def _texture_flags(image: Image, texture: Mapping[str, Any], measures: dict[str, Any]) -> list[Flag]:
    """Noise and drift (a bias field) against the thresholds learned from the training cases."""
    values = texture_measures(image.array)
    flags = []
    for key, (code, words) in TEXTURE_WORDS.items():
        value, threshold = values[key], float(texture[key]["threshold"])
        measures[key] = value
        if value > threshold:
            flags.append(Flag(code, "check", words.format(value=value, threshold=threshold)))
    return flags


def _range_flags(
    code: str, what: str, values: Sequence[float], ranges: Mapping[str, Sequence[float]], unit: str
) -> list[Flag]:
    """One flag naming the axes whose value lies outside the training range widened by GEOMETRY_MARGIN."""
    outside = []
    for axis, (value, low, high) in enumerate(zip(values, ranges["min"], ranges["max"], strict=True)):
        if value < low * (1 - GEOMETRY_MARGIN) or value > high * (1 + GEOMETRY_MARGIN):
            outside.append(f"axis {axis}: {value:.3g} {unit} (training {low:.3g}-{high:.3g})")
    if not outside:
        return []
    return [Flag(code, "check", f"{what} outside the training range: {'; '.join(outside)}")]


def _intensity_flags(image: Image, intensity: Mapping[str, Any], measures: dict[str, Any]) -> list[Flag]:
    """The body's intensity percentiles against the training median, in training intensity scales: far
    off, ``check``; and ``fail`` when the distribution's shape (blind to a shift or scaling, which the
    per-case normalisation undoes) is far off too: another contrast, or no anatomy the model knows."""
    percentiles = body_percentiles(image.array)
    distance = intensity_distance(percentiles, intensity["reference"], intensity["scale"])
    threshold = float(intensity["threshold"])
    measures["intensity_distance"], measures["intensity_threshold"] = distance, threshold
    shape_distance = None
    if "shape_reference" in intensity:
        unit = [1.0] * len(percentiles)
        shape_distance = intensity_distance(standardized(percentiles), intensity["shape_reference"], unit)
        measures["intensity_shape_distance"] = shape_distance
    if distance <= threshold:
        return []
    shape_off = shape_distance is None or shape_distance > float(intensity["shape_threshold"])
    severity = "fail" if shape_off else "check"
    what = "another contrast, or no anatomy the model knows?" if shape_off else "another intensity scaling?"
    return [
        Flag(
            "intensity",
            severity,
            f"intensities unlike the training scans (distance {distance:.2f}, training cases up to {threshold:.2f}): "
            + what,
        )
    ]


def mask_flags(
    mask: np.ndarray,
    spacing: Sequence[float],
    class_values: Sequence[int],
    class_names: Sequence[str],
    classes: Mapping[str, Any] | None,
    measures: dict[str, Any],
) -> list[Flag]:
    """The mask (label values, no channel axis) against training: empty, cut by the border, too many
    pieces, too small or too large. Without a fingerprint only the border is checked."""
    volumes, components = mask_measures(mask, spacing, class_values, class_names)
    measures["volume_ml"], measures["components"] = volumes, components
    flags = []
    for value, name in zip(class_values, class_names, strict=True):
        if value == 0:
            continue
        seen = (classes or {}).get(name) or {}
        share = border_share(mask == value)
        if share > max(BORDER_SHARE, BORDER_MARGIN * (seen.get("max_border_share") or 0.0)):
            flags.append(
                Flag(
                    "border",
                    "check",
                    f"{name} is cut by the edge of the field of view ({share:.0%} of it lies on the edge)",
                )
            )
        if seen.get("volume_ml") is not None:
            flags += _class_flags(name, volumes[name], components[name], seen)
    return flags


def _class_flags(name: str, volume: float, components: int, seen: Mapping[str, Any]) -> list[Flag]:
    """One class's volume and pieces against the training cases'."""
    if volume == 0:
        if seen["ever_empty"]:
            return []
        return [Flag("empty", "fail", f"no {name} found; every training scan had some")]
    flags = []
    if components > seen["max_components"]:
        flags.append(
            Flag(
                "components",
                "check",
                f"{name} in {components} pieces; training masks had at most {seen['max_components']}",
            )
        )
    low, high = seen["volume_ml"]["min"] / VOLUME_MARGIN, seen["volume_ml"]["max"] * VOLUME_MARGIN
    if not low <= volume <= high:
        flags.append(
            Flag(
                "volume",
                "check",
                f"{name} volume {volume:.3g} ml outside the training range {seen['volume_ml']['min']:.3g}-"
                f"{seen['volume_ml']['max']:.3g} ml",
            )
        )
    return flags


def soft_dice(probabilities: np.ndarray, classes: np.ndarray) -> dict[int, float]:
    """Per foreground class index present in the probabilities, 2 sum(p m) / (sum(p) + sum(m)): the
    expected overlap of the mask ``classes`` (class indices) with a truth drawn from the probabilities."""
    result = {}
    for k in range(1, probabilities.shape[0]):
        p = probabilities[k]
        m = classes == k
        denominator = float(p.sum()) + float(m.sum())
        result[k] = 1.0 if denominator == 0 else 2.0 * float(p[m].sum()) / denominator
    return result


def boundary_entropy(probabilities: np.ndarray, classes: np.ndarray) -> float:
    """Mean normalised entropy (0: sure, 1: uniform) of the probabilities on the voxels where the mask
    changes class (its boundaries); 0 when the mask is one class."""
    edges = np.zeros(classes.shape, dtype=bool)
    for axis in range(classes.ndim):
        changed = np.diff(classes, axis=axis) != 0
        pad_before = [(0, 0)] * classes.ndim
        pad_after = [(0, 0)] * classes.ndim
        pad_before[axis], pad_after[axis] = (1, 0), (0, 1)
        edges |= np.pad(changed, pad_before) | np.pad(changed, pad_after)
    if not edges.any():
        return 0.0
    p = np.clip(probabilities[:, edges], 1e-12, 1.0)
    entropy = -(p * np.log(p)).sum(0) / np.log(probabilities.shape[0])
    return float(entropy.mean())


def mutual_dice(member_masks: Sequence[np.ndarray], num_classes: int) -> float:
    """The mean Dice, over foreground classes and pairs of members, between members' masks (class
    indices): 1 when mirror TTA or the ensemble's models agree on every voxel."""
    scores = []
    for i in range(len(member_masks)):
        for j in range(i + 1, len(member_masks)):
            for k in range(1, num_classes):
                a, b = member_masks[i] == k, member_masks[j] == k
                total = int(a.sum()) + int(b.sum())
                scores.append(1.0 if total == 0 else 2.0 * int((a & b).sum()) / total)
    return float(np.mean(scores)) if scores else float("nan")


def predicted_dice(
    soft: Mapping[int, float], flags: Sequence[Flag], agreement: float | None = None
) -> tuple[float, tuple[float, float]]:
    """(estimate, interval): the mean soft Dice, bounded by the members' agreement, lowered per flag."""
    estimate = float(np.mean(list(soft.values()))) if soft else 1.0
    if agreement is not None and np.isfinite(agreement):
        estimate = min(estimate, agreement)
    for flag in flags:
        estimate *= FAIL_FACTOR if flag.severity == "fail" else FLAG_FACTOR
    half = max(MIN_HALF_WIDTH, (1.0 - estimate) / 2.0)
    return estimate, (max(0.0, estimate - half), min(1.0, estimate + half))


def assess_case(
    case_id: str,
    image: Image,
    mask: np.ndarray,
    probabilities: np.ndarray,
    class_values: Sequence[int],
    class_names: Sequence[str],
    fingerprint: Mapping[str, Any] | None,
    member_masks: Sequence[np.ndarray] | None = None,
) -> CaseQC:
    """Every check on one case: ``mask`` holds label values (no channel axis), ``probabilities`` (K, *S)
    on the image's grid; ``member_masks`` the class-index masks of TTA or ensemble members, if any."""
    measures: dict[str, Any] = {}
    flags = header_flags(image) if fingerprint is None else input_flags(image, fingerprint, measures)
    spacing = [float(s) for s in image.geometry.spacing]
    classes_seen = None if fingerprint is None else fingerprint.get("classes")
    flags += mask_flags(mask, spacing, class_values, class_names, classes_seen, measures)
    index = np.searchsorted(np.asarray(class_values), mask)  # label values -> class indices
    soft = soft_dice(probabilities, index)
    measures["soft_dice"] = {class_names[k]: v for k, v in soft.items()}
    measures["boundary_entropy"] = boundary_entropy(probabilities, index)
    agreement = None
    if member_masks is not None and len(member_masks) > 1:
        agreement = mutual_dice(member_masks, len(class_values))
        measures["mutual_dice"] = agreement
    estimate, interval = predicted_dice(soft, flags, agreement)
    if estimate < LOW_DICE:
        flags.append(Flag("low_confidence", "check", f"the network was unsure: predicted Dice {estimate:.2f}"))
    return CaseQC(case_id, flags, estimate, interval, measures)
