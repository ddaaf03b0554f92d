"""Where, in the patient, a mask falls short of a reference or reaches beyond it: the boundary offset side by
side, and the pieces of the reference a mask misses whole.

The boundary offset (:mod:`attnseg.metrics.surface`) is one number per class: it cannot tell a uniform shift
(another label convention all round) from a mask that is right on most sides and far off on one (a cut
skull base, a lost temporal pole). Here the reference's surface is split by the side of the patient it faces:

* every surface voxel of the reference (MONAI's edges, as for the other surface metrics) has a distance to
  the mask's surface in mm, + where the mask reaches beyond it (the voxel lies inside the mask), - where the
  mask stops short of it: the reference's half of the boundary offset;
* it faces the side its outward normal points along most (the gradient of the reference smoothed over
  ``NORMAL_SMOOTHING_MM``): left or right, posterior or anterior, inferior or superior;
* per side: the number of those surface voxels, the mean and median distance, and the share of them the
  mask does not reach (surface voxels of the reference outside the mask).

**Pieces missed whole**: on each axial slice, the reference's connected pieces of at least ``PIECE_MIN_MM2``
of which the mask covers less than ``PIECE_MISSED_BELOW`` (a temporal lobe at the skull base, which an axial
slice cuts apart from the rest of the brain), with the height of their slice above the reference's lowest.

The arrays must be in RAS voxel order (axis 0 towards the patient's right, 1 anterior, 2 superior), which
:func:`attnseg.data.orientation.reorientation` gives any scan without resampling; for an oblique scan the
direction of its voxel axes turns the normals into the patient's axes (the axial pieces are cut along its
nearest voxel axis). Worked example, and what it showed on two real heads: docs/generalisation.md
("Side by side").
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from monai.metrics.utils import get_mask_edges
from scipy import ndimage

from attnseg.metrics.surface import bounding_box

SIDES = ("left", "right", "posterior", "anterior", "inferior", "superior")  # - and + along the RAS axes
NORMAL_SMOOTHING_MM = 3.0
PIECE_MIN_MM2 = 20.0
PIECE_MISSED_BELOW = 0.1


@dataclass(frozen=True)
class SideOffset:
    side: str
    surface_voxels: int  # of the reference, facing this side
    mean_mm: float  # + where the mask reaches beyond the reference, - where it stops short
    median_mm: float
    unreached: float  # share of this side's surface voxels of the reference that lie outside the mask


@dataclass(frozen=True)
class MissedPiece:
    height_mm: float  # of its axial slice above the reference's lowest slice
    area_mm2: float
    covered: float  # the share of it inside the mask


def side_offsets(
    pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float], axes: np.ndarray | None = None
) -> list[SideOffset]:
    """The reference's surface split by the side of the patient it faces, with the mask's signed distance
    on each side (only the sides it has). ``pred``, ``ref``: non-empty 3-D masks in RAS order. ``axes``: the
    unit direction of each voxel axis in RAS world coordinates, as columns (an oblique scan's direction
    matrix, after reorientation; default: the identity), so that a tilted scan's normals are turned into the
    patient's axes before a side is chosen."""
    pred, ref, spacing = _check(pred, ref, spacing)
    # the masks' box, with room for the smoothing of the normals: a whole-body CT costs what its masks need
    box = _padded_box(pred | ref, [int(np.ceil(4 * NORMAL_SMOOTHING_MM / s)) + 1 for s in spacing])
    pred, ref = pred[box], ref[box]
    pred_edges, edges = (np.asarray(e, dtype=bool) for e in get_mask_edges(pred, ref, crop=False))
    reached = pred[edges]
    to_pred_surface = ndimage.distance_transform_edt(~pred_edges, sampling=spacing)[edges]
    distance = np.where(reached, to_pred_surface, -to_pred_surface)
    side_of_edge = _facing(ref, spacing, edges, np.eye(3) if axes is None else np.asarray(axes, dtype=float))
    out = []
    for k, side in enumerate(SIDES):
        on_side = side_of_edge == k
        if on_side.any():
            out.append(
                SideOffset(
                    side=side,
                    surface_voxels=int(on_side.sum()),
                    mean_mm=float(distance[on_side].mean()),
                    median_mm=float(np.median(distance[on_side])),
                    unreached=float(1.0 - reached[on_side].mean()),
                )
            )
    return out


