"""The Plan: what preprocessing a model expects, derived from a dataset fingerprint as nnU-Net does.

A plan fixes the target spacing (median spacing; nnU-Net's rule for strongly anisotropic data), the
intensity normalisation per channel and its statistics, cropping to the non-zero region, the labels and
their order (class index k <-> the k-th smallest label value), and how the network sees the data: 2D
slices across ``slice_axis`` (in-plane resampling only; the slice axis keeps its spacing) or 3D patches of
``patch_size``. It is saved as JSON in the model folder; the predictor applies it and then inverts it.

Normalisation (Isensee et al., nnU-Net, Nature Methods 2021):

* ``ct``: clip to the 0.5 and 99.5 percentiles of the foreground intensities of the whole training set,
  then subtract their mean and divide by their standard deviation (global statistics: CT numbers mean
  the same in every scan);
* ``robust_zscore`` (MR and everything else; our default, a deviation from nnU-Net): per case, the
  statistics come from the tissue alone, the voxels above an Otsu threshold (air and the zero padding of
  a skull-stripped image fall below it), after clipping the brightest 0.5% of the tissue. nnU-Net's
  ``zscore`` over the whole image changes with how much air or padding surrounds the anatomy (another
  field of view, another scanner), which shifts every intensity the network sees; this does not;
* ``zscore`` (nnU-Net's, by channel name ``zscore``): per case, subtract the mean and divide by the
  standard deviation; inside the non-zero region only when cropping removed a quarter or more of the
  image (skull-stripped brains), so the black background does not dominate the statistics;
* ``rescale``: per case to [0, 1]; ``none``: unchanged.

The scheme follows the channel name in dataset.json (``"CT"`` -> ``ct``, ``"noNorm"`` -> ``none``,
``"rescale_to_0_1"`` -> ``rescale``, ``"zscore"`` -> ``zscore``, otherwise ``robust_zscore``) unless
overridden (``data.normalization``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from attnseg.data.check import Fingerprint, fingerprint_dataset
from attnseg.data.dataset import Dataset, load_dataset
from attnseg.data.hounsfield import is_ct_channel
from attnseg.data.orientation import CANONICAL, check_orientation_code
from attnseg.errors import ConfigError, DataError
from attnseg.fileio import read_json, write_json

Scheme = Literal["ct", "robust_zscore", "zscore", "rescale", "none"]
SCHEMES = ("ct", "robust_zscore", "zscore", "rescale", "none")
PLAN_VERSION = 2  # 2: the orientation (1: volumes used in their stored voxel order)
SUPPORTED_VERSIONS = (1, 2)
# nnU-Net's thresholds: an axis is "anisotropic" when its spacing is 3x the others' and it has 3x fewer
# voxels; masked z-scoring when cropping kept less than 3/4 of the image.
ANISOTROPY_RATIO = 3.0
MASKED_NORM_FRACTION = 0.75
# Default largest patch: 128^3 voxels (3D), 512^2 (2D); sizes are multiples of 16 (four poolings).
MAX_PATCH_VOXELS = {2: 512 * 512, 3: 128**3}
PATCH_MULTIPLE = 16


@dataclass
class ChannelNormalization:
    """How one channel is normalised; ``ct`` carries the dataset statistics it needs."""

    scheme: Scheme
    mean: float | None = None
    std: float | None = None
    lower: float | None = None
    upper: float | None = None
    use_nonzero_mask: bool = False

    def __post_init__(self) -> None:
        if self.scheme not in SCHEMES:
            raise ConfigError(f"unknown normalisation scheme {self.scheme!r}; choose one of {', '.join(SCHEMES)}")
        if self.scheme == "ct" and None in (self.mean, self.std, self.lower, self.upper):
            raise ConfigError("the 'ct' normalisation needs mean, std, lower and upper")


@dataclass
class Plan:
    """Preprocessing a model expects; JSON round trip with :meth:`save` / :meth:`load`.

    Attributes:
        spatial_dims: the network's dimensionality: 2 (slices) or 3 (patches).
        image_dims: dimensionality of the images (2 for PNG-like data, 3 for volumes).
        target_spacing: per image axis (mm); ``None`` keeps the case's own spacing on that axis (the slice
            axis of a 2D plan on volumes).
        slice_axis: for ``spatial_dims == 2`` on volumes, the image axis that slices are taken across.
        patch_size: 3D patch, or the 2D slice size (pad/crop) used for training.
        normalization: one :class:`ChannelNormalization` per channel.
        labels: label name -> value in the label files; class index k is the k-th smallest value.
        channel_names: one name per channel.
        crop_to_nonzero: crop every case to the bounding box of its non-zero voxels first.
        orientation: the voxel order every volume is brought into before anything else (``"RAS"``, see
            :mod:`attnseg.data.orientation`); ``target_spacing``, ``slice_axis`` and ``patch_size`` refer to
            its axes. None for 2-D images, and in version-1 plans (stored order used as is).
    """

    spatial_dims: int
    image_dims: int
    target_spacing: tuple[float | None, ...]
    slice_axis: int | None
    patch_size: tuple[int, ...]
    normalization: list[ChannelNormalization]
    labels: dict[str, int]
    channel_names: list[str]
    crop_to_nonzero: bool = True
    orientation: str | None = None
    version: int = field(default=PLAN_VERSION)

    def __post_init__(self) -> None:
        if self.spatial_dims not in (2, 3) or self.image_dims not in (2, 3):
            raise ConfigError(
                f"plan: spatial_dims and image_dims must be 2 or 3, got {self.spatial_dims}, {self.image_dims}"
            )
        if self.spatial_dims > self.image_dims:
            raise ConfigError("plan: a 3D network needs 3-D images")
        if len(self.target_spacing) != self.image_dims:
            raise ConfigError(f"plan: target_spacing needs {self.image_dims} values, got {self.target_spacing}")
        if self.spatial_dims == 2 and self.image_dims == 3 and self.slice_axis not in (0, 1, 2):
            raise ConfigError(f"plan: a 2D plan on volumes needs slice_axis 0, 1 or 2, got {self.slice_axis}")
        if len(self.patch_size) != self.spatial_dims:
            raise ConfigError(f"plan: patch_size needs {self.spatial_dims} values, got {self.patch_size}")
        if len(self.normalization) != len(self.channel_names):
            raise ConfigError("plan: one normalisation per channel is needed")
        if 0 not in self.labels.values():
            raise ConfigError(f"plan: the labels {self.labels} lack a background value 0")
        if self.orientation is not None:
            if self.image_dims != 3:
                raise ConfigError("plan: an orientation applies to volumes only")
            self.orientation = check_orientation_code(self.orientation)

    # ---- views --------------------------------------------------------------------------------
    @property
    def class_values(self) -> list[int]:
        """Label values in class-index order (ascending): ``class_values[k]`` is the value of class k."""
        return sorted(self.labels.values())

    @property
    def class_names(self) -> list[str]:
        by_value = {v: n for n, v in self.labels.items()}
        return [by_value[v] for v in self.class_values]

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    @property
    def num_channels(self) -> int:
        return len(self.channel_names)

    @property
    def in_plane_axes(self) -> tuple[int, ...]:
        """Image axes a 2D slice spans (all axes for 2-D images)."""
        if self.image_dims == 2 or self.slice_axis is None:
            return tuple(range(self.image_dims))
        return tuple(a for a in range(3) if a != self.slice_axis)

    # ---- JSON -------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["target_spacing"] = list(self.target_spacing)
        data["patch_size"] = list(self.patch_size)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Plan:
        data = dict(data)
        version = data.get("version", PLAN_VERSION)
        if version not in SUPPORTED_VERSIONS:
            raise ConfigError(
                f"plan version {version} is not supported (this attnseg reads versions "
                f"{', '.join(map(str, SUPPORTED_VERSIONS))})"
            )
        data["version"] = PLAN_VERSION  # version 1 lacks the orientation: None, the stored order, as it was
        try:
            data["normalization"] = [ChannelNormalization(**n) for n in data["normalization"]]
            data["target_spacing"] = tuple(None if s is None else float(s) for s in data["target_spacing"])
            data["patch_size"] = tuple(int(s) for s in data["patch_size"])
            data["labels"] = {str(k): int(v) for k, v in data["labels"].items()}
            return cls(**data)
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            raise ConfigError(f"plan: malformed ({type(error).__name__}: {error})") from error

    def save(self, path: str | Path, *, overwrite: bool = False) -> Path:
        """Write the plan as JSON, atomically; refuses to replace an existing file unless ``overwrite``."""
        return write_json(path, self.to_dict(), overwrite=overwrite)

    @classmethod
    def load(cls, path: str | Path) -> Plan:
        path = Path(path)
        data = read_json(path)
        try:
            return cls.from_dict(data)
        except ConfigError as error:
            raise DataError(f"{path}: {error}") from error


# ---------------------------------------------------------------------------------------------------
# Planning
# ---------------------------------------------------------------------------------------------------
def plan_dataset(
    dataset: Dataset | str | Path,
    spatial_dims: int = 2,
    *,
    fingerprint: Fingerprint | None = None,
    target_spacing: Sequence[float | None] | None = None,
    slice_axis: int | None = None,
    patch_size: Sequence[int] | None = None,
    normalization: Mapping[int, Scheme] | None = None,
    crop_to_nonzero: bool = True,
    max_patch_voxels: int | None = None,
    patch_multiple: int = PATCH_MULTIPLE,
) -> Plan:
    """Plan preprocessing for ``dataset`` (checked and fingerprinted unless ``fingerprint`` is given).

    Args:
        spatial_dims: 2 for a network on slices, 3 for one on patches.
        target_spacing: override the spacing (one value per image axis; ``None`` keeps an axis as is).
        slice_axis: 2D on volumes: the axis to slice across (default: the coarsest, ties -> the last,
            i.e. axial slices for the usual (x, y, z) scans).
        patch_size: override the 3D patch / 2D slice size.
        normalization: override the scheme of some channels, e.g. ``{0: "ct"}``.
        crop_to_nonzero: crop to the bounding box of non-zero voxels (nnU-Net always does).
        max_patch_voxels: cap on the automatic patch size (default 128^3 in 3D, 512^2 in 2D).
        patch_multiple: the automatic patch size is a multiple of this (16: four poolings); a network
            that pads its input to a larger multiple (the multi-scale guided network: 32) gets patches of
            real data instead of padding.
    """
    if spatial_dims not in (2, 3):
        raise ConfigError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
    if not isinstance(dataset, Dataset):
        dataset = load_dataset(dataset)
    fp = fingerprint if fingerprint is not None else fingerprint_dataset(dataset)
    image_dims = fp.spatial_dims
    if spatial_dims == 3 and image_dims == 2:
        raise ConfigError(f"{dataset.root}: a 3D plan needs volumes; this dataset holds 2-D images")
    labels, channel_names = _labels_and_channel_names(dataset, fp)
    spacing, axis = _spacing_and_slice_axis(fp, spatial_dims, target_spacing, slice_axis)
    if patch_size is None:
        budget = max_patch_voxels or MAX_PATCH_VOXELS[spatial_dims]
        patch = _patch_size(fp, spacing, axis, spatial_dims, budget, crop_to_nonzero, patch_multiple)
    else:
        patch = tuple(int(p) for p in patch_size)
    norms = [
        _normalization(fp, c, name, (normalization or {}).get(c), crop_to_nonzero)
        for c, name in enumerate(channel_names)
    ]
    return Plan(
        spatial_dims=spatial_dims,
        image_dims=image_dims,
        target_spacing=tuple(spacing),
        slice_axis=axis,
        patch_size=patch,
        normalization=norms,
        labels=dict(labels),
        channel_names=channel_names,
        crop_to_nonzero=crop_to_nonzero,
        orientation=CANONICAL if image_dims == 3 else None,
    )


def _labels_and_channel_names(dataset: Dataset, fp: Fingerprint) -> tuple[dict[str, int], list[str]]:
    """The dataset's labels and channel names; generic ones where it names none (``label_2``, ``channel_0``)."""
    labels = dataset.labels or {("background" if v == 0 else f"label_{v}"): v for v in fp.label_values()}
    channel_names = list(dataset.channel_names.values())
    if len(channel_names) != fp.num_channels:
        channel_names = [f"channel_{i}" for i in range(fp.num_channels)]
    return labels, channel_names


