"""Surface metrics on random masks against two references.

* MONAI's public metric functions (``compute_hausdorff_distance(percentile=95)``,
  ``compute_average_surface_distance(symmetric=True)``, ``compute_surface_dice``), whose definitions we
  adopt: this checks that we compose MONAI's building blocks the way MONAI does;
* a brute-force implementation written here from the definitions, sharing no code with MONAI or
  scipy's morphology: boundary voxels found by comparing each voxel with its face neighbours, and
  every pairwise distance from ``scipy.spatial.distance.cdist``.

medpy is not used as a reference: its ``hd95`` takes one percentile over both directions pooled and its
``assd`` averages the two directed means, so it computes different quantities (and it would add
SimpleITK as a test dependency).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.metrics import compute_average_surface_distance, compute_hausdorff_distance, compute_surface_dice
from scipy.ndimage import gaussian_filter
from scipy.spatial.distance import cdist

from attnseg.metrics import assd, hd95, nsd, surface_distances

# MONAI's own metric functions pass an argument MONAI itself has deprecated.
pytestmark = pytest.mark.filterwarnings("ignore:.*always_return_as_numpy:FutureWarning")


def random_mask(rng: np.random.Generator, shape: tuple[int, ...], smooth: float) -> np.ndarray:
    """Blobs (smoothed noise, thresholded) or, with ``smooth=0``, salt-and-pepper masks with many surfaces."""
    noise = rng.standard_normal(shape)
    if smooth:
        noise = gaussian_filter(noise, smooth)
    return noise > np.quantile(noise, rng.uniform(0.5, 0.85))


def boundary_brute_force(mask: np.ndarray) -> np.ndarray:
    """Voxels of ``mask`` with a face neighbour outside it (the outside of the array is background)."""
    padded = np.pad(mask, 1)
    inside = np.ones_like(mask)
    for axis in range(mask.ndim):
        for step in (-1, 1):
            neighbour = np.roll(padded, step, axis=axis)[tuple(slice(1, -1) for _ in range(mask.ndim))]
            inside &= neighbour
    return mask & ~inside


def brute_force(pred: np.ndarray, ref: np.ndarray, spacing: tuple[float, ...], tol: float) -> tuple[float, ...]:
    points_p = np.argwhere(boundary_brute_force(pred)) * np.asarray(spacing)
    points_r = np.argwhere(boundary_brute_force(ref)) * np.asarray(spacing)
    pairwise = cdist(points_p, points_r)
    p_to_r, r_to_p = pairwise.min(axis=1), pairwise.min(axis=0)
    both = np.concatenate([p_to_r, r_to_p])
    return (
        max(np.percentile(p_to_r, 95), np.percentile(r_to_p, 95)),
        both.mean(),
        np.count_nonzero(both <= tol) / both.size,
    )


def monai_reference(pred: np.ndarray, ref: np.ndarray, spacing: tuple[float, ...], tol: float) -> tuple[float, ...]:
    p = torch.from_numpy(pred)[None, None].float()
    r = torch.from_numpy(ref)[None, None].float()
    kwargs = {"include_background": True, "spacing": list(spacing)}
    return (
        float(compute_hausdorff_distance(p, r, percentile=95, **kwargs)),
        float(compute_average_surface_distance(p, r, symmetric=True, **kwargs)),
        float(compute_surface_dice(p, r, class_thresholds=[tol], **kwargs)),
    )


CASES = [
    ((24, 20, 12), (0.8, 0.8, 2.5), 1.5),
    ((24, 20, 12), (1.0, 1.0, 3.0), 0.0),
    ((18, 16, 14), (0.6, 1.3, 2.1), 1.7),
    ((40, 32), (0.5, 1.5), 1.2),
    ((40, 32), (1.0, 1.0), 2.0),
]


@pytest.mark.parametrize(("shape", "spacing", "tol"), CASES)
@pytest.mark.parametrize("smooth", [0.0, 2.0])
def test_matches_monai_and_brute_force_on_random_masks(
    shape: tuple[int, ...], spacing: tuple[float, ...], tol: float, smooth: float
) -> None:
    rng = np.random.default_rng(abs(hash((shape, spacing, smooth))) % 2**32)
    for _ in range(3):
        pred, ref = random_mask(rng, shape, smooth), random_mask(rng, shape, smooth)
        d = surface_distances(pred, ref, spacing)
        ours = (hd95(d), assd(d), nsd(d, tol))
        np.testing.assert_allclose(ours, monai_reference(pred, ref, spacing, tol), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(ours, brute_force(pred, ref, spacing, tol), rtol=1e-5, atol=1e-5)


def test_distances_are_directed_and_counted_per_boundary_voxel() -> None:
    """A 3x3 square inside a 5x5 one: the inner square has 8 boundary pixels, the outer 16."""
    ref = np.zeros((7, 7), bool)
    ref[1:6, 1:6] = True
    pred = np.zeros_like(ref)
    pred[2:5, 2:5] = True
    d = surface_distances(pred, ref, (1.0, 1.0))
    assert d.pred_to_ref.shape == (8,) and d.ref_to_pred.shape == (16,)
    # every inner boundary pixel touches the outer ring: 1 pixel away
    np.testing.assert_allclose(d.pred_to_ref, 1.0)
    # the outer ring: 12 pixels face the inner square (distance 1) and the 4 corners are √2 away
    assert sorted(d.ref_to_pred.round(6)) == [1.0] * 12 + [round(2**0.5, 6)] * 4


def test_empty_masks_do_not_reach_the_distance_code() -> None:
    with pytest.raises(ValueError, match="non-empty"):
        surface_distances(np.zeros((4, 4), bool), np.ones((4, 4), bool), (1.0, 1.0))
