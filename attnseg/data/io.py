"""Read and write medical images with their geometry.

Every image is an :class:`~attnseg.data.image.Image`: an array ``(C, X, Y[, Z])``, channel first, in the
file's voxel order as read (no reorientation), and the :class:`~attnseg.data.geometry.Geometry` of its grid
(LPS world).

Formats and the library that handles each:

==================  ===============================  ==============================================
format              extensions                        library
==================  ===============================  ==============================================
NIfTI-1             ``.nii``, ``.nii.gz``             nibabel (the header affine, read as stored)
NRRD                ``.nrrd``, ``.seg.nrrd``          SimpleITK (segment names kept in ``meta``)
MetaImage           ``.mha``, ``.mhd`` (+ raw file)   SimpleITK
PNG / TIFF (2D)     ``.png``, ``.tif``, ``.tiff``     SimpleITK (spacing only: no origin/direction;
                                                      palette PNG masks: :mod:`.png_palette`; a pixel
                                                      size only where :mod:`.pixel_size` trusts it)
DICOM series        a folder of slices                pydicom (slice checks, writing) + SimpleITK/GDCM
==================  ===============================  ==============================================

Writes are atomic (written under a temporary folder next to the target, then renamed into place),
refuse to overwrite unless asked, and are verified: the header written is read back and must give the
requested geometry (to 1e-6 mm, plus float32 rounding for NIfTI-1, whose header stores float32),
otherwise the write fails with a :class:`~attnseg.errors.DataError` saying which format to use instead
(PNG cannot store an origin, for instance).

A DICOM series is written (:func:`~attnseg.data.dicom.write_dicom_series`) when the target path ends with
a separator (``"out/case_001/"``) or names an existing folder; any other path is a file.
``reference=`` (the scan read from DICOM) puts the new series in the scan's study.
"""

from __future__ import annotations

import contextlib
import gzip
import logging
import math
import os
import shutil
import tempfile
import zlib
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from attnseg import hooks
from attnseg.data.colour import colour_channels
from attnseg.data.dicom import is_series_target, read_dicom_series, write_dicom_series
from attnseg.data.geometry import Geometry
from attnseg.data.image import WRITE_ATOL, WRITE_RTOL, Image, from_sitk
from attnseg.data.metaimage import missing_data
from attnseg.data.nrrd import missing_data as missing_nrrd_data
from attnseg.data.pixel_size import stores_pixel_size
from attnseg.data.png_palette import palette_indices
from attnseg.errors import DataError, OutputExistsError

# Longest first, so that ".seg.nrrd" wins over ".nrrd" and ".nii.gz" over ".gz".
EXTENSIONS: dict[str, str] = {
    ".seg.nrrd": "NRRD",
    ".nii.gz": "NIfTI",
    ".nii": "NIfTI",
    ".nrrd": "NRRD",
    ".mha": "MetaImage",
    ".mhd": "MetaImage",
    ".png": "PNG",
    ".tiff": "TIFF",
    ".tif": "TIFF",
}
# 2-D picture formats: one plane, spacing at most (no origin or direction), grey or colour pixels.
PICTURE_KINDS = ("PNG", "TIFF")
# How attnseg wants a colour picture stored, for the errors that meet one where one channel is expected.
COLOUR_HELP = (
    "a colour picture is one case of three channels: declare them in dataset.json's channel_names "
    '({"0": "R", "1": "G", "2": "B"}) and keep one RGB file CASE_0000, or save its channels as three greyscale '
    "files CASE_0000 (R), CASE_0001 (G), CASE_0002 (B) (a grey picture saved in colour: convert it to greyscale)"
)
SUPPORTED_HELP = (
    "NIfTI (.nii, .nii.gz), NRRD (.nrrd, .seg.nrrd), MetaImage (.mha, .mhd), PNG, TIFF, "
    "or a DICOM series folder (to write one, end the path with '/')"
)


