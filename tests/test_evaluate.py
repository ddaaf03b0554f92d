import json
import shutil

import numpy as np
import pytest
from PIL import Image

from attnseg.cli import main
from attnseg.data import write_image
from attnseg.data.geometry import Geometry
from attnseg.errors import DataError
from attnseg.evaluate import evaluate_folders, find_images, find_labels, pair_cases, write_overlays
from attnseg.metrics.sides import SIDES


@pytest.fixture
def folders(tmp_path):
    """Two cases: a 4x4x4 cube (reference) vs the same cube shifted by one voxel (prediction)."""
    geometry = Geometry.create([1.0, 1.0, 2.0], [5.0, -3.0, 1.0])
    pred, ref = tmp_path / "pred", tmp_path / "ref"
    for case in ("a", "b"):
        reference = np.zeros((1, 10, 10, 10), np.uint8)
        reference[0, 2:6, 2:6, 2:6] = 1
        write_image(ref / f"{case}.nii.gz", reference, geometry)
        write_image(pred / f"{case}.nii.gz", np.roll(reference, 1, axis=1), geometry)
    (tmp_path / "labels.json").write_text(json.dumps({"background": 0, "cube": 1}))
    return pred, ref, tmp_path / "labels.json"


def test_evaluate_folders_hand_computed(folders):
    pred, ref, labels_file = folders
    report, problems = evaluate_folders(pred, ref, find_labels(ref, labels_file), progress=False)
    assert problems == []
    # a 4x4x4 cube shifted by one voxel along x overlaps 3x4x4: Dice = 2*48 / (64+64) = 0.75
    means = report.mean()["cube"]
    assert means["Dice"] == pytest.approx(0.75)
    assert means["IoU"] == pytest.approx(48 / 80)
    assert means["HD95"] == pytest.approx(1.0)  # the shift, along x where spacing is 1 mm


def test_missing_cases_and_geometry_mismatch_are_listed(folders):
    pred, ref, _ = folders
    (pred / "b.nii.gz").unlink()
    shutil.copy(ref / "a.nii.gz", pred / "extra.nii.gz")
    other = np.zeros((1, 10, 10, 10), np.uint8)
    write_image(pred / "a.nii.gz", other, Geometry.create([1.0, 1.0, 3.0], [5.0, -3.0, 1.0]), overwrite=True)
    report, problems = evaluate_folders(pred, ref, progress=False)
    assert report is None
    assert len(problems) == 3
    assert any("b.nii.gz: no prediction for case 'b'" in p for p in problems)
    assert any("extra.nii.gz: no reference for case 'extra'" in p for p in problems)
    assert any("a.nii.gz: geometry differs" in p and "spacing" in p for p in problems)


def test_a_shape_mismatch_is_listed_before_anything_is_evaluated(folders, tmp_path, capsys):
    """A prediction one slice short, on the same spacing, origin and direction: found from the headers with the
    other problems (exit 1), not after evaluating the other cases (exit 2)."""
    pred, ref, _ = folders
    geometry = Geometry.create([1.0, 1.0, 2.0], [5.0, -3.0, 1.0])
    write_image(pred / "a.nii.gz", np.zeros((1, 10, 10, 9), np.uint8), geometry, overwrite=True)
    (pred / "b.nii.gz").unlink()
    out = tmp_path / "reports"
    assert main(["evaluate", str(pred), str(ref), "-o", str(out), "--no-progress"]) == 1
    assert capsys.readouterr().err.splitlines() == [
        "attnseg: error: 2 problem(s); nothing was evaluated:",
        f"  {ref / 'b.nii.gz'}: no prediction for case 'b' in {pred}",
        f"  {pred / 'a.nii.gz'}: shape (10, 10, 9) differs from {ref / 'a.nii.gz'} (10, 10, 10)",
    ]
    assert not out.exists()


