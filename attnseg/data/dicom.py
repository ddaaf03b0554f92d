"""DICOM series: a folder of slices <-> one :class:`~attnseg.data.image.Image`.

Reading: pydicom reads the headers (no pixels) to check that the folder holds one series of parallel
slices of one size and pixel spacing, evenly spaced, none missing and none duplicated; SimpleITK (GDCM)
then reads the pixels in slice order, applying the rescale slope and intercept, and computes the geometry
from the slice positions (and the first slice's pixel spacing). A missing slice would otherwise silently
stretch the anatomy; a duplicated one shifts it; a slice of another pixel spacing would be drawn on the
first one's. A file cut short (a copy or download that broke off) is named as damaged: pydicom reads
what is there without complaint, so a slice whose header lost its position would otherwise be passed
over as "not a slice", and the series read one slice short. The patient, study and frame-of-reference
identity of the series is kept in ``image.meta["dicom"]``.

Writing (:func:`write_dicom_series`): one Secondary Capture file per slice, with pydicom, carrying the
image plane (ImagePositionPatient, ImageOrientationPatient, PixelSpacing, SliceThickness and
SpacingBetweenSlices) so that viewers and ITK place it in the world. Label masks are written as such a
plain image series (one label value per pixel), not as a DICOM-SEG object: DICOM-SEG (one binary frame
per segment, with coded segment descriptions) is out of scope.
"""

from __future__ import annotations

import copy
import os
import shutil
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from attnseg.data.geometry import Geometry
from attnseg.data.image import WRITE_ATOL, Image, from_sitk
from attnseg.errors import DataError, OutputExistsError

# Two slices closer than this fraction of the typical step are duplicates; a step this much
# longer than the typical one means slices are missing; steps must agree to 1% otherwise.
_DUPLICATE_FRACTION = 0.1
_GAP_FACTOR = 1.5
_EVEN_TOLERANCE = 0.01
# Patient and study attributes that a written series copies from its reference, to join that study.
_STUDY_KEYWORDS = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyInstanceUID",
    "StudyDate",
    "StudyTime",
    "StudyID",
    "AccessionNumber",
    "ReferringPhysicianName",
    "StudyDescription",
)
# What a read keeps in ``meta["dicom"]``: the study, its frame of reference (the world coordinates the
# geometry lives in) and the series itself.
_IDENTITY_KEYWORDS = (*_STUDY_KEYWORDS, "FrameOfReferenceUID", "SeriesInstanceUID", "SeriesNumber", "Modality")
# What every slice of one volume shares: ITK takes them from the first slice for all.
_PLANE_KEYWORDS = ("Rows", "Columns", "PixelSpacing")
_PIXEL_SPACING_RTOL = 1e-4


@dataclass(frozen=True)
class _Slice:
    path: Path
    position: np.ndarray  # ImagePositionPatient (mm, LPS)
    orientation: np.ndarray  # ImageOrientationPatient (row cosines, column cosines)
    series: str
    description: str
    identity: dict[str, str] = field(default_factory=dict)  # _IDENTITY_KEYWORDS present in the header
    sop_class: str = ""
    plane: dict[str, Any] = field(default_factory=dict)  # _PLANE_KEYWORDS present in the header
    thickness: float | None = None  # SliceThickness, else SpacingBetweenSlices: a single slice's extent


@dataclass(frozen=True)
class _Unplaced:
    """A DICOM file without ImagePositionPatient: not a slice (an SR, a SEG, a DICOMDIR) or a slice cut short."""

    path: Path
    sop_class: str  # SOPClassUID, else the file meta's MediaStorageSOPClassUID ('' when neither survived)
    series: str  # '' when its SeriesInstanceUID did not survive


