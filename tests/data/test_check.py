"""`attnseg dataset check`: each bad input of issue 4 (item 7) gets a clear one-line error naming the file."""

import json

import numpy as np
import pytest

from attnseg.cli import main
from attnseg.data.check import check_dataset, fingerprint_dataset
from attnseg.data.dataset import load_dataset
from attnseg.data.geometry import Geometry
from attnseg.data.io import read_image, write_image
from attnseg.errors import DataError
from tests.fixtures import synthetic_case, write_dicom_series


def _errors(root):
    report = check_dataset(root)
    return [str(p) for p in report.errors], report


def test_clean_dataset_summary_is_right(make_nnunet):
    root = make_nnunet(cases=3, classes=3, spacing=(0.8, 0.8, 2.0))
    errors, report = _errors(root)
    assert errors == [] and report.ok
    s = report.summary()
    assert s["training_cases"] == 3 and s["layout"] == "nnunet"
    assert s["spacing"]["median"] == pytest.approx([0.8, 0.8, 2.0])
    assert s["size"]["max"] == [12, 10, 8]
    assert s["size_after_crop"]["max"] == [10, 8, 6]  # the fixture leaves a 1-voxel zero margin
    # class frequencies against a hand count over the label files
    counts = np.zeros(3)
    for case in load_dataset(root).cases:
        counts += np.bincount(read_image(case.label).array.ravel(), minlength=3)
    fractions = {c["name"]: c["voxel_fraction"] for c in s["classes"]}
    assert fractions["organ"] == pytest.approx(counts[1] / counts.sum())
    assert fractions["lesion"] == pytest.approx(counts[2] / counts.sum())
    text = report.format()
    assert "3 training case(s)" in text and "problems: 0 error(s)" in text and "lesion" in text


def test_missing_label(make_nnunet):
    root = make_nnunet(cases=2)
    (root / "labelsTr" / "case_001.nii.gz").unlink()
    errors, _ = _errors(root)
    assert errors == [
        f"error: {root / 'imagesTr' / 'case_001_0000.nii.gz'}: no label for this image "
        "(expected labelsTr/case_001.nii.gz)"
    ]


def test_label_shape_differs(make_nnunet):
    root = make_nnunet(cases=2)
    write_image(
        root / "labelsTr" / "case_000.nii.gz",
        np.zeros((1, 12, 10, 7), np.uint8),
        Geometry.create([0.8, 0.8, 2]),
        overwrite=True,
    )
    errors, _ = _errors(root)
    assert len(errors) == 1 and "case_000.nii.gz: label shape (12, 10, 7) differs from image (12, 10, 8)" in errors[0]


def test_label_geometry_differs(make_nnunet):
    root = make_nnunet(cases=2)
    label = read_image(root / "labelsTr" / "case_001.nii.gz")
    moved = Geometry.create(label.geometry.spacing, np.add(label.geometry.origin, [0, 0, 1.0]))
    write_image(root / "labelsTr" / "case_001.nii.gz", label.array, moved, overwrite=True)
    errors, _ = _errors(root)
    assert len(errors) == 1 and "case_001.nii.gz: label geometry differs from its image: origin" in errors[0]


def test_label_values_outside_declared(make_nnunet):
    root = make_nnunet(cases=2, classes=2)
    label = read_image(root / "labelsTr" / "case_000.nii.gz")
    array = label.array.copy()
    array[0, 0, 0, 0] = 5
    write_image(root / "labelsTr" / "case_000.nii.gz", array, label.geometry, overwrite=True)
    errors, _ = _errors(root)
    assert len(errors) == 1
    assert "case_000.nii.gz: label values [5] are not among the declared labels [0, 1]" in errors[0]


