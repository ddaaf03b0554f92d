"""Training samples as torch Datasets: 2D slices of volumes, or 3D patches, with foreground oversampling.

Items are dicts ``{"image": float32 (C, *S), "label": int64 (*S)}`` (plus ``"case"`` and ``"slice"`` /
``"start"`` with ``with_meta=True``).

Randomness is a pure function of ``(seed, epoch, index)``: item ``i`` of epoch ``e`` is the same whatever
the number of DataLoader workers and whichever worker draws it, so runs reproduce without per-worker
seeding. Call :meth:`set_epoch` before each epoch for fresh samples (with ``persistent_workers=True`` the
workers hold their own copy of the dataset; keep workers non-persistent, the default, or the same samples
come back every epoch). Augmentation transforms with a ``set_random_state`` method (MONAI's) are seeded
per item the same way.

Foreground oversampling (nnU-Net's ``oversample_foreground_percent``, default 1/3): that fraction of
random draws is centred on a voxel of a foreground class. We pick the class first (uniformly among the
classes present anywhere), then a case holding it, then one of its voxels; nnU-Net picks the case first.
Picking the class first means a class present in few cases, or in few voxels (a lesion below 0.1% of
the volume), is still drawn ``fraction / (K - 1)`` of the time.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypedDict

import numpy as np
import torch
from torch.utils.data import Dataset as TorchDataset

from attnseg.data.arrays import window
from attnseg.data.plan import Plan
from attnseg.data.preprocess import PreprocessedCase
from attnseg.errors import ConfigError, DataError

if TYPE_CHECKING:
    from typing_extensions import Unpack  # typing.Unpack from Python 3.11 on

Transform = Callable[[dict[str, Any]], dict[str, Any]]
DEFAULT_FOREGROUND_FRACTION = 1 / 3


class SamplingOptions(TypedDict, total=False):
    """The keywords :class:`SliceDataset` and :class:`PatchDataset` share: how they draw their items."""

    random: bool
    samples_per_epoch: int | None
    foreground_fraction: float
    seed: int
    transform: Transform | None
    with_meta: bool


class _Sampler(TorchDataset, ABC):
    """Shared machinery: windows on a case, foreground draws, per-item random generators; the defaults of
    the :class:`SamplingOptions` (see :class:`SliceDataset` for what each means)."""

    def __init__(
        self,
        cases: Sequence[PreprocessedCase],
        *,
        size: Sequence[int] | None,
        random: bool = True,
        samples_per_epoch: int | None = None,
        foreground_fraction: float = DEFAULT_FOREGROUND_FRACTION,
        seed: int = 0,
        transform: Transform | None = None,
        with_meta: bool = False,
    ) -> None:
        if not cases:
            raise DataError("no cases to sample from")
        for case in cases:
            if case.label is None:
                raise DataError(f"case '{case.id}' has no label; training samples need labels")
        if not 0.0 <= foreground_fraction <= 1.0:
            raise ConfigError(f"foreground_fraction must lie in [0, 1], got {foreground_fraction}")
        self.cases = list(cases)
        self.size = None if size is None else tuple(int(s) for s in size)
        self.random = random
        self.samples_per_epoch = samples_per_epoch
        self.foreground_fraction = foreground_fraction
        self.seed = int(seed)
        self.epoch = 0
        self.transform = transform
        self.with_meta = with_meta
        # class index -> cases (indices) holding it, for class-first foreground draws
        self.class_cases: dict[int, list[int]] = {}
        for i, case in enumerate(self.cases):
            for k, locations in case.class_locations.items():
                if len(locations):
                    self.class_cases.setdefault(int(k), []).append(i)

    def set_epoch(self, epoch: int) -> None:
        """Draw a fresh set of samples for ``epoch`` (deterministic given the seed)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        if self.random:
            return self.samples_per_epoch or self._pass_length()
        return self._pass_length()

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < len(self):
            raise IndexError(index)
        return self._item(index, self._rng(index) if self.random else None)

    @abstractmethod
    def _pass_length(self) -> int:
        """Items in one ordered pass (``random=False``): slices, or cases."""

    @abstractmethod
    def _item(self, index: int, rng: np.random.Generator | None) -> dict[str, Any]:
        """Item ``index``: drawn with ``rng``, or (None) the ``index``-th of the ordered pass."""

    def _rng(self, index: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, self.epoch, index])

    def _foreground_voxel(self, rng: np.random.Generator) -> tuple[int, np.ndarray] | None:
        if not self.class_cases or rng.random() >= self.foreground_fraction:
            return None
        k = sorted(self.class_cases)[rng.integers(len(self.class_cases))]
        holders = self.class_cases[k]
        case_index = holders[rng.integers(len(holders))]
        locations = self.cases[case_index].class_locations[k]
        return case_index, np.asarray(locations[rng.integers(len(locations))])

    def _start(
        self, shape: Sequence[int], center: np.ndarray | None, rng: np.random.Generator | None
    ) -> tuple[int, ...]:
        """Window start for ``self.size`` on ``shape``: around ``center``, random, or centred (eval)."""
        assert self.size is not None
        start = []
        for axis, (dim, size) in enumerate(zip(shape, self.size, strict=True)):
            slack = dim - size
            if center is not None:
                # centre on the voxel, but stay inside the array where it is big enough (nnU-Net's choice)
                s = int(center[axis]) - size // 2
                s = min(max(s, 0), slack) if slack >= 0 else s
                s = min(s, int(center[axis]))  # the voxel is always inside the window
                s = max(s, int(center[axis]) - size + 1)
            elif rng is not None:
                s = int(rng.integers(0, slack + 1)) if slack >= 0 else -int(rng.integers(0, -slack + 1))
            else:
                s = slack // 2 if slack >= 0 else -((-slack) // 2)
            start.append(s)
        return tuple(start)

    def _finish(self, image: np.ndarray, label: np.ndarray, rng: np.random.Generator | None) -> dict[str, Any]:
        item = {
            "image": torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32)),
            "label": torch.from_numpy(np.ascontiguousarray(label).astype(np.int64)),
        }
        if self.transform is not None:
            if rng is not None and hasattr(self.transform, "set_random_state"):
                self.transform.set_random_state(seed=int(rng.integers(2**31 - 1)))
            item = self.transform(item)
        return item