def file_ending(path: str | Path) -> str:
    """The recognised extension of ``path`` (``'.nii.gz'``, ``'.seg.nrrd'``...), or raise :class:`DataError`."""
    name = Path(path).name.lower()
    for ending in EXTENSIONS:
        if name.endswith(ending):
            return ending
    suffix = "".join(Path(path).suffixes[-2:]) or "(none)"
    raise DataError(f"{path}: unsupported file type '{suffix}'; supported: {SUPPORTED_HELP}")


def strip_ending(path: str | Path) -> str:
    """The file name without its recognised extension: ``case_0000.nii.gz`` -> ``case_0000``."""
    name = Path(path).name
    return name[: len(name) - len(file_ending(path))]


def is_picture(path: str | Path) -> bool:
    """A 2-D picture file (PNG, TIFF), by its name: ``path`` may be a bare ending such as ``'.png'``."""
    return EXTENSIONS[file_ending(path)] in PICTURE_KINDS


def pixel_size_stored(path: str | Path) -> bool:
    """Whether an image file (or a DICOM folder) states its pixel size in the world; a picture that does not
    is read with a spacing of 1 x 1 and measured in pixels (:mod:`attnseg.data.pixel_size`)."""
    path = Path(path)
    return path.is_dir() or stores_pixel_size(path, EXTENSIONS[file_ending(path)])


def _in_pixels_if_unstated(path: Path, geometry: Geometry) -> Geometry:
    """``geometry`` with a spacing of 1 per axis when ``path`` states no pixel size: a TIFF's print resolution
    (dpi) is not the size of the object's pixels, and must not pass for mm."""
    return geometry if pixel_size_stored(path) else geometry.with_spacing([1.0] * geometry.ndim)


def is_image_file(path: Path) -> bool:
    """A regular, non-hidden file with a supported extension (the raw half of a .mhd pair is not)."""
    if not path.is_file() or path.name.startswith("."):
        return False
    try:
        file_ending(path)
    except DataError:
        return False
    return True


# ---------------------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------------------
def read_image(path: str | Path, *, spatial_dims: int | None = None, multichannel: bool = True) -> Image:
    """Read an image file or a DICOM series folder.

    Args:
        path: a file with a supported extension, or a folder holding one DICOM series.
        spatial_dims: if given, the image must have this many spatial dimensions (2 or 3).
        multichannel: if False, a file with several channels (a 4-D NIfTI, a vector image, RGB) is an
            error: nnU-Net stores each channel of a case in its own file (``_0000``, ``_0001``...).

    Raises:
        DataError: missing or unreadable file (truncated or corrupt gzip included), unsupported type,
            or a dimensionality other than the one asked for; the message names the file.
    """
    path = Path(path)
    if path.is_dir():
        with reading(path, "DICOM series"):
            image = read_dicom_series(path)
    else:
        if not path.exists():
            raise DataError(f"{path}: no such file")
        ending = file_ending(path)
        kind = EXTENSIONS[ending]
        if path.stat().st_size == 0:
            raise DataError(f"{path}: empty file (0 bytes); expected a {kind} image")
        with reading(path, kind):
            image = _read_nifti(path) if kind == "NIfTI" else _read_sitk(path, ending)
    _check_voxels(image)
    _check_dims(image, spatial_dims, multichannel)
    return image


def read_label(path: str | Path, *, spatial_dims: int | None = None) -> Image:
    """Read a label (mask) file: one channel of class values.

    A palette PNG gives its palette indices (the classes drawn), not the colours its palette shows them in
    (:mod:`attnseg.data.png_palette`). A file with several channels (an RGB mask) is refused saying how to
    save a mask: its colours are not class values, and guessing a colour -> class mapping would be silent.

    Raises:
        DataError: as :func:`read_image`, or the file holds several channels; the message names the file.
    """
    path = Path(path)
    image = read_image(path, spatial_dims=spatial_dims)
    if image.channels > 1 and path.is_file() and EXTENSIONS[file_ending(path)] == "PNG":
        indices = palette_indices(path)
        if indices is not None and indices.shape == image.spatial_shape:
            return Image(indices[None], image.geometry, path, image.meta)
    if image.channels > 1:
        shape = " x ".join(str(s) for s in image.spatial_shape)
        flat = image.spatial_dims == 2
        colour = " (a mask saved in colour?)" if flat and image.channels in (3, 4) else ""
        how = "a greyscale PNG or TIFF, or a palette PNG whose indices are the classes" if flat else "one file"
        raise DataError(
            f"{path}: a label holds one class value per voxel, but this {shape} image has {image.channels} "
            f"channels{colour}; save it as one channel of values 0, 1, 2, ... ({how})"
        )
    return image


