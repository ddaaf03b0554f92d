import json

import pytest

from attnseg import __version__
from attnseg.cli import main
from attnseg.networks import build_network


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert __version__ in capsys.readouterr().out


def test_help_lists_verbs(capsys):
    assert main([]) == 0
    out = capsys.readouterr().out
    for verb in ("models", "profile", "demo"):
        assert verb in out


def test_models_json_gives_paper_counts(capsys):
    args = ["models", "--spatial-dims", "3", "--in-channels", "1", "--classes", "4", "--feature-scale", "4", "--json"]
    assert main(args) == 0
    report = json.loads(capsys.readouterr().out)
    counts = {row["name"]: row["parameters"] for row in report["networks"]}
    assert counts["unet"] == 5_888_004
    assert counts["attention_unet"] == 6_473_322
    assert counts["attention_unet_global"] == 6_411_498
    assert report["config"]["spatial_dims"] == 3


def test_models_table(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "attention_unet" in out and "parameters" in out


def test_profile_small_network(capsys):
    args = ["profile", "unet", "--size", "32", "32", "--feature-scale", "16", "--repeats", "1", "--json"]
    assert main(args) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["parameters"] > 0 and report["gflops"] > 0 and report["forward_ms"] > 0
    assert report["train_step_ms"] is None
    assert (report["runtime"]["layout"], report["runtime"]["amp"]) == ("channels_last", "off")  # as predict


def test_profile_train_times_the_step_attnseg_train_runs(capsys):
    args = ["profile", "attention_unet", "--size", "32", "32", "--feature-scale", "16", "--batch", "2"]
    settings = ["--set", "training.layout=contiguous", "--set", "training.amp=off", "--set", "network.gate_heads=1"]
    assert main([*args, "--repeats", "2", "--train", *settings, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["train_step_ms"] > 0 and report["forward_ms"] > 0 and report["train_peak_mib"] is not None
    assert report["runtime"]["layout"] == "contiguous" and report["runtime"]["reason"].startswith("set:")
    expected = build_network("attention_unet", feature_scale=16, gate_heads=1)
    assert report["parameters"] == sum(p.numel() for p in expected.parameters())  # --set reached the network
    assert main([*args, "--repeats", "1", "--train"]) == 0
    out = capsys.readouterr().out
    assert "training step" in out and "measured steps: channels_last/fp32" in out  # auto: timed candidates


def test_user_errors_are_one_line(capsys):
    assert main(["profile", "unet", "--size", "32"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("attnseg: error: --size needs 2 numbers") and err.count("\n") == 1
    assert main(["profile", "nonet"]) == 2
    assert "unknown network 'nonet'" in capsys.readouterr().err
    assert main(["profile", "unet", "--set", "training.amp=off"]) == 2
    assert "--config and --set describe a training run: add --train" in capsys.readouterr().err