@pytest.mark.parametrize(("bad", "what"), [(np.nan, "1 NaN, 0 inf"), (np.inf, "0 NaN, 1 inf")])
def test_non_finite_intensities(make_nnunet, bad, what):
    root = make_nnunet(cases=2)
    image = read_image(root / "imagesTr" / "case_001_0000.nii.gz")
    array = image.array.astype(np.float32)
    array[0, 3, 3, 3] = bad
    write_image(root / "imagesTr" / "case_001_0000.nii.gz", array, image.geometry, overwrite=True)
    errors, _ = _errors(root)
    assert errors == [f"error: {root / 'imagesTr' / 'case_001_0000.nii.gz'}: 1 non-finite intensities ({what})"]


def test_a_constant_image_is_a_warning_naming_the_file_and_value_per_channel(make_nnunet, tmp_path):
    """A blank channel file (case_000_0001: every voxel 0) and a constant one (case_001_0000: 7.5) are
    named with their value; a label of one value (case_002: all organ), and images uniform only outside the
    body (the fixture's zero margin), are not flagged. In a Decathlon 4-D file the channel is named."""
    root = make_nnunet(cases=3, channels=2)
    for name, value in (("case_000_0001.nii.gz", 0.0), ("case_001_0000.nii.gz", 7.5)):
        image = read_image(root / "imagesTr" / name)
        write_image(root / "imagesTr" / name, np.full_like(image.array, value), image.geometry, overwrite=True)
    label = read_image(root / "labelsTr" / "case_002.nii.gz")
    write_image(root / "labelsTr" / "case_002.nii.gz", np.ones_like(label.array), label.geometry, overwrite=True)
    report = check_dataset(root)
    assert report.ok and [str(p) for p in report.warnings] == [
        f"warning: {root / 'imagesTr' / 'case_000_0001.nii.gz'}: constant image: every voxel is 0",
        f"warning: {root / 'imagesTr' / 'case_001_0000.nii.gz'}: constant image: every voxel is 7.5",
    ]

    decathlon = tmp_path / "Task01_Blank"
    g = Geometry.create([1.0, 1.0, 1.5])
    image, label = synthetic_case((8, 8, 6), np.random.default_rng(0))
    write_image(decathlon / "imagesTr" / "t_0.nii.gz", np.stack([image, np.full_like(image, -3)]), g)
    write_image(decathlon / "labelsTr" / "t_0.nii.gz", label[None], g)
    spec = {"modality": {"0": "T1", "1": "T2"}, "labels": {"0": "background", "1": "tumour"}}
    spec["training"] = [{"image": "./imagesTr/t_0.nii.gz", "label": "./labelsTr/t_0.nii.gz"}]
    (decathlon / "dataset.json").write_text(json.dumps(spec))
    assert [str(p) for p in check_dataset(decathlon).warnings] == [
        f"warning: {decathlon / 'imagesTr' / 't_0.nii.gz'}: constant image (channel 1): every voxel is -3"
    ]


def test_truncated_gzip_in_dataset(make_nnunet):
    root = make_nnunet(cases=2)
    path = root / "labelsTr" / "case_000.nii.gz"
    path.write_bytes(path.read_bytes()[:-20])
    errors, _ = _errors(root)
    assert len(errors) == 1 and errors[0].startswith(f"error: {path}: cannot read NIfTI file")


def test_four_d_image_where_three_d_expected(make_nnunet):
    root = make_nnunet(cases=2)
    image = read_image(root / "imagesTr" / "case_000_0000.nii.gz")
    write_image(
        root / "imagesTr" / "case_000_0000.nii.gz", np.concatenate([image.array] * 2), image.geometry, overwrite=True
    )
    errors, _ = _errors(root)
    assert len(errors) == 1
    assert (
        "case_000_0000.nii.gz: 4-D image (12 x 10 x 8 x 2) where a 3-D image with one channel was expected" in errors[0]
    )


def test_channel_count_and_missing_channel(make_nnunet):
    root = make_nnunet(cases=2, channels=2)
    (root / "imagesTr" / "case_000_0001.nii.gz").unlink()
    errors, _ = _errors(root)
    assert errors == [f"error: {root / 'imagesTr' / 'case_000_0001.nii.gz'}: missing channel file"]


