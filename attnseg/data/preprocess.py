"""Apply a :class:`~attnseg.data.plan.Plan` to a case, and undo it for predictions.

Forward (:func:`preprocess_case`): reorient to the plan's voxel order (RAS; transposes and flips only, see
:mod:`attnseg.data.orientation`), then in nnU-Net's order: crop to the non-zero bounding box, normalise the
intensities, resample to the target spacing (image: linear; label: each class's indicator linearly, then
the most likely class, as nnU-Net does, so thin structures do not vanish the way they can under nearest
neighbour), and map label values to class indices 0..K-1.

Inverse (:func:`restore_prediction`, :func:`restore_probabilities`): resample a prediction from the
preprocessed grid back to the cropped grid, paste it into the full grid and undo the reorientation, so a
mask written with the input's :class:`~attnseg.data.geometry.Geometry` lines up voxel for voxel. When the
spacing does not change (and only then) the round trip is exact.

Deviation from nnU-Net: images are resampled linearly (nnU-Net uses third-order splines): faster, no
overshoot at edges; the difference is below what training notices.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from attnseg.data.arrays import Box, crop, nonzero_bbox
from attnseg.data.dataset import Dataset
from attnseg.data.geometry import Geometry
from attnseg.data.io import Image
from attnseg.data.orientation import Reorientation, reorientation
from attnseg.data.plan import ChannelNormalization, Plan
from attnseg.errors import DataError
from attnseg.fileio import atomic_path, read_json, write_json

# nnU-Net keeps at most this many voxel positions per class for foreground sampling, but at least 1%.
LOCATION_SAMPLES = 10_000
LOCATION_MIN_FRACTION = 0.01


@dataclass
class CaseProperties:
    """What is needed to put a prediction back on the original grid.

    ``geometry``, ``shape`` and ``bbox`` describe the image after reorientation to the plan's orientation
    (the stored grid itself when there is none); ``reorientation`` takes arrays back to the stored order.
    """

    geometry: Geometry  # the (reoriented) image's grid
    shape: tuple[int, ...]  # (reoriented) spatial shape
    bbox: Box  # crop in (reoriented) voxels, ((start, stop), ...)
    resampled_shape: tuple[int, ...]  # spatial shape after resampling (the network's grid)
    spacing: tuple[float, ...]  # spacing on the network's grid
    class_values: tuple[int, ...]  # class index -> label value
    reorientation: Reorientation | None = None  # stored voxel order -> the plan's orientation

    @property
    def cropped_shape(self) -> tuple[int, ...]:
        return tuple(stop - start for start, stop in self.bbox)

    def to_dict(self) -> dict[str, Any]:
        return {
            "geometry": self.geometry.to_dict(),
            "shape": list(self.shape),
            "bbox": [list(b) for b in self.bbox],
            "resampled_shape": list(self.resampled_shape),
            "spacing": list(self.spacing),
            "class_values": list(self.class_values),
            "reorientation": self.reorientation.to_dict() if self.reorientation is not None else None,
        }

    @property
    def stored_shape(self) -> tuple[int, ...]:
        """The spatial shape in the image's stored voxel order."""
        if self.reorientation is None:
            return self.shape
        stored = [0] * len(self.shape)
        for size, axis in zip(self.shape, self.reorientation.axes, strict=True):
            stored[axis] = size
        return tuple(stored)

    def to_stored_order(self, array: np.ndarray) -> np.ndarray:
        """``(C, *shape)`` on the reoriented grid -> the image's stored voxel order (exact)."""
        return self.reorientation.undo(array) if self.reorientation is not None else array

    def reoriented_view(self, stored: np.ndarray) -> np.ndarray:
        """``(C, *stored_shape)`` in the stored order, seen on the reoriented grid (a view: no copy)."""
        return self.reorientation.view(stored) if self.reorientation is not None else stored

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CaseProperties:
        return cls(
            geometry=Geometry.from_dict(data["geometry"]),
            shape=tuple(int(s) for s in data["shape"]),
            bbox=tuple((int(a), int(b)) for a, b in data["bbox"]),
            resampled_shape=tuple(int(s) for s in data["resampled_shape"]),
            spacing=tuple(float(s) for s in data["spacing"]),
            class_values=tuple(int(v) for v in data["class_values"]),
            reorientation=Reorientation.from_dict(data["reorientation"]) if data.get("reorientation") else None,
        )


