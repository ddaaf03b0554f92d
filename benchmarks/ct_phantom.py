"""A CT-like phantom: a body-shaped ellipse of soft tissue in air, a fat rim, a spine and organs as blobs
of other HU; int16 HU on an LPS grid (identity direction), as a clinical CT volume is stored.

Used by ``benchmarks/ct_scale.py`` for the clinical-size volume (512 x 512 x 300-600 at 0.7 x 0.7 x 1.25 mm)
and for the small coarse training set of the model it predicts with. Organs are ellipsoids at fixed places
in the body's frame (in mm from the body's centre), so a case at any spacing and size is the same anatomy.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from attnseg.data import Geometry, write_image
from attnseg.fileio import write_json

LABELS = {"background": 0, "liver": 1, "kidneys": 2, "spleen": 3}
AIR, FAT, SOFT, BONE = -1000, -100, 40, 500
# (label value, HU, centre in mm from the body's centre (left, posterior, superior), semi-axes in mm)
ORGANS = (
    (1, 110, (-60.0, -10.0, 0.0), (75.0, 60.0, 70.0)),  # liver, on the patient's right
    (2, 170, (-70.0, 60.0, -60.0), (25.0, 30.0, 45.0)),  # right kidney
    (2, 170, (70.0, 60.0, -50.0), (25.0, 30.0, 45.0)),  # left kidney
    (3, 75, (75.0, 30.0, 40.0), (35.0, 40.0, 50.0)),  # spleen
)
BODY_SEMI_AXES_MM = (165.0, 115.0)  # left-right, anterior-posterior


def phantom(shape: Sequence[int], spacing: Sequence[float], seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(image int16 HU, label uint8) of ``shape`` voxels at ``spacing`` mm; slab by slab, so that even a
    600-slice volume needs no float64 copy of itself. ``seed`` moves the organs a little and sets the noise."""
    rng = np.random.default_rng(seed)
    jitter = rng.uniform(-8, 8, (len(ORGANS), 3))
    nx, ny, nz = (int(n) for n in shape)
    x = (np.arange(nx) - (nx - 1) / 2) * spacing[0]
    y = (np.arange(ny) - (ny - 1) / 2) * spacing[1]
    image = np.empty((nx, ny, nz), dtype=np.int16)
    label = np.zeros((nx, ny, nz), dtype=np.uint8)
    xx, yy = np.meshgrid(x, y, indexing="ij")
    body = (xx / BODY_SEMI_AXES_MM[0]) ** 2 + (yy / BODY_SEMI_AXES_MM[1]) ** 2
    base = np.where(body <= 1.0, np.where(body > 0.8, FAT, SOFT), AIR).astype(np.float32)
    spine = (xx / 18.0) ** 2 + ((yy - 80.0) / 18.0) ** 2 <= 1.0
    base[spine] = BONE
    for z in range(nz):
        zz = (z - (nz - 1) / 2) * spacing[2]
        hu, lab = base.copy(), np.zeros((nx, ny), dtype=np.uint8)
        for (value, organ_hu, centre, axes), shift in zip(ORGANS, jitter, strict=True):
            c = np.asarray(centre) + shift
            inside = ((xx - c[0]) / axes[0]) ** 2 + ((yy - c[1]) / axes[1]) ** 2 + ((zz - c[2]) / axes[2]) ** 2 <= 1
            hu[inside], lab[inside] = organ_hu, value
        noise = rng.normal(0, 12, (nx, ny)).astype(np.float32)
        image[:, :, z] = np.where(body <= 1.0, hu + noise, AIR).astype(np.int16)
        label[:, :, z] = lab
    return image, label


def write_phantom(
    image_path: Path, label_path: Path | None, shape: Sequence[int], spacing: Sequence[float], seed: int = 0
) -> None:
    """The phantom written with the project's writer, LPS identity direction, origin at the first voxel."""
    image, label = phantom(shape, spacing, seed)
    geometry = Geometry.create(spacing)
    write_image(image_path, image[None], geometry, overwrite=True)
    if label_path is not None:
        write_image(label_path, label[None], geometry, overwrite=True)


def write_dataset(folder: Path, cases: int, shape: Sequence[int], spacing: Sequence[float]) -> Path:
    """An nnU-Net v2 raw dataset of ``cases`` phantoms (channel CT, the labels above)."""
    (folder / "imagesTr").mkdir(parents=True, exist_ok=True)
    (folder / "labelsTr").mkdir(parents=True, exist_ok=True)
    for index in range(cases):
        case = f"ct_{index:03d}"
        write_phantom(
            folder / "imagesTr" / f"{case}_0000.nii.gz", folder / "labelsTr" / f"{case}.nii.gz", shape, spacing, index
        )
    spec = {"channel_names": {"0": "CT"}, "labels": LABELS, "numTraining": cases, "file_ending": ".nii.gz"}
    write_json(folder / "dataset.json", spec, overwrite=True)
    return folder