def test_mixed_dimensions_are_an_error(tmp_path):
    rng = np.random.default_rng(0)
    for name, shape in (("a", (6, 6, 6)), ("b", (6, 6))):
        image, label = synthetic_case(shape, rng)
        g = Geometry.create([1.0] * len(shape))
        write_image(tmp_path / "images" / f"{name}.nrrd", image[None], g)
        write_image(tmp_path / "labels" / f"{name}.nrrd", label[None], g)
    errors, _ = _errors(tmp_path)
    assert any("cases mix spatial dimensions" in e for e in errors)


def test_dicom_series_problems_in_a_paired_dataset(tmp_path):
    g = Geometry.create([1.0, 1.0, 2.0])
    volume = np.zeros((6, 6, 5), np.int16)
    write_dicom_series(tmp_path / "images" / "p1", volume, g, skip=[2])
    write_image(tmp_path / "labels" / "p1.nii.gz", np.zeros((1, 6, 6, 5), np.uint8), g)
    errors, _ = _errors(tmp_path)
    assert len(errors) == 1 and "p1: 1 missing slice(s) between" in errors[0]


def test_warnings_do_not_fail(make_nnunet):
    root = make_nnunet(cases=2)
    label = read_image(root / "labelsTr" / "case_000.nii.gz")
    write_image(root / "labelsTr" / "case_000.nii.gz", np.zeros_like(label.array), label.geometry, overwrite=True)
    report = check_dataset(root)
    assert report.ok and [p.message for p in report.warnings] == ["label has no foreground voxels"]


def test_fingerprint_raises_first_error(make_nnunet):
    root = make_nnunet(cases=3)
    (root / "labelsTr" / "case_001.nii.gz").unlink()
    (root / "labelsTr" / "case_002.nii.gz").unlink()
    with pytest.raises(
        DataError, match=r"case_001_0000.nii.gz: no label .* \(and 1 more; run `attnseg dataset check`\)"
    ):
        fingerprint_dataset(root)


