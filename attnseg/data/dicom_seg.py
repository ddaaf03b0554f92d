"""DICOM Segmentation (SEG) objects: a label mask out as one SEG instance per scanned series, and back in.

Writing (:func:`write_seg`, with highdicom): one BINARY SEG instance for the DICOM series a mask was
predicted on, in that series' study and Frame of Reference. Each foreground class of the labels
(dataset.json / labels.json) is one segment, numbered 1, 2... in label-value order, labelled with the
class name and coded (:mod:`attnseg.data.seg_codes`), and identified as the automatic output of an
algorithm (attnseg, its version, the model's weights hash). The SEG references every source instance.

Geometry: the mask's grid is handed to highdicom as a :class:`highdicom.Volume` whose affine is the
mask's own geometry, so every frame is placed by its own ImagePositionPatient computed from that
geometry (never by flipping arrays to match the files' order), and highdicom matches frames to the
source instances by position. Frames of every segment are written for every slice, empty ones
included (``omit_empty_frames=False``): a class the model did not find is still a segment (with empty
frames, and a warning naming it), the same way every time, and the SEG alone gives the scan's full
grid, so it can be compared with another mask without its source series.

Reading (:func:`read_seg`): highdicom builds the volume from the frames' positions; the array becomes
``(1, X, Y, Z)`` with columns along X, rows along Y and the slices stacked along row x column (as a
DICOM series is read), so it matches masks written from the same scan. Given a grid (``grid=``) the
frames are placed onto that grid by their positions instead, which also reads SEGs from other tools that
omit empty frames. Segment numbers become label values through the segment labels (``labels=``).
:func:`seg_sources` tells, from the header, which series a SEG references and whether its frames cover
them (else only the source series gives the full grid; :mod:`attnseg.data.mask_files` finds it).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from attnseg.data.geometry import Geometry
from attnseg.errors import DataError

SEG_ENDING = ".seg.dcm"
# Attributes of the patient and study modules that a SEG must carry (type 2: present, may be empty); a
# source series without them (anonymised, or from a minimal writer) gets them empty.
_TYPE2 = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyDate",
    "StudyTime",
    "StudyID",
    "AccessionNumber",
    "ReferringPhysicianName",
)
# How far (in voxels) a frame may sit from a voxel of the grid it is placed on.
_PLACE_ATOL = 1e-3


class EmptySegmentWarning(UserWarning):
    """A class the model did not find anywhere: written as a segment with empty frames."""


@dataclass(frozen=True)
class Algorithm:
    """Who made the segmentation: written into every segment's Algorithm Identification."""

    name: str
    version: str
    model: str  # the model directory's name (or names, for an ensemble)
    weights_sha256: tuple[str, ...]  # one hash per model of the ensemble


@dataclass(frozen=True)
class WrittenSeg:
    """A SEG instance written: where, and the UIDs a PACS knows it by."""

    path: Path
    sop_instance_uid: str
    series_instance_uid: str
    study_instance_uid: str
    empty_classes: tuple[str, ...]


def is_seg_file(path: str | os.PathLike) -> bool:
    """A regular ``.dcm`` file whose SOP class is Segmentation Storage."""
    import pydicom
    from pydicom.uid import SegmentationStorage

    path = Path(path)
    if not (path.is_file() and path.name.lower().endswith(".dcm") and not path.name.startswith(".")):
        return False
    try:
        header = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["SOPClassUID"])
    except Exception:
        return False
    return str(header.get("SOPClassUID", "")) == SegmentationStorage


def seg_case_id(path: str | os.PathLike) -> str:
    """``case.seg.dcm`` -> ``case``; ``case.dcm`` -> ``case``."""
    name = Path(path).name
    for ending in (SEG_ENDING, ".dcm"):
        if name.lower().endswith(ending):
            return name[: -len(ending)]
    return name


