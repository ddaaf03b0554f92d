"""Surface-distance metrics (HD95, ASSD, NSD) with physical spacing, on MONAI's surface definition.

Surface definition, the same for all three metrics:

* the **surface** of a mask is its boundary voxels: the voxels of the mask that have at least one
  face neighbour (6-connectivity in 3D, 4 in 2D) outside it, i.e. ``mask XOR erode(mask)`` with the
  cross-shaped structuring element, the outside of the image counting as background
  (``monai.metrics.utils.get_mask_edges``);
* the **distance** of a surface voxel to the other mask is the Euclidean distance in mm, between voxel
  centres scaled by the spacing, to the nearest surface voxel of the other mask
  (``monai.metrics.utils.get_surface_distance`` with ``spacing=``).

This gives two sets of distances, D(P→R) over the prediction's surface voxels and D(R→P) over the
reference's, from which, as MONAI's ``compute_hausdorff_distance(percentile=95)``,
``compute_average_surface_distance(symmetric=True)`` and ``compute_surface_dice(use_subvoxels=False)``
define them:

* HD95 = max(P95(D(P→R)), P95(D(R→P))), the 95th percentiles with linear interpolation (as
  DeepMind's surface-distance library; medpy instead takes one percentile over both sets pooled);
* ASSD = mean of D(P→R) ∪ D(R→P), every surface voxel weighing the same (Heimann et al. 2009; medpy
  instead averages the two directed means);
* NSD at tolerance τ mm = (#{d ∈ D(P→R): d ≤ τ} + #{d ∈ D(R→P): d ≤ τ}) / (|D(P→R)| + |D(R→P)|)
  (Nikolov et al. 2021, counted over boundary voxels rather than weighted by surface-element area);
* boundary offset = the mean of the same distances with a sign: positive where the prediction lies outside
  the reference (a prediction surface voxel outside the reference, or a reference surface voxel inside the
  prediction), negative where it falls short. The mean signed surface distance of shape analysis and
  radiotherapy contouring: a mask grown uniformly by k mm scores +k, one shrunk by k mm scores -k, and
  errors in both directions cancel, so it tells a systematic shift (another label convention: a brain mask
  that leaves out the CSF rim scores about -3 mm against one that includes it) from scattered misses.

The distances are computed once per mask pair and shared by the three metrics. Empty masks never reach
this module: see :mod:`attnseg.metrics.binary` for what the metrics are then.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from monai.metrics.utils import get_mask_edges, get_surface_distance

HD_PERCENTILE = 95.0
# MONAI returns float32 distances; a distance equal to the tolerance must still count as within it.
_TOLERANCE_SLACK = 1e-6


@dataclass(frozen=True)
class SurfaceDistances:
    """Distances in mm from each surface voxel of the prediction to the reference's surface, and back."""

    pred_to_ref: np.ndarray
    ref_to_pred: np.ndarray
    pred_outside_ref: np.ndarray  # per prediction surface voxel (the order of pred_to_ref): not in the reference
    ref_inside_pred: np.ndarray  # per reference surface voxel: in the prediction

    @property
    def both(self) -> np.ndarray:
        return np.concatenate([self.pred_to_ref, self.ref_to_pred])


def surface_distances(pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float]) -> SurfaceDistances:
    """Symmetric surface distances between two non-empty boolean masks, in mm.

    Args:
        pred, ref: boolean masks of the same shape, 2D or 3D, each with at least one voxel set.
        spacing: voxel size in mm along each array axis.
    """
    if not pred.any() or not ref.any():
        raise ValueError("surface_distances needs two non-empty masks; the empty-mask policy lives in binary_metrics")
    # MONAI's crop=True, done here so that the masks stay aligned with their edges: the box of both masks and
    # a background margin of one voxel (outside the image counts as background)
    box = bounding_box(pred | ref)
    pred, ref = np.pad(pred[box], 1), np.pad(ref[box], 1)
    edges_pred, edges_ref = get_mask_edges(pred, ref, crop=False)
    edges_pred, edges_ref = np.asarray(edges_pred, dtype=bool), np.asarray(edges_ref, dtype=bool)
    spacing = [float(s) for s in spacing]
    pred_to_ref = get_surface_distance(edges_pred, edges_ref, distance_metric="euclidean", spacing=spacing)
    ref_to_pred = get_surface_distance(edges_ref, edges_pred, distance_metric="euclidean", spacing=spacing)
    return SurfaceDistances(
        pred_to_ref=np.asarray(pred_to_ref, dtype=np.float64),
        ref_to_pred=np.asarray(ref_to_pred, dtype=np.float64),
        pred_outside_ref=~ref[edges_pred],  # boolean indexing in C order, as get_surface_distance's
        ref_inside_pred=pred[edges_ref],
    )


def bounding_box(mask: np.ndarray) -> tuple[slice, ...]:
    """The smallest box holding every voxel of a non-empty mask, from one projection per axis (no index
    arrays of all its voxels: a body mask on a CT has tens of millions)."""
    box = []
    for axis in range(mask.ndim):
        hits = np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != axis)))
        box.append(slice(int(hits[0]), int(hits[-1]) + 1))
    return tuple(box)


def hd95(d: SurfaceDistances, percentile: float = HD_PERCENTILE) -> float:
    """Robust Hausdorff distance: the larger of the two directed ``percentile``-th percentiles, in mm."""
    return float(max(np.percentile(d.pred_to_ref, percentile), np.percentile(d.ref_to_pred, percentile)))


def assd(d: SurfaceDistances) -> float:
    """Average symmetric surface distance: the mean over both surfaces' voxels, in mm."""
    return float(d.both.mean())


def boundary_offset(d: SurfaceDistances) -> float:
    """Mean signed surface distance over both surfaces' voxels, in mm: > 0 where the prediction lies outside
    the reference, < 0 where it falls short (see the module's docstring)."""
    from_pred = np.where(d.pred_outside_ref, d.pred_to_ref, -d.pred_to_ref)
    from_ref = np.where(d.ref_inside_pred, d.ref_to_pred, -d.ref_to_pred)
    return float(np.concatenate([from_pred, from_ref]).mean())


def nsd(d: SurfaceDistances, tolerance_mm: float) -> float:
    """Normalised surface Dice: the fraction of both surfaces' voxels within ``tolerance_mm`` of the other."""
    both = d.both
    return float(np.count_nonzero(both <= tolerance_mm * (1 + _TOLERANCE_SLACK)) / both.size)
