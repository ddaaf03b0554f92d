"""Labels grown or shrunk by a margin in millimetres (attnseg.data.margin), and `attnseg dataset margin`."""

import json
from pathlib import Path

import numpy as np
import pytest

from attnseg.cli import main
from attnseg.data.check import check_dataset
from attnseg.data.io import read_image
from attnseg.data.margin import MARGIN_RECORD, apply_margin, margin_note, write_with_margin
from attnseg.errors import DataError, OutputExistsError


def test_growing_one_voxel_follows_the_spacing() -> None:
    # spacing 1 mm down the rows, 2 mm across the columns: 2 mm reaches two rows but one column,
    # and no diagonal neighbour (sqrt(1 + 4) = 2.24 mm)
    labels = np.zeros((7, 5), dtype=np.uint8)
    labels[3, 2] = 1
    grown = apply_margin(labels, (1.0, 2.0), 2.0)
    expected = np.zeros_like(labels)
    expected[1:6, 2] = 1
    expected[3, 1:4] = 1
    np.testing.assert_array_equal(grown, expected)
    np.testing.assert_array_equal(labels[3], [0, 0, 1, 0, 0])  # the input is left alone


def test_growing_fills_background_with_the_nearest_class_and_never_overwrites_another() -> None:
    labels = np.array([[1, 0, 0, 0, 0, 2, 2]], dtype=np.uint8)
    grown = apply_margin(labels, (1.0, 1.0), 2.0)
    # column 1, 2 are 1 and 2 mm from class 1; column 3, 4 are 2 and 1 mm from class 2 (a tie goes either way
    # and is not asserted); class 2's own voxels stay
    assert grown[0, 1] == 1 and grown[0, 4] == 2 and grown[0, 2] == 1
    assert grown[0, 3] in (1, 2)
    np.testing.assert_array_equal(grown[0, 5:], [2, 2])
    only_two = apply_margin(labels, (1.0, 1.0), 5.0, values=[2])
    np.testing.assert_array_equal(only_two, [[1, 2, 2, 2, 2, 2, 2]])


def test_shrinking_moves_the_outer_border_only() -> None:
    labels = np.zeros((7, 9), dtype=np.uint8)
    labels[1:6, 1:5] = 1
    labels[1:6, 5:8] = 2
    shrunk = apply_margin(labels, (1.0, 1.0), -1.0)
    expected = np.zeros_like(labels)
    expected[2:5, 2:5] = 1  # the border with class 2 (column 4/5) does not move
    expected[2:5, 5:7] = 2
    np.testing.assert_array_equal(shrunk, expected)


def test_into_moves_a_class_against_the_class_around_it() -> None:
    """A tumour (2) inside a liver (1): alone it touches no background and does not move; with the liver
    counted as background it grows into the liver, and shrunk gives its rim to the liver, not a hole."""
    labels = np.zeros((1, 15), dtype=np.uint8)
    labels[0, 2:13] = 1
    labels[0, 6:9] = 2
    np.testing.assert_array_equal(apply_margin(labels, (1.0, 1.0), 2.0, values=[2]), labels)
    np.testing.assert_array_equal(apply_margin(labels, (1.0, 1.0), -1.0, values=[2]), labels)
    grown = apply_margin(labels, (1.0, 1.0), 2.0, values=[2], into=[1])
    np.testing.assert_array_equal(grown, [[0, 0, 1, 1, 2, 2, 2, 2, 2, 2, 2, 1, 1, 0, 0]])
    shrunk = apply_margin(labels, (1.0, 1.0), -1.0, values=[2], into=[1])
    np.testing.assert_array_equal(shrunk, [[0, 0, 1, 1, 1, 1, 1, 2, 1, 1, 1, 1, 1, 0, 0]])
    # grown past the liver, the tumour takes the background beyond it too (the nearest chosen class wins)
    far = apply_margin(labels, (1.0, 1.0), 5.0, values=[2], into=[1])
    np.testing.assert_array_equal(far, [[0, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 0]])
    # a shrunk rim goes to the nearest of the background and the --into classes
    edge = np.array([[0, 2, 2, 2, 2, 2, 1, 1]], dtype=np.uint8)
    shrunk = apply_margin(edge, (1.0, 1.0), -2.0, values=[2], into=[1])
    np.testing.assert_array_equal(shrunk, [[0, 0, 0, 2, 1, 1, 1, 1]])


