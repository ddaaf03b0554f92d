"""Reading a DICOM series as a user's export may hold it: a slice cut short anywhere (first, middle or last
by position; in its header or in its pixels) is named, never left out; slices of another size or pixel
spacing are named, never read on the first slice's grid; a single slice keeps its thickness."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest

from attnseg.data.dicom import read_dicom_series
from attnseg.data.geometry import Geometry
from attnseg.errors import DataError
from tests.dicom_series import edit_slices, scan, write_case
from tests.fixtures import write_dicom_series


def _slices(folder: Path) -> list[Path]:
    """The files of an axial test series, in position order (IM000_0.dcm ... IM005_0.dcm)."""
    return sorted(folder.iterdir())


def _header_end(path: Path) -> int:
    """The offset of the PixelData element: everything before it is the header."""
    return pydicom.dcmread(path, defer_size=64).get_item(0x7FE00010, keep_deferred=True).value_tell - 12


@pytest.mark.parametrize("index", [0, 2, 5])  # first, middle and last slice by position
@pytest.mark.parametrize("cut", ["after_file_meta", "before_position", "before_pixels", "in_pixels"])
def test_a_truncated_slice_is_named_wherever_it_lies(tmp_path, index, cut):
    folder = write_case(tmp_path / "series", "axial")
    victim = _slices(folder)[index]
    content = victim.read_bytes()
    header = pydicom.dcmread(victim, stop_before_pixels=True)
    meta_end = 132 + 12 + int(header.file_meta.FileMetaInformationGroupLength)
    ends = {
        "after_file_meta": meta_end + 8,  # only the file meta and a part of the first element survive
        "before_position": meta_end + 120,  # SOPClassUID survives, ImagePositionPatient does not
        "before_pixels": _header_end(victim),  # a whole header and no pixels
        "in_pixels": len(content) - 101,
    }
    victim.write_bytes(content[: ends[cut]])
    with pytest.raises(DataError, match=rf"{victim.name}: damaged DICOM file: .*truncated"):
        read_dicom_series(folder)


def test_a_damaged_file_of_another_series_does_not_stop_this_one(tmp_path):
    folder = write_case(tmp_path / "series", "axial")
    other = write_case(tmp_path / "other", "axial")
    victim = _slices(other)[1]
    victim.rename(folder / "other.dcm")
    content = (folder / "other.dcm").read_bytes()
    (folder / "other.dcm").write_bytes(content[: _header_end(folder / "other.dcm") - 4])  # its series is known
    series = pydicom.dcmread(_slices(folder)[0]).SeriesInstanceUID
    np.testing.assert_array_equal(read_dicom_series(folder, series).array[0], scan())


@pytest.mark.parametrize(
    ("keyword", "value", "shown"),
    [("PixelSpacing", ["0.45", "0.8"], r"PixelSpacing \[0.45, 0.8\]"), ("Rows", 9, r"Rows 9")],
)
def test_a_slice_of_another_size_or_pixel_spacing_is_named(tmp_path, keyword, value, shown):
    folder = write_case(tmp_path / "series", "axial")

    def change(ds: pydicom.Dataset, index: int) -> None:
        if index == 3:
            setattr(ds, keyword, value)
            ds.PixelData = ds.PixelData[: int(ds.Rows) * int(ds.Columns) * 2]

    edit_slices(folder, change)
    with pytest.raises(DataError, match=rf"IM003_0.dcm: {shown} differs from IM000_0.dcm"):
        read_dicom_series(folder)


@pytest.mark.parametrize(("spacing_between", "expected"), [(None, 2.5), ("3.0", 2.5)])
def test_a_single_slice_keeps_its_slice_thickness(tmp_path, spacing_between, expected):
    geometry = Geometry.create([0.8, 0.9, 2.5], [-10.0, 20.0, 30.0])
    write_dicom_series(tmp_path / "one", scan()[:, :, :1], geometry)  # SliceThickness 2.5

    def change(ds: pydicom.Dataset, _: int) -> None:
        if spacing_between is not None:
            ds.SpacingBetweenSlices = spacing_between

    edit_slices(tmp_path / "one", change)
    image = read_dicom_series(tmp_path / "one")
    assert image.spatial_shape == (20, 18, 1)
    np.testing.assert_allclose(image.geometry.spacing, (0.8, 0.9, expected))
    np.testing.assert_allclose(image.geometry.origin, (-10.0, 20.0, 30.0))


def test_a_single_slice_without_thickness_is_one_millimetre(tmp_path):
    write_dicom_series(tmp_path / "one", scan()[:, :, :1], Geometry.create([0.8, 0.9, 2.5], [0.0, 0.0, 0.0]))
    edit_slices(tmp_path / "one", lambda ds, _: delattr(ds, "SliceThickness"))
    np.testing.assert_allclose(read_dicom_series(tmp_path / "one").geometry.spacing, (0.8, 0.9, 1.0))


@pytest.mark.parametrize("imager_spacing", [None, ["0.5", "0.6"]])
def test_a_series_without_pixel_spacing_is_refused_by_name(tmp_path, imager_spacing):
    folder = write_case(tmp_path / "series", "axial")

    def change(ds: pydicom.Dataset, _: int) -> None:
        del ds.PixelSpacing  # ITK would read 1 x 1 mm, against slice positions in mm
        if imager_spacing is not None:
            ds.ImagerPixelSpacing = imager_spacing  # a detector's pixel, not the patient's

    edit_slices(folder, change)
    with pytest.raises(DataError, match=r"IM000_0.dcm: no PixelSpacing .* cannot be placed in mm"):
        read_dicom_series(folder)
