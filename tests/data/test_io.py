import gzip

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from attnseg.data.geometry import Geometry
from attnseg.data.io import (
    file_ending,
    missing_voxel_data,
    read_case,
    read_geometry,
    read_grid,
    read_image,
    write_image,
)
from attnseg.errors import DataError, OutputExistsError
from tests.fixtures import rotation, write_dicom_series

FLOAT64_FORMATS = [".nrrd", ".seg.nrrd", ".mha", ".mhd"]
DICOM_SERIES = "/"  # a target ending with a separator is a DICOM series folder
ALL_3D_FORMATS = [".nii.gz", ".nii", *FLOAT64_FORMATS, DICOM_SERIES]


def _labels(shape=(5, 6, 7), seed=0):
    return np.random.default_rng(seed).integers(0, 4, (1, *shape)).astype(np.uint8)


@pytest.mark.parametrize("ending", [*FLOAT64_FORMATS, DICOM_SERIES])
def test_oblique_geometry_round_trip_float64_headers(tmp_path, oblique, ending):
    array = _labels()
    path = write_image(f"{tmp_path}/mask{ending}", array, oblique)
    image = read_image(path)
    assert image.array.shape == array.shape and np.array_equal(image.array, array)
    assert image.geometry.allclose(oblique, atol=1e-6)


@pytest.mark.parametrize("ending", [".nii.gz", ".nii"])
def test_nifti_stores_float32_and_keeps_what_it_read_exactly(tmp_path, oblique, ending):
    """NIfTI-1 headers hold float32: an arbitrary geometry keeps float32 precision; what was read from a
    NIfTI is written back bit for bit, so a mask for a NIfTI image has exactly its geometry."""
    first = read_image(write_image(tmp_path / f"a{ending}", _labels(), oblique))
    assert first.geometry.allclose(oblique, atol=1e-6, rtol=1e-6)
    second = read_image(write_image(tmp_path / f"b{ending}", first.array, first.geometry))
    assert second.geometry.allclose(first.geometry, atol=1e-6)
    np.testing.assert_array_equal(second.geometry.affine, first.geometry.affine)


@pytest.mark.parametrize("ending", ALL_3D_FORMATS)
def test_read_write_read_keeps_geometry_to_1e6(tmp_path, ending):
    """The issue's round trip: read a scan, write a mask with its geometry, read the mask."""
    g = Geometry.create([0.9, 1.1, 3.0], [12.5, -40.25, 7.0], rotation([0.2, 0.4, -0.9]))
    scan = read_image(write_image(f"{tmp_path}/scan{ending}", (100 * _labels()).astype(np.int16), g))
    mask = read_image(write_image(f"{tmp_path}/mask{ending}", (scan.array > 100).astype(np.uint8), scan.geometry))
    assert mask.geometry.allclose(scan.geometry, atol=1e-6)
    assert mask.spatial_shape == scan.spatial_shape


def test_sheared_nifti_affine_survives(tmp_path):
    """A non-orthogonal (sheared) affine lives in the sform, which nibabel and we read first."""
    affine = np.array([[0.9, 0.2, 0.0, -10.0], [0.0, 1.1, 0.1, 5.0], [0.05, 0.0, 2.0, 1.0], [0, 0, 0, 1]])
    nib.save(nib.Nifti1Image(_labels()[0], affine), tmp_path / "shear.nii.gz")
    image = read_image(tmp_path / "shear.nii.gz")
    np.testing.assert_allclose(image.geometry.ras_affine, affine, atol=1e-6)
    again = read_image(write_image(tmp_path / "mask.nii.gz", image.array, image.geometry))
    np.testing.assert_allclose(again.geometry.ras_affine, affine, atol=1e-6)


