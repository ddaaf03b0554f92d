"""Writing DICOM series: geometry to 1e-6 (oblique included), exact masks, documented float quantisation,
study identity from a reference series, atomic writes that never replace what they should not."""

from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

import attnseg.data.dicom as dicom
from attnseg.data.geometry import Geometry
from attnseg.data.io import read_image, write_image
from attnseg.errors import DataError, OutputExistsError
from tests.fixtures import rotation, write_dicom_series

SHAPE = (5, 6, 7)


def _mask(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 4, (1, *SHAPE)).astype(np.uint8)


def _headers(folder: Path) -> list[pydicom.Dataset]:
    return [pydicom.dcmread(p, stop_before_pixels=True) for p in sorted(folder.iterdir())]


def _read_with_simpleitk(folder: Path) -> sitk.Image:
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    return reader.Execute()


def _scan(tmp_path: Path, geometry: Geometry) -> Path:
    """A CT series written by another tool (the test helper: 6-decimal position strings)."""
    volume = (np.arange(np.prod(SHAPE)).reshape(SHAPE) * 7 - 100).astype(np.int16)
    write_dicom_series(tmp_path / "scan", volume, geometry)
    return tmp_path / "scan"


def test_oblique_mask_round_trips_geometry_to_1e6_and_values_exactly(tmp_path, oblique):
    """Oblique axes, anisotropic spacing and the origin -98.123456789: our reader and SimpleITK agree."""
    folder = dicom.write_dicom_series(tmp_path / "mask", _mask(), oblique)
    image = read_image(folder)  # the project's reader, slice checks included
    assert image.array.dtype == np.uint8 and np.array_equal(image.array, _mask())
    assert image.geometry.allclose(oblique, atol=1e-6)
    assert image.geometry.allclose(oblique, atol=1e-9)  # 16-character decimal strings keep ~1e-11 mm
    itk = _read_with_simpleitk(folder)
    np.testing.assert_allclose(itk.GetOrigin(), oblique.origin, atol=1e-6, rtol=0)
    np.testing.assert_allclose(itk.GetSpacing(), oblique.spacing, atol=1e-6, rtol=0)
    np.testing.assert_allclose(np.reshape(itk.GetDirection(), (3, 3)), oblique.direction_matrix, atol=1e-6, rtol=0)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(itk).transpose(2, 1, 0), _mask()[0])


def test_slices_carry_the_image_plane_and_consistent_identifiers(tmp_path, oblique):
    folder = dicom.write_dicom_series(tmp_path / "mask", _mask(), oblique, series_description="liver mask")
    headers = _headers(folder)
    assert len(headers) == SHAPE[2]
    assert [int(h.InstanceNumber) for h in headers] == list(range(1, SHAPE[2] + 1))
    for key in ("StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID", "SOPClassUID"):
        assert len({str(h.get(key)) for h in headers}) == 1, key
    assert len({h.SOPInstanceUID for h in headers}) == SHAPE[2]
    first = headers[0]
    assert first.SOPClassUID == pydicom.uid.SecondaryCaptureImageStorage
    assert first.file_meta.MediaStorageSOPClassUID == first.SOPClassUID
    assert first.SeriesDescription == "liver mask" and first.Modality == "OT"
    assert (first.Columns, first.Rows) == SHAPE[:2]  # columns run along X
    np.testing.assert_allclose([float(v) for v in first.PixelSpacing], [1.3, 0.7])  # row spacing (Y) first
    assert float(first.SliceThickness) == float(first.SpacingBetweenSlices) == 2.5
    for k, header in enumerate(headers):
        np.testing.assert_allclose(header.ImagePositionPatient, oblique.index_to_world([0, 0, k]), atol=1e-9)
        assert all(len(str(v)) <= 16 for v in (*header.ImagePositionPatient, *header.ImageOrientationPatient))


def test_read_write_read_of_a_dicom_scan_joins_its_study(tmp_path):
    """The issue's round trip: read a DICOM scan, write a mask for it with reference=, read the mask."""
    geometry = Geometry.create([0.75, 0.8, 2.5], [-120.5, 33.25, 401.0], rotation([0.1, 0.2, 0.3]))
    scan = read_image(_scan(tmp_path, geometry))
    mask = (scan.array > 0).astype(np.uint8)
    folder = write_image(f"{tmp_path}/mask/", mask, scan.geometry, reference=scan)
    again = read_image(folder)
    assert again.geometry.allclose(scan.geometry, atol=1e-6) and np.array_equal(again.array, mask)
    scan_header, mask_header = _headers(scan.path)[0], _headers(folder)[0]
    for key in ("PatientID", "StudyInstanceUID", "FrameOfReferenceUID"):
        assert mask_header.get(key) == scan_header.get(key), key
    assert again.meta["dicom"]["StudyInstanceUID"] == scan.meta["dicom"]["StudyInstanceUID"]
    assert mask_header.SeriesInstanceUID != scan_header.SeriesInstanceUID
    assert int(mask_header.SeriesNumber) == 1000  # the scan has no series number