def read_dicom_series(folder: Path, series_uid: str | None = None) -> Image:
    """Read the single DICOM series in ``folder`` (files of any name; non-DICOM files are ignored), or,
    with ``series_uid``, that series among several in the folder.

    ``meta`` holds ``series_description``, the slice ``files`` in order, and ``dicom``: the patient, study,
    frame-of-reference and series attributes of the first slice (what ``write_dicom_series(reference=)``
    copies).
    """
    import SimpleITK as sitk

    slices, unplaced = _read_headers(folder)
    if series_uid is not None:
        slices = [s for s in slices if s.series == series_uid]
        if not slices:
            raise DataError(f"{folder}: no slices of series {series_uid}")
    _check_unplaced(slices, unplaced)
    ordered = _check_and_sort(folder, slices)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames([str(s.path) for s in ordered])
    try:
        itk_image = reader.Execute()
        data = sitk.GetArrayFromImage(itk_image)
    except RuntimeError as error:
        raise _pixel_error(folder, ordered, error) from error
    array, geometry = from_sitk(itk_image, data)
    if len(ordered) == 1 and ordered[0].thickness is not None:
        # ITK gives a lone slice 1 mm along its normal; its thickness is what the voxels span (volumes in ml).
        geometry = geometry.with_spacing([*geometry.spacing[:2], ordered[0].thickness])
    meta = {
        "series_description": ordered[0].description,
        "files": [s.path.name for s in ordered],
        "dicom": dict(ordered[0].identity),
    }
    return Image(array=array, geometry=geometry, path=folder, meta=meta)


def series_voxel_count(folder: Path) -> int:
    """Rows x Columns of one DICOM slice in ``folder`` times the number of files there: an estimate of the
    series' voxels from a single header (for sharing work out by size), not a check of the series.

    Raises:
        DataError: no file in ``folder`` is a DICOM slice with Rows and Columns.
    """
    import pydicom
    from pydicom.errors import InvalidDicomError

    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    for path in files:
        try:
            header = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["Rows", "Columns"])
        except (InvalidDicomError, OSError, EOFError, ValueError):
            continue
        if "Rows" in header and "Columns" in header:
            return int(header.Rows) * int(header.Columns) * len(files)
    raise DataError(f"{folder}: no DICOM slice with Rows and Columns found among {len(files)} file(s)")


