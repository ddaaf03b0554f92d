import json
import re
import shutil

import numpy as np
import pytest

from attnseg.data import write_image
from attnseg.data.dataset import MISSING_CHANNEL_FILE, load_dataset
from attnseg.data.geometry import Geometry
from attnseg.errors import DataError
from attnseg.inference.cases import find_cases, output_paths, survey_case
from tests.fixtures import write_dicom_series


def test_find_cases_groups_channels_and_reports_gaps(tmp_path):
    for name in ("a_0000.nii.gz", "a_0001.nii.gz", "b_0000.nii.gz", "b_0001.nii.gz"):
        write_image(tmp_path / name, np.zeros((1, 4, 4, 4), np.float32), Geometry.identity(3))
    cases = find_cases(tmp_path, num_channels=2)
    assert [(c.case_id, [p.name for p in c.paths]) for c in cases] == [
        ("a", ["a_0000.nii.gz", "a_0001.nii.gz"]),
        ("b", ["b_0000.nii.gz", "b_0001.nii.gz"]),
    ]
    with pytest.raises(DataError, match="no such file"):
        find_cases(tmp_path / "missing.nii.gz", 1)


def test_a_missing_channel_file_is_named_in_its_folder_as_dataset_check_names_it(tmp_path):
    """A 4-channel model, case_001 without its _0002 and case_002 without _0000 and _0003: every missing file
    is named by its full path, in dataset check's words, and no case runs (the listing refuses them all)."""
    scans = tmp_path / "scans"
    present = {"case_001": (0, 1, 3), "case_002": (1, 2), "case_003": (0, 1, 2, 3)}
    for case_id, channels in present.items():
        for c in channels:
            write_image(scans / f"{case_id}_{c:04d}.nii.gz", np.zeros((1, 4, 4, 4), np.float32), Geometry.identity(3))
    with pytest.raises(DataError) as caught:
        find_cases(scans, num_channels=4)
    message = str(caught.value)
    missing = [scans / name for name in ("case_001_0002.nii.gz", "case_002_0000.nii.gz", "case_002_0003.nii.gz")]
    assert all(f"{path}: {MISSING_CHANNEL_FILE}" in message for path in missing), message
    assert "case_003" not in message and message.endswith("CASE_0000 to CASE_0003); nothing was predicted")
    dataset = _nnunet(tmp_path / "Dataset001_Four", scans, 4)
    listed = {str(problem) for problem in load_dataset(dataset).problems}  # the dataset layer's words, the same
    assert listed == {f"error: {dataset / 'imagesTr' / path.name}: {MISSING_CHANNEL_FILE}" for path in missing}


def _nnunet(root, scans, channels):
    """The scans as an nnU-Net dataset's imagesTr/ (each case labelled), for `dataset check`'s listing."""
    (root / "labelsTr").mkdir(parents=True)
    shutil.copytree(scans, root / "imagesTr")
    for case_id in ("case_001", "case_002", "case_003"):
        write_image(root / "labelsTr" / f"{case_id}.nii.gz", np.zeros((1, 4, 4, 4), np.uint8), Geometry.identity(3))
    names = {str(c): "MR" for c in range(channels)}
    (root / "dataset.json").write_text(
        json.dumps({"channel_names": names, "labels": {"background": 0}, "numTraining": 3, "file_ending": ".nii.gz"})
    )
    return root


@pytest.fixture
def scan(tmp_path, oblique):
    """One 9 x 8 x 5 scan in scans/, and where its outputs go (mask and probabilities) in out/."""
    write_image(tmp_path / "scans" / "ct1.nii.gz", np.zeros((1, 9, 8, 5), np.float32), oblique)
    case = find_cases(tmp_path / "scans", 1)[0]
    return case, output_paths(case, tmp_path / "out", None, save_probabilities=True)


def _mask(path, geometry, shape=(9, 8, 5)):
    write_image(path, np.zeros((1, *shape), np.uint8), geometry)


def test_a_new_case_writes_every_output_and_is_sized_by_its_header(scan):
    case, outputs = scan
    survey = survey_case(case, outputs, overwrite=False, skip_existing=True)
    assert survey.voxels == 9 * 8 * 5
    assert survey.to_write == (outputs.probabilities, outputs.mask)  # the mask last: its presence means done
    assert survey.problem is None