@contextlib.contextmanager
def reading(path: Path, kind: str) -> Iterator[None]:
    """Turn any failure while a library reads ``path`` into one :class:`DataError` that names the file.

    nibabel, SimpleITK and pydicom fail in many ways on a damaged file (HeaderDataError, WrapStructError,
    RuntimeError, struct.error, a ValueError from an impossible geometry...); a user must see which file
    is bad and why, not a traceback from inside a library.
    """
    try:
        yield
    except DataError:
        raise
    except MemoryError as error:
        raise DataError(f"{path}: the {kind} header describes an image too large to hold in memory") from error
    except Exception as error:
        raise _unreadable(path, kind, error) from error


def _check_voxels(image: Image) -> None:
    """Real numbers only: complex, RGB-struct or object voxels are not intensities or labels."""
    if image.array.dtype.kind not in "biuf":
        raise DataError(
            f"{image.name}: voxels of type {image.array.dtype} are not real numbers; attnseg reads integer, "
            "boolean or floating-point images"
        )
    if image.array.size == 0:
        raise DataError(f"{image.name}: image of shape {image.array.shape} holds no voxels")


def read_case(
    paths: Sequence[str | Path],
    *,
    spatial_dims: int | None = None,
    one_channel_per_file: bool = True,
    atol: float = 1e-4,
    channels: int | None = None,
) -> Image:
    """Read the channel files of one case (nnU-Net ``_0000``, ``_0001``...) into one ``(C, ...)`` image.

    Each file must hold one channel (unless ``one_channel_per_file`` is False and there is one file); all
    must share shape and geometry (to ``atol`` mm), else :class:`DataError` naming the file that differs.
    One picture file (PNG, TIFF) for a case of ``channels`` > 1 is one colour picture holding them all
    (nnU-Net's natural-image layout, :mod:`attnseg.data.colour`).
    """
    if not paths:
        raise DataError("a case needs at least one image file")
    if len(paths) == 1 and channels is not None and channels > 1 and is_picture(paths[0]):
        return colour_channels(read_image(paths[0], spatial_dims=spatial_dims), channels)
    if len(paths) == 1 and not one_channel_per_file:
        return read_image(paths[0], spatial_dims=spatial_dims)
    images = [read_image(p, spatial_dims=spatial_dims, multichannel=False) for p in paths]
    if len(images) == 1:
        return images[0]
    first = images[0]
    for other in images[1:]:
        if other.spatial_shape != first.spatial_shape:
            raise DataError(
                f"{other.path}: shape {other.spatial_shape} differs from {first.path} {first.spatial_shape}; "
                "all channels of a case must share one grid"
            )
        diffs = other.geometry.differences(first.geometry, atol=atol)
        if diffs:
            raise DataError(f"{other.path}: geometry differs from {first.path} ({'; '.join(diffs)})")
    array = np.concatenate([np.asarray(im.array, dtype=np.result_type(*[i.array for i in images])) for im in images])
    return Image(array=array, geometry=first.geometry, path=first.path, meta={"channel_files": [str(p) for p in paths]})


def _check_dims(image: Image, spatial_dims: int | None, multichannel: bool) -> None:
    if not multichannel and image.channels > 1:
        if image.spatial_dims == 2:  # a colour picture (RGB, RGBA, a palette expanded to RGB), not a 3-D image
            shape = " x ".join(str(s) for s in image.spatial_shape)
            raise DataError(
                f"{image.name}: 2-D image of {shape} with {image.channels} channels (colour?) where one channel "
                f"was expected; {COLOUR_HELP}"
            )
        shape = " x ".join(str(s) for s in (*image.spatial_shape, image.channels))
        raise DataError(
            f"{image.name}: {image.spatial_dims + 1}-D image ({shape}) where a {image.spatial_dims}-D image "
            "with one channel was expected; store each channel in its own file (_0000, _0001, ...)"
        )
    if spatial_dims is not None and image.spatial_dims != spatial_dims:
        raise DataError(
            f"{image.name}: {image.spatial_dims}-D image of shape {image.spatial_shape} where a "
            f"{spatial_dims}-D image was expected"
        )


