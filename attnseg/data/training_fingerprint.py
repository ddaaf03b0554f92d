"""What a model saw in training, kept with it (``MODEL/fingerprint.json``), so that prediction can tell a
scan unlike any training case from the ones the model knows.

Per training case: spacing, size (voxels and mm), orientation, channel count, intensity percentiles per
channel inside the body (voxels above the channel's Otsu threshold) and inside the labelled foreground,
and per class its volume (ml) and number of connected components. From the cases, the ranges that
quality control compares a new scan and its mask with (:mod:`attnseg.inference.qc`), and the
intensity distance's threshold, learned from the training cases themselves: the largest distance of a
training case from the others' median, with a margin (a scan further away than every training case
was is unlike them).

The plan's fingerprint (:mod:`attnseg.data.check`) pools intensities to choose the normalisation; this
one keeps each case's numbers, because the ranges and the threshold need the spread between cases.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from attnseg.data.arrays import crop, nonzero_bbox
from attnseg.data.dataset import Dataset
from attnseg.data.image import Image
from attnseg.data.preprocess import otsu_threshold
from attnseg.fileio import read_json, write_json

PERCENTILES = (1.0, 5.0, 25.0, 50.0, 75.0, 95.0, 99.0)
FINGERPRINT_VERSION = 1
# The intensity distance's threshold: this many times the largest distance of a training case.
INTENSITY_MARGIN = 1.5
# A floor for the threshold: percentiles within 10% of the intensity scale are the same distribution.
MIN_INTENSITY_THRESHOLD = 0.1
# A floor for the threshold of the distribution's shape (standardised percentiles).
MIN_SHAPE_THRESHOLD = 0.05
# Floors for the noise and drift thresholds (in body intensity ranges).
MIN_TEXTURE_THRESHOLD = {"noise": 0.02, "drift": 0.1}
# Voxels per channel that the intensity measures use at most (a random sample; exact on smaller scans).
SAMPLE_SIZE = 1 << 14
SAMPLE_SEED = 0


@dataclass
class CaseFingerprint:
    """One case's numbers; intensities per channel, volumes and components per class name."""

    case_id: str
    spacing: list[float]
    shape: list[int]
    extent_mm: list[float]
    orientation: str | None
    channels: int
    body_percentiles: list[list[float]]
    foreground_percentiles: list[list[float] | None]
    class_volumes_ml: dict[str, float]
    class_components: dict[str, int]
    class_border_share: dict[str, float]
    texture: dict[str, float]


@lru_cache(maxsize=8)
def voxel_sample(shape: tuple[int, ...]) -> tuple[np.ndarray, tuple[np.ndarray, ...]]:
    """(flat indices, their coordinates per axis) of the voxels the intensity measures use in a scan of
    ``shape``: all of them up to :data:`SAMPLE_SIZE`, else :data:`SAMPLE_SIZE` drawn uniformly (with
    replacement, from a fixed seed: the same scan gives the same numbers), sorted (memory order). Random,
    not strided: a stride can fall in step with the rows of the image. Kept for the next scans of the
    same shape (read-only)."""
    size = int(np.prod(shape))
    if size <= SAMPLE_SIZE:
        index = np.arange(size)
    else:
        index = np.sort(np.random.default_rng(SAMPLE_SEED).integers(0, size, SAMPLE_SIZE))
    coordinates = np.unravel_index(index, shape)
    for array in (index, *coordinates):
        array.setflags(write=False)
    return index, coordinates


def flat_strides(shape: Sequence[int]) -> list[int]:
    """How far apart, in a C-ordered flat array of ``shape``, neighbours along each axis are."""
    return [int(np.prod(shape[axis + 1 :])) for axis in range(len(shape))]


@dataclass(frozen=True)
class IntensityMeasures:
    """The intensity numbers of one scan: :data:`PERCENTILES` of the body per channel, and ``noise`` and
    ``drift`` (the largest over channels); see :func:`intensity_measures`."""

    body_percentiles: list[list[float]]
    noise: float
    drift: float

    @property
    def texture(self) -> dict[str, float]:
        return {"noise": self.noise, "drift": self.drift}


