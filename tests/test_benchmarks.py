"""The benchmark scripts run and print their tables (on scaled-down inputs: figures here mean nothing;
speed targets live in the benchmarks themselves, not in tests)."""

import sys

import pytest

from benchmarks.report import markdown_table, ratio
from tests.fixtures import sphere_label
from tests.processes import run_with_stack_dump

BENCHMARK_TIMEOUT_S = 900


def _run(*args: str) -> str:
    done = run_with_stack_dump([sys.executable, "-m", *args], timeout=BENCHMARK_TIMEOUT_S)  # checkout on PYTHONPATH
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_report_helpers():
    assert markdown_table(["a", "b"], [[1, "x"]]) == "| a | b |\n|---|---|\n| 1 | x |"
    assert (ratio(3.0, 2.0), ratio(None, 2.0), ratio(1.0, 0.0)) == ("1.50x", "n/a", "n/a")


@pytest.mark.timeout(BENCHMARK_TIMEOUT_S + 100)  # after _run's own timeout, which dumps the child's stacks
def test_network_speed_prints_every_network_and_the_targets():
    out = _run("benchmarks.network_speed", "--dims", "2", "--scale", "8", "--rounds", "1", "--no-memory")
    assert "- machine:" in out and "- versions: attnseg" in out and "- command: `python -m benchmarks" in out
    for name in ("MONAI AttentionUnet", "MONAI UNet", "attnseg unet", "attnseg attention_unet"):
        assert f"| {name} |" in out
    assert "channels_last/fp32, training step:" in out and "x MONAI AttentionUnet (target <= 0.80:" in out


@pytest.mark.slow
def test_network_speed_measures_memory_in_fresh_processes():
    out = _run("benchmarks.network_speed", "--dims", "2", "--scale", "8", "--rounds", "1", "--networks", "unet")
    assert " MiB |" in out


@pytest.mark.slow
def test_position_attention_compares_both_implementations():
    out = _run("benchmarks.position_attention", "--sizes", "8", "--repeats", "1", "--batch", "1", "--channels", "8")
    assert "| 8^2 (64 positions) | naive |" in out and "| 8^2 (64 positions) | sdpa |" in out
    assert "never stored" in out and "failed" not in out


def test_ms_guided_presets_speed_compares_the_cpu_preset_with_the_attention_unet():
    args = ["--size", "32", "32", "--batch", "2", "--rounds", "1", "--networks", "attention_unet", "ms_guided_cpu"]
    out = _run("benchmarks.ms_guided_presets_speed", *args)
    assert "| attention_unet |" in out and "| ms_guided_cpu |" in out and "(target <= 3x:" in out


@pytest.mark.slow
def test_accuracy_benchmark_prints_dice_and_hd95_at_equal_steps(tmp_path):
    args = ["--datasets", "ctchest", "--steps", "10", "--seeds", "0", "1", "--networks", "unet", "ms_guided_cpu"]
    out = _run("benchmarks.accuracy_budget", *args, "--work", str(tmp_path))
    assert "### Accuracy at 10 steps, ctchest (2D slices), loss dice_ce" in out
    assert "| network | parameters | Dice (2 seeds) | vs attention_unet | HD95 (mm) | steps | wall |" in out
    assert "| unet |" in out and "| ms_guided_cpu |" in out
    # each class's Dice over the seeds: the held-out slab's five foreground classes
    assert "| network | ribs | thoracic vertebral column | right lung | left lung | tissue |" in out


@pytest.mark.slow
def test_accuracy_benchmark_cross_validates_and_reuses_finished_runs(tmp_path):
    args = ["--datasets", "ctchest", "--steps", "10", "--seeds", "0", "--networks", "unet", "--folds", "5",
            "--work", str(tmp_path), "--reuse"]  # fmt: skip
    first = _run("benchmarks.accuracy_budget", *args, "--fold", "0", "4")
    assert "ctchest (2D slices), folds 0, 4 of 5 pooled" in first and "| network | fold 0 | fold 4 |" in first
    assert sorted(p.parent.name for p in tmp_path.glob("*/benchmark-result.json")) == [
        "ctchest-fold0of5-unet-steps10-0", "ctchest-fold4of5-unet-steps10-0"]  # fmt: skip
    again = _run("benchmarks.accuracy_budget", *args, "--fold", "0", "4")
    assert "epoch 1/1" in first and "epoch 1/1" not in again  # read back, not trained again
    assert again.split("| network | parameters")[1] == first.split("| network | parameters")[1]


def test_folds_pool_each_class_over_the_folds_that_trained_it():
    """By hand: a class's Dice is 2 TP / (2 TP + FP + FN) summed over the folds whose training slabs hold it;
    a class no counted held-out slab holds is left out, whatever was predicted."""
    from benchmarks.accuracy_budget import pooled

    def fold(counts, trained, hd95):
        return {"counts": counts, "trained": trained, "hd95": hd95, "steps": 10, "seconds": 2.0, "parameters": 7,
                "runtime": "fp32"}  # fmt: skip

    folds = [
        fold({"A": [3, 1, 0], "B": [0, 2, 0], "C": [0, 5, 0]}, ["A", "B", "C"], 2.0),  # B, C absent: false positives
        fold({"A": [1, 0, 1], "B": [4, 0, 4], "C": [0, 0, 0]}, ["A", "C"], 4.0),  # B not trained: not counted
        fold({"A": [0, 0, 0], "B": [2, 1, 1], "C": [0, 0, 0]}, ["A", "B", "C"], float("nan")),
    ]
    result = pooled(folds)
    # A: TP 4, FP 1, FN 1 -> 8 / 10; B: TP 2, FP 3, FN 1 -> 4 / 8; C: no reference voxel anywhere -> left out
    assert result["class_dice"] == pytest.approx({"A": 0.8, "B": 0.5})
    assert result["dice"] == pytest.approx(0.65)
    assert result["hd95"] == pytest.approx(3.0) and result["steps"] == 10 and result["seconds"] == 2.0


