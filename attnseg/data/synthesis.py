"""Domain randomisation for augmentation (SynthSeg, Billot et al. 2023; SynthStrip, Hoopes et al. 2022):
images synthesised from the tissue classes of a real one, so that a network learns shapes rather than one
contrast. Off by default (``data.augmentation.synth_prob``); docs/generalisation.md has what it did on real
heads."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from monai import transforms as T


def plain_tensor(tensor: Any) -> torch.Tensor:
    """MONAI returns MetaTensors; a trainer wants plain tensors."""
    return tensor.as_tensor() if hasattr(tensor, "as_tensor") else torch.as_tensor(tensor)


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
        label = np.rint(np.asarray(plain_tensor(data["label"]))[0]).astype(np.int64)
        if len(np.unique(label[label > 0])) > self.max_foreground:
            return data
        image = np.asarray(plain_tensor(data["image"]), dtype=np.float32)
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