def _read_headers(folder: Path) -> tuple[list[_Slice], list[_Unplaced]]:
    """The slices of ``folder`` (DICOM files with an ImagePositionPatient) and its other DICOM files."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    if not files:
        raise DataError(f"{folder}: empty folder (expected the slices of one DICOM series)")
    slices, unplaced = [], []
    for path in files:
        try:
            header = pydicom.dcmread(path, stop_before_pixels=True)
        except InvalidDicomError:
            continue  # README, DICOMDIR viewers' extras, ...: not DICOM files at all
        except Exception as error:  # a DICOM file (it has the preamble) that pydicom cannot parse
            reason = str(error).strip().splitlines()[0][:200] if str(error).strip() else type(error).__name__
            raise DataError(f"{path}: damaged DICOM file: {reason} (truncated or corrupt?)") from error
        if "ImagePositionPatient" not in header:  # stop_before_pixels: PixelData is never in the header
            sop_class = header.get("SOPClassUID") or header.get("file_meta", {}).get("MediaStorageSOPClassUID", "")
            unplaced.append(_Unplaced(path, str(sop_class), str(header.get("SeriesInstanceUID", ""))))
            continue
        slices.append(_slice(path, header))
    if not slices:
        raise DataError(f"{folder}: no DICOM slices found among {len(files)} file(s)")
    return slices, unplaced


def _check_unplaced(slices: list[_Slice], unplaced: list[_Unplaced]) -> None:
    """A file of the slices' own SOP class (a CT image among CT slices) without a position is a slice cut
    short, unless it names another series: reading on without it would give a volume a slice short
    (silently so when it was the first or last)."""
    classes = {s.sop_class for s in slices} - {""}
    series = {s.series for s in slices}
    for other in unplaced:
        if other.sop_class in classes and (other.series in series or not other.series):
            raise DataError(
                f"{other.path}: damaged DICOM file: a {_class_name(other.sop_class)} without "
                f"ImagePositionPatient, {other.path.stat().st_size} bytes long (truncated?); "
                "replace it with a complete copy or remove it"
            )


def _class_name(sop_class: str) -> str:
    """'CT Image Storage' for its UID; the UID itself when pydicom does not know it."""
    from pydicom.uid import UID

    name = UID(sop_class).name
    return name if name != sop_class else f"SOP class {sop_class} file"


def _pixel_error(folder: Path, ordered: list[_Slice], error: RuntimeError) -> DataError:
    """The error for pixels ITK could not read, naming the first slice that cannot be read on its own (a
    file cut short in its pixels reads as a whole header): worth the second pass only on failure."""
    import SimpleITK as sitk

    for s in ordered:
        try:
            sitk.ReadImage(str(s.path))
        except RuntimeError:  # ITK's message only repeats the path ("Unable to determine ImageIO reader")
            return DataError(
                f"{s.path}: damaged DICOM file: its pixel data cannot be read (truncated or corrupt?); "
                "replace it with a complete copy or remove it"
            )
    return DataError(f"{folder}: cannot read the DICOM pixel data ({str(error).strip().splitlines()[-1]})")


def _slice(path: Path, header: Any) -> _Slice:
    """The placement of one slice; a header whose position or orientation is missing or not numbers is an error."""
    for keyword in ("ImagePositionPatient", "ImageOrientationPatient"):
        if keyword not in header:
            raise DataError(f"{path}: DICOM slice without {keyword}; cannot place it in the volume")
    try:
        position = np.asarray(header.ImagePositionPatient, dtype=float)
        orientation = np.asarray(header.ImageOrientationPatient, dtype=float)
    except (TypeError, ValueError) as error:
        raise DataError(f"{path}: ImagePositionPatient / ImageOrientationPatient are not numbers ({error})") from error
    if position.shape != (3,) or orientation.shape != (6,) or not np.all(np.isfinite([*position, *orientation])):
        raise DataError(f"{path}: ImagePositionPatient needs 3 numbers and ImageOrientationPatient 6")
    return _Slice(
        path=path,
        position=position,
        orientation=orientation,
        series=str(header.get("SeriesInstanceUID", "")),
        description=str(header.get("SeriesDescription", "")),
        identity=_identity(header),
        sop_class=str(header.get("SOPClassUID", "")),
        plane={k: _plain(header.get(k)) for k in _PLANE_KEYWORDS if header.get(k) not in (None, "")},
        thickness=_positive(header.get("SliceThickness")) or _positive(header.get("SpacingBetweenSlices")),
    )


def _plain(value: Any) -> Any:
    """A header value as Python numbers (multi-valued ones as a list), for comparing and showing."""
    if isinstance(value, str | bytes) or not hasattr(value, "__iter__"):
        return float(value) if not isinstance(value, int) else value
    return [float(v) for v in value]


def _positive(value: Any) -> float | None:
    """A decimal string as a positive number; None when absent, empty, zero or not a number."""
    try:
        number = float(value) if value not in (None, "") else 0.0
    except (TypeError, ValueError):
        return None
    return number if number > 0 and np.isfinite(number) else None


def _identity(header: Any) -> dict[str, str]:
    """The non-empty :data:`_IDENTITY_KEYWORDS` of a pydicom header, as strings."""
    identity = {}
    for keyword in _IDENTITY_KEYWORDS:
        value = header.get(keyword)
        if value is not None and str(value) != "":
            identity[keyword] = str(value)
    return identity


def _check_and_sort(folder: Path, slices: list[_Slice]) -> list[_Slice]:
    series = sorted({s.series for s in slices})
    if len(series) > 1:
        described = ", ".join(sorted({s.description or s.series for s in slices}))
        raise DataError(f"{folder}: {len(series)} DICOM series in one folder ({described}); put each in its own folder")
    orientation = slices[0].orientation
    for s in slices[1:]:
        if not np.allclose(s.orientation, orientation, atol=1e-4):
            raise DataError(f"{s.path}: slice orientation differs from {slices[0].path.name}; not one volume")
        _check_plane(s, slices[0])
    _check_pixel_spacing(slices[0])
    normal = np.cross(orientation[:3], orientation[3:])
    distance = np.array([float(s.position @ normal) for s in slices])
    order = np.argsort(distance, kind="stable")
    ordered = [slices[i] for i in order]
    distance = distance[order]
    if len(ordered) < 2:
        return ordered
    _check_stacking(folder, ordered, normal)
    steps = np.diff(distance)
    positive = steps[steps > 1e-6]
    typical = float(np.median(positive)) if positive.size else 0.0
    for i, step in enumerate(steps):
        if typical == 0.0 or step < _DUPLICATE_FRACTION * typical:
            raise DataError(
                f"{folder}: duplicated slice at {distance[i]:.3f} mm: {ordered[i].path.name} and "
                f"{ordered[i + 1].path.name}; remove one"
            )
    for i, step in enumerate(steps):
        if step > _GAP_FACTOR * typical:
            missing = round(step / typical) - 1
            raise DataError(
                f"{folder}: {missing} missing slice(s) between {ordered[i].path.name} ({distance[i]:.3f} mm) and "
                f"{ordered[i + 1].path.name} ({distance[i + 1]:.3f} mm); slices are {typical:.3f} mm apart"
            )
    if np.any(np.abs(steps - typical) > _EVEN_TOLERANCE * typical):
        raise DataError(
            f"{folder}: uneven slice spacing ({steps.min():.3f} to {steps.max():.3f} mm); "
            "resample the series to even spacing first"
        )
    return ordered


def _check_plane(s: _Slice, first: _Slice) -> None:
    """``s`` has the size and pixel spacing of ``first``: ITK would draw every slice on the first's grid."""
    for keyword in _PLANE_KEYWORDS:
        mine, theirs = s.plane.get(keyword), first.plane.get(keyword)
        same = mine == theirs or (
            isinstance(mine, list)
            and isinstance(theirs, list)
            and len(mine) == len(theirs)
            and np.allclose(mine, theirs, rtol=_PIXEL_SPACING_RTOL, atol=0.0)
        )
        if not same:
            raise DataError(
                f"{s.path}: {keyword} {_shown(mine)} differs from {first.path.name}'s {_shown(theirs)}; "
                "the slices of one volume share their size and pixel spacing"
            )