class SliceDataset(_Sampler):
    """2D slices across ``axis`` of preprocessed volumes (or whole 2-D images when ``axis`` is None).

    Args:
        cases: labelled :class:`PreprocessedCase` objects (from one side of a split only).
        axis: image axis to slice across (the plan's ``slice_axis``); None for 2-D images.
        slice_size: pad/crop every slice to this size (needed to batch slices of different cases);
            None keeps whole slices.
        random: True (training): ``samples_per_epoch`` random draws with foreground oversampling and
            random windows; False (validation): every slice of every case once, centre window, in order.
        samples_per_epoch: random draws per epoch (default: the number of slices).
        foreground_fraction: share of random draws centred on a foreground voxel.
        seed: base of the per-item random generators.
        transform: applied to each item dict (e.g. :func:`attnseg.data.augment.build_augmentation`).
        with_meta: add ``"case"`` (id) and ``"slice"`` (index along ``axis``) to each item.
    """

    def __init__(
        self,
        cases: Sequence[PreprocessedCase],
        *,
        axis: int | None,
        slice_size: Sequence[int] | None = None,
        **sampling: Unpack[SamplingOptions],
    ) -> None:
        super().__init__(cases, size=slice_size, **sampling)
        ndim = self.cases[0].image.ndim - 1
        if axis is None and ndim != 2:
            raise ConfigError(f"slicing {ndim}-D volumes needs an axis (the plan's slice_axis)")
        if axis is not None and not 0 <= axis < ndim:
            raise ConfigError(f"slice axis {axis} does not exist in {ndim}-D volumes")
        if self.size is not None and len(self.size) != 2:
            raise ConfigError(f"slice_size needs 2 numbers, got {self.size}")
        self.axis = axis
        self.slices = [
            (i, s) for i, case in enumerate(self.cases) for s in range(1 if axis is None else case.spatial_shape[axis])
        ]

    @classmethod
    def from_plan(cls, cases: Sequence[PreprocessedCase], plan: Plan, **options: Any) -> SliceDataset:
        """Slices across ``plan.slice_axis``, padded/cropped to ``plan.patch_size`` unless overridden."""
        if plan.spatial_dims != 2:
            raise ConfigError("SliceDataset needs a 2D plan")
        options.setdefault("slice_size", plan.patch_size)
        return cls(cases, axis=plan.slice_axis, **options)

    def _pass_length(self) -> int:
        return len(self.slices)

    def _item(self, index: int, rng: np.random.Generator | None) -> dict[str, Any]:
        center = None
        if rng is not None:
            drawn = self._foreground_voxel(rng)
            if drawn is not None:
                case_index, voxel = drawn
                position = 0 if self.axis is None else int(voxel[self.axis])
                center = voxel if self.axis is None else np.delete(voxel, self.axis)
            else:
                case_index, position = self.slices[rng.integers(len(self.slices))]
        else:
            case_index, position = self.slices[index]
        case = self.cases[case_index]
        image, label = self._slice(case, position)
        if self.size is not None:
            start = self._start(label.shape, center, rng)
            image, label = window(image, start, self.size), window(label, start, self.size)
        item = self._finish(image, label, rng)
        if self.with_meta:
            item["case"], item["slice"] = case.id, position
        return item

    def _slice(self, case: PreprocessedCase, position: int) -> tuple[np.ndarray, np.ndarray]:
        assert case.label is not None
        if self.axis is None:
            return np.asarray(case.image), np.asarray(case.label)
        image = np.take(case.image, position, axis=self.axis + 1)
        label = np.take(case.label, position, axis=self.axis)
        return image, label