def _spacing_and_slice_axis(
    fp: Fingerprint, spatial_dims: int, target_spacing: Sequence[float | None] | None, slice_axis: int | None
) -> tuple[tuple[float | None, ...], int | None]:
    """The target spacing and, for 2D on volumes, the axis to slice across, which is not resampled
    (unless the caller gave the spacing)."""
    image_dims = fp.spatial_dims
    spacing = _target_spacing(fp) if target_spacing is None else _checked_spacing(target_spacing, image_dims)
    if spatial_dims != 2 or image_dims != 3:
        return spacing, None
    axis = slice_axis
    if axis is None:
        kept = [a for a, s in enumerate(spacing) if s is None]
        # an axis the caller left unresampled is the slicing axis; else the data's coarsest one
        axis = kept[0] if len(kept) == 1 else _slice_axis(np.median(fp.spacings(), axis=0))
    if axis not in (0, 1, 2):
        raise ConfigError(f"slice_axis must be 0, 1 or 2, got {slice_axis}")
    if target_spacing is None:
        spacing = tuple(None if a == axis else s for a, s in enumerate(spacing))
    return spacing, axis


def _checked_spacing(spacing: Sequence[float | None], image_dims: int) -> tuple[float | None, ...]:
    if len(spacing) != image_dims:
        raise ConfigError(f"target_spacing needs {image_dims} values, got {list(spacing)}")
    if any(s is not None and not s > 0 for s in spacing):
        raise ConfigError(f"target_spacing must be positive, got {list(spacing)}")
    return tuple(None if s is None else float(s) for s in spacing)