def test_float_image_is_quantised_to_the_documented_step(tmp_path, oblique):
    values = np.random.default_rng(1).normal(40.0, 300.0, (1, *SHAPE)).astype(np.float32)
    image = read_image(dicom.write_dicom_series(tmp_path / "float", values, oblique))
    step = (float(values.max()) - float(values.min())) / 65535
    error = np.abs(image.array - values.astype(np.float64)).max()
    assert 0 < error <= step / 2 * (1 + 1e-6)
    assert image.geometry.allclose(oblique, atol=1e-6)


def test_whole_numbers_of_any_type_are_exact(tmp_path, oblique):
    """Float CT in HU, int32 far from zero (stored with an integer intercept), bool and int16 masks."""
    rng = np.random.default_rng(2)
    cases = {
        "hu": rng.integers(-1024, 3000, (1, *SHAPE)).astype(np.float32),
        "far": rng.integers(-90_000, -40_000, (1, *SHAPE)).astype(np.int32),
        "bool": rng.random((1, *SHAPE)) > 0.5,
        "signed": rng.integers(-5, 5, (1, *SHAPE)).astype(np.int16),
    }
    for name, values in cases.items():
        image = read_image(dicom.write_dicom_series(tmp_path / name, values, oblique))
        np.testing.assert_array_equal(image.array, values.astype(np.float64), err_msg=name)


def test_refuses_to_overwrite_and_replaces_only_a_dicom_series(tmp_path, oblique):
    folder = dicom.write_dicom_series(tmp_path / "mask", _mask(0), oblique)
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    with pytest.raises(OutputExistsError, match=r"mask exists; pass overwrite=True"):
        dicom.write_dicom_series(folder, _mask(1), oblique)
    with pytest.raises(OutputExistsError, match=r"mask exists; pass overwrite=True"):
        write_image(folder, _mask(1), oblique)  # an existing folder is a DICOM target
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    write_image(folder, _mask(1), oblique, overwrite=True)
    assert np.array_equal(read_image(folder).array, _mask(1))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mask"]  # no temporary or old folders left

    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "keep.txt").write_text("mine")
    with pytest.raises(OutputExistsError, match=r"notes holds keep.txt, which is not a DICOM file"):
        dicom.write_dicom_series(tmp_path / "notes", _mask(), oblique, overwrite=True)
    assert (tmp_path / "notes" / "keep.txt").read_text() == "mine"
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputExistsError, match=r"file is a file; a DICOM series is written as a folder"):
        dicom.write_dicom_series(tmp_path / "file", _mask(), oblique)


def test_an_empty_folder_is_written_and_a_new_one_needs_a_trailing_slash(tmp_path, oblique):
    (tmp_path / "empty").mkdir()
    assert read_image(write_image(tmp_path / "empty", _mask(), oblique)).spatial_shape == SHAPE
    with pytest.raises(DataError, match=r"new_series: unsupported file type '\(none\)'.*end the path with '/'"):
        write_image(tmp_path / "new_series", _mask(), oblique)  # a Path drops the slash: not a series target
    assert read_image(write_image(f"{tmp_path / 'new_series'}/", _mask(), oblique)).spatial_shape == SHAPE


def test_a_failed_write_leaves_the_old_series_and_nothing_else(tmp_path, oblique, monkeypatch):
    folder = dicom.write_dicom_series(tmp_path / "mask", _mask(0), oblique)

    def fail(*args):
        raise DataError("simulated failure after the slices were written")

    monkeypatch.setattr(dicom, "_verify_series", fail)
    with pytest.raises(DataError, match="simulated"):
        dicom.write_dicom_series(folder, _mask(1), oblique, overwrite=True)
    with pytest.raises(DataError, match="simulated"):
        dicom.write_dicom_series(tmp_path / "other", _mask(1), oblique)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mask"]
    assert np.array_equal(read_image(folder).array, _mask(0))