# ---------------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------------
def write_seg(
    path: str | os.PathLike,
    mask: np.ndarray,
    image: Any,
    labels: Mapping[str, int],
    algorithm: Algorithm,
    *,
    overwrite: bool = False,
    series_description: str = "attnseg segmentation",
) -> WrittenSeg:
    """Write ``mask`` ``(1, X, Y, Z)`` of label values, on ``image``'s grid, as a SEG file at ``path``.

    ``image`` is the :class:`~attnseg.data.io.Image` read from the DICOM series the mask was predicted
    on (its ``meta["files"]``, in slice order, are the source instances). The file is written under a
    temporary name, read back (the frames must give ``mask`` on the image's grid, voxel for voxel) and
    renamed into place.

    Raises:
        DataError: ``image`` was not read from a DICOM series; the series has no Frame of Reference; the
            mask does not fit the image or holds values that are not in ``labels``.
        OutputExistsError: ``path`` exists and ``overwrite`` is False.
    """
    import highdicom as hd

    from attnseg.fileio import atomic_path

    path = Path(path)
    sources = _source_headers(path, image)
    volume_mask = np.asarray(mask)
    if volume_mask.shape != (1, *image.spatial_shape):
        raise DataError(f"{path}: mask of shape {volume_mask.shape} does not fit its scan {image.spatial_shape}")
    foreground = sorted(((int(v), str(n)) for n, v in labels.items() if int(v) != 0))
    numbers = _segment_numbers(path, volume_mask[0], foreground)
    empty = tuple(name for value, name in foreground if not np.any(volume_mask[0] == value))
    if empty:
        warnings.warn(
            f"{path}: class(es) {', '.join(empty)} found nowhere in the scan; written as segments with empty frames",
            EmptySegmentWarning,
            stacklevel=2,
        )
    volume = hd.Volume(
        numbers.transpose(2, 1, 0),  # (X, Y, Z) -> (slice, row, column): a transpose, no flip
        _volume_affine(image.geometry),
        coordinate_system="PATIENT",
        frame_of_reference_uid=str(sources[0].FrameOfReferenceUID),
    )
    seg = hd.seg.Segmentation(
        source_images=sources,
        pixel_array=volume,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=_descriptions(foreground, algorithm),
        series_instance_uid=hd.UID(),
        series_number=1000 + _integer(sources[0].get("SeriesNumber")),
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="attnseg",
        manufacturer_model_name=algorithm.model[:64] or "attnseg",
        software_versions=algorithm.version,
        device_serial_number="0",
        omit_empty_frames=False,
        series_description=series_description[:64],
    )
    grid = (image.spatial_shape, image.geometry)
    with atomic_path(path, overwrite) as temporary:
        seg.save_as(temporary, enforce_file_format=True)
        again = read_seg(temporary, labels=dict(labels), grid=grid)
        if not np.array_equal(again.array, volume_mask):
            raise DataError(f"{path}: the SEG written does not give back the mask on its scan's grid")
    return WrittenSeg(path, str(seg.SOPInstanceUID), str(seg.SeriesInstanceUID), str(seg.StudyInstanceUID), empty)


def _source_headers(path: Path, image: Any) -> list[Any]:
    """The headers of the series ``image`` was read from, in slice order, with empty type-2 attributes added."""
    import pydicom

    from attnseg.data.dicom import decimal_string

    files = image.meta.get("files")
    if image.path is None or not files or not Path(image.path).is_dir():
        raise DataError(
            f"{path}: a DICOM SEG is written for a scan read from a DICOM series; {image.name} is not one "
            "(choose a file format such as .nii.gz)"
        )
    headers = [pydicom.dcmread(Path(image.path) / name, stop_before_pixels=True) for name in files]
    if not str(headers[0].get("FrameOfReferenceUID", "")):
        raise DataError(f"{image.path}: the series has no FrameOfReferenceUID, so a SEG cannot be placed in its world")
    keys = ("StudyInstanceUID", "FrameOfReferenceUID", "Rows", "Columns")
    for header, name in zip(headers[1:], files[1:], strict=True):
        differs = [k for k in keys if header.get(k) != headers[0].get(k)]
        if differs:
            raise DataError(
                f"{Path(image.path) / name}: {', '.join(differs)} differ from {files[0]}; the slices of one series "
                "must share them for a SEG to reference them"
            )
    spacing = decimal_string(float(image.geometry.spacing[2]))
    for header in headers:
        for keyword in _TYPE2:
            if keyword not in header:
                setattr(header, keyword, "")
        if header.get("SliceThickness") in (None, ""):  # type 2, often absent: the slices' spacing instead
            header.SliceThickness = spacing
    return headers