def _target_spacing(fp: Fingerprint) -> tuple[float, ...]:
    """Median spacing; for a coarse, short axis, nnU-Net's 10th percentile instead (finer, less blur)."""
    spacings = fp.spacings()
    target = np.median(spacings, axis=0)
    if len(target) == 3:
        sizes = np.median(fp.cropped_shapes() * spacings / target, axis=0)
        worst = int(np.argmax(target))
        others = [a for a in range(3) if a != worst]
        if target[worst] > ANISOTROPY_RATIO * max(target[others]) and sizes[worst] * ANISOTROPY_RATIO < min(
            sizes[others]
        ):
            finer = float(np.percentile(spacings[:, worst], 10))
            target[worst] = max(finer, float(max(target[others])) + 1e-5)
    return tuple(float(s) for s in target)


def _slice_axis(spacing: Sequence[float]) -> int:
    """The coarsest axis; among equals the last (axial for the usual (x, y, z) scans)."""
    coarsest = max(spacing)
    return max(a for a, s in enumerate(spacing) if math.isclose(s, coarsest, rel_tol=1e-3))


def _patch_size(
    fp: Fingerprint,
    spacing: Sequence[float | None],
    axis: int | None,
    spatial_dims: int,
    budget: int,
    crop_to_nonzero: bool,
    multiple: int = PATCH_MULTIPLE,
) -> tuple[int, ...]:
    shapes = fp.cropped_shapes() if crop_to_nonzero else fp.shapes()
    spacings = fp.spacings()
    target = np.array([spacings[:, a] if s is None else np.full(len(shapes), s) for a, s in enumerate(spacing)]).T
    resampled = shapes * spacings / target
    if axis is not None:
        # 2D: the largest slice, so that whole slices fit (validation and inference see every voxel)
        size = np.maximum(np.delete(resampled.max(axis=0), axis), 1.0)
    else:
        # 3D: nnU-Net's median shape; patches are drawn at random and inference slides a window
        size = np.maximum(np.median(resampled, axis=0), 1.0)
    while np.prod(size) > budget:
        size[np.argmax(size)] *= 0.9
    rounded = [max(multiple, math.ceil(s / multiple) * multiple) for s in size]
    while np.prod(rounded) > budget and max(rounded) > multiple:
        rounded[int(np.argmax(rounded))] -= multiple
    return tuple(rounded[:spatial_dims])