def test_reference_must_come_from_dicom_and_is_never_replaced(tmp_path, oblique):
    scan = read_image(_scan(tmp_path, Geometry.create([1.0, 1.0, 2.0])))
    with pytest.raises(OutputExistsError, match=r"scan is the reference series itself"):
        dicom.write_dicom_series(scan.path, _mask(), scan.geometry, overwrite=True, reference=scan)
    nrrd = read_image(write_image(tmp_path / "scan.nrrd", _mask(), oblique))
    with pytest.raises(DataError, match=r"scan.nrrd was not read from a DICOM series"):
        dicom.write_dicom_series(tmp_path / "mask", _mask(), oblique, reference=nrrd)


def test_what_dicom_slices_cannot_hold_is_a_clear_error(tmp_path, oblique):
    with pytest.raises(DataError, match=r"holds one channel, got an array of shape \(2, 5, 6, 7\)"):
        dicom.write_dicom_series(tmp_path / "a", np.zeros((2, *SHAPE), np.uint8), oblique)
    with pytest.raises(DataError, match=r"array of shape \(5, 6, 7\) does not fit a 3-D geometry"):
        dicom.write_dicom_series(tmp_path / "a", np.zeros(SHAPE, np.uint8), oblique)
    with pytest.raises(DataError, match=r"holds a 3-D volume, got a 2-D image"):
        dicom.write_dicom_series(tmp_path / "a", np.zeros((1, 5, 6), np.uint8), Geometry.identity(2))
    left_handed = Geometry.create([1.0, 1.0, 2.0], direction=np.diag([1.0, -1.0, 1.0]))
    with pytest.raises(DataError, match=r"a left-handed grid, LAS"):
        dicom.write_dicom_series(tmp_path / "a", _mask(), left_handed)
    sheared = Geometry.create([1.0, 1.0, 2.0], direction=[[1, 0, 0.6], [0, 1, 0], [0, 0, 0.8]])
    with pytest.raises(DataError, match=r"not orthogonal \(a sheared grid\)"):
        dicom.write_dicom_series(tmp_path / "a", _mask(), sheared)
    with pytest.raises(DataError, match=r"NaN or infinite values"):
        dicom.write_dicom_series(tmp_path / "a", np.full((1, *SHAPE), np.nan, np.float32), oblique)
    assert list(tmp_path.iterdir()) == []  # refused before anything was written


def _decimal_strings(header: pydicom.Dataset) -> dict[str, list[str]]:
    """Every DS attribute of ``header`` as the text stored in the file."""
    found: dict[str, list[str]] = {}
    for element in header:
        if element.VR == "DS":
            values = element.value if element.VM > 1 else [element.value]
            found[element.keyword] = [getattr(v, "original_string", None) or str(v) for v in values]
    return found


def test_decimal_strings_fit_16_characters_on_the_ctchest_geometry(tmp_path, recwarn):
    """The built-in ctchest scan as NRRD stores it: slice spacing 9.999999999999996, axes flipped in x and y.

    pydicom formatted the spacing as "10.00000000000000" (17 characters, over the DS limit of 16, with a
    warning); it must be written "10.0", and the series must still read back to the same grid.
    """
    geometry = Geometry.create(
        [3.0468759536743195, 3.0468759536743195, 9.999999999999996],
        [193.09599304199222, 216.39599609374994, -200.25],
        np.diag([-0.9999999999999999, -0.9999999999999999, 1.0]),
    )
    folder = dicom.write_dicom_series(tmp_path / "scan", np.zeros((1, 4, 3, 2), np.int16), geometry)
    for header in _headers(folder):
        strings = _decimal_strings(header)
        assert all(len(s) <= 16 for values in strings.values() for s in values), strings
        assert strings["SliceThickness"] == strings["SpacingBetweenSlices"] == ["10.0"]
        assert strings["ImageOrientationPatient"] == [
            "-1.0000000000000",
            "0.0",
            "0.0",
            "0.0",
            "-1.0000000000000",
            "0.0",
        ]
    assert not [w for w in recwarn if "exceeds the maximum length" in str(w.message)]
    assert read_image(folder).geometry.allclose(geometry, atol=1e-9)


@pytest.mark.parametrize(
    ("value", "text"),
    [(9.999999999999996, "10.0"), (-9.999999999999996, "-10.0"), (99.99999999999997, "100.0"), (-200.25, "-200.25")],
)
def test_decimal_string_rounds_up_to_a_shorter_number(value, text):
    assert dicom.decimal_string(value) == text
