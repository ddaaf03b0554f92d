"""The benchmark scripts run and print their tables (on scaled-down inputs: figures here mean nothing;
speed targets live in the benchmarks themselves, not in tests)."""

import sys

import pytest

from benchmarks.report import markdown_table, ratio
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
