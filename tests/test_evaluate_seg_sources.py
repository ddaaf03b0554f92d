"""``evaluate`` with a SEG written by another tool's conventions: highdicom called directly with
``omit_empty_frames=True`` (only the frames with segment content), the frames then stored in reverse order
and the segments numbered 1 and 5 (not 1, 2). Placed on its source series' full grid, it gives against the
NIfTI truth exactly the Dice counted by hand; two such SEGs need their source series (found by the
SeriesInstanceUID they reference, given with --source-series or lying beside them), and without it the pair
is refused naming the series, never compared on a grid cropped to the frames."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest

from attnseg.cli import main
from attnseg.data.dicom import read_dicom_series
from attnseg.data.io import write_image
from attnseg.data.mask_files import SourceSeries, pair_grid
from attnseg.data.orientation import reorientation
from attnseg.evaluate import evaluate_folders
from tests.dicom_series import write_case

LABELS = {"background": 0, "liver": 1, "lesion": 2}
TYPE2 = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime", "StudyID")
TYPE2 += ("AccessionNumber", "ReferringPhysicianName")
LESION_NUMBER = 5  # the other tool's segment number for the lesion: not its label value, not contiguous


def _truth_and_prediction(shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """(X, Y, Z) label masks; slices 0, 3 and 5 empty in both, so the SEGs omit them.

    Liver: truth x 2..9, y 3..7, z 1..2 (80 voxels); prediction x 4..11 (80); overlap x 4..9 (60): Dice
    2 * 60 / 160 = 0.75. Lesion: truth x 12..15, y 10..13, z 4 (16); prediction y 12..15 (16); overlap
    y 12..13 (8): Dice 2 * 8 / 32 = 0.5.
    """
    truth, prediction = np.zeros(shape, np.uint8), np.zeros(shape, np.uint8)
    truth[2:10, 3:8, 1:3] = 1
    prediction[4:12, 3:8, 1:3] = 1
    truth[12:16, 10:14, 4] = 2
    prediction[12:16, 12:16, 4] = 2
    return truth, prediction


HAND_DICE = {"1": 0.75, "2": 0.5}


def _write_other_tool_seg(path: Path, mask: np.ndarray, series: Path) -> None:
    """``mask`` (X, Y, Z; 1 liver, 2 lesion) as another tool writes it: empty frames omitted, segments 1 and
    :data:`LESION_NUMBER`, frames in reverse order."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    image = read_dicom_series(series)
    headers = [pydicom.dcmread(series / name) for name in image.meta["files"]]  # in the grid's Z order
    for header in headers:
        for keyword in TYPE2:
            setattr(header, keyword, header.get(keyword, ""))
    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=number,
            segment_label=label,
            segmented_property_category=codes.SCT.Tissue,
            segmented_property_type=codes.SCT.Tissue,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL,
        )
        for number, label in ((1, "liver"), (2, "lesion"))
    ]
    seg = hd.seg.Segmentation(
        source_images=headers,
        pixel_array=mask.transpose(2, 1, 0),  # (slice, row, column): columns along X, rows along Y
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        series_instance_uid=hd.UID(),
        series_number=77,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="OtherTool",
        manufacturer_model_name="other",
        software_versions="1.0",
        device_serial_number="1",
        omit_empty_frames=True,
    )
    _renumber_and_reverse(seg)
    seg.save_as(path, enforce_file_format=True)


def _renumber_and_reverse(seg: pydicom.Dataset) -> None:
    """Segment 2 becomes :data:`LESION_NUMBER`, and the frames (bit-packed pixels and their functional
    groups) are stored last first."""
    for segment in seg.SegmentSequence:
        if segment.SegmentNumber == 2:
            segment.SegmentNumber = LESION_NUMBER
    for frame in seg.PerFrameFunctionalGroupsSequence:
        item = frame.SegmentIdentificationSequence[0]
        if item.ReferencedSegmentNumber == 2:
            item.ReferencedSegmentNumber = LESION_NUMBER
            content = frame.FrameContentSequence[0]
            content.DimensionIndexValues = [LESION_NUMBER, *list(content.DimensionIndexValues)[1:]]
    frames, pixels = int(seg.NumberOfFrames), int(seg.Rows) * int(seg.Columns)
    bits = np.unpackbits(np.frombuffer(seg.PixelData, np.uint8), bitorder="little")[: frames * pixels]
    packed = np.packbits(bits.reshape(frames, pixels)[::-1].reshape(-1), bitorder="little").tobytes()
    seg.PixelData = packed + b"\0" * (len(packed) % 2)
    seg.PerFrameFunctionalGroupsSequence = list(seg.PerFrameFunctionalGroupsSequence)[::-1]


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """dicom/scan1 (the source series, slices against row x column), truth/ (NIfTI, RAS voxel order),
    truth_seg/ and pred_seg/ (other-tool SEGs), labels.json."""
    root = tmp_path_factory.mktemp("seg_sources")
    out = {name: root / name for name in ("dicom", "truth", "truth_seg", "pred_seg")}
    for folder in out.values():
        folder.mkdir()
    series = write_case(out["dicom"] / "scan1", "reversed")
    image = read_dicom_series(series)
    truth, prediction = _truth_and_prediction(image.spatial_shape)
    ras = reorientation(image.geometry, "RAS")
    write_image(
        out["truth"] / "scan1.nii.gz", ras.apply(truth[None]), ras.geometry(image.geometry, image.spatial_shape)
    )
    _write_other_tool_seg(out["truth_seg"] / "scan1.dcm", truth, series)
    _write_other_tool_seg(out["pred_seg"] / "scan1.seg.dcm", prediction, series)
    (root / "labels.json").write_text(json.dumps(LABELS))
    out.update(root=root, series=series, labels=root / "labels.json")
    return out