@dataclass
class PreprocessedCase:
    """A case on the network's grid.

    ``image`` is ``(C, *S)`` float32; ``label`` is ``(*S)`` class indices (no channel axis, unlike images)
    or None; ``class_locations`` maps each foreground class index to sampled voxel coordinates ``(N, ndim)``.
    """

    id: str
    image: np.ndarray
    label: np.ndarray | None
    properties: CaseProperties
    class_locations: dict[int, np.ndarray] = field(default_factory=dict)

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        return tuple(int(s) for s in self.image.shape[1:])


# ---------------------------------------------------------------------------------------------------
# Forward
# ---------------------------------------------------------------------------------------------------
def preprocess_case(
    image: Image, plan: Plan, label: Image | None = None, *, case_id: str | None = None, seed: int = 0
) -> PreprocessedCase:
    """Crop, normalise and resample one case as ``plan`` says; labels become class indices.

    Raises:
        DataError: wrong dimensionality or channel count for the plan, non-finite intensities, a label on
            another grid, or label values the plan does not know; the message names the file.
    """
    _check_input(image, plan, label)
    turn = reorientation(image.geometry, plan.orientation) if plan.orientation is not None else None
    geometry = turn.geometry(image.geometry, image.spatial_shape) if turn is not None else image.geometry
    # reordered and converted in one copy, from the stored dtype (int16 on a CT): a transpose and flips are
    # exact, so the values are those of converting first, without a float32 copy in the stored order
    stored = turn.view(image.array) if turn is not None else image.array
    array = np.ascontiguousarray(stored, dtype=np.float32)
    indices = _to_class_indices(np.asarray(label.array[0]), plan, label) if label is not None else None
    if turn is not None and indices is not None:
        indices = turn.apply(indices, leading=0)
    if plan.crop_to_nonzero:
        # nnU-Net crops to the image's non-zero box; we also keep any labelled voxel outside it rather
        # than silently cut foreground away (at inference there is no label and the image box is used)
        stack = array if indices is None else np.concatenate([array, indices[None].astype(np.float32)])
        box = nonzero_bbox(stack)
    else:
        box = tuple((0, s) for s in array.shape[1:])
    array = crop(array, box)
    array = normalize(array, plan.normalization)
    spacing = tuple(
        float(orig) if target is None else float(target)
        for orig, target in zip(geometry.spacing, plan.target_spacing, strict=True)
    )
    cropped = array.shape[1:]
    shape = resampled_shape(cropped, geometry.spacing, spacing)
    array = resample(array, shape)
    classes = None
    if indices is not None:
        classes = crop(indices, box)
        if shape != cropped:
            classes = resample_classes(classes, shape, plan.num_classes)
        classes = classes.astype(np.uint8 if plan.num_classes <= 256 else np.int16)
    properties = CaseProperties(
        geometry=geometry,
        shape=turn.shape(image.spatial_shape) if turn is not None else image.spatial_shape,
        bbox=box,
        resampled_shape=shape,
        spacing=spacing,
        class_values=tuple(plan.class_values),
        reorientation=turn,
    )
    case_name = case_id or (image.path.name if image.path is not None else "case")
    locations = class_locations(classes, seed=seed) if classes is not None else {}
    return PreprocessedCase(case_name, np.ascontiguousarray(array), classes, properties, locations)


def _check_input(image: Image, plan: Plan, label: Image | None) -> None:
    if image.spatial_dims != plan.image_dims:
        raise DataError(f"{image.name}: {image.spatial_dims}-D image where the plan expects {plan.image_dims}-D images")
    if image.channels != plan.num_channels:
        raise DataError(f"{image.name}: {image.channels} channel(s) where the plan expects {plan.num_channels}")
    if image.array.dtype.kind == "f" and not np.all(np.isfinite(image.array)):
        raise DataError(f"{image.name}: NaN or infinite intensities; fix or mask them before preprocessing")
    if label is not None:
        if label.channels != 1:
            raise DataError(f"{label.name}: a label needs one channel, got {label.channels}")
        if label.spatial_shape != image.spatial_shape:
            raise DataError(f"{label.name}: label shape {label.spatial_shape} differs from image {image.spatial_shape}")
        diffs = label.geometry.differences(image.geometry, atol=1e-4)
        if diffs:
            raise DataError(f"{label.name}: label geometry differs from its image: {'; '.join(diffs)}")


