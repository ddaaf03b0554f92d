"""A cross-subject, cross-scanner brain-extraction proxy built from public data (issue 10).

attnseg is meant to segment the *next* patient, scanned elsewhere. With no such data shipped in any
package, this builds a stand-in from the MNI ICBM152 2009a T1 template (nilearn wheel, 1 mm, skull-stripped):

* **training head**: the template brain, wrapped in synthetic head tissues (cerebrospinal fluid that thins
  to nothing in places, dura, the inner and outer tables of the skull around fatty diploe, muscle close to
  grey matter in intensity, subcutaneous fat, neck muscle around the brainstem, air) whose thicknesses and
  textures vary smoothly; label: the brain mask. Stored RAS at 1 mm, like the template.
* **unseen heads**: the same template *deformed into another subject* (a random affine: rotation up to 8
  degrees, scaling 0.9-1.1 per axis; plus a smooth elastic warp of a few mm), wrapped in other head
  tissues, then acquired by another *scanner*: its own T1 contrast (gamma, tissue intensities), a bias
  field, Rician noise, a scale of its own, resampled to its resolution with a slice profile (Gaussian blur
  of one voxel's width), and stored in its own voxel order. Reference: the deformed brain mask, resampled
  to that grid.

The unseen heads default to the ones the held-back task describes (1.5 mm isotropic stored LAS; 2 x 2 x 3
mm stored LSA) plus two more (1 x 1 x 1.2 mm LPS, 1.2 mm PIR). It is a proxy: real heads differ from the
template in more ways (neck, eyes, pathology, real skull shape), so its Dice values rank recipes, they do not
predict a clinical result.

    python benchmarks/head_proxy.py OUT            # OUT/train (nnU-Net dataset, 1 case), OUT/test/{images,labels}
"""

from __future__ import annotations

import argparse
import importlib.resources
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from attnseg.data.geometry import Geometry
from attnseg.data.io import read_image, write_image
from attnseg.data.orientation import reorientation

TEMPLATE = "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"
# Head tissue layers outward from the brain: (name, thickness mm, T1-weighted intensity relative to white
# matter). Grey matter is about 0.6: the muscle is close to it, and the CSF layer thins to nothing in places,
# where the brain touches the dura and skull, as in real heads.
LAYERS = [
    ("csf", 1.5, 0.15),
    ("dura", 1.0, 0.35),
    ("inner_table", 1.5, 0.04),
    ("diploe", 2.5, 0.70),
    ("outer_table", 1.5, 0.04),
    ("muscle", 4.0, 0.55),
    ("fat", 4.0, 0.95),
]
NECK_BELOW = 0.30  # below this fraction of the head's height, the space around the brainstem is neck muscle


@dataclass(frozen=True)
class Scanner:
    """How an unseen head is acquired and stored."""

    name: str
    spacing: tuple[float, float, float]  # mm, in RAS axis order
    orientation: str  # the stored voxel order
    seed: int


UNSEEN = [
    Scanner("headA_1.5mm_LAS", (1.5, 1.5, 1.5), "LAS", 1),
    Scanner("headB_2x3x2mm_LSA", (2.0, 3.0, 2.0), "LSA", 2),  # 3 mm along A: thick coronal slices
    Scanner("headC_1x1x1.2mm_LPS", (1.0, 1.0, 1.2), "LPS", 3),
    Scanner("headD_1.2mm_PIR", (1.2, 1.2, 1.2), "PIR", 4),
]


def template() -> tuple[np.ndarray, np.ndarray, Geometry]:
    """The MNI T1 brain (float, white matter ~1) and its brain mask (holes filled), RAS 1 mm."""
    path = importlib.resources.files("nilearn.datasets.data") / TEMPLATE
    image = read_image(Path(str(path)))
    t1 = image.array[0].astype(np.float32)
    mask = ndimage.binary_fill_holes(t1 > 0)
    labels, count = ndimage.label(mask)
    if count > 1:
        mask = labels == np.argmax(np.bincount(labels.ravel())[1:]) + 1
    t1 /= np.percentile(t1[mask], 90)  # white matter ~ 1
    return t1, mask, image.geometry


def smooth_field(shape: tuple[int, ...], rng: np.random.Generator, scale: float) -> np.ndarray:
    """Smooth noise in [-1, 1] varying over ``scale`` voxels (drawn coarse, then interpolated up)."""
    coarse_shape = tuple(max(2, int(np.ceil(s / scale)) + 2) for s in shape)
    coarse = ndimage.gaussian_filter(rng.standard_normal(coarse_shape), 1.0)
    field = ndimage.zoom(coarse, [s / c for s, c in zip(shape, coarse_shape, strict=True)], order=3)
    field = field[tuple(slice(0, s) for s in shape)]
    return (field / (np.abs(field).max() + 1e-8)).astype(np.float32)