def missed_pieces(pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float]) -> tuple[int, list[MissedPiece]]:
    """How many pieces of at least PIECE_MIN_MM2 the reference has on its axial slices (RAS axis 2), and those
    the mask misses whole (covers less than PIECE_MISSED_BELOW of), from the bottom up."""
    pred, ref, spacing = _check(pred, ref, spacing, empty_prediction=True)
    pixel = spacing[0] * spacing[1]
    slices = np.flatnonzero(ref.any(axis=(0, 1)))
    pieces, missed = 0, []
    for z in slices:
        labels, count = ndimage.label(ref[:, :, z])
        sizes = np.bincount(labels.ravel(), minlength=count + 1)
        covered = np.bincount(labels[pred[:, :, z]], minlength=count + 1)
        for k in range(1, count + 1):
            if sizes[k] * pixel < PIECE_MIN_MM2:
                continue
            pieces += 1
            if covered[k] < PIECE_MISSED_BELOW * sizes[k]:
                missed.append(MissedPiece((z - slices[0]) * spacing[2], sizes[k] * pixel, covered[k] / sizes[k]))
    return pieces, missed


def missed_by_quarter(pred: np.ndarray, ref: np.ndarray, image: np.ndarray) -> list[float]:
    """Of the reference's voxels the mask misses, the share in each quarter of the image's intensities inside
    the reference, darkest first (a rim of CSF on a T1 scan: the darkest quarter; a lost lobe: all four)."""
    pred, ref = np.asarray(pred, dtype=bool), np.asarray(ref, dtype=bool)
    bounds = np.quantile(image[ref], [0.25, 0.5, 0.75])
    quarter = np.searchsorted(bounds, image[ref & ~pred], side="right")
    return [float(np.mean(quarter == q)) if quarter.size else 0.0 for q in range(4)]


def _facing(ref: np.ndarray, spacing: tuple[float, ...], where: np.ndarray, axes: np.ndarray) -> np.ndarray:
    """The index into SIDES of the side each voxel ``where`` faces: the RAS axis of the reference's outward
    normal's largest component (in mm, turned into the patient's axes by ``axes``), and its sign. The
    gradient is taken at those voxels only (central differences, one-sided at the array's edge, as
    numpy.gradient), not over the whole grid."""
    # outside the grid counts as background, as for the edges
    smooth = ndimage.gaussian_filter(
        ref.astype(np.float32), [NORMAL_SMOOTHING_MM / s for s in spacing], mode="constant"
    )
    index = np.nonzero(where)
    outward = np.empty((len(index[0]), 3), dtype=np.float64)
    for axis, (size, step) in enumerate(zip(ref.shape, spacing, strict=True)):
        low, high = list(index), list(index)
        low[axis], high[axis] = np.maximum(index[axis] - 1, 0), np.minimum(index[axis] + 1, size - 1)
        outward[:, axis] = -(smooth[tuple(high)] - smooth[tuple(low)]) / ((high[axis] - low[axis]) * step)
    outward = outward @ axes.T  # each row from voxel axes to RAS world axes
    axis = np.abs(outward).argmax(axis=1)
    return 2 * axis + (outward[np.arange(len(axis)), axis] > 0)


def _padded_box(mask: np.ndarray, pad: Sequence[int]) -> tuple[slice, ...]:
    """The box of a non-empty mask grown by ``pad`` voxels per axis, within the array."""
    return tuple(
        slice(max(b.start - margin, 0), min(b.stop + margin, size))
        for b, margin, size in zip(bounding_box(mask), pad, mask.shape, strict=True)
    )


def _check(
    pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float], empty_prediction: bool = False
) -> tuple[np.ndarray, np.ndarray, tuple[float, ...]]:
    pred, ref = np.asarray(pred, dtype=bool), np.asarray(ref, dtype=bool)
    if pred.shape != ref.shape or pred.ndim != 3 or len(spacing) != 3:
        raise ValueError(f"two 3-D masks of one shape and their spacing, got {pred.shape}, {ref.shape}, {spacing}")
    if not ref.any() or not (empty_prediction or pred.any()):
        raise ValueError("an empty reference has no sides, and an empty mask no surface to measure from")
    return pred, ref, tuple(float(s) for s in spacing)