def intensity_measures(array: np.ndarray) -> IntensityMeasures:
    """Per channel, from one sample of voxels (:func:`sample_indices`) and one Otsu threshold on it:

    - the :data:`PERCENTILES` of the body (the voxels above the channel's Otsu threshold: not the air or
      the padding around it, whose share changes with the field of view);
    - ``noise``, the median absolute difference between a body voxel and its next neighbour along each
      axis (also in the body), and ``drift``, the largest difference between the body's median intensity
      in the first and the last third of an axis (of 16 or more voxels): a bias field shows there long
      before the percentiles of the whole body move. Both in units of the channel's dynamic range (its
      1-99 percentile range: stable whichever part of the scan Otsu calls the body), the largest over
      channels.

    Why a sample: these are order statistics (quantiles, medians), and those of n voxels drawn uniformly
    are close to the whole's whatever its size (Dvoretzky-Kiefer-Wolfowitz: the sample's distribution
    function is within eps of the whole's everywhere with probability at least 1 - 2 exp(-2 n eps^2)).
    The threshold and the 1-99 percentile range come from :data:`SAMPLE_SIZE` voxels of the scan
    (:func:`voxel_sample`), the rest from as many voxels of the body (:func:`body_sample`): each body
    percentile's rank, and the noise's median's, move by less than 2.1 percentage points (failing with
    probability under 1e-6), however small a part of the scan the body is; exact on a body of at most
    :data:`SAMPLE_SIZE` voxels. Apart from one comparison of every voxel with the threshold, the cost
    no longer grows with the scan, which keeps quality control a small part of prediction.
    """
    shape = tuple(int(n) for n in array.shape[1:])
    index, _ = voxel_sample(shape)
    strides = flat_strides(shape)
    percentiles, noise, drift = [], 0.0, 0.0
    for channel in array:
        flat = np.ravel(channel)
        values = flat[index].astype(np.float64)
        finite = values[np.isfinite(values)]
        if finite.size == 0:
            percentiles.append([float("nan")] * len(PERCENTILES))
            continue
        threshold = otsu_threshold(finite)
        body = body_sample(flat, threshold)
        inside = flat[body].astype(np.float64)
        percentiles.append([float(v) for v in np.percentile(inside if inside.size else finite, PERCENTILES)])
        if body.size < 16:
            continue
        low, high = np.percentile(finite, [1.0, 99.0])
        scale = float(high - low) or 1.0
        coordinates = np.unravel_index(body, shape)
        steps = []
        for axis, stride in enumerate(strides):
            has_next = coordinates[axis] < shape[axis] - 1
            following = flat[body[has_next] + stride].astype(np.float64)
            keep = following > threshold
            steps.append(np.abs(following[keep] - inside[has_next][keep]))
        differences = np.concatenate(steps)
        noise = max(noise, (float(np.median(differences)) if differences.size else 0.0) / scale)
        drift = max(drift, _end_to_end_difference(inside, coordinates, shape) / scale)
    return IntensityMeasures(percentiles, noise, drift)


def body_sample(flat: np.ndarray, threshold: float) -> np.ndarray:
    """Flat indices of the body's voxels (above ``threshold``): all of them up to :data:`SAMPLE_SIZE`, else
    :data:`SAMPLE_SIZE` drawn uniformly among them (seeded), sorted. Drawn from the body, not from the
    scan: a body that fills a small part of the scan (the top slices of a head) still gets a full
    sample, or all its voxels."""
    body = np.flatnonzero(flat > threshold)
    if body.size <= SAMPLE_SIZE:
        return body
    return body[(_sorted_uniform() * body.size).astype(np.intp)]  # sorted draws: sorted indices


@lru_cache(maxsize=1)
def _sorted_uniform() -> np.ndarray:
    """:data:`SAMPLE_SIZE` uniform draws in [0, 1), seeded and sorted, drawn once: scaled by a body's size
    they pick its sample in memory order, without a sort per scan."""
    draws = np.sort(np.random.default_rng(SAMPLE_SEED).random(SAMPLE_SIZE))
    draws.setflags(write=False)
    return draws


def _end_to_end_difference(values: np.ndarray, coordinates: Sequence[np.ndarray], shape: Sequence[int]) -> float:
    """The largest, over axes of 16 or more voxels, difference of the body's median intensity between the
    first and the last third of the axis (of the sampled body voxels: ``values`` at ``coordinates``)."""
    largest = 0.0
    for axis, size in enumerate(shape):
        if size < 16:
            continue
        third = size // 3
        first = values[coordinates[axis] < third]
        last = values[coordinates[axis] >= size - third]
        if first.size and last.size:
            largest = max(largest, abs(float(np.median(first)) - float(np.median(last))))
    return largest


def component_count(mask: np.ndarray) -> int:
    """Connected components (face connectivity) of a boolean mask."""
    return int(ndimage.label(mask)[1]) if mask.any() else 0