# ---- the command ------------------------------------------------------------------------------------
def test_cli_check_exit_codes(make_nnunet, capsys):
    root = make_nnunet(cases=2)
    assert main(["dataset", "check", str(root)]) == 0
    out = capsys.readouterr().out
    assert "nnU-Net v2 raw" in out and "problems: 0 error(s)" in out
    (root / "labelsTr" / "case_000.nii.gz").unlink()
    assert main(["dataset", "check", str(root)]) == 1
    out = capsys.readouterr().out
    assert out.strip().splitlines()[-1].endswith("no label for this image (expected labelsTr/case_000.nii.gz)")
    assert main(["dataset", "check", str(root), "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["errors"] == 1 and report["problems"][0]["level"] == "error"


def test_cli_one_line_errors(tmp_path, make_nnunet, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["dataset", "check", str(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"attnseg: error: {tmp_path / 'empty'}: empty folder") and err.count("\n") == 1
    root = make_nnunet(cases=1)
    spec = json.loads((root / "dataset.json").read_text())
    (root / "dataset.json").write_text(json.dumps({**spec, "file_ending": ".jpeg"}))
    assert main(["dataset", "check", str(root)]) == 2
    err = capsys.readouterr().err
    assert "unsupported file type '.jpeg'" in err and err.count("\n") == 1


def test_cli_dataset_help_teaches(capsys):
    with pytest.raises(SystemExit) as exited:
        main(["dataset", "check", "--help"])
    assert exited.value.code == 0
    text = capsys.readouterr().out
    for phrase in ("label values", "geometry", "finite", "nnU-Net v2 raw", "Decathlon", "paired", "Exit status"):
        assert phrase in text
    with pytest.raises(SystemExit) as exited:
        main(["dataset", "prepare", "--help"])
    assert exited.value.code == 0
    text = capsys.readouterr().out
    assert "mni152-tissue" in text and "ctchest" in text and "not clinical benchmarks" in text


def test_decathlon_dataset_is_checked_with_its_four_d_images(tmp_path):
    rng = np.random.default_rng(0)
    g = Geometry.create([1.0, 1.0, 1.5])
    training = []
    for i in range(2):
        image, label = synthetic_case((8, 8, 6), rng)
        write_image(tmp_path / "imagesTr" / f"t_{i}.nii.gz", np.stack([image, image]), g)
        write_image(tmp_path / "labelsTr" / f"t_{i}.nii.gz", label[None], g)
        training.append({"image": f"./imagesTr/t_{i}.nii.gz", "label": f"./labelsTr/t_{i}.nii.gz"})
    training.append({"image": "./imagesTr/t_9.nii.gz", "label": "./labelsTr/t_9.nii.gz"})
    spec = {"modality": {"0": "T1", "1": "T2"}, "labels": {"0": "background", "1": "tumour"}, "training": training}
    (tmp_path / "dataset.json").write_text(json.dumps(spec))
    errors, report = _errors(tmp_path)
    assert errors == [f"error: {tmp_path / 'imagesTr' / 't_9.nii.gz'}: listed in dataset.json but missing"]
    assert report.summary()["cases_read"] == 2


# ---- what the held-back broken datasets showed (issue 9) --------------------------------------------------
def test_declared_channel_missing_everywhere_names_case_and_file(make_nnunet, tmp_path, capsys):
    """dataset.json declares 2 channels, only _0000 files exist: check, and train, name the missing files."""
    root = make_nnunet(cases=2)
    spec = json.loads((root / "dataset.json").read_text())
    spec["channel_names"] = {"0": "T1", "1": "T2"}
    (root / "dataset.json").write_text(json.dumps(spec))
    errors, _ = _errors(root)
    missing = [str(root / "imagesTr" / f"case_00{i}_0001.nii.gz") for i in range(2)]
    assert f"error: {missing[0]}: missing channel file" in errors
    assert f"error: {missing[1]}: missing channel file" in errors
    assert any("no complete training case" in e for e in errors)
    assert main(["dataset", "check", str(root)]) == 1
    assert main(["train", "--dataset", str(root), "--output", str(tmp_path / "run")]) == 2
    message = capsys.readouterr().err
    assert "no complete training case" in message and missing[0] in message and "missing channel file" in message


def test_stray_files_are_listed_and_case_like_ones_are_errors(make_nnunet):
    root = make_nnunet(cases=2)
    image = root / "imagesTr" / "case_001_0000.nii.gz"
    image.rename(root / "imagesTr" / "case_001_0000.nii")  # right data, wrong ending for this dataset
    (root / "imagesTr" / "notes.txt").write_text("scanner protocol")
    (root / "labelsTr" / "case_001.mha").write_bytes(b"")
    errors, report = _errors(root)
    assert any(e.startswith(f"error: {root / 'imagesTr' / 'case_001_0000.nii'}: looks like a case") for e in errors)
    assert any(e.startswith(f"error: {root / 'labelsTr' / 'case_001.mha'}: looks like a case") for e in errors)
    assert f"warning: {root / 'imagesTr' / 'notes.txt'}: ignored: not an image ending with the dataset's '.nii.gz'" in [
        str(w) for w in report.warnings
    ]
    assert f"error: {root / 'dataset.json'}: numTraining is 2 but 1 case(s) were found" in errors


@pytest.mark.parametrize("folder", ["imagesTr", "labelsTr"])
def test_empty_folder_is_named(make_nnunet, folder, capsys):
    root = make_nnunet(cases=2)
    for path in (root / folder).iterdir():
        path.unlink()
    errors, _ = _errors(root)
    assert any(e.startswith(f"error: {root / folder}: empty folder") for e in errors)
    assert main(["dataset", "check", str(root)]) == 1
    assert f"{root / folder}: empty folder" in capsys.readouterr().out


def test_num_training_that_disagrees_is_an_error(make_nnunet):
    root = make_nnunet(cases=3)
    spec = json.loads((root / "dataset.json").read_text())
    spec["numTraining"] = 5
    (root / "dataset.json").write_text(json.dumps(spec))
    errors, report = _errors(root)
    assert errors == [f"error: {root / 'dataset.json'}: numTraining is 5 but 3 case(s) were found"]
    assert not report.ok