def test_our_lps_geometry_agrees_with_simpleitk_and_nibabel(tmp_path, oblique):
    """The same file read by SimpleITK (LPS) and nibabel (RAS) gives our geometry."""
    array = _labels()
    write_image(tmp_path / "x.nii.gz", array, oblique)
    ours = read_image(tmp_path / "x.nii.gz").geometry
    itk = sitk.ReadImage(str(tmp_path / "x.nii.gz"))
    np.testing.assert_allclose(itk.GetOrigin(), ours.origin, atol=1e-4)
    np.testing.assert_allclose(np.reshape(itk.GetDirection(), (3, 3)), ours.direction_matrix, atol=1e-5)
    np.testing.assert_allclose(itk.GetSpacing(), ours.spacing, atol=1e-5)
    # axis order: SimpleITK's array is (z, y, x); ours is (x, y, z)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(itk).transpose(2, 1, 0), array[0])
    write_image(tmp_path / "x.nrrd", array, oblique)
    np.testing.assert_allclose(nib.load(tmp_path / "x.nii.gz").affine, oblique.ras_affine, atol=1e-4)


def test_multichannel_and_four_d(tmp_path, oblique):
    array = np.random.default_rng(1).random((3, 4, 5, 6)).astype(np.float32)
    for ending in (".nii.gz", ".nrrd", ".mha"):
        image = read_image(write_image(tmp_path / f"m{ending}", array, oblique))
        assert image.channels == 3 and np.array_equal(image.array, array)
        with pytest.raises(DataError, match=r"4-D image .* where a 3-D image with one channel was expected"):
            read_image(tmp_path / f"m{ending}", multichannel=False)
    with pytest.raises(DataError, match=r"3-D image of shape .* where a 2-D image was expected"):
        read_image(tmp_path / "m.nrrd", spatial_dims=2)


def test_png_holds_2d_images_with_spacing_and_tiff_in_pixels(tmp_path):
    g = Geometry.create([0.5, 0.25])
    array = np.arange(30, dtype=np.uint8).reshape(1, 5, 6)
    image = read_image(write_image(tmp_path / "s.png", array, g))  # ITK's sCAL chunk: the subject's scale
    assert np.array_equal(image.array, array)
    assert image.geometry.allclose(g, atol=1e-6)
    for ending in (".tif", ".tiff"):  # resolution tags are a print size (dpi): read as 1 x 1 pixels
        unit = Geometry.create([1.0, 1.0])
        image = read_image(write_image(tmp_path / f"s{ending}", array, unit))
        assert np.array_equal(image.array, array) and image.geometry.allclose(unit)
        with pytest.raises(DataError, match="TIFF cannot store this image's geometry"):
            write_image(tmp_path / f"mm{ending}", array, g)
    rgb = np.random.default_rng(0).integers(0, 255, (3, 5, 6)).astype(np.uint8)
    assert read_image(write_image(tmp_path / "rgb.png", rgb, g)).channels == 3


def test_png_refuses_a_geometry_it_cannot_store(tmp_path):
    array = np.zeros((1, 4, 4), np.uint8)
    with pytest.raises(DataError, match=r"PNG cannot store this image's geometry \(stored origin"):
        write_image(tmp_path / "o.png", array, Geometry.create([1.0, 1.0], [5.0, 0.0]))
    assert not (tmp_path / "o.png").exists()
    assert list(tmp_path.iterdir()) == []  # nothing left behind
    with pytest.raises(DataError, match="PNG holds 2-D images"):
        write_image(tmp_path / "v.png", np.zeros((1, 4, 4, 4), np.uint8), Geometry.create([1.0] * 3))
    with pytest.raises(DataError, match="8- or 16-bit"):
        write_image(tmp_path / "f.png", np.zeros((1, 4, 4), np.float32), Geometry.create([1.0] * 2))


def test_write_refuses_to_overwrite_and_is_atomic(tmp_path, oblique):
    path = write_image(tmp_path / "m.nii.gz", _labels(), oblique)
    before = path.read_bytes()
    with pytest.raises(OutputExistsError, match=r"m.nii.gz exists; pass overwrite=True"):
        write_image(path, _labels(seed=1), oblique)
    assert path.read_bytes() == before
    write_image(path, _labels(seed=1), oblique, overwrite=True)
    assert np.array_equal(read_image(path).array, _labels(seed=1))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.nii.gz"]  # no temporary files left


def test_mhd_writes_its_data_file_and_refuses_to_clobber_it(tmp_path, oblique):
    write_image(tmp_path / "m.mhd", _labels(), oblique)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.mhd", "m.zraw"]
    (tmp_path / "m.mhd").unlink()
    with pytest.raises(OutputExistsError, match=r"m\.zraw exists"):
        write_image(tmp_path / "m.mhd", _labels(), oblique)