def _unreadable(path: Path, kind: str, error: BaseException) -> DataError:
    text = " ".join(line.strip() for line in str(error).strip().splitlines() if line.strip())
    # SimpleITK prefixes its messages with C++ source locations; keep what follows "sitk::ERROR:".
    reason = text.split("sitk::ERROR:", 1)[1].strip() if "sitk::ERROR:" in text else text
    reason = reason or type(error).__name__
    return DataError(
        f"{path}: cannot read {kind} file: {reason[:300]} (is the file truncated or corrupt, or not {kind}?)"
    )


def _read_nifti(path: Path) -> Image:
    nifti = _load_nifti(path)
    data = np.asanyarray(nifti.dataobj)
    affine = nifti.affine
    if affine is None or not np.all(np.isfinite(affine)):
        raise DataError(f"{path}: the NIfTI header holds no valid affine (NaN, infinite or missing)")
    if data.ndim == 2:  # a 2-D NIfTI: its grid is the first two columns of the 4x4 affine
        keep = [0, 1, 3]
        geometry = Geometry.from_ras_affine(affine[np.ix_(keep, keep)])
        array = data[None]
    elif data.ndim == 3:
        geometry, array = Geometry.from_ras_affine(affine), data[None]
    elif data.ndim == 4:  # (X, Y, Z, T): the Decathlon stores modalities along the 4th axis
        geometry, array = Geometry.from_ras_affine(affine), np.moveaxis(data, -1, 0)
    elif data.ndim == 5 and data.shape[3] == 1:  # (X, Y, Z, 1, C): NIfTI's vector intent
        geometry, array = Geometry.from_ras_affine(affine), np.moveaxis(data[:, :, :, 0], -1, 0)
    else:
        raise DataError(f"{path}: NIfTI of shape {data.shape} is not an image attnseg can use (2-D, 3-D or 4-D)")
    return Image(array=np.ascontiguousarray(array), geometry=geometry, path=path)


def _load_nifti(path: Path):
    """nibabel image; a .gz is decompressed whole first so that its CRC is checked (nibabel stops reading
    at the last voxel, before the gzip trailer, so a corrupt but complete-looking stream would pass)."""
    import nibabel as nib

    with _quiet_nibabel():
        if not path.name.lower().endswith(".gz"):
            return nib.load(str(path))
        with gzip.open(path, "rb") as stream:
            data = stream.read()
        try:
            return nib.Nifti1Image.from_bytes(data)
        except (nib.filebasedimages.ImageFileError, ValueError):
            return nib.Nifti2Image.from_bytes(data)


@contextlib.contextmanager
def _quiet_nibabel() -> Iterator[None]:
    """nibabel logs each header check it tries on a damaged file ("sizeof_hdr should be 348..."), twice when
    NIfTI-2 is tried after NIfTI-1; the DataError we raise says what is wrong, once."""
    logger = logging.getLogger("nibabel.global")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


def _simpleitk():
    """SimpleITK, with ITK's own warnings off: on a damaged file they print C++ source locations that read
    like a crash; the exception we turn into a DataError carries the reason."""
    import SimpleITK as sitk

    sitk.ProcessObject.SetGlobalWarningDisplay(False)
    return sitk


def _read_sitk(path: Path, ending: str) -> Image:
    sitk = _simpleitk()
    if EXTENSIONS[ending] == "MetaImage":  # ITK pads short MetaImage data instead of failing
        problem = missing_data(path)
        if problem:
            raise DataError(f"{path}: {problem}")
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    itk_image = reader.Execute()
    data = sitk.GetArrayFromImage(itk_image)  # (Z, Y, X[, C]): reversed axes, components last
    array, geometry = from_sitk(itk_image, data)
    geometry = _in_pixels_if_unstated(path, geometry)
    meta: dict[str, Any] = {}
    if ending == ".seg.nrrd":
        meta["segments"] = _segments_from_metadata(itk_image)
    return Image(array=array, geometry=geometry, path=path, meta=meta)