class PatchDataset(_Sampler):
    """Random 3D (or 2D) patches of ``patch_size`` from preprocessed cases, with foreground oversampling.

    Each item is one draw: a random case and window, or (``foreground_fraction`` of the time) a window
    around a voxel of a foreground class. Volumes smaller than the patch are zero-padded. ``random=False``
    gives one centred patch per case (a fixed, cheap validation set).
    """

    def __init__(
        self,
        cases: Sequence[PreprocessedCase],
        patch_size: Sequence[int],
        **sampling: Unpack[SamplingOptions],
    ) -> None:
        super().__init__(cases, size=patch_size, **sampling)
        ndim = self.cases[0].image.ndim - 1
        if self.size is None or len(self.size) != ndim:
            raise ConfigError(f"patch_size needs {ndim} numbers for {ndim}-D cases, got {patch_size}")

    @classmethod
    def from_plan(cls, cases: Sequence[PreprocessedCase], plan: Plan, **options: Any) -> PatchDataset:
        if plan.spatial_dims != 3:
            raise ConfigError("PatchDataset.from_plan needs a 3D plan")
        return cls(cases, options.pop("patch_size", plan.patch_size), **options)

    def _pass_length(self) -> int:
        return len(self.cases)

    def _item(self, index: int, rng: np.random.Generator | None) -> dict[str, Any]:
        center = None
        if rng is not None:
            drawn = self._foreground_voxel(rng)
            if drawn is not None:
                case_index, center = drawn
            else:
                case_index = int(rng.integers(len(self.cases)))
        else:
            case_index = index
        case = self.cases[case_index]
        assert case.label is not None and self.size is not None
        start = self._start(case.spatial_shape, center, rng)
        item = self._finish(window(case.image, start, self.size), window(case.label, start, self.size), rng)
        if self.with_meta:
            item["case"], item["start"] = case.id, torch.tensor(start)
        return item


def split_cases(
    cases: Sequence[PreprocessedCase], split: dict[str, list[str]]
) -> tuple[list[PreprocessedCase], list[PreprocessedCase]]:
    """Training and validation cases of one fold; every id in the split must be among ``cases``."""
    by_id = {c.id: c for c in cases}
    missing = sorted((set(split["train"]) | set(split["val"])) - set(by_id))
    if missing:
        raise DataError(f"the split names cases that were not preprocessed: {missing[:5]}")
    overlap = set(split["train"]) & set(split["val"])
    if overlap:
        raise DataError(f"cases in both train and val: {sorted(overlap)[:5]}")
    return [by_id[i] for i in split["train"]], [by_id[i] for i in split["val"]]
