"""Run a network over a whole (preprocessed) image: slice by slice for 2D models, by sliding window for
3D models, with optional mirroring test-time augmentation.

This is the numeric core shared by validation during training and by ``attnseg predict``; it works
on tensors only (no files, no preprocessing).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Sequence

import numpy as np
import torch
from monai.inferers import sliding_window_inference
from torch import nn

from attnseg.data.plan import Plan


def mirror_axes(spatial_dims: int) -> list[tuple[int, ...]]:
    """Every subset of the spatial axes of a (B, C, *S) batch: 4 flips in 2D, 8 in 3D (identity included)."""
    axes = range(2, 2 + spatial_dims)
    return [combo for r in range(spatial_dims + 1) for combo in itertools.combinations(axes, r)]


class _Probabilities(nn.Module):
    """Softmax of the model's logits, averaged over the copies mirrored along ``flips`` (each flipped back)."""

    def __init__(self, model: nn.Module, flips: Sequence[tuple[int, ...]]) -> None:
        super().__init__()
        self.model = model
        self.flips = list(flips)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        total = None
        for axes in self.flips:
            logits = self.model(x.flip(axes) if axes else x)
            probs = torch.softmax(logits.float(), dim=1)
            probs = probs.flip(axes) if axes else probs
            total = probs if total is None else total + probs
        return total / len(self.flips)


@torch.inference_mode()
def predict_volume(
    model: nn.Module,
    image: torch.Tensor,
    spatial_dims: int,
    slice_axis: int = 2,
    patch_size: Sequence[int] | None = None,
    batch_size: int = 8,
    overlap: float = 0.5,
    mirror: bool = False,
    device: str | torch.device = "cpu",
    autocast_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Class probabilities (K, *S), float32 on the CPU, for one image (C, *S).

    Args:
        model: a network in eval mode returning logits (B, K, *S').
        image: (C, X, Y) or (C, X, Y, Z), already preprocessed.
        spatial_dims: the network's (2 or 3). A 2D network on a 3D image runs on every slice along
            ``slice_axis`` (0, 1 or 2, spatial), ``batch_size`` slices at a time.
        patch_size: window size for sliding-window inference with Gaussian blending; None runs
            whole slices (2D) or the whole image (3D) in one pass.
        overlap: window overlap fraction.
        mirror: average over every mirrored copy of the input (4 in 2D, 8 in 3D).
        autocast_dtype: run the network under autocast with this dtype (CUDA mixed precision).
    """
    model.eval()
    return map_volume(
        _Probabilities(model, mirror_axes(spatial_dims) if mirror else [()]),
        image,
        spatial_dims,
        slice_axis=slice_axis,
        patch_size=patch_size,
        batch_size=batch_size,
        overlap=overlap,
        device=device,
        autocast_dtype=autocast_dtype,
    )


@torch.inference_mode()
def map_volume(
    function: Callable[[torch.Tensor], torch.Tensor],
    image: torch.Tensor,
    spatial_dims: int,
    slice_axis: int = 2,
    patch_size: Sequence[int] | None = None,
    batch_size: int = 8,
    overlap: float = 0.5,
    device: str | torch.device = "cpu",
    autocast_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Run ``function`` (a batch (B, C, *s) -> (B, M, *s), same spatial size) over a whole image (C, *S)
    the way ``predict_volume`` runs a network: slice by slice, or by Gaussian-blended sliding window.
    Returns (M, *S), float32 on the CPU. ``predict_volume`` is this with softmax probabilities; the
    attention maps of ``attnseg visualize`` are this with the maps as channels."""
    device = torch.device(device)
    image_dims = image.dim() - 1
    if image_dims == spatial_dims:
        return _run(function, image.unsqueeze(0), patch_size, batch_size, overlap, device, autocast_dtype)[0]
    if spatial_dims == 2 and image_dims == 3:
        slices = image.movedim(slice_axis + 1, 0)  # (N, C, H, W)
        parts = [
            _run(function, slices[start : start + batch_size], patch_size, batch_size, overlap, device, autocast_dtype)
            for start in range(0, slices.shape[0], batch_size)
        ]
        return torch.cat(parts, dim=0).movedim(0, slice_axis + 1)
    raise ValueError(f"a {spatial_dims}D network cannot run on a {image_dims}D image of shape {tuple(image.shape)}")


def predict_preprocessed(model: nn.Module, image: np.ndarray, plan: Plan, **options: object) -> torch.Tensor:
    """``predict_volume`` on an image already on ``plan``'s grid: 2D networks slice across the plan's
    axis, 3D networks run windows of the plan's patch size. ``options`` go to ``predict_volume``."""
    return predict_volume(model, *_on_plan(image, plan), **options)


def predict_variants(
    model: nn.Module, image: np.ndarray, plan: Plan, mirror: bool = False, **options: object
) -> Iterator[torch.Tensor]:
    """The probabilities (K, *S) of each mirrored copy of an image on ``plan``'s grid, flipped back, one
    at a time (only the identity without ``mirror``): for measuring how much the copies disagree without
    holding them all. Their mean is ``predict_preprocessed(mirror=True)``'s to rounding: sliding windows
    are blended linearly, so averaging the copies before or after blending is the same sum; the windows
    and their flips are the same. ``options`` as for ``predict_volume`` (but ``mirror``)."""
    model.eval()
    tensor, spatial_dims, slice_axis, patch_size = _on_plan(image, plan)
    for axes in mirror_axes(spatial_dims) if mirror else [()]:
        yield map_volume(
            _Probabilities(model, [axes]),
            tensor,
            spatial_dims,
            slice_axis=slice_axis,
            patch_size=patch_size,
            **options,
        )


def map_preprocessed(
    function: Callable[[torch.Tensor], torch.Tensor], image: np.ndarray, plan: Plan, **options: object
) -> torch.Tensor:
    """``map_volume`` on an image already on ``plan``'s grid, sliced or windowed as ``predict_preprocessed``."""
    return map_volume(function, *_on_plan(image, plan), **options)


def _on_plan(image: np.ndarray, plan: Plan) -> tuple[torch.Tensor, int, int, tuple[int, ...] | None]:
    """The image tensor and how to cover it: (image, spatial_dims, slice_axis, patch_size)."""
    return (
        torch.tensor(np.asarray(image)),  # a copy: preprocessed cases may be read-only memory maps
        plan.spatial_dims,
        plan.slice_axis if plan.slice_axis is not None else 0,
        tuple(plan.patch_size) if plan.spatial_dims == 3 else None,
    )


def _run(
    predictor: Callable[[torch.Tensor], torch.Tensor],
    batch: torch.Tensor,
    patch_size: Sequence[int] | None,
    batch_size: int,
    overlap: float,
    device: torch.device,
    autocast_dtype: torch.dtype | None,
) -> torch.Tensor:
    batch = batch.to(device, torch.float32)
    with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
        if patch_size is None:
            probs = predictor(batch)
        else:
            probs = sliding_window_inference(
                batch,
                roi_size=list(patch_size),
                sw_batch_size=batch_size,
                predictor=predictor,
                overlap=overlap,
                mode="gaussian",
            )
    return probs.float().cpu()
