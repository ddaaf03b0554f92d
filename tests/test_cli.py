import argparse
import importlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

import attnseg.cli
from attnseg import __version__
from attnseg.cli import build_parser, main
from attnseg.errors import ConfigError
from attnseg.networks import build_network
from tests.processes import child_env


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


def test_debug_shows_the_traceback():
    with pytest.raises(ConfigError, match="--size needs 2 numbers"):
        main(["--debug", "profile", "unet", "--size", "32"])


def _verbs(parser: argparse.ArgumentParser, words: tuple[str, ...] = ()):
    """(words, parser) of every verb and action below ``parser``, depth first: ("dataset",), ("dataset", "check")..."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, verb in action.choices.items():
                yield (*words, name), verb
                yield from _verbs(verb, (*words, name))


VERBS = [pytest.param(words, verb, id=" ".join(words)) for words, verb in _verbs(build_parser())]
CLI = Path(attnseg.cli.__file__).parent


def _module_name(words: tuple[str, ...]) -> str:
    return ".".join(["attnseg.cli", *(word.replace("-", "_") for word in words)])


@pytest.mark.parametrize(("words", "verb"), VERBS)
def test_every_verb_is_a_module_with_its_parser_and_its_command(words, verb):
    module = importlib.import_module(_module_name(words))
    assert callable(module.add_parser) and callable(module.run)
    assert verb.get_default("func") is module.run  # the parser this module builds runs this module's command


def test_every_module_of_the_cli_is_a_verb():
    modules = set()
    for path in CLI.rglob("*.py"):
        module = ".".join(["attnseg.cli", *path.relative_to(CLI).with_suffix("").parts])
        modules.add(module.removesuffix(".__init__"))
    verbs = {_module_name(words) for words, _ in _verbs(build_parser())}
    assert len(verbs) >= 12 and {"attnseg.cli.predict", "attnseg.cli.dataset.check"} <= verbs
    assert modules - {"attnseg.cli", "attnseg.cli.options"} == verbs


def _must_show(verb: argparse.ArgumentParser) -> list[str]:
    """What the help of ``verb`` shows: its description and epilog, every option string, every positional,
    every option's help, and each verb below it with its one-line help."""
    shown = [verb.description, verb.epilog]
    for action in verb._actions:
        if action.help == argparse.SUPPRESS:
            continue
        shown += [*action.option_strings, action.help]
        if not action.option_strings:
            shown.append(action.metavar or action.dest)
        if isinstance(action, argparse._SubParsersAction):
            shown += [text for choice in action._choices_actions for text in (choice.dest, choice.help)]
    return [text for text in shown if text]


@pytest.mark.parametrize(("words", "verb"), [pytest.param((), build_parser(), id="attnseg"), *VERBS])
def test_every_help_renders_with_all_it_offers(words, verb, monkeypatch, capsys):
    monkeypatch.setenv("COLUMNS", "120")
    with pytest.raises(SystemExit) as exited:
        main([*words, "--help"])
    assert exited.value.code == 0
    help_text = capsys.readouterr().out
    assert help_text.startswith(" ".join(["usage: attnseg", *words, "[-h]"]))
    flat = "".join(help_text.split())  # help text is wrapped at 120 columns (and after hyphens)
    missing = [text for text in _must_show(verb) if "".join(text.split()) not in flat]
    assert missing == [], f"attnseg {' '.join(words)} --help does not show {missing}"


def test_attnseg_help_imports_no_heavy_library():
    """The verbs' commands import the library inside run(): the whole parser, and `attnseg --help`, come without
    torch (what `attnseg --help` costs to start is what `attnseg VERB ...` costs before the work begins)."""
    heavy = ["torch", "monai", "SimpleITK", "nibabel", "pydicom", "scipy", "matplotlib", "pydantic", "yaml"]
    script = (
        "import sys; from attnseg.cli import build_parser; build_parser().format_help(); "
        f"print(sorted(set({heavy!r}) & set(sys.modules)))"
    )
    done = subprocess.run([sys.executable, "-c", script], env=child_env(), capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
