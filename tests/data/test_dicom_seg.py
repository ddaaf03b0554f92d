"""DICOM SEG out and back: for every layout a series comes in (axial, reversed, oblique, shuffled on disk,
missing optional tags, several series in one folder or a tree), the SEG attnseg writes, read back with
highdicom, equals the NIfTI mask voxel for voxel in physical space, references its source instances and
Frame of Reference, and passes dciodvfy with no error. Series that are not one volume are refused."""

from __future__ import annotations

import warnings
from pathlib import Path

import highdicom as hd
import nibabel as nib
import numpy as np
import pydicom
import pytest

from attnseg.data.dicom import read_dicom_series
from attnseg.data.dicom_seg import Algorithm, EmptySegmentWarning, is_seg_file, read_seg, write_seg
from attnseg.data.dicom_tree import find_dicom_series
from attnseg.data.io import read_image, write_image
from attnseg.errors import DataError, OutputExistsError
from tests.dicom_series import GEOMETRY_CASES, write_case, write_not_a_volume
from tests.dicom_tools import dciodvfy

LABELS = {"background": 0, "liver": 1, "lesion": 2, "label_7": 7}
ALGORITHM = Algorithm("attnseg", "9.9", "tiny", ("ab" * 32,))


def _mask(shape: tuple[int, ...]) -> np.ndarray:
    """A mask that differs along every axis, so that any flip or transpose shows."""
    x, y, z = np.indices(shape)
    mask = np.zeros(shape, np.uint8)
    mask[(x < shape[0] // 2) & (y > 2) & (z >= 1)] = 1
    mask[(x > shape[0] - 6) & (y < 5) & (z <= 2)] = 2
    mask[x + 2 * y + 3 * z == 17] = 1
    return mask[None]


def seg_in_world(seg_path: Path, labels: dict[str, int]) -> tuple[np.ndarray, np.ndarray]:
    """Every voxel of the SEG as highdicom reads it: (LPS positions (N, 3), label values (N,))."""
    seg = hd.seg.segread(seg_path)
    volume = seg.get_volume(combine_segments=True, relabel=False)
    lut = np.zeros(len(seg.SegmentSequence) + 1, dtype=np.int64)
    for description in seg.SegmentSequence:
        lut[int(description.SegmentNumber)] = labels[str(description.SegmentLabel)]
    index = np.indices(volume.array.shape).reshape(3, -1)
    world = (volume.affine @ np.vstack([index, np.ones(index.shape[1])]))[:3].T
    return world, lut[volume.array.reshape(-1)]


def assert_seg_equals_nifti(seg_path: Path, nifti_path: Path, labels: dict[str, int]) -> None:
    """Voxel for voxel in physical space: every SEG voxel's centre is a NIfTI voxel centre with the same
    label, and the two grids have the same voxels (nibabel's RAS affine, independent of attnseg)."""
    world, values = seg_in_world(seg_path, labels)
    nifti = nib.load(str(nifti_path))
    data = np.asarray(nifti.dataobj)
    ras = world * np.array([-1.0, -1.0, 1.0])
    index = (np.linalg.inv(nifti.affine) @ np.hstack([ras, np.ones((len(ras), 1))]).T)[:3]
    rounded = np.round(index).astype(int)
    np.testing.assert_allclose(index, rounded, atol=1e-3)  # voxel centres coincide
    assert values.size == data.size  # the same grid: as many voxels, each met once
    assert len({tuple(i) for i in rounded.T}) == data.size
    assert np.all(rounded >= 0) and np.all(np.array(data.shape) > rounded.T)
    np.testing.assert_array_equal(values, data[tuple(rounded)])


def assert_valid(seg_path: Path) -> None:
    validation = dciodvfy(seg_path)
    assert validation.errors == [], validation.errors
    assert validation.unexplained_warnings == [], validation.unexplained_warnings


def _write_both(series: Path, out: Path, series_uid: str | None = None) -> tuple[Path, Path]:
    image = read_dicom_series(series, series_uid)
    mask = _mask(image.spatial_shape)
    name = series.name + (f"_{series_uid[-4:]}" if series_uid else "")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", EmptySegmentWarning)
        seg = write_seg(out / f"{name}.seg.dcm", mask, image, LABELS, ALGORITHM).path
    nifti = write_image(out / f"{name}.nii.gz", mask, image.geometry)
    return seg, nifti


@pytest.mark.parametrize("kind", GEOMETRY_CASES)
def test_seg_equals_the_nifti_mask_in_space_and_passes_dciodvfy(tmp_path, kind):
    series = write_case(tmp_path / kind, kind)
    seg_path, nifti_path = _write_both(series, tmp_path / "out")
    assert_seg_equals_nifti(seg_path, nifti_path, LABELS)
    assert_valid(seg_path)
    seg = pydicom.dcmread(seg_path)
    sources = [pydicom.dcmread(p, stop_before_pixels=True) for p in series.iterdir()]
    assert seg.FrameOfReferenceUID == sources[0].FrameOfReferenceUID
    assert seg.StudyInstanceUID == sources[0].StudyInstanceUID
    referenced = {item.ReferencedSOPInstanceUID for item in seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence}
    assert referenced == {s.SOPInstanceUID for s in sources}  # every source instance
    by_position = {tuple(np.round([float(v) for v in s.ImagePositionPatient], 3)): s.SOPInstanceUID for s in sources}
    for frame in seg.PerFrameFunctionalGroupsSequence:  # each frame at its source slice's position
        position = tuple(np.round([float(v) for v in frame.PlanePositionSequence[0].ImagePositionPatient], 3))
        source = frame.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        assert by_position[position] == source
    segments = {str(d.SegmentLabel): d for d in seg.SegmentSequence}
    assert list(segments) == ["liver", "lesion", "label_7"]  # label-value order, numbered 1..3
    assert segments["liver"].SegmentedPropertyTypeCodeSequence[0].CodeValue == "10200004"  # SCT Liver
    assert segments["label_7"].SegmentedPropertyTypeCodeSequence[0].CodeValue == "85756007"  # generic: Tissue
    algorithm = segments["liver"].SegmentationAlgorithmIdentificationSequence[0]
    assert (algorithm.AlgorithmName, algorithm.AlgorithmVersion) == ("attnseg", "9.9")
    assert "ab" * 32 in algorithm.AlgorithmParameters


def test_several_series_in_one_folder_and_in_a_tree(tmp_path):
    root = tmp_path / "export"
    for number, kind in ((1, "axial"), (2, "oblique")):  # two series' files side by side in one folder
        write_case(tmp_path / kind, kind, series_uid=f"1.2.826.0.1.3680043.8.498.{number}")
        (root / "mixed").mkdir(parents=True, exist_ok=True)
        for path in (tmp_path / kind).iterdir():
            path.rename(root / "mixed" / f"{kind}_{path.name}")
    write_case(root / "patient" / "ct", "reversed")
    (root / "patient" / "notes.txt").write_text("not DICOM")
    found = find_dicom_series(root)
    assert [(s.case_id, s.folder.name) for s in found] == [
        ("mixed_1", "mixed"),
        ("mixed_2", "mixed"),
        ("patient_ct", "ct"),
    ]
    for location in found:
        seg_path, nifti_path = _write_both(location.folder, tmp_path / "out", location.series_uid)
        assert_seg_equals_nifti(seg_path, nifti_path, LABELS)
        assert_valid(seg_path)
        seg = pydicom.dcmread(seg_path, stop_before_pixels=True)
        sources = [pydicom.dcmread(p, stop_before_pixels=True) for p in location.folder.iterdir()]
        uids = {s.SOPInstanceUID for s in sources if location.series_uid in (None, s.SeriesInstanceUID)}
        referenced = seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence
        assert {item.ReferencedSOPInstanceUID for item in referenced} == uids


@pytest.mark.parametrize(
    ("kind", "why"),
    [
        ("uneven", r"uneven slice spacing"),
        ("tilt", r"not stacked along their normal \(tilted by 15.0 degrees: gantry tilt\?\)"),
        ("mixed", r"slice orientation differs from"),
    ],
)
def test_series_that_are_not_a_volume_are_refused_saying_why(tmp_path, kind, why):
    series = write_not_a_volume(tmp_path / kind, kind)
    with pytest.raises(DataError, match=why):
        read_image(series)


def test_an_empty_class_is_an_empty_segment_with_a_warning_every_time(tmp_path):
    series = write_case(tmp_path / "axial", "axial")
    image = read_image(series)
    mask = _mask(image.spatial_shape)
    for attempt in range(2):
        with pytest.warns(EmptySegmentWarning, match=r"class\(es\) label_7 found nowhere"):
            written = write_seg(tmp_path / f"{attempt}.seg.dcm", mask, image, LABELS, ALGORITHM)
        assert written.empty_classes == ("label_7",)
        seg = hd.seg.segread(written.path)
        assert seg.number_of_segments == 3
        empty = seg.get_volume(segment_numbers=[3], combine_segments=True)
        assert empty.array.shape[0] == image.spatial_shape[2] and not empty.array.any()  # all its frames, empty
    with pytest.warns(EmptySegmentWarning):  # an all-background mask is still a complete SEG
        blank = write_seg(tmp_path / "blank.seg.dcm", np.zeros_like(mask), image, LABELS, ALGORITHM)
    assert_valid(blank.path)
    assert not read_seg(blank.path).array.any() and read_seg(blank.path).spatial_shape == image.spatial_shape


def test_read_seg_gives_label_values_and_places_sparse_segs_on_a_grid(tmp_path):
    series = write_case(tmp_path / "oblique", "oblique")
    image = read_image(series)
    mask = _mask(image.spatial_shape)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", EmptySegmentWarning)
        path = write_seg(tmp_path / "a.seg.dcm", mask, image, LABELS, ALGORITHM).path
    assert is_seg_file(path) and not is_seg_file(next(series.iterdir()))
    again = read_seg(path, LABELS)
    assert again.geometry.allclose(image.geometry, atol=1e-6) and np.array_equal(again.array, mask)
    assert read_seg(path).array.max() == 2  # without labels: segment numbers
    # Another tool's SEG that omits empty frames covers fewer slices; placed on the scan's grid it is whole.
    sources = [pydicom.dcmread(series / name, stop_before_pixels=True) for name in image.meta["files"]]
    for source in sources:
        source.PatientName = source.StudyDate = source.StudyTime = source.StudyID = ""
        source.AccessionNumber = source.ReferringPhysicianName = source.PatientBirthDate = source.PatientSex = ""
    sparse = hd.seg.Segmentation(
        source_images=sources,
        pixel_array=(mask[0] == 1).transpose(2, 1, 0).astype(np.uint8),
        segmentation_type="BINARY",
        segment_descriptions=[
            hd.seg.SegmentDescription(
                1, "liver", hd.sr.CodedConcept("123037004", "SCT", "Anatomical Structure"),
                hd.sr.CodedConcept("10200004", "SCT", "Liver"), hd.seg.SegmentAlgorithmTypeValues.MANUAL,
            )
        ],
        series_instance_uid=hd.UID(), series_number=2, sop_instance_uid=hd.UID(), instance_number=1,
        manufacturer="other", manufacturer_model_name="tool", software_versions="1", device_serial_number="1",
    )  # fmt: skip
    sparse.save_as(tmp_path / "sparse.dcm")
    placed = read_seg(tmp_path / "sparse.dcm", LABELS, grid=(image.spatial_shape, image.geometry))
    np.testing.assert_array_equal(placed.array, (mask == 1).astype(np.uint8))
    with pytest.raises(DataError, match=r"segment 1 'liver' is not a class of the labels"):
        read_seg(path, {"background": 0, "kidney": 1})


def test_refusals_name_the_file_and_the_problem(tmp_path):
    series = write_case(tmp_path / "axial", "axial")
    image = read_image(series)
    mask = _mask(image.spatial_shape)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", EmptySegmentWarning)
        path = write_seg(tmp_path / "a.seg.dcm", mask, image, LABELS, ALGORITHM).path
        before = path.read_bytes()
        with pytest.raises(OutputExistsError, match=r"a.seg.dcm exists"):
            write_seg(path, mask, image, LABELS, ALGORITHM)
        assert path.read_bytes() == before
        with pytest.raises(DataError, match=r"mask values \[9\] are not classes"):
            write_seg(tmp_path / "b.seg.dcm", mask * 0 + 9, image, LABELS, ALGORITHM)
        nifti = read_image(write_image(tmp_path / "scan.nii.gz", image.array, image.geometry))
        with pytest.raises(DataError, match=r"scan.nii.gz is not one"):
            write_seg(tmp_path / "c.seg.dcm", mask, nifti, LABELS, ALGORITHM)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.seg.dcm", "axial", "scan.nii.gz"]
    (tmp_path / "bad.dcm").write_bytes(b"\0" * 200)
    with pytest.raises(DataError, match=r"bad.dcm: cannot read the DICOM SEG"):
        read_seg(tmp_path / "bad.dcm")