def _to_class_indices(values: np.ndarray, plan: Plan, label: Image) -> np.ndarray:
    known = np.asarray(plan.class_values)
    if values.dtype.kind == "f":
        values = np.round(values)
    values = values.astype(np.int64)
    index = np.searchsorted(known, values)
    index = np.clip(index, 0, len(known) - 1)
    unknown = known[index] != values
    if unknown.any():
        bad = sorted(int(v) for v in np.unique(values[unknown]))
        raise DataError(f"{label.name}: label values {bad} are not among the plan's labels {plan.class_values}")
    return index


def normalize(array: np.ndarray, norms: Sequence[ChannelNormalization]) -> np.ndarray:
    """Normalise each channel of ``(C, *S)`` float32 as its :class:`ChannelNormalization` says."""
    out = np.empty_like(array, dtype=np.float32)
    nonzero = None  # the mask of voxels non-zero in any channel, made once, if a channel needs it
    for c, (channel, norm) in enumerate(zip(array, norms, strict=True)):
        if norm.scheme == "ct":
            _ct_window(channel, norm, out[c])
        elif norm.scheme == "zscore":
            if norm.use_nonzero_mask and nonzero is None:
                nonzero = np.any(array != 0, axis=0)
            if norm.use_nonzero_mask and nonzero.any():
                values = channel[nonzero]
                out[c] = np.where(nonzero, (channel - values.mean()) / max(float(values.std()), 1e-8), 0.0)
            else:
                out[c] = (channel - channel.mean()) / max(float(channel.std()), 1e-8)
        elif norm.scheme == "robust_zscore":
            out[c] = robust_zscore(channel)
        elif norm.scheme == "rescale":
            lo, hi = float(channel.min()), float(channel.max())
            out[c] = (channel - lo) / (hi - lo) if hi > lo else 0.0
        else:
            out[c] = channel
    return out


def _ct_window(channel: np.ndarray, norm: ChannelNormalization, out: np.ndarray) -> None:
    """Clip to the CT window, subtract the mean and divide by the standard deviation, into ``out``.

    In place when the arithmetic is float32 anyway (a float32 channel and Python floats, as a plan read
    from plan.json holds): the same operations in the same precision, without the clipped, shifted and
    scaled temporaries, each the size of the volume (300 MiB for a 512 x 512 x 300 CT). Otherwise (numpy
    scalars of a plan made in memory promote to float64) as it always was, so the result never changes.
    """
    scale = max(float(norm.std), 1e-8)
    if np.result_type(channel, norm.lower, norm.upper, norm.mean) != np.float32:
        out[...] = (np.clip(channel, norm.lower, norm.upper) - norm.mean) / scale
        return
    np.clip(channel, norm.lower, norm.upper, out=out)
    out -= norm.mean
    out /= scale