def test_growing_then_shrinking_a_box_gives_it_back() -> None:
    labels = np.zeros((12, 12, 12), dtype=np.uint8)
    labels[3:9, 4:8, 5:7] = 1
    spacing = (0.8, 1.0, 2.5)
    back = apply_margin(apply_margin(labels, spacing, 2.5), spacing, -2.5)
    np.testing.assert_array_equal(back, labels)


def test_a_margin_needs_one_spacing_per_axis() -> None:
    with pytest.raises(ValueError, match="2 spacings"):
        apply_margin(np.zeros((3, 3)), (1.0, 1.0, 1.0), 1.0)


def test_write_with_margin_copies_the_dataset_and_rewrites_only_the_labels(make_nnunet, tmp_path: Path) -> None:
    source = make_nnunet(cases=2, shape=(14, 12, 10), spacing=(0.8, 0.8, 2.0))
    before = {p: p.read_bytes() for p in source.rglob("*") if p.is_file()}
    out = write_with_margin(source, tmp_path / "grown", 1.6, label_names=["organ"])

    assert {p: p.read_bytes() for p in source.rglob("*") if p.is_file()} == before  # the source is untouched
    assert (out / "dataset.json").read_text() == (source / "dataset.json").read_text()
    for image in sorted((source / "imagesTr").iterdir()):
        assert (out / "imagesTr" / image.name).read_bytes() == image.read_bytes()
    record = json.loads((out / MARGIN_RECORD).read_text())
    assert record["margin_mm"] == 1.6 and record["label_values"] == [1]
    for case_id in ("case_000", "case_001"):
        old = read_image(source / "labelsTr" / f"{case_id}.nii.gz", multichannel=False)
        new = read_image(out / "labelsTr" / f"{case_id}.nii.gz", multichannel=False)
        assert not new.geometry.differences(old.geometry, atol=1e-6)
        expected = apply_margin(np.asarray(old.array[0]), old.geometry.spacing, 1.6, values=[1])
        np.testing.assert_array_equal(new.array[0], expected)
        assert record["voxels_changed"][case_id] == np.count_nonzero(expected != old.array[0]) > 0
    assert check_dataset(out).ok


def test_write_with_margin_refuses_what_it_cannot_do_cleanly(make_nnunet, tmp_path: Path) -> None:
    source = make_nnunet(cases=1)
    with pytest.raises(DataError, match="non-zero number of millimetres"):
        write_with_margin(source, tmp_path / "zero", 0.0)
    with pytest.raises(DataError, match=r"no foreground label named \['liver'\]; the labels are \['organ', 'lesion'\]"):
        write_with_margin(source, tmp_path / "unknown", 1.0, label_names=["liver"])
    with pytest.raises(DataError, match="outside"):
        write_with_margin(source, source / "inside", 1.0)
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "notes.txt").write_text("mine")
    with pytest.raises(OutputExistsError, match="--overwrite"):
        write_with_margin(source, taken, 1.0)
    with pytest.raises(DataError, match="not a dataset"):
        write_with_margin(source, taken, 1.0, overwrite=True)
    assert (taken / "notes.txt").read_text() == "mine"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging folder left behind


def test_write_with_margin_replaces_a_dataset_only_when_asked(make_nnunet, tmp_path: Path) -> None:
    source = make_nnunet(cases=1)
    out = write_with_margin(source, tmp_path / "grown", 2.0)
    first = json.loads((out / MARGIN_RECORD).read_text())
    write_with_margin(source, out, -0.8, overwrite=True)
    second = json.loads((out / MARGIN_RECORD).read_text())
    assert first["margin_mm"] == 2.0 and second["margin_mm"] == -0.8
    assert second["label_values"] == "every foreground label"


def test_the_command_line_writes_and_names_the_record(make_nnunet, tmp_path: Path, capsys) -> None:
    source = make_nnunet(cases=1)
    assert main(["dataset", "margin", str(source), str(tmp_path / "m"), "--mm", "-1", "--labels", "lesion"]) == 0
    printed = capsys.readouterr().out
    assert "shrunk by 1 mm" in printed and MARGIN_RECORD in printed
    assert json.loads((tmp_path / "m" / MARGIN_RECORD).read_text())["label_values"] == [2]