def test_int64_and_bool_arrays_are_stored_compactly(tmp_path, oblique):
    image = read_image(write_image(tmp_path / "a.nrrd", _labels().astype(np.int64), oblique))
    assert image.array.dtype == np.uint8
    image = read_image(write_image(tmp_path / "b.nii.gz", _labels() > 1, oblique))
    assert image.array.dtype == np.uint8


def test_seg_nrrd_segment_names(tmp_path, oblique):
    names = {"background": 0, "liver": 1, "tumour": 3}
    path = write_image(tmp_path / "s.seg.nrrd", _labels(), oblique, segment_names=names)
    assert read_image(path).meta["segments"] == {"liver": 1, "tumour": 3}
    slicerio = pytest.importorskip("slicerio")
    segmentation = slicerio.read_segmentation(str(path), skip_voxels=True)
    assert {s["name"]: s["labelValue"] for s in segmentation["segments"]} == {"liver": 1, "tumour": 3}


def test_truncated_and_corrupt_gzip(tmp_path, oblique):
    good = write_image(tmp_path / "good.nii.gz", np.random.default_rng(0).random((1, 20, 20, 20)), oblique)
    data = good.read_bytes()
    (tmp_path / "truncated.nii.gz").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"truncated.nii.gz: cannot read NIfTI file: .*truncated or corrupt"):
        read_image(tmp_path / "truncated.nii.gz")
    corrupt = bytearray(data)
    corrupt[len(corrupt) // 2 : len(corrupt) // 2 + 64] = b"\0" * 64
    (tmp_path / "corrupt.nii.gz").write_bytes(bytes(corrupt))
    with pytest.raises(DataError, match=r"corrupt.nii.gz: cannot read NIfTI file"):
        read_image(tmp_path / "corrupt.nii.gz")
    (tmp_path / "notgzip.nii.gz").write_bytes(b"plain text, not gzip")
    with pytest.raises(DataError, match=r"notgzip.nii.gz: cannot read NIfTI file"):
        read_image(tmp_path / "notgzip.nii.gz")
    nrrd = write_image(tmp_path / "good.nrrd", np.random.default_rng(0).random((1, 20, 20, 20)), oblique).read_bytes()
    (tmp_path / "truncated.nrrd").write_bytes(nrrd[: len(nrrd) // 2])
    with pytest.raises(DataError, match=r"truncated.nrrd: cannot read NRRD file"):
        read_image(tmp_path / "truncated.nrrd")
    assert gzip.decompress(data)  # the good file itself was fine


def test_missing_voxel_data_tells_a_file_cut_after_its_header_from_a_whole_one(tmp_path, oblique):
    """The header of each of these reads (read_grid); only the voxels tell them apart. 40 x 40 x 20 uint8
    voxels after NIfTI-1's 352-byte header: 32,352 bytes (enough that a cut gzip still yields its header)."""
    labels = np.random.default_rng(0).integers(0, 3, (1, 40, 40, 20)).astype(np.uint8)
    whole = write_image(tmp_path / "whole.nii", labels, oblique)
    assert whole.stat().st_size == 32352 and missing_voxel_data(whole) is None
    (tmp_path / "cut.nii").write_bytes(whole.read_bytes()[:32342])
    assert read_grid(tmp_path / "cut.nii")[0] == (40, 40, 20)
    assert missing_voxel_data(tmp_path / "cut.nii") == (
        "holds 32,342 bytes of NIfTI header and voxels where its header needs 32,352; is it truncated?"
    )
    packed = write_image(tmp_path / "whole.nii.gz", labels, oblique)
    assert missing_voxel_data(packed) is None  # its trailer says 32,352
    data = gzip.decompress(packed.read_bytes())
    (tmp_path / "members.nii.gz").write_bytes(gzip.compress(data[:400]) + gzip.compress(data[400:]))
    assert missing_voxel_data(tmp_path / "members.nii.gz") is None  # whole, though its last trailer says 31,952
    (tmp_path / "short.nii.gz").write_bytes(gzip.compress(data[:32342]))  # a whole stream of a cut file
    assert missing_voxel_data(tmp_path / "short.nii.gz").startswith("holds 32,342 bytes")
    (tmp_path / "cut.nii.gz").write_bytes(packed.read_bytes()[:-4])  # every voxel, no trailer
    assert read_grid(tmp_path / "cut.nii.gz")[0] == (40, 40, 20)
    cut = missing_voxel_data(tmp_path / "cut.nii.gz")
    assert cut.startswith("its gzip stream is cut short or damaged after 32,352 bytes")
    assert missing_voxel_data(write_image(tmp_path / "x.nrrd", labels, oblique)) is None  # whole


def test_missing_voxel_data_of_nrrd_files_cut_after_their_header(tmp_path, oblique):
    """ITK's gzip NRRD, a raw one written by hand (16-bit, 4 x 3 x 2: 48 bytes), and a .seg.nrrd: whole, then cut."""
    labels = np.random.default_rng(0).integers(0, 3, (1, 40, 40, 20)).astype(np.uint8)
    for name in ("mask.nrrd", "mask.seg.nrrd"):
        whole = write_image(tmp_path / name, labels, oblique)
        assert missing_voxel_data(whole) is None
        content = whole.read_bytes()
        cut = tmp_path / f"cut_{name}"
        cut.write_bytes(content[: len(content) - 200])  # the gzip stream ends early
        assert read_grid(cut)[0] == (40, 40, 20)
        reason = missing_voxel_data(cut)
        assert reason is not None and reason.endswith("needs 32,000; is it truncated?"), reason
    header = b"NRRD0004\ntype: short\ndimension: 3\nsizes: 4 3 2\nencoding: raw\nendian: little\n\n"
    raw = tmp_path / "raw.nrrd"
    raw.write_bytes(header + bytes(48))
    assert missing_voxel_data(raw) is None
    raw.write_bytes(header + bytes(47))
    assert missing_voxel_data(raw) == (
        "NRRD file holds 47 bytes of voxel data where its header (sizes 4 3 2, short, raw) needs 48; is it truncated?"
    )
    detached = tmp_path / "detached.nhdr.nrrd"
    detached.write_bytes(header.replace(b"\n\n", b"\ndata file: elsewhere.raw\n\n"))
    assert missing_voxel_data(detached) is None  # not checked: its reader names the missing file


def test_unsupported_extension_and_missing_file(tmp_path):
    (tmp_path / "scan.jpg").write_bytes(b"...")
    with pytest.raises(DataError, match=r"scan.jpg: unsupported file type '.jpg'; supported: NIfTI"):
        read_image(tmp_path / "scan.jpg")
    with pytest.raises(DataError, match="no such file"):
        read_image(tmp_path / "absent.nii.gz")
    with pytest.raises(DataError, match="unsupported file type"):
        write_image(tmp_path / "out.vtk", np.zeros((1, 2, 2, 2)), Geometry.create([1, 1, 1]))
    assert file_ending("a.b.seg.nrrd") == ".seg.nrrd" and file_ending("X.NII.GZ") == ".nii.gz"


def test_read_case_stacks_channels_and_checks_their_geometry(tmp_path, oblique):
    a = write_image(tmp_path / "c_0000.nii.gz", np.ones((1, 4, 5, 6), np.float32), oblique)
    b = write_image(tmp_path / "c_0001.nii.gz", 2 * np.ones((1, 4, 5, 6), np.float32), oblique)
    image = read_case([a, b])
    assert image.array.shape == (2, 4, 5, 6) and image.array[1].max() == 2
    moved = oblique.shifted([1, 0, 0])
    c = write_image(tmp_path / "c_0002.nii.gz", np.ones((1, 4, 5, 6), np.float32), moved)
    with pytest.raises(DataError, match=r"c_0002.nii.gz: geometry differs from .*c_0000.nii.gz \(origin"):
        read_case([a, c])
    d = write_image(tmp_path / "d_0001.nii.gz", np.ones((1, 4, 5, 5), np.float32), oblique)
    with pytest.raises(DataError, match=r"d_0001.nii.gz: shape \(4, 5, 5\) differs"):
        read_case([a, d])
    four_d = write_image(tmp_path / "e_0001.nii.gz", np.ones((2, 4, 5, 6), np.float32), oblique)
    with pytest.raises(DataError, match=r"e_0001\.nii\.gz: 4-D image"):
        read_case([a, four_d])


def test_read_geometry_from_header_only(tmp_path, oblique):
    path = write_image(tmp_path / "h.nrrd", _labels(), oblique)
    assert read_geometry(path).allclose(oblique)


@pytest.mark.parametrize("name", ["g.nii.gz", "g.nrrd", "g.mha", "g.nii"])
@pytest.mark.parametrize("channels", [1, 3])
def test_read_grid_gives_the_shape_and_geometry_of_the_pixels(tmp_path, oblique, name, channels):
    path = write_image(tmp_path / name, np.zeros((channels, 7, 5, 3), np.float32), oblique)
    shape, geometry = read_grid(path)
    assert shape == read_image(path).spatial_shape == (7, 5, 3)
    assert geometry.allclose(read_image(path).geometry, atol=1e-9)


def test_read_grid_names_a_corrupt_file(tmp_path):
    (tmp_path / "bad.nii.gz").write_bytes(b"garbage")
    with pytest.raises(DataError, match=r"bad\.nii\.gz: cannot read NIfTI file"):
        read_grid(tmp_path / "bad.nii.gz")


# ---- DICOM ----------------------------------------------------------------------------------------
def _dicom_geometry() -> Geometry:
    return Geometry.create([0.75, 0.8, 2.5], [-120.5, 33.25, 401.0], rotation([0.1, 0.2, 0.3]))


def _volume(shape=(6, 5, 7)) -> np.ndarray:
    return (np.arange(np.prod(shape)).reshape(shape) - 50).astype(np.int16)


def test_dicom_series_reads_with_geometry(tmp_path):
    g = _dicom_geometry()
    write_dicom_series(tmp_path / "series", _volume(), g)
    image = read_image(tmp_path / "series")
    assert image.array.shape == (1, 6, 5, 7)
    np.testing.assert_array_equal(image.array[0], _volume())
    # DICOM stores decimal strings (6 decimals here): equal to that precision
    assert image.geometry.allclose(g, atol=1e-5)
    # a mask written for the DICOM scan as NRRD keeps its geometry exactly
    mask = read_image(write_image(tmp_path / "mask.nrrd", (image.array > 0).astype(np.uint8), image.geometry))
    assert mask.geometry.allclose(image.geometry, atol=1e-6)


def test_dicom_series_order_comes_from_positions_not_names(tmp_path):
    g = _dicom_geometry()
    write_dicom_series(tmp_path / "series", _volume(), g)
    files = sorted((tmp_path / "series").iterdir())
    for i, path in enumerate(files):  # names now disagree with positions
        path.rename(path.with_name(f"x{(7 * i) % len(files):03d}_{i}.dcm"))
    np.testing.assert_array_equal(read_image(tmp_path / "series").array[0], _volume())


def test_dicom_missing_slice(tmp_path):
    write_dicom_series(tmp_path / "s", _volume(), _dicom_geometry(), skip=[3])
    with pytest.raises(DataError, match=r"s: 1 missing slice\(s\) between IM002_0.dcm .* and IM004_0.dcm"):
        read_image(tmp_path / "s")


def test_dicom_duplicated_slice(tmp_path):
    write_dicom_series(tmp_path / "s", _volume(), _dicom_geometry(), duplicate=[2])
    with pytest.raises(DataError, match=r"s: duplicated slice at .* mm: IM002_0.dcm and IM002_1.dcm"):
        read_image(tmp_path / "s")


def test_dicom_folder_problems(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="empty: empty folder"):
        read_image(tmp_path / "empty")
    (tmp_path / "text").mkdir()
    (tmp_path / "text" / "notes.txt").write_text("not DICOM")
    with pytest.raises(DataError, match="no DICOM slices found among 1 file"):
        read_image(tmp_path / "text")
    write_dicom_series(tmp_path / "two", _volume(), _dicom_geometry())
    write_dicom_series(tmp_path / "other", _volume(), _dicom_geometry())
    for path in (tmp_path / "other").iterdir():
        path.rename(tmp_path / "two" / f"b_{path.name}")
    with pytest.raises(DataError, match="2 DICOM series in one folder"):
        read_image(tmp_path / "two")