def scheme_for_channel(name: str) -> Scheme:
    """nnU-Net's channel-name convention (CT -> ct, noNorm -> none, rescale_to_0_1 -> rescale, zscore ->
    zscore); any other name (MR, T1, FLAIR, ...) -> robust_zscore."""
    key = name.strip().lower()
    if is_ct_channel(key):
        return "ct"
    if key in ("nonorm", "none"):
        return "none"
    if key in ("rescale_to_0_1", "rgb_to_0_1", "rescale"):
        return "rescale"
    if key == "zscore":
        return "zscore"
    return "robust_zscore"


def _normalization(
    fp: Fingerprint, channel: int, name: str, override: Scheme | None, crop_to_nonzero: bool
) -> ChannelNormalization:
    scheme = override or scheme_for_channel(name)
    if scheme == "ct":
        stats = fp.foreground_statistics(channel)
        if not stats:
            raise DataError(f"channel {name}: CT normalisation needs foreground voxels in the labels; none were found")
        return ChannelNormalization(
            "ct",
            mean=stats["mean"],
            std=stats["std"],
            lower=stats["percentile_00_5"],
            upper=stats["percentile_99_5"],
        )
    if scheme == "zscore":
        kept = np.prod(fp.cropped_shapes(), axis=1) / np.prod(fp.shapes(), axis=1)
        masked = crop_to_nonzero and float(np.median(kept)) < MASKED_NORM_FRACTION
        return ChannelNormalization("zscore", use_nonzero_mask=masked)
    return ChannelNormalization(scheme)