def border_voxels(array: np.ndarray) -> np.ndarray:
    """Every voxel on the image's border (first or last index of any axis), once each, flat: the faces
    alone, so that a measure of the border reads a few slices, not the volume."""
    parts = []
    inner: list[slice | int] = [slice(None)] * array.ndim
    for axis, size in enumerate(array.shape):
        for end in sorted({0, size - 1}):
            face = list(inner)
            face[axis] = end
            parts.append(np.ravel(array[tuple(face)]))
        inner[axis] = slice(1, -1)  # the faces of later axes leave out this axis's ends: counted here
    return np.concatenate(parts)


def border_share(mask: np.ndarray) -> float:
    """The share of a mask's voxels on the image's border (first or last index of any axis): near 0 for
    an organ inside the field of view, large for one the field of view cuts."""
    total = int(np.count_nonzero(mask))
    return int(np.count_nonzero(border_voxels(mask))) / total if total else 0.0


@dataclass(frozen=True)
class MaskMeasures:
    """Per foreground class name: volume (ml), connected components, share of its voxels on the border."""

    volume_ml: dict[str, float]
    components: dict[str, int]
    border_share: dict[str, float]


def mask_measures(
    labels: np.ndarray, spacing: Sequence[float], class_values: Sequence[int], class_names: Sequence[str]
) -> MaskMeasures:
    """The :class:`MaskMeasures` of every foreground class of a label-value array."""
    voxel_ml = float(np.prod(spacing)) / 1000.0
    border = border_voxels(labels)
    labelled = crop(labels, nonzero_bbox(labels[None]))  # every foreground voxel, less of the volume to label
    result = MaskMeasures({}, {}, {})
    for value, name in zip(class_values, class_names, strict=True):
        if value == 0:
            continue
        mask = labelled == value
        count = int(np.count_nonzero(mask))
        result.volume_ml[name] = count * voxel_ml
        result.components[name] = component_count(mask) if count else 0
        result.border_share[name] = int(np.count_nonzero(border == value)) / count if count else 0.0
    return result


def case_fingerprint(
    case_id: str, image: Image, label: np.ndarray | None, class_values: Sequence[int], class_names: Sequence[str]
) -> CaseFingerprint:
    """The numbers of one case (``label``: label values on the image's grid, no channel axis)."""
    spacing = [float(s) for s in image.geometry.spacing]
    shape = list(image.spatial_shape)
    foreground: list[list[float] | None] = [None] * image.channels
    volumes: dict[str, float] = {}
    components: dict[str, int] = {}
    border: dict[str, float] = {}
    if label is not None:
        inside = label > 0
        if inside.any():
            foreground = [[float(v) for v in np.percentile(c[inside], PERCENTILES)] for c in image.array]
        masks = mask_measures(label, spacing, class_values, class_names)
        volumes, components, border = masks.volume_ml, masks.components, masks.border_share
    intensities = intensity_measures(image.array)
    return CaseFingerprint(
        case_id=case_id,
        spacing=spacing,
        shape=shape,
        extent_mm=[float(n * s) for n, s in zip(shape, spacing, strict=True)],
        orientation=image.geometry.orientation() if image.spatial_dims == 3 else None,
        channels=image.channels,
        body_percentiles=intensities.body_percentiles,
        foreground_percentiles=foreground,
        class_volumes_ml=volumes,
        class_components=components,
        class_border_share=border,
        texture=intensities.texture,
    )


def intensity_reference(cases: Sequence[CaseFingerprint]) -> tuple[list[list[float]], list[float]]:
    """(median body percentiles per channel, intensity scale per channel: the median 5-95 percentile
    range), the reference a scan's distribution is measured from."""
    stacked = np.array([c.body_percentiles for c in cases], dtype=float)  # (N, C, P)
    reference = np.nanmedian(stacked, axis=0)
    low, high = PERCENTILES.index(5.0), PERCENTILES.index(95.0)
    scale = np.nanmedian(stacked[:, :, high] - stacked[:, :, low], axis=0)
    scale = np.where(np.isfinite(scale) & (scale > 0), scale, 1.0)
    return reference.tolist(), scale.tolist()


def intensity_distance(
    percentiles: Sequence[Sequence[float]], reference: Sequence[Sequence[float]], scale: Sequence[float]
) -> float:
    """The largest, over channels, mean absolute difference between a scan's body percentiles and the
    training median, in units of the training intensity scale (0: the same distribution; 1: shifted by
    a whole 5-95 percentile range)."""
    values = np.asarray(percentiles, dtype=float)
    ref = np.asarray(reference, dtype=float)
    per_channel = np.nanmean(np.abs(values - ref), axis=1) / np.asarray(scale, dtype=float)
    return float(np.nanmax(per_channel)) if np.isfinite(per_channel).any() else float("inf")


