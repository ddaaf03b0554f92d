"""Data augmentation with MONAI transforms on ``{"image": (C, *S), "label": (*S)}`` items, 2D and 3D.

Spatial transforms (flips, rotation + scaling, elastic deformation) move image and label together, with
linear interpolation for the image and nearest neighbour for the label, so label values stay whole;
intensity transforms touch the image only: gamma, noise, contrast, brightness, and what another scanner
changes: a smooth bias field, blur, and a lower resolution (downsampled then upsampled, nnU-Net's
"simulate low resolution"). The defaults follow nnU-Net's probabilities where it has them
(rotation/scaling 0.2, gamma 0.3, noise 0.1, contrast and brightness 0.15, blur 0.2, low resolution 0.25,
mirroring 0.5 per axis); elastic deformation is off in nnU-Net and on at 0.1 here for 2D (cheap), off for
3D (slow on CPU); the bias field (MRI's receive-coil shading, absent from nnU-Net) is on at 0.3.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch
from monai import transforms as T

from attnseg.data.synthesis import RandTissueSynthesisd, plain_tensor
from attnseg.errors import ConfigError


@dataclass(frozen=True)
class AugmentConfig:
    """Probabilities and ranges; a probability of 0 leaves a transform out."""

    flip_prob: float = 0.5  # per spatial axis
    flip_axes: tuple[int, ...] | None = None  # None: every spatial axis
    affine_prob: float = 0.2  # rotation and scaling, one resampling
    rotate_degrees: float = 15.0  # +- about each axis (2D: the one in-plane axis)
    scale_range: tuple[float, float] = (0.85, 1.25)  # zoom factors
    elastic_prob: float | None = None  # None: 0.1 in 2D, 0 in 3D
    elastic_magnitude: tuple[float, float] = (1.0, 2.0)  # 2D: control-grid displacement (voxels)
    gamma_prob: float = 0.3
    gamma_range: tuple[float, float] = (0.7, 1.5)
    noise_prob: float = 0.1
    noise_std: float = 0.1
    contrast_prob: float = 0.15
    contrast_range: tuple[float, float] = (0.75, 1.25)
    brightness_prob: float = 0.15
    brightness_range: tuple[float, float] = (0.75, 1.25)
    bias_field_prob: float = 0.3
    bias_field_coefficients: tuple[float, float] = (0.0, 0.3)  # MONAI's polynomial coefficients (degree 3)
    blur_prob: float = 0.2
    blur_sigma: tuple[float, float] = (0.5, 1.0)  # voxels
    low_resolution_prob: float = 0.25
    low_resolution_zoom: tuple[float, float] = (0.5, 1.0)  # resolution kept, per axis
    image_mode: str = "bilinear"  # "nearest" makes image and label move identically (tests, masks as input)
    # Domain randomisation (SynthSeg/SynthStrip-style): the image's intensities are clustered into tissue
    # classes within each label region, and a new image is drawn with a random intensity per class.
    synth_prob: float = 0.0
    synth_classes: tuple[int, int] = (3, 3)  # classes within each foreground label, within the background
    synth_blur: tuple[float, float] = (0.3, 1.2)  # partial volume: Gaussian sigma (voxels)
    synth_noise: tuple[float, float] = (0.0, 0.08)  # within-class texture, fraction of the intensity range
    # Wider CSF (atrophy, another age): foreground tissue within a random distance of the label's edge
    # becomes the foreground's darkest class (in the synthetic image, or in the real one).
    csf_prob: float = 0.0
    csf_width: tuple[float, float] = (1.0, 4.0)  # voxels
    # Both leave alone items whose label holds more foreground classes than this: there the contrast between
    # the classes is part of what the label means (grey and white matter).
    synth_max_foreground: int = 1

    def without_intensity(self) -> AugmentConfig:
        """The spatial part only."""
        return replace(
            self,
            gamma_prob=0.0,
            noise_prob=0.0,
            contrast_prob=0.0,
            brightness_prob=0.0,
            bias_field_prob=0.0,
            blur_prob=0.0,
            low_resolution_prob=0.0,
            synth_prob=0.0,
            csf_prob=0.0,
        )


class Augmentation:
    """A seeded MONAI pipeline on item dicts; ``label`` is ``(*S)`` int64 in and out."""

    def __init__(self, spatial_dims: int, config: AugmentConfig | None = None) -> None:
        if spatial_dims not in (2, 3):
            raise ConfigError(f"augmentation needs spatial_dims 2 or 3, got {spatial_dims}")
        self.spatial_dims = spatial_dims
        self.config = config or AugmentConfig()
        self.pipeline = T.Compose(_transforms(spatial_dims, self.config))

    def set_random_state(self, seed: int | None = None) -> Augmentation:
        self.pipeline.set_random_state(seed=seed)
        return self

    def __call__(self, item: dict[str, Any]) -> dict[str, Any]:
        image = torch.as_tensor(item["image"], dtype=torch.float32)
        label = torch.as_tensor(item["label"])
        if image.ndim != self.spatial_dims + 1 or label.shape != image.shape[1:]:
            raise ConfigError(
                f"augmentation expects image (C, *S) and label (*S) for {self.spatial_dims}D, "
                f"got {tuple(image.shape)} and {tuple(label.shape)}"
            )
        out = self.pipeline({"image": image, "label": label[None].float()})
        result = dict(item)
        result["image"] = plain_tensor(out["image"]).float().contiguous()
        result["label"] = plain_tensor(out["label"])[0].round().long().contiguous()
        return result


def build_augmentation(
    spatial_dims: int, config: AugmentConfig | None = None, *, seed: int | None = None
) -> Augmentation:
    """The default augmentation for 2D or 3D training (pass it as a sampler's ``transform``)."""
    augmentation = Augmentation(spatial_dims, config)
    if seed is not None:
        augmentation.set_random_state(seed)
    return augmentation


def _transforms(spatial_dims: int, c: AugmentConfig) -> list[Any]:
    """The pipeline in order: deformations, tissue synthesis, mirroring, then what scanners change."""
    out = _deformations(spatial_dims, c)
    if c.synth_prob > 0 or c.csf_prob > 0:
        out.append(
            RandTissueSynthesisd(
                prob=c.synth_prob,
                classes=c.synth_classes,
                blur=c.synth_blur,
                noise=c.synth_noise,
                csf_prob=c.csf_prob,
                csf_width=c.csf_width,
                max_foreground=c.synth_max_foreground,
            )
        )
    if c.flip_prob > 0:
        for axis in c.flip_axes if c.flip_axes is not None else range(spatial_dims):
            out.append(T.RandFlipd(("image", "label"), prob=c.flip_prob, spatial_axis=axis))
    return out + _intensity_transforms(spatial_dims, c)


def _deformations(spatial_dims: int, c: AugmentConfig) -> list[Any]:
    """Rotation and scaling, and elastic deformation: image and label moved together."""
    keys = ("image", "label")
    modes = (c.image_mode, "nearest")
    out: list[Any] = []
    if c.affine_prob > 0:
        radians = math.radians(c.rotate_degrees)
        rotate = radians if spatial_dims == 2 else (radians, radians, radians)
        lo, hi = c.scale_range
        out.append(
            T.RandAffined(
                keys,
                prob=c.affine_prob,
                rotate_range=rotate,
                scale_range=[(lo - 1.0, hi - 1.0)] * spatial_dims,
                mode=modes,
                padding_mode="zeros",
            )
        )
    elastic = c.elastic_prob if c.elastic_prob is not None else (0.1 if spatial_dims == 2 else 0.0)
    if elastic > 0:
        if spatial_dims == 2:
            deform = T.Rand2DElasticd(
                keys, spacing=(16, 16), magnitude_range=c.elastic_magnitude, prob=1.0, mode=modes, padding_mode="zeros"
            )
        else:
            deform = T.Rand3DElasticd(
                keys, sigma_range=(5, 8), magnitude_range=(50, 150), prob=1.0, mode=modes, padding_mode="zeros"
            )
        # MONAI's elastic transforms resample through an identity grid even when their dice roll says no;
        # choosing between deform and identity ourselves skips that cost (80% of the 2D pipeline's time).
        out.append(T.OneOf([deform, T.Identityd(keys)], weights=[elastic, 1.0 - elastic]))
    return out


def _intensity_transforms(spatial_dims: int, c: AugmentConfig) -> list[Any]:
    """The image alone: another scanner's bias field, resolution and blur, then gamma, noise, contrast and
    brightness."""
    out: list[Any] = []
    if c.bias_field_prob > 0:
        out.append(T.RandBiasFieldd("image", coeff_range=c.bias_field_coefficients, prob=c.bias_field_prob))
    if c.low_resolution_prob > 0:
        out.append(
            T.RandSimulateLowResolutiond(
                "image",
                prob=c.low_resolution_prob,
                zoom_range=c.low_resolution_zoom,
                upsample_mode="bilinear" if spatial_dims == 2 else "trilinear",
            )
        )
    if c.blur_prob > 0:
        sigma = {f"sigma_{axis}": c.blur_sigma for axis in "xyz"[:spatial_dims]}
        out.append(T.RandGaussianSmoothd("image", prob=c.blur_prob, **sigma))
    if c.gamma_prob > 0:
        out.append(T.RandAdjustContrastd("image", prob=c.gamma_prob, gamma=c.gamma_range, retain_stats=True))
    if c.noise_prob > 0:
        out.append(T.RandGaussianNoised("image", prob=c.noise_prob, std=c.noise_std))
    if c.contrast_prob > 0:
        factor = _symmetric(c.contrast_range)
        out.append(T.RandScaleIntensityFixedMeand("image", factors=factor, prob=c.contrast_prob, preserve_range=True))
    if c.brightness_prob > 0:
        out.append(T.RandScaleIntensityd("image", factors=_symmetric(c.brightness_range), prob=c.brightness_prob))
    return out


def _symmetric(bounds: Sequence[float]) -> tuple[float, float]:
    """MONAI's scaling factors are offsets from 1: (0.75, 1.25) -> (-0.25, 0.25)."""
    lo, hi = bounds
    return (float(lo) - 1.0, float(hi) - 1.0)
