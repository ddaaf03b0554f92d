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
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

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
# At most this many voxels per channel enter the percentiles (a strided sample; exact on small images).
MAX_SAMPLE = 1_000_000


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


def channel_sample(values: np.ndarray) -> np.ndarray:
    """A strided sample of at most :data:`MAX_SAMPLE` values, as float64 (percentiles of it are close to
    the image's own, at a fraction of the time on a large scan)."""
    flat = np.asarray(values).reshape(-1)
    step = max(1, flat.size // MAX_SAMPLE)
    return flat[::step].astype(np.float64)


def body_percentiles(array: np.ndarray) -> list[list[float]]:
    """Per channel, :data:`PERCENTILES` of the voxels above the channel's Otsu threshold (the body, not
    the air or the padding around it, whose share changes with the field of view)."""
    result = []
    for channel in array:
        sample = channel_sample(channel)
        sample = sample[np.isfinite(sample)]
        if sample.size == 0:
            result.append([float("nan")] * len(PERCENTILES))
            continue
        body = sample[sample > otsu_threshold(sample)]
        body = body if body.size else sample
        result.append([float(v) for v in np.percentile(body, PERCENTILES)])
    return result


def texture_measures(array: np.ndarray) -> dict[str, float]:
    """Two numbers per scan that the percentiles miss, the largest over channels, in units of the scan's
    dynamic range (its 1-99 percentile range: stable whichever part of the scan Otsu calls the body):
    ``noise``, the median absolute difference of neighbouring body voxels (along every axis); ``drift``,
    the largest difference between the body's median intensity in the first and the last third of an
    axis (of 16 or more voxels): a bias field shows there long before the percentiles of the whole body
    move."""
    noise, drift = 0.0, 0.0
    for channel in np.asarray(array, dtype=np.float32):
        sample = channel_sample(channel)
        sample = sample[np.isfinite(sample)]
        body = channel > otsu_threshold(sample)
        if body.sum() < 16:
            continue
        low, high = np.percentile(sample, [1.0, 99.0])
        scale = float(high - low) or 1.0
        noise = max(noise, _neighbour_difference(channel, body) / scale)
        drift = max(drift, _end_to_end_difference(channel, body) / scale)
    return {"noise": noise, "drift": drift}


def _neighbour_difference(channel: np.ndarray, body: np.ndarray) -> float:
    """The median absolute difference between neighbouring voxels that are both in the body."""
    steps = []
    for axis in range(channel.ndim):
        if channel.shape[axis] < 2:
            continue
        first = [slice(None)] * channel.ndim
        second = [slice(None)] * channel.ndim
        first[axis], second[axis] = slice(0, -1), slice(1, None)
        inside = body[tuple(first)] & body[tuple(second)]
        steps.append(np.abs(channel[tuple(second)] - channel[tuple(first)])[inside])
    steps_all = np.concatenate(steps) if steps else np.zeros(0)
    return float(np.median(steps_all)) if steps_all.size else 0.0


def _end_to_end_difference(channel: np.ndarray, body: np.ndarray) -> float:
    """The largest, over axes of 16 or more voxels, difference of the body's median intensity between the
    first and the last third of the axis."""
    largest = 0.0
    for axis in range(channel.ndim):
        size = channel.shape[axis]
        if size < 16:
            continue
        ends = []
        for part in (range(size // 3), range(size - size // 3, size)):
            values = np.take(channel, part, axis=axis)[np.take(body, part, axis=axis)]
            ends.append(float(np.median(values)) if values.size else float("nan"))
        if all(np.isfinite(ends)):
            largest = max(largest, abs(ends[0] - ends[1]))
    return largest


def component_count(mask: np.ndarray) -> int:
    """Connected components (face connectivity) of a boolean mask."""
    return int(ndimage.label(mask)[1]) if mask.any() else 0


def border_share(mask: np.ndarray) -> float:
    """The share of a mask's voxels on the image's border (first or last index of any axis): near 0 for
    an organ inside the field of view, large for one the field of view cuts."""
    total = int(mask.sum())
    if total == 0:
        return 0.0
    inner = mask[tuple(slice(1, -1) for _ in range(mask.ndim))]
    return (total - int(inner.sum())) / total


def mask_measures(
    labels: np.ndarray, spacing: Sequence[float], class_values: Sequence[int], class_names: Sequence[str]
) -> tuple[dict[str, float], dict[str, int]]:
    """(volume in ml, connected components) of every foreground class of a label-value array."""
    voxel_ml = float(np.prod(spacing)) / 1000.0
    volumes, components = {}, {}
    for value, name in zip(class_values, class_names, strict=True):
        if value == 0:
            continue
        mask = labels == value
        volumes[name] = float(mask.sum()) * voxel_ml
        components[name] = component_count(mask)
    return volumes, components


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
        volumes, components = mask_measures(label, spacing, class_values, class_names)
        border = {n: border_share(label == v) for v, n in zip(class_values, class_names, strict=True) if v != 0}
    return CaseFingerprint(
        case_id=case_id,
        spacing=spacing,
        shape=shape,
        extent_mm=[float(n * s) for n, s in zip(shape, spacing, strict=True)],
        orientation=image.geometry.orientation() if image.spatial_dims == 3 else None,
        channels=image.channels,
        body_percentiles=body_percentiles(image.array),
        foreground_percentiles=foreground,
        class_volumes_ml=volumes,
        class_components=components,
        class_border_share=border,
        texture=texture_measures(image.array),
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
