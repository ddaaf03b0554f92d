"""The transforms an attnseg MONAI Bundle runs: copied into the bundle as ``scripts/attnseg_transforms.py``.

This file imports numpy, torch and MONAI only, never attnseg: the bundle must run where attnseg is not
installed. It reproduces attnseg's preprocessing after MONAI's own transforms have loaded the image and
reoriented it (``Orientationd`` to RAS, as attnseg.data.orientation does): crop to the non-zero box,
normalise per channel (``robust_zscore``, attnseg's MR default, is not among MONAI's transforms, so it is
written here with numpy as attnseg writes it), resample linearly to the plan's spacing (MONAI's
``Resize``, half-voxel aligned as attnseg's). After the network (``SliceInferer`` for 2D models, MONAI's
Gaussian sliding window for 3D), ``Restored`` resamples the class probabilities back with ``Resize``,
pastes them into the full grid, takes the argmax, keeps the largest component of the classes training
chose (MONAI's ``KeepLargestConnectedComponent``), maps class indices to label values and undoes the
reorientation (MONAI's ``Orientation`` to the input's own axis codes).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor
from monai.inferers import sliding_window_inference
from monai.transforms import KeepLargestConnectedComponent, MapTransform, Orientation, Resize
from nibabel.orientations import aff2axcodes

PROPERTIES = "attnseg_properties"


def otsu_threshold(values: np.ndarray, bins: int = 256) -> float:
    """Otsu's threshold of a 256-bin histogram (attnseg.data.preprocess.otsu_threshold)."""
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


def robust_zscore(channel: np.ndarray, samples: int = 1_000_000) -> np.ndarray:
    """z-score with the statistics of the voxels above Otsu's threshold, brightest 0.5% clipped."""
    flat = channel.ravel()
    sample = flat[:: max(1, flat.size // samples)].astype(np.float64)
    tissue = sample[sample > otsu_threshold(sample)]
    if tissue.size < 2:
        tissue = sample
    top = float(np.percentile(tissue, 99.5))
    clipped = np.minimum(tissue, top)
    mean, std = float(clipped.mean()), max(float(clipped.std()), 1e-8)
    return ((np.minimum(channel, top) - mean) / std).astype(np.float32)


def normalize(array: np.ndarray, norms: Sequence[Mapping[str, Any]]) -> np.ndarray:
    """Each channel of ``(C, *S)`` as the plan's normalisation says (attnseg.data.preprocess.normalize)."""
    out = np.empty_like(array, dtype=np.float32)
    nonzero = np.any(array != 0, axis=0)
    for c, (channel, norm) in enumerate(zip(array, norms, strict=True)):
        scheme = norm["scheme"]
        if scheme == "ct":
            clipped = np.clip(channel, norm["lower"], norm["upper"])
            out[c] = (clipped - norm["mean"]) / max(float(norm["std"]), 1e-8)
        elif scheme == "zscore" and norm.get("use_nonzero_mask") and nonzero.any():
            values = channel[nonzero]
            out[c] = np.where(nonzero, (channel - values.mean()) / max(float(values.std()), 1e-8), 0.0)
        elif scheme == "zscore":
            out[c] = (channel - channel.mean()) / max(float(channel.std()), 1e-8)
        elif scheme == "robust_zscore":
            out[c] = robust_zscore(channel)
        elif scheme == "rescale":
            lo, hi = float(channel.min()), float(channel.max())
            out[c] = (channel - lo) / (hi - lo) if hi > lo else 0.0
        else:
            out[c] = channel
    return out


def nonzero_box(array: np.ndarray) -> list[tuple[int, int]]:
    """The bounding box of voxels non-zero in any channel; the whole grid when there are none."""
    mask = np.any(array != 0, axis=0)
    if not mask.any():
        return [(0, s) for s in mask.shape]
    box = []
    for axis in range(mask.ndim):
        hits = np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != axis)))
        box.append((int(hits[0]), int(hits[-1]) + 1))
    return box


def resampled_shape(shape: Sequence[int], spacing: Sequence[float], target: Sequence[float | None]) -> list[int]:
    """Voxels per axis at the target spacing (attnseg.data.preprocess.resampled_shape)."""
    out = []
    for n, s, t in zip(shape, spacing, target, strict=True):
        same = t is None or np.isclose(s, t, rtol=1e-6, atol=0)
        out.append(int(n) if same else max(1, round(n * s / t)))
    return out