def wrap_in_head(brain: np.ndarray, mask: np.ndarray, rng: np.random.Generator, jitter: float) -> np.ndarray:
    """The brain with head tissue layers around it (thickness varying +-60%, so the CSF vanishes in places;
    intensities +-``jitter`` per layer, with a texture of +-15%), and neck muscle around the brainstem."""
    distance = ndimage.distance_transform_edt(~mask).astype(np.float32)  # mm at 1 mm voxels
    thickness = 1.0 + 0.6 * smooth_field(mask.shape, rng, 30.0)
    texture = 1.0 + 0.15 * smooth_field(mask.shape, rng, 6.0)
    head = np.where(mask, brain, 0.0).astype(np.float32)
    inner = np.zeros_like(distance)
    for _, width, level in LAYERS:
        outer = inner + width * thickness
        shell = (~mask) & (distance > inner) & (distance <= outer)
        head[shell] = level * (1.0 + jitter * rng.uniform(-1, 1)) * texture[shell]
        inner = outer
    rows = np.nonzero(mask.any(axis=(0, 1)))[0]
    neck_top = int(rows[0] + NECK_BELOW * (rows[-1] - rows[0]))
    neck = np.zeros_like(mask)
    neck[:, :, :neck_top] = (distance[:, :, :neck_top] > 0) & (distance[:, :, :neck_top] <= 25.0)
    head[neck & ~mask] = 0.55 * (1.0 + jitter * rng.uniform(-1, 1)) * texture[neck & ~mask]
    return head


def deform(volume: np.ndarray, coordinates: np.ndarray, order: int = 1) -> np.ndarray:
    return ndimage.map_coordinates(volume, coordinates, order=order, mode="constant", cval=0.0).astype(np.float32)


def subject_coordinates(shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """Where each voxel of a new subject samples the template: a random affine about the centre plus a
    smooth elastic displacement (up to ~4 mm)."""
    angles = np.radians(rng.uniform(-8, 8, 3))
    rotation = np.eye(3)
    for axis, angle in enumerate(angles):
        c, s = np.cos(angle), np.sin(angle)
        r = np.eye(3)
        i, j = [a for a in range(3) if a != axis]
        r[i, i], r[i, j], r[j, i], r[j, j] = c, -s, s, c
        rotation = rotation @ r
    linear = rotation @ np.diag(1.0 / rng.uniform(0.9, 1.1, 3))
    centre = (np.array(shape) - 1) / 2.0
    grid = np.indices(shape, dtype=np.float32).reshape(3, -1)
    source = linear @ (grid - centre[:, None]) + centre[:, None] + rng.uniform(-4, 4, (3, 1))
    for axis in range(3):
        source[axis] += 4.0 * smooth_field(shape, rng, 30.0).ravel()
    return source.reshape(3, *shape)


def acquire(head: np.ndarray, mask: np.ndarray, scanner: Scanner, rng: np.random.Generator) -> tuple:
    """Contrast, bias field, noise and resolution of another scanner; returns (image, label) on its RAS grid."""
    image = np.clip(head, 0, None) ** rng.uniform(0.7, 1.4)  # T1 contrast
    image *= np.exp(0.35 * smooth_field(head.shape, rng, 60.0))  # bias field
    factors = [1.0 / s for s in scanner.spacing]
    sigma = [0.42 * s for s in scanner.spacing]  # slice profile: a Gaussian of about one voxel's FWHM
    image = ndimage.zoom(ndimage.gaussian_filter(image, sigma), factors, order=1)
    label = ndimage.zoom(mask.astype(np.float32), factors, order=1) > 0.5
    sigma_noise = rng.uniform(0.02, 0.06)
    noisy = np.sqrt(
        (image + rng.normal(0, sigma_noise, image.shape)) ** 2 + rng.normal(0, sigma_noise, image.shape) ** 2
    )
    scale = rng.uniform(300, 3000)
    return (noisy * scale).astype(np.float32), label.astype(np.uint8)


def store(array: np.ndarray, spacing, origin, code: str) -> tuple[np.ndarray, Geometry]:
    """An array on a RAS grid, stored in voxel order ``code`` (the same voxels, listed another way)."""
    ras = Geometry.create(spacing, origin, np.diag([-1.0, -1.0, 1.0]))  # RAS axes in LPS world
    turn = reorientation(ras, code)
    return turn.apply(array, leading=0), turn.geometry(ras, array.shape)


def build(out: Path) -> None:
    brain, mask, geometry = template()
    rng = np.random.default_rng(0)
    head = wrap_in_head(brain, mask, rng, jitter=0.0)
    train = out / "train"
    scaled = (head * 1000).astype(np.float32)
    write_image(train / "imagesTr" / "mni_0000.nii.gz", scaled[None], geometry, overwrite=True)
    write_image(train / "labelsTr" / "mni.nii.gz", mask[None].astype(np.uint8), geometry, overwrite=True)
    spec = {
        "name": "HeadProxy",
        "description": "MNI152 brain in synthetic head tissues; label: brain mask (benchmarks/head_proxy.py)",
        "channel_names": {"0": "T1"},
        "labels": {"background": 0, "brain": 1},
        "numTraining": 1,
        "file_ending": ".nii.gz",
    }
    (train / "dataset.json").write_text(json.dumps(spec, indent=2))
    origin = geometry.origin
    for scanner in UNSEEN:
        rng = np.random.default_rng(100 + scanner.seed)
        coordinates = subject_coordinates(mask.shape, rng)
        subject_brain = deform(brain, coordinates)
        subject_mask = deform(mask.astype(np.float32), coordinates) > 0.5
        subject_head = wrap_in_head(subject_brain, subject_mask, rng, jitter=0.15)
        image, label = acquire(subject_head, subject_mask, scanner, rng)
        for folder, array in (("images", image), ("labels", label)):
            stored, stored_geometry = store(array, scanner.spacing, origin, scanner.orientation)
            write_image(out / "test" / folder / f"{scanner.name}.nii.gz", stored[None], stored_geometry, overwrite=True)
        print(f"{scanner.name}: {image.shape} voxels, brain {label.mean():.1%} of the grid")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path)
    build(parser.parse_args().out)


if __name__ == "__main__":
    main()
