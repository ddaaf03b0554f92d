"""Where, in the patient, a mask falls short of or goes beyond a reference: the boundary offset side by side.

``attnseg evaluate`` gives one boundary offset per class (the mean signed surface distance, mm; < 0 where the
mask lies inside the reference). One number cannot tell a uniform shift (another label convention everywhere)
from a mask that is right on most sides and far off on one (a cut skull base, a lost temporal pole). This
script splits the same signed distances by the side of the patient the reference's surface faces:

    python -m benchmarks.mask_sides PREDICTION REFERENCE [--image SCAN]

* for every surface voxel of the reference (MONAI's edges, as the metrics use): its distance to the mask's
  surface in mm, + where the mask reaches beyond it, - where the mask stops short of it (the reference's half
  of attnseg's boundary offset);
* the side it faces: the outward normal of the reference there (the gradient of the reference smoothed over
  a few mm), in the patient's axes (the volumes are reoriented to RAS first, nothing resampled; an oblique
  scan counts its nearest axes), the side being the axis the normal points along most;
* per side: the number of surface voxels, the mean and the median signed distance, and the share of the
  reference's voxels within 10 mm of that side's surface that the mask misses;
* the pieces of the reference the mask misses whole: on each axial slice, the reference's connected pieces
  of at least 20 mm² of which the mask covers less than a tenth (a temporal lobe at the skull base, where an
  axial slice cuts it apart from the rest of the brain), with their height above the reference's lowest
  slice.

With ``--image`` it also says what the missed voxels look like: which quarter of the reference's own
intensities they fall in (a rim of CSF has the darkest quarter; a lost lobe, all four).

Worked example (issue 19; docs/generalisation.md, "Side by side"): trained on Colin27's BET mask, the default
model's mask of ITK's head stops 5.0 mm short of ITK's reference at the top and 4.3 mm at the front, 1.4 mm
at the back; on Colin27 itself, BET's mask stops short of deepbet's by 2.9 mm at the top and front and 1.4-1.9
mm elsewhere, 98% of the difference in the darkest quarter of the intensities: the model reproduces its
training label's convention, side by side.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from monai.metrics.utils import get_mask_edges
from scipy import ndimage

from attnseg.data.image import Image
from attnseg.data.io import read_image
from attnseg.data.orientation import reorientation

SIDES = ("left", "right", "posterior", "anterior", "inferior", "superior")  # -/+ along the RAS axes
NORMAL_SMOOTHING_MM = 3.0
RIM_MM = 10.0
PIECE_MIN_MM2 = 20.0
PIECE_MISSED_BELOW = 0.1  # a piece of which the mask covers less than this share is missed whole


@dataclass(frozen=True)
class Side:
    name: str
    voxels: int  # reference surface voxels facing this side
    mean_mm: float  # mean signed distance, + where the mask reaches beyond the reference
    median_mm: float
    missed: float  # share of the reference's voxels near this side's surface that the mask misses


def ras_volume(image: Image) -> tuple[np.ndarray, tuple[float, ...]]:
    """The first channel of a 3-D image in RAS voxel order, and its spacing in that order."""
    if image.spatial_dims != 3:
        raise SystemExit(f"{image.name}: a 3-D volume is needed to tell the sides of a patient")
    turn = reorientation(image.geometry)
    return turn.apply(image.array[:1])[0], tuple(image.geometry.spacing[a] for a in turn.axes)


def edge_distance(edges: np.ndarray, spacing: tuple[float, ...]) -> np.ndarray:
    """Per voxel, mm to the nearest voxel of ``edges`` (a surface), as MONAI measures surface distances."""
    return ndimage.distance_transform_edt(~edges, sampling=spacing)


def outward_normals(mask: np.ndarray, spacing: tuple[float, ...], where: np.ndarray) -> np.ndarray:
    """Unit outward normals of ``mask`` (in mm, RAS) at the voxels ``where``, ``(N, 3)``."""
    smooth = ndimage.gaussian_filter(mask.astype(np.float32), [NORMAL_SMOOTHING_MM / s for s in spacing])
    gradient = np.stack([g[where] / s for g, s in zip(np.gradient(smooth), spacing, strict=True)], axis=1)
    return -gradient / np.maximum(np.linalg.norm(gradient, axis=1, keepdims=True), 1e-12)


def sides(pred: np.ndarray, ref: np.ndarray, spacing: tuple[float, ...]) -> list[Side]:
    """The reference's surface split by the side it faces, with the mask's signed distance on each."""
    pred, ref = pred.astype(bool), ref.astype(bool)
    pred_edges, edges = (np.asarray(e, dtype=bool) for e in get_mask_edges(pred, ref, crop=False))
    # surface to surface, + where the mask reaches beyond the reference's surface voxel (it lies inside the
    # mask), - where the mask stops short of it: the sign and distance of attnseg's boundary offset
    distance = np.where(pred[edges], 1.0, -1.0) * edge_distance(pred_edges, spacing)[edges]
    normals = outward_normals(ref, spacing, edges)
    axis = np.abs(normals).argmax(axis=1)
    side_of_edge = 2 * axis + (normals[np.arange(len(axis)), axis] > 0)
    # the reference's voxels within RIM_MM of its surface, each given the side of its nearest surface voxel
    depth, nearest = ndimage.distance_transform_edt(~edges, sampling=spacing, return_indices=True)
    side_map = np.full(ref.shape, -1)
    side_map[edges] = side_of_edge
    near_side = side_map[tuple(nearest)]
    rim = ref & (depth <= RIM_MM)
    out = []
    for k, name in enumerate(SIDES):
        on_side = side_of_edge == k
        if not on_side.any():
            continue
        rim_side = rim & (near_side == k)
        out.append(
            Side(
                name=name,
                voxels=int(on_side.sum()),
                mean_mm=float(distance[on_side].mean()),
                median_mm=float(np.median(distance[on_side])),
                missed=float((rim_side & ~pred).sum() / max(rim_side.sum(), 1)),
            )
        )
    return out


@dataclass(frozen=True)
class Piece:
    height_mm: float  # of its axial slice above the reference's lowest
    area_mm2: float
    covered: float  # the share of it inside the mask


def missed_pieces(pred: np.ndarray, ref: np.ndarray, spacing: tuple[float, ...]) -> tuple[int, list[Piece]]:
    """How many pieces of at least PIECE_MIN_MM2 the reference has on its axial slices (RAS axis 2), and those
    the mask misses whole (covers less than PIECE_MISSED_BELOW of), from the bottom up."""
    pred, ref = pred.astype(bool), ref.astype(bool)
    pixel = spacing[0] * spacing[1]
    slices = np.flatnonzero(ref.any(axis=(0, 1)))
    pieces, missed = 0, []
    for z in slices:
        labels, count = ndimage.label(ref[:, :, z])
        sizes = np.bincount(labels.ravel(), minlength=count + 1)
        hits = np.bincount(labels[pred[:, :, z]].ravel(), minlength=count + 1)
        for k in range(1, count + 1):
            if sizes[k] * pixel < PIECE_MIN_MM2:
                continue
            pieces += 1
            if hits[k] < PIECE_MISSED_BELOW * sizes[k]:
                missed.append(Piece((z - slices[0]) * spacing[2], sizes[k] * pixel, hits[k] / sizes[k]))
    return pieces, missed


def missed_by_quarter(pred: np.ndarray, ref: np.ndarray, image: np.ndarray) -> list[float]:
    """Of the reference voxels the mask misses, the share in each quarter of the reference's intensities."""
    pred, ref = pred.astype(bool), ref.astype(bool)
    bounds = np.quantile(image[ref], [0.25, 0.5, 0.75])
    missed = image[ref & ~pred]
    quarter = np.searchsorted(bounds, missed, side="right")
    return [float(np.mean(quarter == q)) if missed.size else 0.0 for q in range(4)]


