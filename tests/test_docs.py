"""The documentation can be followed as written: every `attnseg` command shown in a code block of the README
and of docs/*.md parses with the real command-line parser (the verb exists and has a --help, every option
shown exists for that verb), every relative link leads to a file that exists and its #anchor to a heading of it,
every source file named in backticks exists, and every copy of the evaluation table's header is the one
`attnseg evaluate` prints."""

from __future__ import annotations

import argparse
import re
import shlex
from pathlib import Path

import pytest

from attnseg.cli import build_parser
from attnseg.metrics.report import table_headers

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
PYTHONS = ("python", "python3", ".venv/bin/python")


def _code_lines(path: Path) -> list[tuple[int, str]]:
    """(line number, text) of every line inside a fenced code block, backslash continuations joined."""
    lines, inside, pending, start = [], False, "", 0
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if line.lstrip().startswith("```"):
            inside, pending = not inside, ""
            continue
        if not inside:
            continue
        if not pending:
            start = number
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        lines.append((start, pending + line))
        pending = ""
    return lines


def _attnseg_argv(line: str) -> list[str] | None:
    """The arguments after `attnseg` in a shell line (`attnseg ...`, `$ attnseg ...`, `python -m attnseg ...`,
    `torchrun ... -m attnseg ...`); None for any other line."""
    try:
        words = shlex.split(line.strip().removeprefix("$ "), comments=True)
    except ValueError:
        return None
    if words[:1] == ["attnseg"]:
        return words[1:]
    if words[:1] and (words[0] in PYTHONS or words[0] == "torchrun"):
        for i in range(len(words) - 1):
            if words[i] == "-m" and words[i + 1] == "attnseg":
                return words[i + 2 :]
    return None


COMMANDS = [
    pytest.param(argv, id=f"{path.relative_to(ROOT)}:{number}")
    for path in PAGES
    for number, line in _code_lines(path)
    if (argv := _attnseg_argv(line)) is not None
]


def _verb_parser(argv: list[str]) -> tuple[list[str], argparse.ArgumentParser]:
    """The words naming the verb (``['dataset', 'check']``) and its sub-parser."""
    parser, words = build_parser(), []
    for word in argv:
        subparsers = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not subparsers or word not in subparsers[0].choices:
            break
        parser, words = subparsers[0].choices[word], [*words, word]
    return words, parser


def test_the_docs_show_commands():
    assert len(COMMANDS) > 30
    verbs = {tuple(_verb_parser(p.values[0])[0]) for p in COMMANDS}
    assert {("visualize",), ("report",), ("evaluate",), ("train",), ("predict",), ("dataset", "check")} <= verbs


@pytest.mark.parametrize("argv", COMMANDS)
def test_every_command_shown_parses(argv, capsys):
    words, parser = _verb_parser(argv)
    assert words, f"`attnseg {' '.join(argv)}`: no such verb"
    known = {option for action in parser._actions for option in action.option_strings}
    shown = {word.split("=", 1)[0] for word in argv if word.startswith("-") and not re.fullmatch(r"-\d.*", word)}
    assert shown <= known, f"`attnseg {' '.join(argv)}`: {sorted(shown - known)} not options of {' '.join(words)}"
    try:
        build_parser().parse_args(argv)
    except SystemExit as error:
        pytest.fail(f"`attnseg {' '.join(argv)}` does not parse (exit {error.code}): {capsys.readouterr().err}")


@pytest.mark.parametrize("verb", sorted({tuple(_verb_parser(p.values[0])[0]) for p in COMMANDS}))
def test_every_verb_shown_has_help(verb, capsys):
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args([*verb, "--help"])
    assert exited.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: attnseg {' '.join(verb)}")


LINK = re.compile(r"\]\(([^)\s]+)\)")


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_lead_to_files(page):
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    broken = []
    for target in LINK.findall(text):
        path = target.split("#", 1)[0]
        if not path or re.match(r"[a-z]+:", path):
            continue
        if not (page.parent / path).exists():
            broken.append(target)
    assert broken == [], f"{page.name}: links to missing files {broken}"


def _anchors(page: Path) -> set[str]:
    """GitHub's anchors of a page's headings: lower case, punctuation dropped, spaces as hyphens."""
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    headings = re.findall(r"^#{1,6} (.+)$", text, flags=re.M)
    return {re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-") for heading in headings}


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_link_anchors_lead_to_headings(page):
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    broken = []
    for target in LINK.findall(text):
        path, _, anchor = target.partition("#")
        if not anchor or re.match(r"[a-z]+:", path):
            continue
        linked = page.parent / path if path else page
        if linked.suffix == ".md" and linked.exists() and anchor not in _anchors(linked):
            broken.append(target)
    assert broken == [], f"{page.name}: links to missing headings {broken}"


# `tests/test_x.py`, `attnseg/data/io.py`, `benchmarks/qc_cost.py`: a file the reader is sent to read or run
SOURCE = re.compile(r"`((?:attnseg|tests|benchmarks)/[a-z0-9_/]+\.py)`")  # VERB.py: a placeholder


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_source_files_named_exist(page):
    missing = [name for name in SOURCE.findall(page.read_text()) if not (ROOT / name).exists()]
    assert missing == [], f"{page.name}: names source files that do not exist {missing}"


def test_evaluation_tables_shown_have_the_columns_printed():
    """A docs copy of the table `attnseg evaluate` prints (its header row) has the columns it prints now: a column
    added to the tool (the boundary offset's) shows up as a failure here, not as a reader's surprise."""
    printed = "| class | " + " | ".join(table_headers("mm", 1.0).values()) + " | empty P/R/both |"
    shown = [
        (f"{page.name}:{number}", line.strip())
        for page in PAGES
        for number, line in enumerate(page.read_text().splitlines(), start=1)
        if line.startswith("| class | Dice |")
    ]
    assert shown, "no copy of the evaluation table found in the docs"
    assert [where for where, line in shown if line != printed] == [], printed