def _check_pixel_spacing(first: _Slice) -> None:
    """The slices say how large a pixel is. Without PixelSpacing ITK takes 1 x 1 mm, while the slice positions
    are in mm: the volume would be stretched against the patient, its volumes in ml and distances wrong, and
    a DICOM SEG drawn on it misplaced in a viewer. (ImagerPixelSpacing, a radiograph's detector pixel, is not
    the patient's.) All slices agree by then (:func:`_check_plane`), so the first speaks for them."""
    if "PixelSpacing" not in first.plane:
        raise DataError(
            f"{first.path}: no PixelSpacing (0028,0030), so the size of a pixel in the patient is unknown and "
            "the volume cannot be placed in mm; add it from the scanner's export or convert the series with "
            "its known spacing (e.g. to NIfTI)"
        )


def _shown(value: Any) -> str:
    if value is None:
        return "(absent)"
    return f"[{', '.join(f'{v:g}' for v in value)}]" if isinstance(value, list) else f"{value:g}"


def _check_stacking(folder: Path, ordered: list[_Slice], normal: np.ndarray) -> None:
    """Slices must stack along their normal: a gantry-tilted (sheared) series moves each slice sideways,
    which a volume grid cannot describe (ITK would silently place every slice above the first)."""
    first, last = ordered[0].position, ordered[-1].position
    offset = last - first
    sideways = offset - (offset @ normal) * normal
    along = abs(float(offset @ normal))
    if float(np.linalg.norm(sideways)) > max(1e-2, 1e-3 * along):
        angle = float(np.degrees(np.arctan2(np.linalg.norm(sideways), along)))
        raise DataError(
            f"{folder}: the slices are not stacked along their normal (tilted by {angle:.1f} degrees: gantry "
            "tilt?), so they are not one volume grid; resample the series onto a straight grid first"
        )


# ---------------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------------
# Stored pixels are 8 or 16 bits: integers spanning up to 65536 values are stored exactly; anything else
# is quantised linearly to 65536 levels through RescaleSlope/RescaleIntercept.
_LEVELS = 65536
# Direction columns must be orthonormal to this tolerance: DICOM has no shear and ITK derives the slice
# axis as row x column.
_ORTHONORMAL_ATOL = 1e-6


@dataclass(frozen=True)
class _Pixels:
    """Stored pixel values ``(X, Y, Z)`` and the decimal strings that map them back (stored * slope + intercept)."""

    stored: np.ndarray  # uint8, uint16 or int16
    slope: str
    intercept: str
    low: float  # the range of the values, for the display window
    high: float


def is_series_target(path: str | os.PathLike) -> bool:
    """``write_image``'s rule for a DICOM series target: a path written with a trailing separator
    (``"out/case_001/"``), or an existing folder. pathlib drops a trailing slash, so a *new* folder given
    as a ``Path`` is not recognised: pass ``f"{path}/"`` or call :func:`write_dicom_series`."""
    text = os.fspath(path)
    return text.endswith(("/", os.sep)) or Path(text).is_dir()