def _segment_numbers(path: Path, labels_array: np.ndarray, foreground: list[tuple[int, str]]) -> np.ndarray:
    """Label values -> segment numbers 1..N (uint8/uint16), checking that every value is a known class."""
    values = {int(v) for v in np.unique(labels_array)}
    unknown = sorted(values - {0} - {value for value, _ in foreground})
    if unknown:
        raise DataError(f"{path}: mask values {unknown} are not classes of the labels {[n for _, n in foreground]}")
    dtype = np.uint8 if len(foreground) < 256 else np.uint16
    numbers = np.zeros(labels_array.shape, dtype=dtype)
    for number, (value, _) in enumerate(foreground, start=1):
        numbers[labels_array == value] = number
    return numbers


def _volume_affine(geometry: Geometry) -> np.ndarray:
    """The mask's geometry as highdicom's affine: indices (slice, row, column) -> LPS mm."""
    direction, spacing = geometry.direction_matrix, np.asarray(geometry.spacing)
    affine = np.eye(4)
    affine[:3, 0] = direction[:, 2] * spacing[2]  # slices along Z
    affine[:3, 1] = direction[:, 1] * spacing[1]  # rows along Y
    affine[:3, 2] = direction[:, 0] * spacing[0]  # columns along X
    affine[:3, 3] = geometry.origin
    return affine


def _descriptions(foreground: list[tuple[int, str]], algorithm: Algorithm) -> list[Any]:
    import highdicom as hd
    from pydicom.sr.codedict import codes

    from attnseg.data.seg_codes import segment_codes

    identification = hd.AlgorithmIdentificationSequence(
        name=algorithm.name,
        version=algorithm.version,
        family=codes.cid7162.ArtificialIntelligence,
        source=algorithm.model[:64] or None,
        parameters={"weights_sha256": ",".join(algorithm.weights_sha256)},
    )
    descriptions = []
    for number, (_, name) in enumerate(foreground, start=1):
        coded = segment_codes(name)
        descriptions.append(
            hd.seg.SegmentDescription(
                segment_number=number,
                segment_label=name[:64],
                segmented_property_category=coded.category,
                segmented_property_type=coded.type,
                algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
                algorithm_identification=identification,
            )
        )
    return descriptions


def _integer(value: Any) -> int:
    try:
        return int(float(value)) if value not in (None, "") else 0
    except (TypeError, ValueError):
        return 0


# ---------------------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------------------
def read_seg(
    path: str | os.PathLike,
    labels: Mapping[str, int] | None = None,
    grid: tuple[tuple[int, ...], Geometry] | None = None,
) -> Any:
    """A SEG file as an :class:`~attnseg.data.io.Image` ``(1, X, Y, Z)`` of label values.

    Args:
        labels: class name -> label value: each segment's value is its label's (a segment whose label is
            not there is an error). Without it the values are the segment numbers.
        grid: (shape, geometry) to place the frames on, by their positions (e.g. the scan's, or the other
            mask's in an evaluation); without it the grid is the frames' own.

    Raises:
        DataError: not a readable SEG; overlapping segments; frames that do not lie on ``grid``.
    """
    import highdicom as hd

    from attnseg.data.io import Image

    path = Path(path)
    try:
        seg = hd.seg.segread(path)
        volume = seg.get_volume(combine_segments=True, relabel=False, dtype=np.uint16)
        numbers_to_labels = {int(d.SegmentNumber): str(d.SegmentLabel) for d in seg.SegmentSequence}
    except DataError:
        raise
    except Exception as error:
        reason = " ".join(str(error).split())[:300] or type(error).__name__
        raise DataError(f"{path}: cannot read the DICOM SEG ({reason})") from error
    array, geometry = _canonical(np.asarray(volume.array), np.asarray(volume.affine))
    values = _label_values(path, array, numbers_to_labels, labels)
    if grid is not None:
        values = _place(path, values, geometry, grid)
        geometry = grid[1]
    meta = {"segments": {name: number for number, name in numbers_to_labels.items()}, "dicom_seg": True}
    return Image(array=values[None], geometry=geometry, path=path, meta=meta)


def seg_grid(path: str | os.PathLike) -> tuple[tuple[int, ...], Geometry]:
    """The spatial shape ``(X, Y, Z)`` and geometry of a SEG's own grid (its frames' positions)."""
    image = read_seg(path)
    return image.spatial_shape, image.geometry


@dataclass(frozen=True)
class SegSources:
    """The series a SEG was made from (its Referenced Series Sequence), and whether its frames cover them."""

    series_uids: tuple[str, ...]
    # A frame for every segment and every referenced instance (as attnseg writes them): the SEG alone then
    # gives its series' full grid. Otherwise (empty frames omitted, a multi-frame source) only the source
    # series does.
    complete: bool