def test_skip_existing_keeps_complete_outputs_and_writes_the_missing_ones(scan, oblique):
    case, outputs = scan
    _mask(outputs.mask, oblique)
    assert survey_case(case, outputs, overwrite=False, skip_existing=True).to_write == (outputs.probabilities,)
    write_image(outputs.probabilities, np.zeros((3, 9, 8, 5), np.float32), oblique)
    assert survey_case(case, outputs, overwrite=False, skip_existing=True).to_write == ()


def test_leftovers_of_a_killed_write_are_not_outputs(scan):
    """A killed write leaves a hidden staging folder (.ct1.nii.gz.XXXX/ct1.nii.gz); it is not the mask."""
    case, outputs = scan
    staging = outputs.mask.parent / f".{outputs.mask.name}.k2j4x"
    staging.mkdir(parents=True)
    (staging / outputs.mask.name).write_bytes(b"\x1f\x8b half a file")
    assert survey_case(case, outputs, overwrite=False, skip_existing=True).to_write == (
        outputs.probabilities,
        outputs.mask,
    )


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        ("empty", "cannot be read"),
        ("truncated", "cannot be read"),
        ("cut after its header", "its gzip stream is cut short or damaged after 3,232 bytes"),  # 352 + 9*8*5*8
        ("other shape", r"has shape \(9, 8, 4\), not its scan's \(9, 8, 5\)"),
        ("other grid", "is not on its scan's grid"),
    ],
)
def test_a_damaged_or_foreign_output_is_never_taken_as_complete(scan, oblique, damage, reason):
    case, outputs = scan
    outputs.mask.parent.mkdir(parents=True)
    if damage == "empty":
        outputs.mask.write_bytes(b"")
    elif damage == "truncated":
        _mask(outputs.mask, oblique)
        outputs.mask.write_bytes(outputs.mask.read_bytes()[:60])
    elif damage == "cut after its header":  # a copy cut short: every voxel there, the gzip trailer not
        noise = np.random.default_rng(0).integers(0, 3, (1, 9, 8, 5)).astype(np.float64)  # 422 bytes packed:
        write_image(outputs.mask, noise, oblique)  # a cut gzip of a few hundred bytes still yields its header
        outputs.mask.write_bytes(outputs.mask.read_bytes()[:-4])
    elif damage == "other shape":
        _mask(outputs.mask, oblique, shape=(9, 8, 4))
    else:
        _mask(outputs.mask, Geometry.create([0.7, 1.3, 2.5]))
    survey = survey_case(case, outputs, overwrite=False, skip_existing=True)
    assert survey.to_write == ()
    assert survey.problem.startswith(f"{outputs.mask} exists but ")
    assert "delete it, or pass --overwrite" in survey.problem
    assert re.search(reason, survey.problem)
    replaced = survey_case(case, outputs, overwrite=True, skip_existing=True)
    assert replaced.to_write == (outputs.probabilities, outputs.mask) and replaced.problem is None


def test_without_skip_existing_an_existing_output_is_in_the_way(scan, oblique):
    case, outputs = scan
    _mask(outputs.mask, oblique)
    survey = survey_case(case, outputs, overwrite=False, skip_existing=False)
    assert survey.problem.startswith(f"{outputs.mask} exists; pass overwrite=True (--overwrite on the command line) ")
    assert survey_case(case, outputs, overwrite=True, skip_existing=False).to_write == (
        outputs.probabilities,
        outputs.mask,
    )


def test_unreadable_scans_and_dicom_series_are_sized_without_failing(tmp_path, oblique):
    (tmp_path / "scans").mkdir()
    (tmp_path / "scans" / "bad.nii.gz").write_bytes(b"not a scan at all")
    write_dicom_series(tmp_path / "series", np.zeros((6, 5, 4), np.int16), Geometry.create([0.8, 0.8, 2.0]))
    series, bad = find_cases([tmp_path / "scans" / "bad.nii.gz", tmp_path / "series"], 1)
    out = tmp_path / "out"
    assert survey_case(bad, output_paths(bad, out, None, False), False, False).voxels == len(b"not a scan at all")
    assert survey_case(series, output_paths(series, out, "dicom", False), False, False).voxels == 6 * 5 * 4