def robust_zscore(channel: np.ndarray, samples: int = 1_000_000) -> np.ndarray:
    """z-score with the statistics of the tissue only: the voxels above an Otsu threshold, their brightest
    0.5% clipped (vessels, fat, artefacts), so neither the amount of air around the anatomy nor a few
    extreme voxels change the result. Statistics from an even subsample of at most ``samples`` voxels."""
    flat = channel.ravel()
    sample = flat[:: max(1, flat.size // samples)].astype(np.float64)
    tissue = sample[sample > otsu_threshold(sample)]
    if tissue.size < 2:  # a constant image
        tissue = sample
    top = float(np.percentile(tissue, 99.5))
    clipped = np.minimum(tissue, top)
    mean, std = float(clipped.mean()), max(float(clipped.std()), 1e-8)
    return ((np.minimum(channel, top) - mean) / std).astype(np.float32)


def otsu_threshold(values: np.ndarray, bins: int = 256) -> float:
    """Otsu's threshold: the cut of a 256-bin histogram that maximises the between-class variance."""
    lo, hi = float(values.min()), float(values.max())
    if hi <= lo:
        return lo
    counts, edges = np.histogram(values, bins=bins, range=(lo, hi))
    centres = (edges[:-1] + edges[1:]) / 2
    weight_low = np.cumsum(counts)
    weight_high = weight_low[-1] - weight_low
    sum_low = np.cumsum(counts * centres)
    mean_low = sum_low / np.maximum(weight_low, 1)
    mean_high = (sum_low[-1] - sum_low) / np.maximum(weight_high, 1)
    between = weight_low * weight_high * (mean_low - mean_high) ** 2
    return float(edges[1:][int(np.argmax(between))])


def resampled_shape(shape: Sequence[int], spacing: Sequence[float], target: Sequence[float]) -> tuple[int, ...]:
    """Voxels along each axis after resampling from ``spacing`` to ``target`` (unchanged when equal)."""
    out = []
    for n, s, t in zip(shape, spacing, target, strict=True):
        out.append(int(n) if np.isclose(s, t, rtol=1e-6, atol=0) else max(1, round(n * s / t)))
    return tuple(out)


def _interpolate(array: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    mode = "bilinear" if len(shape) == 2 else "trilinear"
    return F.interpolate(array[None], size=tuple(shape), mode=mode, align_corners=False)[0]


def resample(array: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """Linear resampling of ``(C, *S)`` float data to ``shape`` (half-voxel aligned, as skimage's resize)."""
    if tuple(array.shape[1:]) == tuple(shape):
        return array
    with torch.no_grad():
        return _interpolate(torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32)), shape).numpy()


def resample_classes(classes: np.ndarray, shape: Sequence[int], num_classes: int) -> np.ndarray:
    """Resample a class-index map ``(*S)``: each class indicator linearly, then the most likely class.

    One class at a time (a running maximum) keeps memory at two volumes whatever the number of classes.
    """
    if tuple(classes.shape) == tuple(shape):
        return classes
    source = torch.from_numpy(np.ascontiguousarray(classes))
    best = torch.full(tuple(shape), -1.0)
    out = torch.zeros(tuple(shape), dtype=torch.int64)
    with torch.no_grad():
        for k in range(num_classes):
            indicator = (source == k).float()[None]
            score = _interpolate(indicator, shape)[0]
            better = score > best
            best = torch.where(better, score, best)
            out[better] = k
    return out.numpy()


def class_locations(classes: np.ndarray, *, seed: int = 0) -> dict[int, np.ndarray]:
    """Sampled voxel coordinates ``(N, ndim)`` of each foreground class (nnU-Net: 10,000, at least 1%)."""
    rng = np.random.default_rng(seed)
    out = {}
    for k in np.unique(classes):
        if k == 0:
            continue
        coords = np.argwhere(classes == k)
        target = min(len(coords), max(LOCATION_SAMPLES, int(np.ceil(len(coords) * LOCATION_MIN_FRACTION))))
        if target < len(coords):
            coords = coords[np.sort(rng.choice(len(coords), target, replace=False))]
        out[int(k)] = coords.astype(np.int32)
    return out


# ---------------------------------------------------------------------------------------------------
# Inverse
# ---------------------------------------------------------------------------------------------------
def restore_probabilities(prediction: np.ndarray | torch.Tensor, properties: CaseProperties) -> np.ndarray:
    """Class scores ``(K, *S)`` on the network's grid -> ``(K, *original)`` float32 on the original grid.

    Scores are resampled linearly to the cropped grid; outside the crop the background has probability 1.
    (Pass probabilities, not logits, if you want probabilities back: outside the crop is filled with 1/0.)
    """
    scores = _checked_scores(prediction, properties)
    return _on_original_grid(resample(scores, properties.cropped_shape), properties, first_class=0)


def restore_channel(prediction: np.ndarray | torch.Tensor, properties: CaseProperties, channel: int) -> np.ndarray:
    """One class's scores of ``(K, *S)`` on the network's grid -> ``(*original)`` float32 on the original grid:
    ``restore_probabilities(prediction, properties)[channel]`` bit for bit, one channel at full resolution.

    Linear resampling treats every channel on its own with the same weights (the same interpolation
    call on one channel of the contiguous scores), and the paste and the background fill only copy, so
    the values are those of the whole volume; a caller that needs only the class map
    (:func:`attnseg.data.arrays.argmax_channels`) holds one channel of a CT instead of K.
    """
    scores = _checked_scores(prediction, properties)
    resampled = resample(scores[channel : channel + 1], properties.cropped_shape)
    return _on_original_grid(resampled, properties, first_class=channel)[0]


def _on_original_grid(scores: np.ndarray, properties: CaseProperties, first_class: int) -> np.ndarray:
    """``(C, *cropped)`` scores of classes ``first_class``, ``first_class + 1``... pasted into ``(C, *original)``,
    in the image's stored voxel order; outside the crop the background is certain (1, the others 0).

    Assembled in the stored order through a view on the reoriented grid: one volume, where a zero-filled
    grid, the paste and a reordered copy held three (a CT's air is not 0, so its crop is the whole grid and
    nothing is filled)."""
    out = np.empty((len(scores), *properties.stored_shape), dtype=np.float32)
    if properties.cropped_shape != properties.shape:
        out[...] = 0.0
        if first_class == 0:
            out[0] = 1.0
    view = properties.reoriented_view(out)
    view[(slice(None), *(slice(a, b) for a, b in properties.bbox))] = scores
    return out


def _checked_scores(prediction: np.ndarray | torch.Tensor, properties: CaseProperties) -> np.ndarray:
    """``prediction`` as float32 ``(K, *S)`` scores on the case's preprocessed grid, or a DataError."""
    scores = _as_numpy(prediction).astype(np.float32, copy=False)
    k = len(properties.class_values)
    if scores.ndim != len(properties.shape) + 1 or scores.shape[0] != k:
        raise DataError(f"prediction of shape {scores.shape} is not ({k}, *{properties.resampled_shape})")
    _check_grid(scores.shape[1:], properties)
    return scores


def restore_prediction(prediction: np.ndarray | torch.Tensor, properties: CaseProperties) -> np.ndarray:
    """A prediction on the network's grid -> a label map ``(1, *original)`` of label values.

    ``prediction`` is either class scores ``(K, *S)`` (probabilities or logits, floating point) or a
    class-index map ``(*S)`` / ``(1, *S)`` (integers). The result has the original image's shape, so
    ``write_image(path, result, image.geometry)`` gives a mask on the input's exact grid.
    """
    array = _as_numpy(prediction)
    ndim = len(properties.shape)
    k = len(properties.class_values)
    if array.ndim == ndim + 1 and array.shape[0] == 1 and array.dtype.kind in "iub":
        array = array[0]
    if array.ndim == ndim + 1:
        if array.shape[0] != k or array.dtype.kind != "f":
            raise DataError(f"prediction of shape {array.shape} is not ({k}, *{properties.resampled_shape}) scores")
        _check_grid(array.shape[1:], properties)
        classes = np.argmax(resample(array.astype(np.float32, copy=False), properties.cropped_shape), axis=0)
    elif array.ndim == ndim:
        _check_grid(array.shape, properties)
        classes = array.astype(np.int64)
        if classes.min() < 0 or classes.max() >= k:
            raise DataError(f"class indices must lie in 0..{k - 1}, got {classes.min()}..{classes.max()}")
        classes = resample_classes(classes, properties.cropped_shape, k)
    else:
        raise DataError(f"prediction of shape {array.shape} fits neither (K, *S) scores nor an (*S) class map")
    values = np.asarray(properties.class_values)
    dtype = np.uint8 if values.min() >= 0 and values.max() <= 255 else np.int32
    out = np.full(properties.shape, values[0], dtype=dtype)
    out[tuple(slice(a, b) for a, b in properties.bbox)] = values[classes]
    return properties.to_stored_order(out[None])


def _as_numpy(prediction: np.ndarray | torch.Tensor) -> np.ndarray:
    if isinstance(prediction, torch.Tensor):
        return prediction.detach().cpu().numpy()
    return np.asarray(prediction)


def _check_grid(shape: Sequence[int], properties: CaseProperties) -> None:
    if tuple(shape) != tuple(properties.resampled_shape):
        raise DataError(
            f"prediction grid {tuple(shape)} is not the preprocessed grid {properties.resampled_shape} of this case"
        )


# ---------------------------------------------------------------------------------------------------
# Whole datasets on disk
# ---------------------------------------------------------------------------------------------------
def preprocess_dataset(
    dataset: Dataset,
    plan: Plan,
    out_dir: str | Path,
    *,
    case_ids: Sequence[str] | None = None,
    overwrite: bool = False,
    skip_existing: bool = False,
) -> Path:
    """Preprocess labelled cases into ``out_dir`` (``plan.json``; per case ``ID_image.npy``,
    ``ID_label.npy``, ``ID_locations.npz``, ``ID.json``), for :func:`load_preprocessed` to memory-map.

    An ``out_dir`` made with another plan is refused unless ``overwrite``. With ``skip_existing`` the
    cases already there (their ``ID.json``, written last, is the mark of a complete case) are kept, so
    the folder works as a cache that later runs only complete.
    """
    out = Path(out_dir)
    plan_file = out / "plan.json"
    same_plan = plan_file.exists() and read_json(plan_file) == plan.to_dict()
    if plan_file.exists() and not same_plan and not overwrite:
        raise DataError(f"{out}: holds data preprocessed with another plan; pass overwrite=True to replace it")
    out.mkdir(parents=True, exist_ok=True)
    write_json(plan_file, plan.to_dict(), overwrite=True)
    wanted = list(case_ids) if case_ids is not None else dataset.case_ids
    if skip_existing and same_plan:
        wanted = [case_id for case_id in wanted if not (out / f"{case_id}.json").exists()]
    if wanted:
        for case in _preprocessed(dataset, plan, wanted):
            _save_case(out, case)
    return out


def _save_case(out: Path, case: PreprocessedCase) -> None:
    def atomic_save(name: str, writer) -> None:
        with atomic_path(out / name, overwrite=True) as temporary, open(temporary, "wb") as stream:
            writer(stream)

    atomic_save(f"{case.id}_image.npy", lambda s: np.save(s, case.image))
    if case.label is not None:
        atomic_save(f"{case.id}_label.npy", lambda s: np.save(s, case.label))
    atomic_save(
        f"{case.id}_locations.npz",
        lambda s: np.savez(s, **{f"class_{k}": v for k, v in case.class_locations.items()}),
    )
    write_json(out / f"{case.id}.json", {"id": case.id, "properties": case.properties.to_dict()}, overwrite=True)


def load_preprocessed(
    out_dir: str | Path, case_ids: Sequence[str] | None = None, *, mmap: bool = True
) -> list[PreprocessedCase]:
    """Cases written by :func:`preprocess_dataset` (arrays memory-mapped unless ``mmap=False``)."""
    out = Path(out_dir)
    if case_ids is None:
        case_ids = sorted(p.name[: -len(".json")] for p in out.glob("*.json") if p.name != "plan.json")
    mode = "r" if mmap else None
    cases = []
    for case_id in case_ids:
        meta_path = out / f"{case_id}.json"
        if not meta_path.exists():
            raise DataError(f"{meta_path}: missing; was case '{case_id}' preprocessed?")
        meta = read_json(meta_path)
        image = np.load(out / f"{case_id}_image.npy", mmap_mode=mode, allow_pickle=False)
        label_path = out / f"{case_id}_label.npy"
        label = np.load(label_path, mmap_mode=mode, allow_pickle=False) if label_path.exists() else None
        with np.load(out / f"{case_id}_locations.npz", allow_pickle=False) as stored:
            locations = {int(name.split("_", 1)[1]): stored[name] for name in stored.files}
        cases.append(PreprocessedCase(case_id, image, label, CaseProperties.from_dict(meta["properties"]), locations))
    return cases


def preprocess_cases(dataset: Dataset, plan: Plan, case_ids: Sequence[str] | None = None) -> list[PreprocessedCase]:
    """Preprocess labelled cases in memory (small datasets, tests, the built-in demos)."""
    return list(_preprocessed(dataset, plan, case_ids))


def _preprocessed(dataset: Dataset, plan: Plan, case_ids: Sequence[str] | None) -> Iterator[PreprocessedCase]:
    """The labelled cases of ``dataset`` (those in ``case_ids``, or all), preprocessed one at a time."""
    wanted = set(case_ids) if case_ids is not None else None
    for index, case in enumerate(dataset.cases):
        if wanted is not None and case.id not in wanted:
            continue
        image, label = dataset.read_case(case)
        if label is None:
            raise DataError(f"{case.images[0]}: no label; only labelled cases can be preprocessed for training")
        yield preprocess_case(image, plan, label, case_id=case.id, seed=index)