def check_series_target(folder: str | os.PathLike, overwrite: bool = False, reference: Image | None = None) -> Path:
    """``folder`` as a Path, if a DICOM series may be written there, else raise.

    A missing or empty folder is fine. A non-empty one is replaced only with ``overwrite`` and only if it
    holds nothing but DICOM files (a series written before), so that no other file is ever deleted.
    The ``reference`` series itself is never replaced.

    Raises:
        OutputExistsError: ``folder`` is a file; it holds files and ``overwrite`` is False; it holds
            something other than DICOM files; it is the reference series.
    """
    from pydicom.misc import is_dicom

    folder = Path(folder)
    if reference is not None and reference.path is not None and folder.resolve() == Path(reference.path).resolve():
        raise OutputExistsError(f"{folder} is the reference series itself; write the new series to another folder")
    if folder.exists() and not folder.is_dir():
        raise OutputExistsError(f"{folder} is a file; a DICOM series is written as a folder of slices")
    if not folder.is_dir() or not any(folder.iterdir()):
        return folder
    if not overwrite:
        raise OutputExistsError(f"{folder} exists; pass overwrite=True (--overwrite on the command line) to replace it")
    for entry in sorted(folder.iterdir()):
        if not (entry.is_file() and is_dicom(entry)):
            raise OutputExistsError(
                f"{folder} holds {entry.name}, which is not a DICOM file; only a folder of DICOM slices is replaced"
            )
    return folder