def seg_sources(path: str | os.PathLike) -> SegSources:
    """What a SEG references, from its header (no pixel data).

    Raises:
        DataError: not a readable DICOM file.
    """
    import pydicom

    try:
        header = pydicom.dcmread(path, stop_before_pixels=True)
    except Exception as error:
        raise DataError(f"{path}: cannot read the DICOM SEG header ({type(error).__name__}: {error})") from error
    referenced = header.get("ReferencedSeriesSequence") or []
    uids = tuple(str(item.SeriesInstanceUID) for item in referenced if "SeriesInstanceUID" in item)
    instances = sum(len(item.get("ReferencedInstanceSequence") or []) for item in referenced)
    segments = len(header.get("SegmentSequence") or [])
    frames = _integer(header.get("NumberOfFrames"))
    return SegSources(uids, instances > 0 and frames == segments * instances)


def _canonical(array: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, Geometry]:
    """highdicom's (slice, row, column) volume -> ``(X, Y, Z)`` with its geometry, slices stacked along
    row x column (a right-handed grid, as ITK reads a DICOM series)."""
    data = array.transpose(2, 1, 0)
    columns = np.stack([affine[:3, 2], affine[:3, 1], affine[:3, 0]], axis=1)  # X, Y, Z steps
    origin = affine[:3, 3].copy()
    if np.linalg.det(columns) < 0:
        origin = origin + (data.shape[2] - 1) * columns[:, 2]
        columns[:, 2] = -columns[:, 2]
        data = data[:, :, ::-1]
    ours = np.eye(4)
    ours[:3, :3], ours[:3, 3] = columns, origin
    return np.ascontiguousarray(data), Geometry.from_affine(ours)


def _label_values(
    path: Path, numbers: np.ndarray, numbers_to_labels: Mapping[int, str], labels: Mapping[str, int] | None
) -> np.ndarray:
    if labels is None:
        return numbers.astype(np.uint8 if numbers.max(initial=0) < 256 else np.uint16)
    lut = np.zeros(max(numbers_to_labels, default=0) + 1, dtype=np.int64)
    for number, name in numbers_to_labels.items():
        if name not in labels:
            raise DataError(
                f"{path}: segment {number} '{name}' is not a class of the labels ({', '.join(labels)}); "
                "name the classes as the SEG's segments, or pass other labels"
            )
        lut[number] = int(labels[name])
    values = lut[numbers]
    low, high = int(values.min(initial=0)), int(values.max(initial=0))
    return values.astype(np.uint8 if low >= 0 and high < 256 else np.int32)


def _place(path: Path, values: np.ndarray, geometry: Geometry, grid: tuple[tuple[int, ...], Geometry]) -> np.ndarray:
    """``values`` (on ``geometry``) placed voxel by voxel onto ``grid``, by position."""
    shape, target = grid
    mapping = np.linalg.inv(target.affine) @ geometry.affine  # SEG index -> grid index
    rotation, shift = np.round(mapping[:3, :3]), np.round(mapping[:3, 3])
    permutation = np.abs(rotation)
    on_grid = np.allclose(mapping[:3, :3], rotation, atol=_PLACE_ATOL) and np.allclose(
        mapping[:3, 3], shift, atol=_PLACE_ATOL
    )
    if (
        not on_grid
        or not np.array_equal(permutation.sum(0), np.ones(3))
        or not np.array_equal(permutation.sum(1), np.ones(3))
    ):
        raise DataError(
            f"{path}: the SEG's frames do not lie on the scan's grid (they are {geometry.orientation()} at "
            f"{np.round(geometry.origin, 3).tolist()} with spacing {np.round(geometry.spacing, 4).tolist()}); "
            "was it made from another series?"
        )
    index = np.indices(values.shape).reshape(3, -1)
    target_index = (rotation.astype(np.int64) @ index) + shift.astype(np.int64)[:, None]
    inside = np.all((target_index >= 0) & (target_index < np.asarray(shape)[:, None]), axis=0)
    flat = values.reshape(-1)
    if np.any(flat[~inside] != 0):
        raise DataError(f"{path}: the SEG has segmented voxels outside the scan's grid {tuple(shape)}")
    placed = np.zeros(tuple(shape), dtype=values.dtype)
    placed[tuple(target_index[:, inside])] = flat[inside]
    return placed