def _evaluate(folders: dict[str, Path], reference: Path, *options: str) -> tuple[int, Path]:
    out = folders["root"] / f"reports_{reference.name}_{len(options)}"
    argv = ["evaluate", str(folders["pred_seg"]), str(reference), "--labels", str(folders["labels"])]
    return main([*argv, *options, "-o", str(out), "--overwrite", "--no-progress"]), out


def _case_dice(report_folder: Path) -> dict[str, float]:
    case = json.loads((report_folder / "summary.json").read_text())["metric_per_case"][0]
    return {value: metrics["Dice"] for value, metrics in case["metrics"].items()}


def test_the_seg_really_is_another_tools(folders):
    seg = pydicom.dcmread(folders["pred_seg"] / "scan1.seg.dcm")
    positions = [
        float(f.PlanePositionSequence[0].ImagePositionPatient[2]) for f in seg.PerFrameFunctionalGroupsSequence
    ]
    assert int(seg.NumberOfFrames) == 3  # liver on 2 slices, lesion on 1, of 6 slices x 2 segments
    assert [s.SegmentNumber for s in seg.SegmentSequence] == [1, LESION_NUMBER]
    assert positions != sorted(positions) and positions != sorted(positions, reverse=True)


@pytest.mark.parametrize("given", [False, True], ids=["series_not_needed", "series_given"])
def test_other_tools_seg_against_nifti_truth_gives_the_hand_dice(folders, capsys, given):
    options = ("--source-series", str(folders["dicom"])) if given else ()
    status, report = _evaluate(folders, folders["truth"], *options)
    assert status == 0, capsys.readouterr().err
    assert _case_dice(report) == HAND_DICE  # exactly
    capsys.readouterr()


def test_two_sparse_segs_are_placed_on_their_source_series(folders, capsys):
    status, report = _evaluate(folders, folders["truth_seg"], "--source-series", str(folders["dicom"]))
    assert status == 0, capsys.readouterr().err
    assert _case_dice(report) == HAND_DICE
    grid = pair_grid(
        folders["pred_seg"] / "scan1.seg.dcm", folders["truth_seg"] / "scan1.dcm", SourceSeries([folders["dicom"]])
    )
    image = read_dicom_series(folders["series"])
    assert grid is not None and grid[0] == image.spatial_shape == (20, 18, 6)  # the full grid, not slices 1..4
    capsys.readouterr()


def test_two_sparse_segs_have_sides_on_their_source_series(folders, capsys):
    """--sides reads SEG pairs as the metrics do, on the full grid of their series (DICOM's LPS turned to RAS)."""
    status, report = _evaluate(folders, folders["truth_seg"], "--source-series", str(folders["dicom"]), "--sides")
    assert status == 0, capsys.readouterr().err
    rows = (report / "sides.csv").read_text().splitlines()
    assert rows[0].startswith("case_id,label,side,") and len(rows) > 1
    assert {row.split(",")[0] for row in rows[1:]} == {"scan1"}
    assert "by side of the patient" in capsys.readouterr().out


def test_without_their_source_series_two_sparse_segs_are_refused_naming_it(folders, capsys):
    status, _ = _evaluate(folders, folders["truth_seg"])
    error = capsys.readouterr().err
    uid = str(
        pydicom.dcmread(folders["series"] / sorted(p.name for p in folders["series"].iterdir())[0]).SeriesInstanceUID
    )
    assert status == 1
    assert (
        "nothing was evaluated" in error
        and "scan1.seg.dcm: neither it nor scan1.dcm has frames for every slice" in error
    )
    assert f"SeriesInstanceUID {uid}) is not in {folders['pred_seg']}, {folders['truth_seg']}" in error
    assert "--source-series DIR" in error


def test_a_source_series_beside_the_seg_is_found_by_its_uid(folders, tmp_path, capsys):
    reference = tmp_path / "export"
    shutil.copytree(folders["truth_seg"], reference)
    shutil.copytree(folders["series"], reference / "PATIENT" / "STUDY" / "CT")  # an archive export's tree
    report, problems = evaluate_folders(folders["pred_seg"], reference, LABELS, progress=False)
    assert problems == [] and report is not None
    assert {value: report.cases[0].metrics[name].dice for name, value in (("liver", "1"), ("lesion", "2"))} == HAND_DICE


def test_a_nifti_not_on_the_source_series_grid_is_refused(folders, tmp_path):
    cropped = tmp_path / "cropped"
    image = read_dicom_series(folders["series"])
    truth, _ = _truth_and_prediction(image.spatial_shape)
    write_image(cropped / "scan1.nii.gz", truth[None, :, :, :5], image.geometry)  # the last slice left out
    sources = SourceSeries([folders["dicom"]])
    report, problems = evaluate_folders(folders["pred_seg"], cropped, LABELS, progress=False, sources=sources)
    assert report is None and len(problems) == 1
    assert "scan1.nii.gz: its grid (20, 18, 5) is not the grid (20, 18, 6) of the series scan1.seg.dcm" in problems[0]


def test_a_source_series_folder_that_does_not_exist_is_named(folders, capsys):
    status, _ = _evaluate(folders, folders["truth"], "--source-series", str(folders["root"] / "nowhere"))
    assert status == 2
    assert f"{folders['root'] / 'nowhere'}: not a folder of DICOM series" in capsys.readouterr().err