def table(rows: list[Side]) -> str:
    lines = ["| side | surface voxels | mean (mm) | median (mm) | missed near it |", "|---|---|---|---|---|"]
    for s in rows:
        lines.append(f"| {s.name} | {s.voxels} | {s.mean_mm:+.2f} | {s.median_mm:+.2f} | {s.missed:.1%} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("prediction", type=Path, help="the mask to judge (non-zero = foreground)")
    parser.add_argument("reference", type=Path, help="the reference mask on the same grid")
    parser.add_argument("--image", type=Path, help="the scan, to say which intensities the missed voxels have")
    args = parser.parse_args()
    pred, spacing = ras_volume(read_image(args.prediction))
    ref, ref_spacing = ras_volume(read_image(args.reference))
    if pred.shape != ref.shape or not np.allclose(spacing, ref_spacing):
        raise SystemExit(f"{args.prediction} and {args.reference} are not on the same grid")
    pred, ref = pred != 0, ref != 0
    print(f"{args.prediction} against {args.reference} (+: the mask reaches beyond the reference, -: short of it)")
    print(table(sides(pred, ref, spacing)))
    pieces, missed = missed_pieces(pred, ref, spacing)
    print(f"pieces of the reference on axial slices (>= {PIECE_MIN_MM2:g} mm²): {pieces}; missed whole: {len(missed)}")
    for piece in missed:
        height, area = f"{piece.height_mm:.1f} mm up", f"{piece.area_mm2:.0f} mm²"
        print(f"  {height:>11}: {area:>9}, {piece.covered:.0%} covered")
    if args.image:
        image, _ = ras_volume(read_image(args.image))
        shares = ", ".join(f"{share:.0%}" for share in missed_by_quarter(pred, ref, image))
        print(f"missed voxels by quarter of the reference's intensities, darkest first: {shares}")


if __name__ == "__main__":
    main()