def _segments_from_metadata(itk_image: Any) -> dict[str, int]:
    """Segment name -> label value from a Slicer .seg.nrrd header (layer 0 segments)."""
    keys = set(itk_image.GetMetaDataKeys())
    segments: dict[str, int] = {}
    index = 0
    while f"Segment{index}_LabelValue" in keys:
        name_key = f"Segment{index}_Name"
        name = itk_image.GetMetaData(name_key) if name_key in keys else f"Segment_{index + 1}"
        segments[name] = int(itk_image.GetMetaData(f"Segment{index}_LabelValue"))
        index += 1
    return segments


# ---------------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------------
def write_image(
    path: str | Path,
    array: np.ndarray,
    geometry: Geometry,
    *,
    overwrite: bool = False,
    segment_names: Mapping[str, int] | None = None,
    reference: Image | None = None,
) -> Path:
    """Write ``array`` ``(C, X, Y[, Z])`` (a torch tensor on the CPU is fine) with ``geometry``.

    The format follows the path: its extension (see :data:`EXTENSIONS`), or a DICOM series when ``path``
    ends with a separator (``"out/case_001/"``) or is an existing folder (pathlib drops a trailing slash:
    pass ``f"{folder}/"``, or call :func:`~attnseg.data.dicom.write_dicom_series` directly). A DICOM series
    holds one 3-D channel; see ``write_dicom_series`` for its pixel encoding and precision.

    One channel gives a scalar image; several give a 4-D NIfTI (the Decathlon layout) or a vector image
    in the other formats. ``segment_names`` (name -> label value) names the segments of a ``.seg.nrrd``.
    ``reference`` (an image read from a DICOM series) gives a DICOM target that series' patient, study and
    frame of reference; files in other formats carry no study identity and ignore it.

    Raises:
        DataError: the extension is unsupported; the format cannot hold the array (PNG: 2-D, 8/16-bit;
            DICOM: one 3-D channel) or cannot store the geometry.
        OutputExistsError: the target exists and ``overwrite`` is False.
    """
    if is_series_target(path):
        return write_dicom_series(path, array, geometry, overwrite=overwrite, reference=reference)
    path = Path(path)
    ending = file_ending(path)
    array = _writable_array(np.asarray(array), geometry, path)
    targets = [path]
    if ending == ".mhd":  # the pixel data lives beside the header
        targets += [path.with_name(path.name[: -len(ending)] + ext) for ext in (".zraw", ".raw")]
    if not overwrite:
        for target in targets:
            if target.exists():
                raise OutputExistsError(
                    f"{target} exists; pass overwrite=True (--overwrite on the command line) to replace it"
                )
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        temporary = staging / path.name
        if EXTENSIONS[ending] == "NIfTI":
            _write_nifti(temporary, array, geometry)
        else:
            _write_sitk(temporary, array, geometry, ending, segment_names)
        _verify_geometry(temporary, geometry, path, ending)
        hooks.progress("output-staged", path)  # test/diagnostic hook (attnseg.hooks)
        # Data files first, the header last: a reader never sees a header without its data.
        written = sorted(staging.iterdir(), key=lambda p: p.name == path.name)
        for item in written:
            os.replace(item, path.parent / item.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return path


def _writable_array(array: np.ndarray, geometry: Geometry, path: Path) -> np.ndarray:
    if array.ndim != geometry.ndim + 1:
        raise DataError(
            f"{path}: array of shape {array.shape} does not fit a {geometry.ndim}-D geometry; "
            "pass channel-first (C, X, Y[, Z])"
        )
    if array.dtype == bool:
        return array.astype(np.uint8)
    if array.dtype == np.float16:
        return array.astype(np.float32)
    if array.dtype.kind in "iu" and array.dtype.itemsize == 8:
        # Many tools cannot read 64-bit integer images; use the smallest type that holds the values.
        lo, hi = (int(array.min()), int(array.max())) if array.size else (0, 0)
        for candidate in (np.uint8, np.int16, np.int32):
            info = np.iinfo(candidate)
            if info.min <= lo and hi <= info.max:
                return array.astype(candidate)
    return array


def _write_nifti(path: Path, array: np.ndarray, geometry: Geometry) -> None:
    import nibabel as nib

    ras = geometry.ras_affine
    if geometry.ndim == 2:  # embed the 2-D grid in a 3-D affine with a unit third axis
        full = np.eye(4)
        full[np.ix_([0, 1, 3], [0, 1, 3])] = ras
        ras = full
    data = array[0] if array.shape[0] == 1 else np.moveaxis(array, 0, -1)
    nifti = nib.Nifti1Image(data, ras)
    nifti.header.set_xyzt_units("mm")
    nifti.set_sform(ras, code=1)
    nifti.set_qform(ras, code=1)  # rotation part only: shears live in the sform, which readers prefer
    nib.save(nifti, str(path))


def _write_sitk(
    path: Path, array: np.ndarray, geometry: Geometry, ending: str, segment_names: Mapping[str, int] | None
) -> None:
    import SimpleITK as sitk

    kind = EXTENSIONS[ending]
    if kind in PICTURE_KINDS and geometry.ndim != 2:
        raise DataError(f"{path.name}: {kind} holds 2-D images, got a {geometry.ndim}-D array; use .nii.gz or .nrrd")
    if kind == "PNG" and array.dtype not in (np.uint8, np.uint16):
        raise DataError(f"{path.name}: PNG holds 8- or 16-bit unsigned integers, got {array.dtype}; use .tif or .nrrd")
    channels = array.shape[0]
    reversed_axes = tuple(range(array.ndim - 1, 0, -1))  # (X, Y, Z) -> (Z, Y, X) as SimpleITK expects
    if channels == 1:
        itk_image = sitk.GetImageFromArray(np.ascontiguousarray(np.transpose(array[0], [a - 1 for a in reversed_axes])))
    else:
        data = np.transpose(array, (*reversed_axes, 0))
        itk_image = sitk.GetImageFromArray(np.ascontiguousarray(data), isVector=True)
    itk_image.SetSpacing([float(s) for s in geometry.spacing])
    itk_image.SetOrigin([float(o) for o in geometry.origin])
    itk_image.SetDirection([float(v) for v in geometry.direction_matrix.ravel()])
    if ending == ".seg.nrrd" and channels == 1:
        _add_segment_metadata(itk_image, array[0], segment_names)
    try:
        sitk.WriteImage(itk_image, str(path), useCompression=kind != "PNG")
    except RuntimeError as error:
        raise _unreadable(path, kind, error) from error


def _add_segment_metadata(itk_image: Any, labels: np.ndarray, segment_names: Mapping[str, int] | None) -> None:
    """The Slicer segmentation fields (slicerio / 3D Slicer read them): one segment per non-zero label value."""
    if segment_names is not None:
        segments = {name: int(value) for name, value in segment_names.items() if int(value) != 0}
    else:
        segments = {f"Segment_{int(v)}": int(v) for v in np.unique(labels) if v != 0}
    extent = " ".join(f"0 {s - 1}" for s in labels.shape)
    itk_image.SetMetaData("Segmentation_MasterRepresentation", "Binary labelmap")
    itk_image.SetMetaData("Segmentation_ContainedRepresentationNames", "Binary labelmap|")
    for index, (name, value) in enumerate(segments.items()):
        itk_image.SetMetaData(f"Segment{index}_ID", f"Segment_{value}")
        itk_image.SetMetaData(f"Segment{index}_Name", name)
        itk_image.SetMetaData(f"Segment{index}_LabelValue", str(value))
        itk_image.SetMetaData(f"Segment{index}_Layer", "0")
        itk_image.SetMetaData(f"Segment{index}_Extent", extent)


def _verify_geometry(written: Path, geometry: Geometry, target: Path, ending: str) -> None:
    """Read the header just written and insist it gives back the requested geometry."""
    stored = read_geometry(written)
    if not stored.allclose(geometry, atol=WRITE_ATOL, rtol=WRITE_RTOL):
        diffs = "; ".join(stored.differences(geometry, atol=WRITE_ATOL)) or "precision"
        raise DataError(
            f"{target}: {EXTENSIONS[ending]} cannot store this image's geometry (stored {diffs}); "
            "write .nii.gz, .nrrd or .mha instead"
        )


def missing_voxel_data(path: str | Path) -> str | None:
    """Why an image file whose header reads holds less voxel data than that header needs, or None.

    A header-only look (:func:`read_grid`) takes a copy cut short for a finished file; this is the check
    that a file is whole without decoding it where the format allows: a NIfTI's size (``.nii``) or its
    gzip trailer's length (``.nii.gz``), a MetaImage's data (:func:`attnseg.data.metaimage.missing_data`), an
    NRRD's attached data (:func:`attnseg.data.nrrd.missing_data`). Other formats: None (their readers fail on
    short data when the file is read).
    """
    path = Path(path)
    kind = EXTENSIONS[file_ending(path)]
    if kind == "MetaImage":
        return missing_data(path)
    if kind == "NRRD":
        return missing_nrrd_data(path)
    if kind != "NIfTI":
        return None
    import nibabel as nib

    with reading(path, "NIfTI"), _quiet_nibabel():
        nifti = nib.load(str(path))  # the proxy's offset: where the voxels start (the header's may say 0)
        voxels = math.prod(nifti.header.get_data_shape()) * nifti.header.get_data_dtype().itemsize
        needed = int(nifti.dataobj.offset) + voxels
    found = _gzip_length(path, needed) if path.name.lower().endswith(".gz") else path.stat().st_size
    if isinstance(found, str):
        return found
    if found < needed:
        return f"holds {found:,} bytes of NIfTI header and voxels where its header needs {needed:,}; is it truncated?"
    return None


def _gzip_length(path: Path, expected: int) -> int | str:
    """The decompressed length of a gzip file, or why its stream is broken. The trailer's ISIZE (the length
    mod 2**32) answers in constant time when it is what ``expected`` predicts, the common case; otherwise
    (a cut stream, whose last bytes are no trailer, or several gzip members) the file is decompressed."""
    with open(path, "rb") as handle:
        handle.seek(-4, os.SEEK_END)
        if int.from_bytes(handle.read(4), "little") == expected % 2**32:
            return expected
    length = 0
    try:
        with gzip.open(path, "rb") as stream:
            while chunk := stream.read1(1 << 16):
                length += len(chunk)
    except (EOFError, OSError, zlib.error) as error:  # cut or damaged: reading it would fail the same way
        return f"its gzip stream is cut short or damaged after {length:,} bytes ({error})"
    return length


def read_geometry(path: str | Path) -> Geometry:
    """The geometry of an image file from its header alone (no pixel data read)."""
    return read_grid(path)[1]


def read_grid(path: str | Path) -> tuple[tuple[int, ...], Geometry]:
    """The spatial shape ``(X, Y[, Z])`` and geometry of an image file from its header alone (no pixel
    data read: cheap enough to size up thousands of scans before reading any)."""
    path = Path(path)
    ending = file_ending(path)
    if EXTENSIONS[ending] == "NIfTI":
        import nibabel as nib

        with reading(path, "NIfTI"), _quiet_nibabel():
            nifti = nib.load(str(path))
            shape = tuple(int(s) for s in nifti.shape)
            if len(shape) == 2:
                keep = [0, 1, 3]
                return shape, Geometry.from_ras_affine(nifti.affine[np.ix_(keep, keep)])
            return shape[:3], Geometry.from_ras_affine(nifti.affine)
    sitk = _simpleitk()
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    with reading(path, EXTENSIONS[ending]):
        reader.ReadImageInformation()
        dim = min(reader.GetDimension(), 3)
        direction = np.asarray(reader.GetDirection()).reshape(reader.GetDimension(), -1)[:dim, :dim]
        shape = tuple(int(s) for s in reader.GetSize()[:dim])
        geometry = Geometry.create(reader.GetSpacing()[:dim], reader.GetOrigin()[:dim], direction)
        return shape, _in_pixels_if_unstated(path, geometry)