def linear_resize(array: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """MONAI's Resize, (bi/tri)linear, half-voxel aligned, no anti-aliasing: attnseg's resampling."""
    if tuple(array.shape[1:]) == tuple(shape):
        return array
    mode = "bilinear" if len(shape) == 2 else "trilinear"
    resize = Resize(spatial_size=list(shape), mode=mode, align_corners=False, anti_aliasing=False)
    return torch.as_tensor(resize(array)).float()


class Preprocessd(MapTransform):
    """Crop to the non-zero box, normalise, resample to the plan's spacing; an image already reoriented
    by ``Orientationd``. What ``Restored`` needs to go back is kept under ``attnseg_properties``."""

    def __init__(
        self, keys: Sequence[str], normalization: Sequence[Mapping[str, Any]], target_spacing: Sequence
    ) -> None:
        super().__init__(keys)
        self.normalization = list(normalization)
        self.target_spacing = list(target_spacing)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        out = dict(data)
        for key in self.keys:
            image = out[key]
            affine = image.affine.numpy()
            spacing = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
            array = np.asarray(image.array if isinstance(image, MetaTensor) else image, dtype=np.float32)
            box = nonzero_box(array)
            array = array[(slice(None), *(slice(a, b) for a, b in box))]
            array = normalize(array, self.normalization)
            shape = resampled_shape(array.shape[1:], spacing, self.target_spacing)
            resampled = linear_resize(torch.from_numpy(np.ascontiguousarray(array)), shape)
            out[PROPERTIES] = {
                "shape": list(image.shape[1:]),
                "box": box,
                "affine": affine,
                "original_affine": np.asarray(image.meta.get("original_affine", affine)),
                "filename_or_obj": image.meta.get("filename_or_obj"),
            }
            out[key] = resampled
        return out


class SliceInferer:
    """Class probabilities (B, K, *S) of an image batch (B, C, *S): a 2D network on every slice along
    ``slice_axis`` (``batch_size`` at a time), a 3D one by Gaussian sliding window over ``patch_size``;
    softmax before blending, as attnseg.inference.volume."""

    def __init__(self, spatial_dims: int, slice_axis: int, patch_size: Sequence[int], batch_size: int = 4) -> None:
        self.spatial_dims, self.slice_axis = spatial_dims, slice_axis
        self.patch_size, self.batch_size = list(patch_size), batch_size

    def __call__(self, inputs: torch.Tensor, network: torch.nn.Module) -> torch.Tensor:
        def probabilities(x: torch.Tensor) -> torch.Tensor:
            return torch.softmax(network(x).float(), dim=1)

        with torch.no_grad():
            results = [self._one(image.float(), probabilities) for image in inputs]
        return torch.stack(results)

    def _one(self, image: torch.Tensor, probabilities: Any) -> torch.Tensor:
        image = torch.as_tensor(image)
        if image.dim() - 1 == self.spatial_dims:
            window = self.patch_size if self.spatial_dims == 3 else None
            if window is None:
                return probabilities(image[None])[0]
            return sliding_window_inference(
                image[None], window, self.batch_size, probabilities, overlap=0.5, mode="gaussian"
            )[0]
        slices = image.movedim(self.slice_axis + 1, 0)
        parts = [probabilities(slices[i : i + self.batch_size]) for i in range(0, slices.shape[0], self.batch_size)]
        return torch.cat(parts).movedim(0, self.slice_axis + 1)


class Restored(MapTransform):
    """Class probabilities on the network's grid -> a mask of label values on the input's own grid."""

    def __init__(self, keys: Sequence[str], class_values: Sequence[int], largest_component: Sequence[int] = ()) -> None:
        super().__init__(keys)
        self.class_values = np.asarray(class_values)
        self.largest = list(largest_component)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        out = dict(data)
        props = out[PROPERTIES]
        for key in self.keys:
            scores = torch.as_tensor(out[key]).float().cpu()
            box = props["box"]
            scores = linear_resize(scores, [b - a for a, b in box])
            full = torch.zeros((scores.shape[0], *props["shape"]))
            full[0] = 1.0
            full[(slice(None), *(slice(a, b) for a, b in box))] = scores
            classes = full.argmax(0, keepdim=True)
            if self.largest:
                keep = KeepLargestConnectedComponent(applied_labels=self.largest, is_onehot=False, connectivity=1)
                classes = torch.as_tensor(keep(classes))
            values = self.class_values[classes.numpy().astype(np.int64)]
            dtype = np.uint8 if values.min() >= 0 and values.max() <= 255 else np.int32
            mask = MetaTensor(torch.from_numpy(values.astype(dtype)), affine=torch.as_tensor(props["affine"]))
            codes = "".join(aff2axcodes(props["original_affine"]))
            mask = Orientation(axcodes=codes)(mask)
            mask.meta["filename_or_obj"] = props["filename_or_obj"]
            out[key] = mask
        return out