def test_mask_sides_splits_the_boundary_offset_by_the_side_the_reference_faces():
    from benchmarks.mask_sides import sides

    spacing = (1.0, 1.0, 2.0)
    ref = sphere_label((48, 48, 24), (24, 24, 12), 14.0, spacing=spacing) > 0
    # moved 4 mm towards superior (+axis 2 in RAS): beyond the reference at the top, short of it at the bottom
    up = sphere_label((48, 48, 24), (24, 24, 14), 14.0, spacing=spacing) > 0
    moved = {s.name: s for s in sides(up, ref, spacing)}
    assert set(moved) == {"left", "right", "posterior", "anterior", "inferior", "superior"}
    # a surface voxel whose normal is at angle t to the shift is 4 cos(t) mm from the moved surface; the top's
    # normals lie within 55 degrees of superior, so its mean is between 4 cos(55 degrees) = 2.3 mm and 4 mm
    assert 2.3 <= moved["superior"].mean_mm <= 4.0
    assert -4.0 <= moved["inferior"].mean_mm <= -2.3
    for side in ("left", "right", "posterior", "anterior"):
        assert abs(moved[side].mean_mm) < 1.0
    assert moved["inferior"].missed > 0.2 and moved["superior"].missed == 0.0
    # grown by 3 mm: beyond it by about 3 mm on every side, nothing missed
    grown = sides(sphere_label((48, 48, 24), (24, 24, 12), 17.0, spacing=spacing) > 0, ref, spacing)
    for side in grown:
        assert side.mean_mm == pytest.approx(3.0, abs=0.75), side
        assert side.missed == 0.0


def test_mask_sides_names_the_patient_sides_whatever_the_voxel_order():
    import numpy as np

    from attnseg.data.geometry import Geometry
    from attnseg.data.image import Image
    from benchmarks.mask_sides import ras_volume, sides

    # stored SLP: voxel axis 0 runs towards superior, 1 towards the patient's left, 2 towards posterior (the
    # direction's columns, in LPS world coordinates), each with its own spacing
    spacing = (1.5, 1.0, 2.0)
    geometry = Geometry.create(spacing, direction=[[0, 1, 0], [0, 0, 1], [1, 0, 0]])
    ref = sphere_label((30, 40, 24), (15, 20, 12), 12.0, spacing=spacing) > 0
    pred = sphere_label((30, 40, 24), (17, 20, 12), 12.0, spacing=spacing) > 0  # 2 voxels of 1.5 mm up
    (pred_ras, ras_spacing), (ref_ras, _) = (ras_volume(Image(m[None].astype(np.uint8), geometry)) for m in (pred, ref))
    assert ras_spacing == (1.0, 2.0, 1.5)
    by_name = {s.name: s.mean_mm for s in sides(pred_ras, ref_ras, ras_spacing)}
    assert 1.7 <= by_name["superior"] <= 3.0 and -3.0 <= by_name["inferior"] <= -1.7  # 3 mm cos(t), as above
    assert abs(by_name["left"]) < 1.0 and abs(by_name["right"]) < 1.0


def test_mask_sides_says_which_intensities_the_missed_voxels_have():
    import numpy as np

    from benchmarks.mask_sides import missed_by_quarter

    image = np.arange(64, dtype=float).reshape(4, 4, 4)
    ref = np.ones((4, 4, 4), bool)
    assert missed_by_quarter(image >= 16, ref, image) == [1.0, 0.0, 0.0, 0.0]  # the darkest 16 of 64 missed
    assert missed_by_quarter((image < 48) | (image >= 56), ref, image) == [0.0, 0.0, 0.0, 1.0]
    assert missed_by_quarter(ref, ref, image) == [0.0, 0.0, 0.0, 0.0]


def test_mask_sides_lists_the_pieces_a_mask_misses_whole(tmp_path):
    import numpy as np

    from attnseg.data.geometry import Geometry
    from attnseg.data.io import write_image
    from benchmarks.mask_sides import missed_pieces

    spacing = (1.0, 2.0, 3.0)
    ref = np.zeros((30, 20, 6), bool)
    ref[2:12, 2:12, 1:5] = True  # 10 x 10 voxels = 200 mm² on each of 4 slices
    ref[20:25, 5:10, 2:4] = True  # 5 x 5 voxels = 50 mm² on 2 slices: a "temporal lobe" cut off on those slices
    pred = ref.copy()
    pred[20:25, 5:10, 3] = False  # missed whole on the upper of its two slices
    pred[20, 5, 2] = True
    pieces, missed = missed_pieces(pred, ref, spacing)
    assert pieces == 6
    assert [(p.height_mm, p.area_mm2, p.covered) for p in missed] == [(6.0, 50.0, 0.0)]  # 2 slices x 3 mm up

    # end to end, from files stored LPS: the table, the pieces and the intensities of the missed voxels
    geometry = Geometry.create(spacing)
    for name, array in (("pred", pred), ("ref", ref), ("image", ref * 100.0 + np.arange(6))):
        write_image(tmp_path / f"{name}.nii.gz", array[None].astype(np.float32), geometry)
    out = _run("benchmarks.mask_sides", *(str(tmp_path / f"{n}.nii.gz") for n in ("pred", "ref")),
               "--image", str(tmp_path / "image.nii.gz"))  # fmt: skip
    assert "| superior |" in out and "missed whole: 1" in out and "6.0 mm up" in out and "50 mm²" in out
    assert "darkest first: 0%, 0%, 0%, 100%" in out  # the missed voxels (103) are at the upper quartile (103)
