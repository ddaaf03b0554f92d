"""Broken image files of every supported format, for the fuzz tests: what a user's disk really holds after
a failed copy, a wrong export or a mislabelled file.

``broken_files(ending)`` gives name -> bytes for one file ending; every one of them must be refused with a
clear error (a valid file that happens to look different is not in this set). ``damaged_files(ending)``
adds random byte flips in the header, which may or may not still be valid files: for those only "no
traceback" is required.
"""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np

from attnseg.data.geometry import Geometry
from attnseg.data.io import write_image
from tests.fixtures import write_dicom_series

VOLUME_ENDINGS = [".nii", ".nii.gz", ".nrrd", ".seg.nrrd", ".mha", ".mhd"]
PLANE_ENDINGS = [".png", ".tif", ".tiff"]
ENDINGS = VOLUME_ENDINGS + PLANE_ENDINGS
DICOM = "dicom"
SHAPE_3D = (16, 14, 6)
SHAPE_2D = (24, 20)


def good_image(ending: str, seed: int = 0) -> tuple[np.ndarray, Geometry]:
    """A valid image for ``ending``: noise (so compression cannot hide a truncation), int16 or uint8."""
    rng = np.random.default_rng(seed)
    if ending in PLANE_ENDINGS:
        # a picture format stores pixels, not mm (a TIFF no pixel size at all): 1 x 1
        return rng.integers(0, 255, (1, *SHAPE_2D)).astype(np.uint8), Geometry.create([1.0, 1.0])
    return rng.integers(-500, 1500, (1, *SHAPE_3D)).astype(np.int16), Geometry.create([0.9, 0.9, 2.5])


def good_bytes(ending: str, folder: Path) -> bytes:
    path = write_image(folder / f"reference{ending}", *good_image(ending), overwrite=True)
    return path.read_bytes()


def _nifti_with(valid: bytes, offset: int, fmt: str, value: float) -> bytes:
    data = bytearray(valid)
    struct.pack_into(fmt, data, offset, value)
    return bytes(data)


def _wrong_headers(ending: str, valid: bytes) -> dict[str, bytes]:
    """Headers that lie: an unknown voxel type, more voxels than the file holds, a broken magic number."""
    if ending in (".nii", ".nii.gz"):
        raw = gzip.decompress(valid) if ending == ".nii.gz" else valid
        lies = {
            "header_bad_magic": raw[:344] + b"zzz\x00" + raw[348:],
            "header_unknown_datatype": _nifti_with(raw, 70, "<h", 9999),
            "header_claims_more_voxels": _nifti_with(raw, 42, "<h", 30000),  # dim[1]
            "header_nan_affine": _nifti_with(raw, 280, "<f", float("nan")),  # srow_x[0]
            "header_zero_dimensions": _nifti_with(raw, 40, "<h", 0),  # dim[0]
        }
        return {k: gzip.compress(v) if ending == ".nii.gz" else v for k, v in lies.items()}
    if ending in (".nrrd", ".seg.nrrd"):
        text = valid
        return {
            "header_unknown_type": text.replace(b"type: short", b"type: banana", 1),
            "header_claims_more_voxels": text.replace(b"sizes: 16 14 6", b"sizes: 16 14 600", 1),
            "header_no_magic": text.replace(b"NRRD0004", b"XXXX0004", 1),
        }
    if ending in (".mha", ".mhd"):
        return {
            "header_unknown_type": valid.replace(b"MET_SHORT", b"MET_BANANA", 1),
            "header_claims_more_voxels": valid.replace(b"DimSize = 16 14 6", b"DimSize = 16 14 600", 1),
            "header_missing_data_file": valid.replace(b"ElementDataFile = ", b"ElementDataFile = nowhere_", 1),
        }
    if ending == ".png":
        return {"header_bad_crc": valid[:16] + b"\x7f\xff\xff\xff" + valid[20:]}  # IHDR width, CRC now wrong
    return {"header_bad_magic": b"II+\x00" + valid[4:]}  # TIFF


GENERIC_DAMAGE = ["zero_bytes", "random_bytes", "valid_gzip_around_garbage", "truncated_in_header", "truncated_in_data"]
WRONG_HEADERS = {
    ".nii": ["header_bad_magic", "header_unknown_datatype", "header_claims_more_voxels", "header_nan_affine",
             "header_zero_dimensions"],
    ".nrrd": ["header_unknown_type", "header_claims_more_voxels", "header_no_magic"],
    ".mha": ["header_unknown_type", "header_claims_more_voxels", "header_missing_data_file"],
    ".png": ["header_bad_crc"],
    ".tif": ["header_bad_magic"],
}  # fmt: skip
WRONG_HEADERS.update({".nii.gz": WRONG_HEADERS[".nii"], ".seg.nrrd": WRONG_HEADERS[".nrrd"]})
WRONG_HEADERS.update({".mhd": WRONG_HEADERS[".mha"], ".tiff": WRONG_HEADERS[".tif"]})


def broken_names(ending: str) -> list[str]:
    """The names :func:`broken_files` gives for ``ending``, without writing anything."""
    return GENERIC_DAMAGE + WRONG_HEADERS[ending]


def broken_files(ending: str, folder: Path) -> dict[str, bytes]:
    """name -> bytes of files that are certainly not valid ``ending`` images."""
    valid = good_bytes(ending, folder)
    rng = np.random.default_rng(1)
    files = {  # GENERIC_DAMAGE
        "zero_bytes": b"",
        "random_bytes": rng.bytes(4096),
        "valid_gzip_around_garbage": gzip.compress(rng.bytes(4096)),
        "truncated_in_header": valid[:24],
        "truncated_in_data": valid[: len(valid) // 2],
    }
    files.update(_wrong_headers(ending, valid))
    assert list(files) == broken_names(ending)
    return files


def damaged_files(ending: str, folder: Path, count: int = 6) -> dict[str, bytes]:
    """Valid files with a few random bytes flipped near the start: possibly still valid."""
    valid = good_bytes(ending, folder)
    rng = np.random.default_rng(2)
    out = {}
    for k in range(count):
        data = bytearray(valid)
        for index in rng.integers(0, min(len(data), 400), 4):
            data[int(index)] = int(rng.integers(0, 256))
        out[f"flipped_{k}"] = bytes(data)
    return out


def broken_dicom_series(folder: Path, kind: str) -> Path:
    """A DICOM series folder with one slice damaged in the way ``kind`` names."""
    image, geometry = good_image(".nrrd")
    write_dicom_series(folder, image[0], geometry)
    victim = sorted(folder.iterdir())[2]
    rng = np.random.default_rng(3)
    content = victim.read_bytes()
    damaged = {
        "zero_bytes": b"",
        "random_bytes": rng.bytes(4096),
        "truncated_in_header": content[:200],
        "truncated_in_data": content[: len(content) - 100],
        "header_garbage_after_preamble": content[:132] + rng.bytes(600),
    }[kind]
    victim.write_bytes(damaged)
    return folder


DICOM_DAMAGE = [
    "zero_bytes",
    "random_bytes",
    "truncated_in_header",
    "truncated_in_data",
    "header_garbage_after_preamble",
]
