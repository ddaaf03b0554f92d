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

import numpy as np
import torch
from monai import transforms as T

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
        result["image"] = _plain(out["image"]).float().contiguous()
        result["label"] = _plain(out["label"])[0].round().long().contiguous()
        return result


def build_augmentation(
    spatial_dims: int, config: AugmentConfig | None = None, *, seed: int | None = None
) -> Augmentation:
    """The default augmentation for 2D or 3D training (pass it as a sampler's ``transform``)."""
    augmentation = Augmentation(spatial_dims, config)
    if seed is not None:
        augmentation.set_random_state(seed)
    return augmentation


def _plain(tensor: Any) -> torch.Tensor:
    """MONAI returns MetaTensors; a trainer wants plain tensors."""
    return tensor.as_tensor() if hasattr(tensor, "as_tensor") else torch.as_tensor(tensor)


def _transforms(spatial_dims: int, c: AugmentConfig) -> list[Any]:
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
            out.append(T.RandFlipd(keys, prob=c.flip_prob, spatial_axis=axis))
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


def kmeans_1d(values: np.ndarray, k: int, iterations: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Lloyd's k-means on intensities, started evenly spaced between the 1st and 99th percentiles (robust to a
    mass of air at one value): (class of each value, 0 = darkest; the class means, ascending). Fewer distinct
    values than ``k`` give fewer classes."""
    values = np.asarray(values, dtype=np.float32).ravel()
    low, high = np.percentile(values, [1, 99])
    centres = np.unique(np.linspace(low, high, k, dtype=np.float32))
    for _ in range(iterations):
        edges = (centres[1:] + centres[:-1]) / 2  # centres ascending: nearest centre by thresholds
        classes = np.searchsorted(edges, values)
        counts = np.bincount(classes, minlength=len(centres))
        sums = np.bincount(classes, weights=values, minlength=len(centres))
        updated = np.where(counts > 0, sums / np.maximum(counts, 1), centres).astype(np.float32)
        if np.array_equal(updated, centres):
            break
        centres = np.sort(updated)
    return np.searchsorted((centres[1:] + centres[:-1]) / 2, values), centres


class RandTissueSynthesisd(T.RandomizableTransform):
    """Domain randomisation on ``{"image": (C, *S), "label": (1, *S)}``, labels and geometry untouched.

    With probability ``prob`` the image is replaced by a synthetic one: within each label region (the
    background and each foreground label) the intensities of channel 0 are clustered into tissue classes
    (``classes``: per foreground label, in the background; 1D k-means), each class gets a random intensity
    in [0, 1] and a random texture (Gaussian noise of ``noise`` times the range), except the background's
    darkest class (air and bone, which give no MR signal whatever the sequence), kept near 0; then a blur of
    random width (partial volume). Every channel gets its own intensities. The result is rescaled to the
    input's mean and spread over the voxels outside that darkest class, so it looks normalised. A network
    trained on it cannot rely on one contrast and must learn the shapes (SynthSeg, SynthStrip).

    Independently, with probability ``csf_prob``, foreground voxels within a random width (``csf_width``
    voxels, varying smoothly along the edge) of the label's edge become a class of their own, cerebrospinal
    fluid in a brain mask: a head with a wider CSF space than the training one (another age, atrophy), still
    inside the mask. In the real image the band takes a random intensity between the background's darkest
    class (air, bone) and the foreground's darkest, blended into the tissue inside it over a voxel.

    Items whose label holds more than ``max_foreground`` foreground classes are left alone: the contrast
    between those classes is part of what the label means (grey and white matter). The random draws are
    made first either way, so a seeded pipeline stays reproducible.
    """

    def __init__(
        self,
        prob: float = 0.5,
        classes: tuple[int, int] = (3, 3),
        blur: tuple[float, float] = (0.3, 1.2),
        noise: tuple[float, float] = (0.0, 0.08),
        csf_prob: float = 0.0,
        csf_width: tuple[float, float] = (1.0, 4.0),
        max_foreground: int = 1,
    ) -> None:
        super().__init__(prob=1.0)
        self.synth_prob, self.classes, self.blur, self.noise = prob, classes, blur, noise
        self.csf_prob, self.csf_width, self.max_foreground = csf_prob, csf_width, max_foreground

    def __call__(self, data: dict[str, Any]) -> dict[str, Any]:
        synth = self.R.random() < self.synth_prob
        csf = self.R.random() < self.csf_prob
        if not (synth or csf):
            return data
        label = np.rint(np.asarray(_plain(data["label"]))[0]).astype(np.int64)
        if len(np.unique(label[label > 0])) > self.max_foreground:
            return data
        image = np.asarray(_plain(data["image"]), dtype=np.float32)
        classes, means, air, dark = self._tissue_classes(image[0], label)
        out = image.copy()
        if csf and dark is not None:
            band = self._widened(label)
            # cerebrospinal fluid: a class of its own, between the darkest background class (air, bone) and the
            # darkest foreground tissue in the real image; a random intensity like every class in a synthetic one
            level = means[air] + self.R.uniform(0.0, 1.0) * (means[dark] - means[air])
            classes[band] = len(means)
            means = np.append(means, level)
            if not synth:
                from scipy import ndimage

                weight = np.maximum(ndimage.gaussian_filter(band.astype(np.float32), 0.7), band) * (label > 0)
                out = out * (1.0 - weight) + level * weight
        if synth:
            out = np.stack([self._draw(classes, len(means), air) for _ in range(image.shape[0])])
            keep = classes != air
            if keep.sum() > 1:
                for channel, drawn in zip(image, out, strict=True):
                    spread = max(float(drawn[keep].std()), 1e-6)
                    drawn -= drawn[keep].mean()
                    drawn *= float(channel[keep].std()) / spread
                    drawn += channel[keep].mean()
        result = dict(data)
        result["image"] = torch.from_numpy(np.ascontiguousarray(out, dtype=np.float32))
        return result

    def _tissue_classes(self, channel: np.ndarray, label: np.ndarray) -> tuple:
        """(class of each voxel, class means on channel 0, the background's darkest class, the first foreground
        label's darkest class or None)."""
        classes = np.zeros(label.shape, dtype=np.int64)
        means: list[np.ndarray] = []
        air, dark, count = 0, None, 0
        for value in np.unique(label).tolist():
            region = label == value
            region_classes, centres = kmeans_1d(channel[region], self.classes[1] if value == 0 else self.classes[0])
            if value == 0:
                air = count
            elif dark is None:
                dark = count
            classes[region] = region_classes + count
            means.append(centres)
            count += len(centres)
        return classes, np.concatenate(means), air, dark

    def _widened(self, label: torch.Tensor) -> torch.Tensor:
        """Foreground voxels within a random width of the background, on a random, smooth share of the edge."""
        from scipy import ndimage

        foreground = label > 0
        distance = ndimage.distance_transform_edt(foreground)
        lo, hi = self.csf_width
        # the width varies smoothly across the image: drawn on a coarse grid and interpolated
        coarse = self.R.uniform(0.0, 1.0, size=(3,) * label.ndim)
        field = ndimage.zoom(coarse, [n / 3 for n in label.shape], order=1, mode="nearest", grid_mode=True)
        width = lo + (hi - lo) * field[tuple(slice(0, n) for n in label.shape)]
        return foreground & (distance <= width)

    def _draw(self, classes: np.ndarray, count: int, air: int) -> np.ndarray:
        """One synthetic channel: a random intensity and texture per class, air near 0, blurred."""
        from scipy import ndimage

        levels = self.R.uniform(0.0, 1.0, count)
        levels[air] = self.R.uniform(0.0, 0.1)
        texture = self.R.uniform(*self.noise, count)
        values = levels[classes] + texture[classes] * self.R.standard_normal(classes.shape)
        return ndimage.gaussian_filter(values, self.R.uniform(*self.blur)).astype(np.float32)


def _symmetric(bounds: Sequence[float]) -> tuple[float, float]:
    """MONAI's scaling factors are offsets from 1: (0.75, 1.25) -> (-0.25, 0.25)."""
    lo, hi = bounds
    return (float(lo) - 1.0, float(hi) - 1.0)
