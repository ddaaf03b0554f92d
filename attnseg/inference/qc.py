"""Quality control of one predicted case: is the scan like the training scans, is the mask plausible,
how sure was the network, and one verdict (ok / check / fail) a reader acts on.

Every flag names what is wrong in words (``"spacing 3.0 mm outside the training range 0.9-1.1 mm"``),
compares the case with the model's training fingerprint (:mod:`attnseg.data.training_fingerprint`), and
carries a severity: ``check`` (look at this mask before using it) or ``fail`` (do not use it without
correcting it). The verdict is the worst severity; ``ok`` without flags.

The predicted Dice is the expected Dice of the mask if the network's probabilities were right: per
foreground class, the soft Dice 2 sum(p m) / (sum(p) + sum(m)) of the probabilities p against the mask
m (1 when the network is sure of every voxel, lower the more voxels it hesitated about), averaged over
classes, then lowered for the flags (a confident mask of a scan unlike the training scans is still
doubtful): each flag carries a factor (:data:`FAIL_FACTOR` for a ``fail``, :data:`FLAG_FACTOR` for a
``check``, :data:`HANDLED_FACTOR` for a difference the pipeline undoes: another orientation, spacing, field
of view or intensity scale), and flags of one :data:`PENALTY_GROUPS` group (the geometry; the intensities
and texture) count once, with the group's smallest factor, because one scanner shift raises them together.
Measured on the QC benchmark (``benchmarks/qc_flags.py``): the wrong-header, truncated, downsampled and
rescaled cases lost at most 0.01 of the clean cases' true Dice, and an unseen head from another scanner
(true Dice 0.92) raised five flags at once, which per-flag factors had taken to a predicted 0.25. With mirror TTA or
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
    IntensityMeasures,
    flat_strides,
    intensity_distance,
    intensity_measures,
    mask_measures,
    standardized,
    voxel_sample,
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
HANDLED_FACTOR = 0.98
# Flags that one cause raises together count once (see the module docstring); other codes are their own group.
PENALTY_GROUPS = {
    "orientation": "geometry",
    "spacing": "geometry",
    "size": "geometry",
    "intensity": "intensities",
    "noise": "intensities",
    "inhomogeneity": "intensities",
}
# An intensity distance beyond the training's threshold fails only past this multiple of it (and with the
# distribution's shape off too); between one and this multiple it asks for a check. With one or two
# training scans the threshold is a point estimate, and another scanner's head lands just past it.
INTENSITY_FAIL_MULTIPLE = 2.0
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
    dice_factor: float | None = None  # None: from the severity (FLAG_FACTOR or FAIL_FACTOR)

    @property
    def factor(self) -> float:
        """What this flag multiplies the predicted Dice by."""
        if self.dice_factor is not None:
            return self.dice_factor
        return FAIL_FACTOR if self.severity == "fail" else FLAG_FACTOR


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
                HANDLED_FACTOR,  # every scan is reoriented; the flag asks whether the header itself is right
            )
        )
    spacing = [float(s) for s in image.geometry.spacing]
    extent = [n * s for n, s in zip(image.spatial_shape, spacing, strict=True)]
    flags += _range_flags("spacing", "spacing", spacing, fingerprint["spacing"], "mm")
    flags += _range_flags("size", "field of view", extent, fingerprint["extent_mm"], "mm")
    intensities = intensity_measures(image.array)  # one sample and one Otsu threshold for both checks
    flags += _intensity_flags(intensities, fingerprint["intensity"], measures)
    if "texture" in fingerprint:
        flags += _texture_flags(intensities, fingerprint["texture"], measures)
    return flags


TEXTURE_WORDS = {
    "noise": ("noise", "noisier than any training scan (noise {value:.3f}, training up to {threshold:.3f})"),
    "drift": (
        "inhomogeneity",
        "intensities drift across the scan more than in any training scan (a bias field? drift {value:.2f}, "
        "training up to {threshold:.2f})",
    ),
}


def _texture_flags(intensities: IntensityMeasures, texture: Mapping[str, Any], measures: dict[str, Any]) -> list[Flag]:
    """Noise and drift (a bias field) against the thresholds learned from the training cases."""
    values = intensities.texture
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
    # resampling to the model's spacing (and cropping or padding) undoes most of it: HANDLED_FACTOR
    return [Flag(code, "check", f"{what} outside the training range: {'; '.join(outside)}", HANDLED_FACTOR)]


def _intensity_flags(
    intensities: IntensityMeasures, intensity: Mapping[str, Any], measures: dict[str, Any]
) -> list[Flag]:
    """The body's intensity percentiles against the training median, in training intensity scales: far
    off, ``check``; and ``fail`` when the distribution's shape (blind to a shift or scaling, which the
    per-case normalisation undoes) is far off too: another contrast, or no anatomy the model knows."""
    percentiles = intensities.body_percentiles
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
    severity = "fail" if shape_off and distance > INTENSITY_FAIL_MULTIPLE * threshold else "check"
    what = "another contrast, or no anatomy the model knows?" if shape_off else "another intensity scaling?"
    return [
        Flag(
            "intensity",
            severity,
            f"intensities unlike the training scans (distance {distance:.2f}, training cases up to {threshold:.2f}): "
            + what,
            None if shape_off else HANDLED_FACTOR,  # a scaling: the per-case normalisation undoes it
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
    found = mask_measures(mask, spacing, class_values, class_names)
    measures["volume_ml"], measures["components"] = found.volume_ml, found.components
    flags = []
    for value, name in zip(class_values, class_names, strict=True):
        if value == 0:
            continue
        seen = (classes or {}).get(name) or {}
        share = found.border_share[name]
        if share > max(BORDER_SHARE, BORDER_MARGIN * (seen.get("max_border_share") or 0.0)):
            flags.append(
                Flag(
                    "border",
                    "check",
                    f"{name} is cut by the edge of the field of view ({share:.0%} of it lies on the edge)",
                )
            )
        if seen.get("volume_ml") is not None:
            flags += _class_flags(name, found.volume_ml[name], found.components[name], seen)
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
        denominator = float(p.sum(dtype=np.float64)) + np.count_nonzero(m)
        overlap = float(p.sum(where=m, dtype=np.float64))  # no copy of the mask's voxels
        result[k] = 1.0 if denominator == 0 else 2.0 * overlap / denominator
    return result


def boundary_entropy(probabilities: np.ndarray, classes: np.ndarray) -> float:
    """Mean normalised entropy (0: sure, 1: uniform) of the probabilities on the voxels where the mask
    changes class (a neighbour along some axis has another class); 0 when the mask is one class.

    On the boundary voxels among the intensity measures' sample (:func:`voxel_sample`: every voxel of a
    scan of at most SAMPLE_SIZE): a mean of values in [0, 1] over n sampled voxels is within
    sqrt(ln(2 / delta) / 2n) of the whole boundary's but with probability delta (Hoeffding), about 0.01
    for the thousands of boundary voxels a sample of a segmented scan holds. A measure to read in
    ``qc.json``, not one a flag depends on.
    """
    shape = classes.shape
    index, coordinates = voxel_sample(tuple(int(n) for n in shape))
    flat = np.ravel(classes)
    here = flat[index]
    edge = np.zeros(len(index), dtype=bool)
    for axis, stride in enumerate(flat_strides(shape)):
        for step, inside in ((-stride, coordinates[axis] > 0), (stride, coordinates[axis] < shape[axis] - 1)):
            edge |= flat[np.where(inside, index + step, index)] != here  # outside the scan: itself, no change
    if not edge.any():
        return 0.0
    p = probabilities.reshape(probabilities.shape[0], -1)[:, index[edge]].astype(np.float64)
    p = np.clip(p, 1e-12, 1.0)
    entropy = -(p * np.log(p)).sum(0) / np.log(probabilities.shape[0])
    return float(entropy.mean())


class Votes:
    """Per voxel and foreground class, how many of several predictions of one case (mirrored copies,
    ensemble members) chose the class: all that their mutual Dice needs (:meth:`agreement`), one byte a
    voxel and class however many predictions there are, so that none of them is kept."""

    def __init__(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.predictions = 0
        self.counts: np.ndarray | None = None  # (K - 1, *S): votes for classes 1..K-1

    def add(self, classes: np.ndarray) -> None:
        """One prediction's class-index map (*S)."""
        if self.counts is None:
            self.counts = np.zeros((self.num_classes - 1, *classes.shape), dtype=np.uint8)
        elif self.predictions == np.iinfo(self.counts.dtype).max:
            self.counts = self.counts.astype(np.uint32)
        for k in range(1, self.num_classes):
            self.counts[k - 1] += classes == k
        self.predictions += 1

    def agreement(self, voxel_volume: float = 1.0) -> Agreement:
        """The sums behind the mutual Dice (volumes in ``voxel_volume`` units, for grids that differ)."""
        agreeing, total = np.zeros(self.num_classes - 1), np.zeros(self.num_classes - 1)
        if self.counts is not None and self.predictions > 1:
            for index, votes in enumerate(self.counts):
                n = votes.astype(np.int64)
                agreeing[index] = float((n * (n - 1)).sum()) * voxel_volume
                total[index] = float(n.sum()) * (self.predictions - 1) * voxel_volume
        return Agreement(agreeing, total, self.predictions * (self.predictions - 1) // 2)


@dataclass(frozen=True)
class Agreement:
    """The mutual Dice of several predictions of a case, as sums over every pair of them and over voxels,
    per foreground class: ``agreeing``, the volume both chose the class (twice the overlap: sum of
    n (n - 1) over voxels, n the predictions that chose it there); ``total``, both volumes (sum of
    (predictions - 1) n). Sums, so that predictions on different grids (an ensemble whose members
    preprocess differently) add up: pairs within each grid."""

    agreeing: np.ndarray
    total: np.ndarray
    pairs: int

    def __add__(self, other: Agreement) -> Agreement:
        return Agreement(self.agreeing + other.agreeing, self.total + other.total, self.pairs + other.pairs)

    def mutual_dice(self) -> float:
        """The pooled Dice over pairs (2 sum |A & B| / sum (|A| + |B|)) per class, averaged over classes
        (1 for a class no prediction chose): 1 when all predictions agree on every voxel; NaN without pairs."""
        if self.pairs == 0:
            return float("nan")
        safe = np.where(self.total > 0, self.total, 1.0)
        return float(np.mean(np.where(self.total > 0, self.agreeing / safe, 1.0)))


def mutual_dice(member_masks: Sequence[np.ndarray], num_classes: int) -> float:
    """The mutual Dice (:class:`Agreement`) of class-index masks on one grid."""
    votes = Votes(num_classes)
    for mask in member_masks:
        votes.add(mask)
    return votes.agreement().mutual_dice()


def predicted_dice(
    soft: Mapping[int, float], flags: Sequence[Flag], agreement: float | None = None
) -> tuple[float, tuple[float, float]]:
    """(estimate, interval): the mean soft Dice, bounded by the members' agreement, lowered once per
    group of flags (:data:`PENALTY_GROUPS`) by the group's smallest factor."""
    estimate = float(np.mean(list(soft.values()))) if soft else 1.0
    if agreement is not None and np.isfinite(agreement):
        estimate = min(estimate, agreement)
    factors: dict[str, float] = {}
    for flag in flags:
        group = PENALTY_GROUPS.get(flag.code, flag.code)
        factors[group] = min(factors.get(group, 1.0), flag.factor)
    for factor in factors.values():
        estimate *= factor
    half = max(MIN_HALF_WIDTH, (1.0 - estimate) / 2.0)
    return estimate, (max(0.0, estimate - half), min(1.0, estimate + half))


def class_indices(mask: np.ndarray, class_values: Sequence[int]) -> np.ndarray:
    """Label values -> class indices; the mask itself when the values are 0..K-1 already (no copy)."""
    if list(class_values) == list(range(len(class_values))):
        return mask
    return np.searchsorted(np.asarray(class_values), mask)


def assess_case(
    case_id: str,
    image: Image,
    mask: np.ndarray,
    probabilities: np.ndarray,
    class_values: Sequence[int],
    class_names: Sequence[str],
    fingerprint: Mapping[str, Any] | None,
    agreement: Agreement | None = None,
) -> CaseQC:
    """Every check on one case: ``mask`` holds label values (no channel axis), ``probabilities`` (K, *S)
    on the image's grid; ``agreement`` how much the TTA copies or ensemble members agreed, if any."""
    measures: dict[str, Any] = {}
    flags = header_flags(image) if fingerprint is None else input_flags(image, fingerprint, measures)
    spacing = [float(s) for s in image.geometry.spacing]
    classes_seen = None if fingerprint is None else fingerprint.get("classes")
    flags += mask_flags(mask, spacing, class_values, class_names, classes_seen, measures)
    index = class_indices(mask, class_values)
    soft = soft_dice(probabilities, index)
    measures["soft_dice"] = {class_names[k]: v for k, v in soft.items()}
    measures["boundary_entropy"] = boundary_entropy(probabilities, index)
    mutual = None
    if agreement is not None and agreement.pairs > 0:
        mutual = agreement.mutual_dice()
        measures["mutual_dice"] = mutual
    estimate, interval = predicted_dice(soft, flags, mutual)
    if estimate < LOW_DICE:
        flags.append(Flag("low_confidence", "check", f"the network was unsure: predicted Dice {estimate:.2f}"))
    return CaseQC(case_id, flags, estimate, interval, measures)