def standardized(percentiles: Sequence[Sequence[float]]) -> list[list[float]]:
    """Percentiles with the median subtracted and divided by the 5-95 range, per channel: the shape of the
    distribution, blind to a shift or a scaling of the intensities (which the per-case normalisation of
    MR undoes) but not to another contrast."""
    values = np.asarray(percentiles, dtype=float)
    middle, low, high = (PERCENTILES.index(p) for p in (50.0, 5.0, 95.0))
    spread = values[:, high] - values[:, low]
    spread = np.where(np.isfinite(spread) & (spread > 0), spread, 1.0)
    return ((values - values[:, middle : middle + 1]) / spread[:, None]).tolist()


def summarize(
    cases: Sequence[CaseFingerprint], class_names: Sequence[str], channel_names: Sequence[str]
) -> dict[str, Any]:
    """The fingerprint kept with a model: every case's numbers, the ranges and the learned threshold."""
    reference, scale = intensity_reference(cases)
    distances = [intensity_distance(c.body_percentiles, reference, scale) for c in cases]
    threshold = max(MIN_INTENSITY_THRESHOLD, INTENSITY_MARGIN * max(distances))
    spacings = np.array([c.spacing for c in cases])
    extents = np.array([c.extent_mm for c in cases])
    foreground = [n for n in class_names[1:]]
    shapes = [standardized(c.body_percentiles) for c in cases]
    shape_reference = np.nanmedian(np.array(shapes), axis=0).tolist()
    unit_scale = [1.0] * len(channel_names)
    shape_distances = [intensity_distance(s, shape_reference, unit_scale) for s in shapes]
    texture = {
        key: {
            "training": [c.texture[key] for c in cases],
            "threshold": max(MIN_TEXTURE_THRESHOLD[key], INTENSITY_MARGIN * max(c.texture[key] for c in cases)),
        }
        for key in ("noise", "drift")
    }
    return {
        "version": FINGERPRINT_VERSION,
        "texture": texture,
        "cases": len(cases),
        "channels": len(channel_names),
        "channel_names": list(channel_names),
        "orientations": sorted({c.orientation for c in cases if c.orientation}),
        "spacing": {"min": spacings.min(0).tolist(), "max": spacings.max(0).tolist()},
        "extent_mm": {"min": extents.min(0).tolist(), "max": extents.max(0).tolist()},
        "intensity": {
            "percentiles": list(PERCENTILES),
            "reference": reference,
            "scale": scale,
            "training_distances": distances,
            "threshold": threshold,
            "shape_reference": shape_reference,
            "shape_training_distances": shape_distances,
            "shape_threshold": max(MIN_SHAPE_THRESHOLD, INTENSITY_MARGIN * max(shape_distances)),
        },
        "classes": {name: _class_ranges(cases, name) for name in foreground},
        "per_case": [asdict(c) for c in cases],
    }


def _class_ranges(cases: Sequence[CaseFingerprint], name: str) -> dict[str, Any]:
    """Volume range (ml), most components and whether any training case lacked the class."""
    volumes = [c.class_volumes_ml.get(name, 0.0) for c in cases if c.class_volumes_ml]
    components = [c.class_components.get(name, 0) for c in cases if c.class_components]
    if not volumes:
        return {"volume_ml": None, "max_components": None, "ever_empty": None, "max_border_share": None}
    return {
        "volume_ml": {"min": min(volumes), "max": max(volumes), "median": float(np.median(volumes))},
        "max_components": max(components),
        "ever_empty": any(v == 0 for v in volumes),
        "max_border_share": max(c.class_border_share.get(name, 0.0) for c in cases if c.class_components),
    }


def fingerprint_training_cases(
    dataset: Dataset,
    case_ids: Sequence[str],
    class_values: Sequence[int],
    class_names: Sequence[str],
    channel_names: Sequence[str],
) -> dict[str, Any]:
    """Read ``case_ids`` of ``dataset`` (images and labels) and :func:`summarize` them."""
    cases = []
    for case_id in case_ids:
        image, label = dataset.read_case(case_id)
        labels = None if label is None else np.asarray(label.array[0])
        cases.append(case_fingerprint(case_id, image, labels, class_values, class_names))
    return summarize(cases, class_names, channel_names)


def save_fingerprint(path: str | Path, fingerprint: dict[str, Any]) -> Path:
    """Write it as JSON, atomically (replacing the one of an earlier start of the run)."""
    return write_json(path, fingerprint, overwrite=True)


def load_fingerprint(path: str | Path) -> dict[str, Any] | None:
    """The fingerprint at ``path``; None when the model predates it."""
    path = Path(path)
    return read_json(path) if path.exists() else None