def test_evaluate_cli_writes_reports_and_fails_on_problems(folders, tmp_path, capsys):
    pred, ref, labels_file = folders
    out = tmp_path / "reports"
    assert main(["evaluate", str(pred), str(ref), "--labels", str(labels_file), "-o", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "| cube | 0.750 ± 0.000" in printed
    summary = json.loads((out / "summary.json").read_text())
    assert {"foreground_mean", "mean", "metric_per_case"} <= set(summary)
    assert summary["mean"]["1"]["Dice"] == pytest.approx(0.75)
    assert (out / "cases.csv").read_text().count("\n") == 3  # header + 2 cases
    assert main(["evaluate", str(pred), str(ref), "-o", str(out), "--no-progress"]) == 2  # reports exist
    (pred / "a.nii.gz").unlink()
    assert main(["evaluate", str(pred), str(ref), "-o", str(tmp_path / "r2"), "--no-progress"]) == 1
    assert "no prediction for case 'a'" in capsys.readouterr().err


def test_a_systematic_shift_is_named_with_the_margin_that_moves_it(tmp_path, capsys):
    """Masks drawn 2 voxels (2 mm) inside the reference all round: the note names the class, the offset and
    the `attnseg dataset margin` command (no --labels: there is one class to move)."""
    geometry = Geometry.create([1.0, 1.0, 1.0], [0.0, 0.0, 0.0])
    pred, ref = tmp_path / "pred", tmp_path / "ref"
    reference = np.zeros((1, 16, 16, 16), np.uint8)
    reference[0, 2:14, 2:14, 2:14] = 1
    inner = np.zeros_like(reference)
    inner[0, 4:12, 4:12, 4:12] = 1
    write_image(ref / "a.nii.gz", reference, geometry)
    write_image(pred / "a.nii.gz", inner, geometry)
    assert main(["evaluate", str(pred), str(ref), "-o", str(tmp_path / "out"), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    # 2.17 mm, not 2: the reference's edge and corner voxels are sqrt(8) and sqrt(12) mm from the inner cube
    assert "note: label_1: the masks lie on average 2.17 mm inside the references" in printed, printed
    assert "`attnseg dataset margin SOURCE OUT --mm 2.2` grows the training labels" in printed, printed
    assert "`--sides` says on which sides of the patient" in printed  # where the shift is, for a 3D case


def test_no_shift_note_for_scattered_errors(folders, tmp_path, capsys):
    """A cube shifted by one voxel: as much outside on one side as inside on the other, offset 0."""
    pred, ref, labels_file = folders
    assert (
        main(
            ["evaluate", str(pred), str(ref), "--labels", str(labels_file), "-o", str(tmp_path / "o"), "--no-progress"]
        )
        == 0
    )
    assert "note:" not in capsys.readouterr().out


def test_pairing_ignores_probability_maps(folders):
    pred, ref, _ = folders
    write_image(pred / "a_probabilities.nii.gz", np.zeros((2, 10, 10, 10), np.float32), Geometry.identity(3))
    assert [pair.case_id for pair in pair_cases(pred, ref).pairs] == ["a", "b"]


def test_labels_come_from_the_dataset(make_nnunet):
    tiny_dataset = make_nnunet(cases=1)
    assert find_labels(tiny_dataset / "labelsTr") == {"background": 0, "organ": 1, "lesion": 2}


def test_worker_processes_give_the_serial_reports(folders, tmp_path):
    """Six cases of different overlap, labels found from the values, sides measured as each pair is read
    (scans for some cases, class 1 missed in four, class 2 absent from two): the reports of 2 worker
    processes are the serial ones, byte for byte (case order included)."""
    pred, ref, _ = folders
    geometry = Geometry.create([1.0, 1.0, 2.0], [5.0, -3.0, 1.0])
    scans = tmp_path / "scans"
    for shift, case in enumerate(("c", "d", "e", "f")):
        reference = np.zeros((1, 10, 10, 10), np.uint8)
        reference[0, 2:7, 3:6, 2:6] = 2
        write_image(pred / f"{case}.nii.gz", np.roll(reference, shift, axis=2), geometry)
        reference[0, 8:, 8:, 8:] = 1  # class 1, which the prediction misses
        write_image(ref / f"{case}.nii.gz", reference, geometry)
        write_image(scans / f"{case}_0000.nii.gz", np.arange(1000, dtype=np.float32).reshape(1, 10, 10, 10), geometry)
    for workers in ("0", "2"):
        args = ["evaluate", str(pred), str(ref), "-o", str(tmp_path / workers), "--num-workers", workers]
        assert main([*args, "--no-progress", "--sides", "--images", str(scans)]) == 0
    for name in ("summary.json", "cases.csv", "summary.md", "sides.csv", "pieces_missed.csv"):
        assert (tmp_path / "0" / name).read_bytes() == (tmp_path / "2" / name).read_bytes()
    assert json.loads((tmp_path / "2" / "summary.json").read_text())["n_cases"] == 6
    sides = (tmp_path / "2" / "sides.csv").read_text().splitlines()[1:]
    assert [row.split(",")[0] for row in sides[:: len(SIDES)]] == list("abcdef")


def test_overlays_over_scans_named_like_the_cases(folders, tmp_path, capsys):
    pred, ref, labels_file = folders
    scans = tmp_path / "scans"
    geometry = Geometry.create([1.0, 1.0, 2.0], [5.0, -3.0, 1.0])
    write_image(scans / "a_0000.nii.gz", np.random.default_rng(0).random((1, 10, 10, 10)), geometry)
    write_image(scans / "b.nii.gz", np.random.default_rng(1).random((1, 10, 10, 10)), geometry)
    assert find_images(ref, scans) == {"a": scans / "a_0000.nii.gz", "b": scans / "b.nii.gz"}
    out = tmp_path / "reports"
    command = ["evaluate", str(pred), str(ref), "--labels", str(labels_file), "-o", str(out), "--no-progress"]
    assert main([*command, "--overlays", "--images", str(scans)]) == 0
    assert f"wrote 2 overlay(s) to {out / 'overlays'}" in capsys.readouterr().out
    for case in ("a", "b"):
        with Image.open(out / "overlays" / f"{case}_overlay.png") as picture:
            assert picture.format == "PNG" and picture.height > picture.width / 2  # three rows of slices
    assert main([*command, "--overlays", "--overwrite"]) == 0  # no scans here: drawn on a blank background
    assert find_images(ref) == {}


def test_overlay_scans_come_from_the_dataset_and_must_fit(make_nnunet, tmp_path):
    dataset = make_nnunet(cases=2)
    assert find_images(dataset) == {f"case_{i:03d}": dataset / "imagesTr" / f"case_{i:03d}_0000.nii.gz" for i in (0, 1)}
    assert find_images(dataset / "labelsTr") == find_images(dataset)  # the dataset above a labels folder
    report, _ = evaluate_folders(dataset / "labelsTr", dataset, progress=False)
    written = write_overlays(report, tmp_path / "overlays", find_images(dataset))
    assert [p.name for p in written] == ["case_000_overlay.png", "case_001_overlay.png"]
    wrong = tmp_path / "wrong.nii.gz"
    write_image(wrong, np.zeros((1, 4, 4, 4), np.float32), Geometry.identity(3))
    with pytest.raises(DataError, match=r"wrong\.nii\.gz: shape"):
        write_overlays(report, tmp_path / "other", {"case_000": wrong})
    with pytest.raises(DataError, match="not a folder of images"):
        find_images(dataset, tmp_path / "missing")


def test_sides_say_where_in_the_patient_whatever_the_voxel_order(tmp_path, capsys):
    """Stored SLP (voxel axis 0 towards superior, 1 to the patient's left, 2 posterior; LPS direction columns),
    anisotropic: a mask moved 3 mm up reaches beyond the reference at the top and falls short at the bottom;
    the scan is brightest at the bottom, so the missed voxels are in the brightest quarter."""
    from tests.fixtures import sphere_label

    spacing = (1.5, 1.0, 2.0)
    geometry = Geometry.create(spacing, [10.0, -20.0, 5.0], [[0, 1, 0], [0, 0, 1], [1, 0, 0]])
    ref = sphere_label((30, 40, 24), (15, 20, 12), 12.0, spacing=spacing)
    pred = sphere_label((30, 40, 24), (17, 20, 12), 12.0, spacing=spacing)  # 2 voxels of 1.5 mm up
    scan = 100.0 - np.indices(ref.shape)[0].astype(np.float32)  # darker towards superior
    for folder, array in (("pred", pred), ("ref", ref), ("scans", scan)):
        write_image(tmp_path / folder / "a.nii.gz", array[None], geometry)
    out = tmp_path / "out"
    command = ["evaluate", str(tmp_path / "pred"), str(tmp_path / "ref"), "-o", str(out), "--no-progress", "--sides"]
    assert main([*command, "--images", str(tmp_path / "scans")]) == 0
    printed = capsys.readouterr().out
    row = next(line for line in printed.splitlines() if line.startswith("| label_1 | ") and "of " in line)
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    by_side = {side: float(cell) for side, cell in zip(SIDES, cells[1:7], strict=True)}
    assert 1.7 <= by_side["superior"] <= 3.0 and -3.0 <= by_side["inferior"] <= -1.7  # 3 mm x cos(angle)
    assert abs(by_side["left"]) < 1.0 and abs(by_side["right"]) < 1.0
    # the missed voxels are the crescent below the moved ball: most in the brightest quarter, none in the darkest
    quarters = [int(share.rstrip("%")) for share in cells[8].split(", ")]
    assert quarters[3] >= 75 and quarters[0] == 0, quarters
    rows = (out / "sides.csv").read_text().splitlines()
    assert rows[0] == "case_id,label,side,surface_voxels,mean_mm,median_mm,unreached" and len(rows) == 1 + len(SIDES)
    assert (out / "pieces_missed.csv").read_text().startswith("case_id,label,height_mm,area_mm2,covered")

    # nothing is written when one of the outputs exists and --overwrite is not given
    again = tmp_path / "again"
    again.mkdir()
    (again / "pieces_missed.csv").write_text("mine")
    assert main([*command[:4], str(again), "--no-progress", "--sides"]) == 2
    assert sorted(p.name for p in again.iterdir()) == ["pieces_missed.csv"]
    assert (again / "pieces_missed.csv").read_text() == "mine"


def test_sides_of_an_oblique_scan_are_the_patients(tmp_path, capsys):
    """A grid tilted by 30 degrees about the anterior axis; the mask moved 3 mm towards the patient's top (in
    the world, so partly along two voxel axes): beyond the reference at the top, short of it at the bottom,
    and nothing on the left and right, which facing by voxel axes would give (about 1.5 mm there)."""
    from scipy.spatial.transform import Rotation

    from tests.fixtures import sphere_label

    direction = Rotation.from_euler("y", 30, degrees=True).as_matrix()  # LPS world; columns are the voxel axes
    geometry = Geometry.create([1.0, 1.0, 1.0], [0.0, 0.0, 0.0], direction)
    up = direction.T @ np.array([0.0, 0.0, 3.0])  # 3 mm towards superior, in voxels of this grid
    ref = sphere_label((40, 40, 40), (20, 20, 20), 12.0)
    pred = sphere_label((40, 40, 40), tuple(20 + up), 12.0)
    for folder, array in (("pred", pred), ("ref", ref)):
        write_image(tmp_path / folder / "a.nii.gz", array[None], geometry)
    argv = ["evaluate", str(tmp_path / "pred"), str(tmp_path / "ref"), "-o", str(tmp_path / "o"), "--sides"]
    assert main([*argv, "--no-progress"]) == 0
    row = next(
        line for line in capsys.readouterr().out.splitlines() if line.startswith("| label_1 | ") and "of " in line
    )
    by_side = dict(zip(SIDES, (float(cell) for cell in row.strip("|").split("|")[1:7]), strict=True))
    assert 1.7 <= by_side["superior"] <= 3.0 and -3.0 <= by_side["inferior"] <= -1.7, by_side
    assert abs(by_side["left"]) < 0.75 and abs(by_side["right"]) < 0.75, by_side


def test_sides_skip_2d_cases(tmp_path, capsys):
    pred, ref = tmp_path / "pred", tmp_path / "ref"
    mask = np.zeros((1, 12, 12), np.uint8)
    mask[0, 3:9, 3:9] = 1
    write_image(ref / "a.nii.gz", mask, Geometry.create([1.0, 1.0]))
    write_image(pred / "a.nii.gz", mask, Geometry.create([1.0, 1.0]))
    assert main(["evaluate", str(pred), str(ref), "-o", str(tmp_path / "o"), "--no-progress", "--sides"]) == 0
    assert "(1 2D case(s) have no sides: a)" in capsys.readouterr().out
    assert (
        tmp_path / "o" / "sides.csv"
    ).read_text().strip() == "case_id,label,side,surface_voxels,mean_mm,median_mm,unreached"
