import json

import pytest

from attnseg import __version__
from attnseg.cli import main


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
    assert report["parameters"] > 0 and report["gflops"] > 0 and report["seconds"] > 0


def test_user_errors_are_one_line(capsys):
    assert main(["profile", "unet", "--size", "32"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("attnseg: error: --size needs 2 numbers") and err.count("\n") == 1
    assert main(["profile", "nonet"]) == 2
    assert "unknown network 'nonet'" in capsys.readouterr().err
