"""Test helpers shared across packages: tiny volumes with known, oblique geometry, tiny datasets on disk,
and a DICOM series writer. Fixtures built on them live in tests/conftest.py."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from attnseg.data.geometry import Geometry
from attnseg.data.io import write_image


def rotation(angles: Sequence[float]) -> np.ndarray:
    """A proper rotation (det +1) from three angles about x, y, z, in radians."""
    ax, ay, az = angles
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def oblique_geometry() -> Geometry:
    """An oblique, anisotropic grid with an origin that is not float32-representable."""
    return Geometry.create([0.7, 1.3, 2.5], [-98.123456789, 3.3333333333, 17.5], rotation([0.3, -0.7, 1.1]))


def sphere_label(
    shape: Sequence[int],
    center: Sequence[float],
    radius: float,
    value: int = 1,
    spacing: Sequence[float] | None = None,
) -> np.ndarray:
    """``value`` on the voxels within ``radius`` of ``center`` (a voxel index); with ``spacing``, radius in mm."""
    grid = np.indices(shape).astype(float)
    spacing = spacing or [1.0] * len(shape)
    distance = np.sqrt(sum(((g - c) * s) ** 2 for g, c, s in zip(grid, center, spacing, strict=True)))
    return np.where(distance <= radius, value, 0).astype(np.uint8)


def synthetic_case(shape: Sequence[int], rng: np.random.Generator, classes: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """An image whose intensity follows its label (two blobs), plus noise; a zero margin around it."""
    label = np.zeros(shape, dtype=np.uint8)
    center = np.array(shape) / 2 + rng.uniform(-1, 1, len(shape))
    label[sphere_label(shape, center, min(shape) / 3) > 0] = 1
    if classes > 2:
        label[sphere_label(shape, center, min(shape) / 6) > 0] = 2
    image = 100.0 + 50.0 * label + rng.normal(0, 5, shape)
    margin = tuple(slice(1, s - 1) for s in shape)
    keep = np.zeros(shape, dtype=bool)
    keep[margin] = True
    image = np.where(keep, image, 0.0).astype(np.float32)
    return image, label


def nnunet_builder(tmp_path: Path) -> Callable[..., Path]:
    """Build a tiny nnU-Net v2 raw dataset; returns its folder."""

    def build(
        cases: int = 4,
        shape: Sequence[int] = (12, 10, 8),
        channels: int = 1,
        classes: int = 3,
        spacing: Sequence[float] = (0.8, 0.8, 2.0),
        channel_names: Sequence[str] | None = None,
        ending: str = ".nii.gz",
        name: str = "Dataset001_Tiny",
        geometry: Geometry | None = None,
    ) -> Path:
        root = tmp_path / name
        rng = np.random.default_rng(0)
        names = list(channel_names or ["MR"] * channels)
        for i in range(cases):
            image, label = synthetic_case(shape, rng, classes)
            g = geometry or Geometry.create(spacing, [10.0 * i, -5.0, 3.0])
            for c in range(channels):
                write_image(root / "imagesTr" / f"case_{i:03d}_{c:04d}{ending}", (image + 10 * c)[None], g)
            write_image(root / "labelsTr" / f"case_{i:03d}{ending}", label[None], g)
        labels = {"background": 0, "organ": 1, "lesion": 2}
        spec = {
            "channel_names": {str(c): names[c] for c in range(channels)},
            "labels": dict(list(labels.items())[:classes]),
            "numTraining": cases,
            "file_ending": ending,
        }
        (root / "dataset.json").write_text(json.dumps(spec))
        return root

    return build


def write_dicom_series(
    folder: Path,
    volume: np.ndarray,
    geometry: Geometry,
    *,
    skip: Sequence[int] = (),
    duplicate: Sequence[int] = (),
    series_uid: str | None = None,
) -> None:
    """Write ``volume`` (X, Y, Z) int16 as CT slices with pydicom; ``skip``/``duplicate`` slice indices."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    series = series_uid or generate_uid()
    study, frame = generate_uid(), generate_uid()
    d = geometry.direction_matrix
    for k in range(volume.shape[2]):
        if k in skip:
            continue
        for copy in range(2 if k in duplicate else 1):
            uid = generate_uid()
            meta = FileMetaDataset()
            meta.MediaStorageSOPClassUID = CTImageStorage
            meta.MediaStorageSOPInstanceUID = uid
            meta.TransferSyntaxUID = ExplicitVRLittleEndian
            ds = Dataset()
            ds.file_meta = meta
            ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, uid
            ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
            ds.Modality, ds.PatientID, ds.SeriesDescription = "CT", "test", "tiny"
            ds.ImageOrientationPatient = [f"{v:.8f}" for v in (*d[:, 0], *d[:, 1])]
            position = geometry.index_to_world([0, 0, k])
            ds.ImagePositionPatient = [f"{v:.6f}" for v in position]
            ds.PixelSpacing = [f"{geometry.spacing[1]:.6f}", f"{geometry.spacing[0]:.6f}"]  # row, column spacing
            ds.SliceThickness = f"{geometry.spacing[2]:.6f}"
            ds.Rows, ds.Columns = volume.shape[1], volume.shape[0]
            ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
            ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
            ds.RescaleIntercept, ds.RescaleSlope = "0", "1"
            ds.InstanceNumber = k + 1
            ds.PixelData = np.ascontiguousarray(volume[:, :, k].T.astype("<i2")).tobytes()  # rows are y
            ds.save_as(folder / f"IM{k:03d}_{copy}.dcm", enforce_file_format=True)