def write_dicom_series(
    folder: str | os.PathLike,
    array: np.ndarray,
    geometry: Geometry,
    *,
    overwrite: bool = False,
    reference: Image | None = None,
    series_description: str = "attnseg",
) -> Path:
    """Write a 3-D ``array`` ``(1, X, Y, Z)`` as a DICOM series: one file per slice ``k`` (``IM00001.dcm``...).

    Rows of a slice run along Y and columns along X (``Columns = X``, ``Rows = Y``); slice ``k`` sits at
    ``geometry.index_to_world([0, 0, k])``. Numbers are written as DICOM decimal strings of up to 16
    characters, which keeps about 1e-11 mm at a few hundred mm from the origin, so the geometry read back
    equals ``geometry`` to 1e-6 (checked after writing, by reading the series back with the slice checks
    of :func:`read_dicom_series`).

    Pixel values: integers (and whole-number floats) spanning at most 65536 values are stored exactly
    (8 bits for 0..255, else 16 bits, with an integer RescaleIntercept when needed), so label masks
    round-trip exactly. Other floats are quantised to 65536 levels: step ``(max - min) / 65535``, error at
    most half a step. The SOP class is Secondary Capture (modality ``OT``): a mask is a plain image series
    of label values, not DICOM-SEG.

    Args:
        folder: the series folder; written under a temporary name beside it, then renamed into place.
        array: ``(1, X, Y, Z)``, channel first (a CPU tensor is fine).
        geometry: its 3-D grid; the axes must be orthonormal and right-handed (slices stack along
            row x column), as every geometry read from DICOM is.
        overwrite: replace an existing series in ``folder`` (see :func:`check_series_target`).
        reference: an image read from a DICOM series: the new series joins its patient, study and frame
            of reference (same StudyInstanceUID and FrameOfReferenceUID), so a viewer or PACS shows the
            mask with the scan. Without it the series gets a new study and frame of reference.
        series_description: SeriesDescription (at most 64 characters are kept).

    Raises:
        DataError: not a single-channel 3-D array; sheared or left-handed axes; NaN or infinite values;
            ``reference`` was not read from DICOM.
        OutputExistsError: see :func:`check_series_target`.
    """
    folder = Path(folder)
    volume = _series_volume(folder, np.asarray(array), geometry)
    pixels = _encode_pixels(folder, volume)
    identity = _reference_identity(folder, reference)
    check_series_target(folder, overwrite, reference)
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = _sibling(folder, "tmp")
    staging.mkdir()
    try:
        _write_slices(staging, pixels, geometry, identity, series_description)
        _verify_series(staging, folder, geometry, volume.shape)
        _move_into_place(staging, folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder


def _series_volume(folder: Path, array: np.ndarray, geometry: Geometry) -> np.ndarray:
    """The ``(X, Y, Z)`` volume of a ``(1, X, Y, Z)`` array, after checking what DICOM slices can hold."""
    if geometry.ndim != 3:
        raise DataError(
            f"{folder}: a DICOM series holds a 3-D volume, got a {geometry.ndim}-D image; "
            "write 2-D images as .png, .tif or .nrrd"
        )
    if array.ndim != 4:
        raise DataError(
            f"{folder}: array of shape {array.shape} does not fit a 3-D geometry; pass channel-first (1, X, Y, Z)"
        )
    if array.shape[0] != 1:
        raise DataError(
            f"{folder}: a DICOM series holds one channel, got an array of shape {array.shape} with "
            f"{array.shape[0]} channels; write each channel as its own series, or write .nrrd or .nii.gz"
        )
    direction = geometry.direction_matrix
    if not np.allclose(direction.T @ direction, np.eye(3), atol=_ORTHONORMAL_ATOL):
        raise DataError(
            f"{folder}: the image axes are not orthogonal (a sheared grid), which DICOM slices cannot store; "
            "write .nrrd or .nii.gz"
        )
    if np.linalg.det(direction) < 0:
        raise DataError(
            f"{folder}: the slice axis points against row x column (a left-handed grid, {geometry.orientation()}), "
            "which DICOM slices cannot store; flip the array along its last axis (origin at the last slice) "
            "or write .nrrd"
        )
    return array[0]


def decimal_string(value: float) -> str:
    """``value`` as a DICOM decimal string (VR DS) of at most 16 characters, to about 1e-14 relative.

    pydicom's ``format_number_as_ds`` rounds to 16 characters but counts the digits before rounding, so a
    value just below a power of ten gets one character too many: 9.999999999999996 (the slice spacing
    of the built-in ``ctchest`` scan, as NRRD stores it) became ``"10.00000000000000"``, 17 characters,
    which pydicom warns about and a strict reader refuses. The rounded text is exact, so formatting the
    number it stands for again gives the short form (``"10.0"``).
    """
    from pydicom.valuerep import format_number_as_ds

    text = format_number_as_ds(float(value))
    return text if len(text) <= 16 else format_number_as_ds(float(text))


def _encode_pixels(folder: Path, volume: np.ndarray) -> _Pixels:
    """Stored integers and the rescale that maps them back (exact for integers; see write_dicom_series)."""
    if volume.dtype == bool:
        volume = volume.astype(np.uint8)
    if volume.dtype.kind not in "iuf":
        raise DataError(f"{folder}: cannot store {volume.dtype} pixels in DICOM")
    if volume.dtype.kind == "f" and not np.all(np.isfinite(volume)):
        raise DataError(f"{folder}: NaN or infinite values cannot be stored in DICOM pixels")
    low, high = (float(volume.min()), float(volume.max())) if volume.size else (0.0, 0.0)
    whole = volume.dtype.kind in "iu" or bool(np.all(volume == np.round(volume)))
    if whole and high - low < _LEVELS and abs(low) < 1e15:  # 1e15: an integer intercept fits a 16-character DS
        for dtype in (np.uint8, np.uint16, np.int16):
            info = np.iinfo(dtype)
            if info.min <= low and high <= info.max:
                return _Pixels(volume.astype(dtype), "1", "0", low, high)
        shifted = (volume.astype(np.int64) - int(low)).astype(np.uint16)
        return _Pixels(shifted, "1", str(int(low)), low, high)
    # Quantise with the slope and intercept as they will be read back from their decimal strings.
    slope = decimal_string((high - low) / (_LEVELS - 1) or 1.0)
    intercept = decimal_string(low)
    stored = np.rint((volume.astype(np.float64) - float(intercept)) / float(slope))
    return _Pixels(np.clip(stored, 0, _LEVELS - 1).astype(np.uint16), slope, intercept, low, high)


def _reference_identity(folder: Path, reference: Image | None) -> dict[str, str]:
    if reference is None:
        return {}
    identity = reference.meta.get("dicom")
    if not identity:
        raise DataError(
            f"{folder}: the reference {reference.name} was not read from a DICOM series, so it has no study to join"
        )
    return dict(identity)


def _sibling(folder: Path, kind: str) -> Path:
    """An unused hidden name beside ``folder`` (same file system, so renames are atomic)."""
    return folder.parent / f".{folder.name}.{uuid.uuid4().hex[:12]}.{kind}"


def _write_slices(
    staging: Path, pixels: _Pixels, geometry: Geometry, identity: dict[str, str], description: str
) -> None:
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    shared = _series_dataset(pixels, geometry, identity, description)
    slices = pixels.stored.shape[2]
    digits = max(5, len(str(slices)))
    for k in range(slices):
        ds = copy.deepcopy(shared)
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.InstanceNumber = k + 1
        ds.ImagePositionPatient = [decimal_string(float(v)) for v in geometry.index_to_world([0, 0, k])]
        data = np.ascontiguousarray(pixels.stored[:, :, k].T).astype(pixels.stored.dtype.newbyteorder("<")).tobytes()
        ds.PixelData = data + b"\0" * (len(data) % 2)  # DICOM values have even length
        ds.save_as(staging / f"IM{k + 1:0{digits}d}.dcm", enforce_file_format=True)


def _series_dataset(pixels: _Pixels, geometry: Geometry, identity: dict[str, str], description: str) -> Any:
    """The attributes every slice of the series shares (all but SOPInstanceUID, position, number, pixels)."""
    from pydicom.dataset import Dataset
    from pydicom.uid import SecondaryCaptureImageStorage, generate_uid

    from attnseg import __version__

    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"  # UTF-8: names copied from the reference may not be ASCII
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.ImageType = ["DERIVED", "SECONDARY"]
    for keyword in _STUDY_KEYWORDS:  # type 2: present, empty when unknown
        setattr(ds, keyword, identity.get(keyword, ""))
    ds.StudyInstanceUID = identity.get("StudyInstanceUID") or generate_uid()
    ds.FrameOfReferenceUID = identity.get("FrameOfReferenceUID") or generate_uid()
    ds.PositionReferenceIndicator = ""
    ds.SeriesInstanceUID = generate_uid()
    ds.SeriesNumber = 1000 + _integer(identity.get("SeriesNumber"))
    ds.SeriesDescription = description[:64]
    ds.Modality, ds.ConversionType = "OT", "WSD"  # other; workstation
    ds.Manufacturer, ds.SoftwareVersions = "attnseg", __version__
    now = datetime.now()
    ds.SeriesDate = ds.ContentDate = now.strftime("%Y%m%d")
    ds.SeriesTime = ds.ContentTime = now.strftime("%H%M%S")
    direction, spacing = geometry.direction_matrix, geometry.spacing
    ds.ImageOrientationPatient = [decimal_string(float(v)) for v in (*direction[:, 0], *direction[:, 1])]
    ds.PixelSpacing = [decimal_string(spacing[1]), decimal_string(spacing[0])]  # between rows, columns
    ds.SliceThickness = ds.SpacingBetweenSlices = decimal_string(spacing[2])
    ds.Rows, ds.Columns = pixels.stored.shape[1], pixels.stored.shape[0]
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    bits = 8 * pixels.stored.dtype.itemsize
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = bits, bits, bits - 1
    ds.PixelRepresentation = int(pixels.stored.dtype.kind == "i")
    ds.RescaleSlope, ds.RescaleIntercept, ds.RescaleType = pixels.slope, pixels.intercept, "US"
    ds.WindowCenter = decimal_string((pixels.low + pixels.high) / 2)
    ds.WindowWidth = decimal_string(max(pixels.high - pixels.low, 1.0))
    return ds


def _integer(text: str | None) -> int:
    try:
        return int(float(text)) if text else 0
    except ValueError:
        return 0


def _verify_series(staging: Path, folder: Path, geometry: Geometry, shape: tuple[int, ...]) -> None:
    """Read the slices just written back (slice checks included) and insist on the requested grid."""
    written = read_dicom_series(staging)
    if written.spatial_shape != tuple(shape) or not written.geometry.allclose(geometry, atol=WRITE_ATOL):
        diffs = "; ".join(written.geometry.differences(geometry, atol=WRITE_ATOL)) or f"shape {written.spatial_shape}"
        raise DataError(f"{folder}: the DICOM series written does not give back this image's grid ({diffs})")


def _move_into_place(staging: Path, folder: Path) -> None:
    """Rename the finished series onto ``folder``; an existing (empty or replaceable) folder is moved
    aside first and deleted only once the new series is in place, so a failure leaves the old one."""
    if not folder.exists():
        os.rename(staging, folder)
        return
    old = _sibling(folder, "old")
    os.rename(folder, old)
    try:
        os.rename(staging, folder)
    except OSError:
        os.rename(old, folder)
        raise
    shutil.rmtree(old, ignore_errors=True)