def test_into_on_the_command_line_is_recorded_checked_and_warned_about(make_nnunet, tmp_path: Path, capsys) -> None:
    source = make_nnunet(cases=1, classes=3)  # the lesion lies inside the organ
    command = ["dataset", "margin", str(source), "--mm", "-1", "--labels", "lesion", "--no-progress"]
    assert main([*command[:3], str(tmp_path / "alone"), *command[3:]]) == 0
    assert "warning: no voxel changed" in capsys.readouterr().err  # a lesion inside an organ touches no background
    assert main([*command[:3], str(tmp_path / "into"), *command[3:], "--into", "organ"]) == 0
    assert "warning" not in capsys.readouterr().err
    record = json.loads((tmp_path / "into" / MARGIN_RECORD).read_text())
    assert record["into_values"] == [1] and sum(record["voxels_changed"].values()) > 0
    assert "shrunk by 1 mm (label values 2) against the background and label values 1" in margin_note(tmp_path / "into")
    for wrong, message in (
        (["--into", "organ"], "--into needs --labels"),  # without --labels
        (["--labels", "lesion", "--into", "lesion"], "both move and be moved into"),
        (["--labels", "lesion", "--into", "liver"], "no foreground label named"),
    ):
        assert main(["dataset", "margin", str(source), str(tmp_path / "x"), "--mm", "1", *wrong]) != 0
        assert message in capsys.readouterr().err
        assert not (tmp_path / "x").exists()


def test_a_label_outside_the_dataset_folder_is_named(make_nnunet, tmp_path: Path) -> None:
    """nnU-Net's dataset.json may list cases by path; a label outside the folder cannot be rewritten in the copy."""
    source = make_nnunet(cases=1)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    label = (source / "labelsTr" / "case_000.nii.gz").rename(elsewhere / "case_000.nii.gz")
    spec = json.loads((source / "dataset.json").read_text())
    image = str(source / "imagesTr" / "case_000_0000.nii.gz")
    spec["dataset"] = {"case_000": {"images": [image], "label": str(label)}}
    (source / "dataset.json").write_text(json.dumps(spec))
    with pytest.raises(DataError, match=rf"{label}: a label outside the dataset folder"):
        write_with_margin(source, tmp_path / "grown", 1.0)
    assert not (tmp_path / "grown").exists()


def test_the_model_card_says_the_labels_were_moved(make_nnunet, tmp_path: Path) -> None:
    from attnseg.data.plan import ChannelNormalization, Plan
    from attnseg.training.config import Config
    from attnseg.training.model_card import CardInputs, data_section
    from attnseg.training.trainer import TrainState

    source = make_nnunet(cases=1)
    out = write_with_margin(source, tmp_path / "grown", 2.5, label_names=["lesion"])
    labels = {"background": 0, "lesion": 2}
    plan = Plan(3, 3, (1.0, 1.0, 1.0), None, (8, 8, 8), [ChannelNormalization("zscore")], labels, ["MR"])

    def card(dataset: Path) -> str:
        inputs = CardInputs(Config(), plan, str(dataset), ["case_000"], [], TrainState(), 1.0, "cpu")
        return "\n".join(data_section(inputs))

    assert f"- labels: grown by 2.5 mm (label values 2) from `{source.resolve()}`" in card(out)
    assert "- labels:" not in card(source)
    (out / MARGIN_RECORD).write_text("{")
    assert "cannot be read" in card(out)


def test_test_cases_are_copied_as_they_are(make_nnunet, tmp_path: Path) -> None:
    source = make_nnunet(cases=1)
    (source / "imagesTs").mkdir()
    (source / "labelsTs").mkdir()
    for folder, name in (("imagesTs", "case_900_0000.nii.gz"), ("labelsTs", "case_900.nii.gz")):
        (source / folder / name).write_bytes((source / f"{folder[:-2]}Tr" / name.replace("900", "000")).read_bytes())
    out = write_with_margin(source, tmp_path / "grown", 2.0)
    for folder in ("imagesTs", "labelsTs"):
        for path in (source / folder).iterdir():
            assert (out / folder / path.name).read_bytes() == path.read_bytes()
    assert (out / "labelsTr" / "case_000.nii.gz").read_bytes() != (source / "labelsTr" / "case_000.nii.gz").read_bytes()


def test_images_are_copies_unless_linking_is_asked_for(make_nnunet, tmp_path: Path) -> None:
    """A program that rewrites an image of the copy in place must not change the source's, unless the user
    chose hard links to save space."""
    source = make_nnunet(cases=1)
    image = source / "imagesTr" / "case_000_0000.nii.gz"
    copied = write_with_margin(source, tmp_path / "copied", 1.0) / "imagesTr" / image.name
    linked = write_with_margin(source, tmp_path / "linked", 1.0, link_images=True) / "imagesTr" / image.name
    assert not copied.samefile(image) and linked.samefile(image)
    original = image.read_bytes()
    with open(copied, "r+b") as rewritten:  # in place, as some writers do
        rewritten.write(b"\0" * 16)
    assert image.read_bytes() == original
