"""The package's import graph: no cycles between modules, and imports only go down the layers.

The house plan (DESIGN.md; docs/development.md, Layout): ``networks`` at the bottom, then ``data``,
``losses`` and ``metrics``, then ``training`` and ``inference`` (which meet through the ModelDir), then
the command line; a lower layer never imports a higher one, ``networks`` knows nothing of files and
``data`` nothing of models. :data:`LAYERS` places every module of ``attnseg`` as the code stands; a new
module must be placed there too.

Every import counts: at module level, under ``TYPE_CHECKING`` and inside functions. A function-level
import only postpones a cycle to call time; it does not remove it from the design. The files are read
with :mod:`ast`, nothing is imported, so the test is quick and sees imports that never run here.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "attnseg"
ROOT = "attnseg"

# Lowest first. A module belongs to its longest entry (``attnseg.visualize.scan`` before
# ``attnseg.visualize``); ``attnseg`` itself (the package's __init__, its version) names only that module.
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "foundation: errors, atomic writes, timing, devices, process groups, runtime choices",
        (
            ROOT,
            "attnseg.errors",
            "attnseg.fileio",
            "attnseg.timing",
            "attnseg.device",
            "attnseg.distributed",
            "attnseg.runtime",
        ),
    ),
    ("networks", ("attnseg.networks",)),
    ("data, losses, metrics", ("attnseg.data", "attnseg.losses", "attnseg.metrics")),
    # The ModelDir is where training and inference meet (a Plan and a network from the registry). The
    # figures (curves, overlays, attention maps of arrays, the report) draw what the layers below make;
    # training draws its progress.png with them.
    ("the ModelDir; figures", ("attnseg.model_dir", "attnseg.visualize")),
    ("training, inference (export included)", ("attnseg.training", "attnseg.inference", "attnseg.export")),
    # What one verb does with the layers below: `attnseg evaluate`, `attnseg profile`, and the figures of a
    # scan, which run a Predictor.
    ("verbs' jobs", ("attnseg.evaluate", "attnseg.profiling", "attnseg.visualize.scan")),
    ("the demo", ("attnseg.demo",)),
    ("the command line", ("attnseg.cli",)),
    ("python -m attnseg", ("attnseg.__main__",)),
)
# Entries that share a layer do not import each other (the foundation's small modules excepted), except
# these imports (entry, module imported), each with its reason.
PEER_IMPORTS: dict[tuple[str, str], str] = {
    # Training validates with inference's array-level parts: the same sliding window and the same
    # largest-component post-processing that prediction uses, so validation Dice measures what predict does.
    ("attnseg.training", "attnseg.inference.volume"): "validation predicts as inference does",
    ("attnseg.training", "attnseg.inference.postprocess"): "validation chooses the post-processing predict applies",
}
# Lower layers that must still not reach into one another: "data knows nothing of models".
KNOWS_NOTHING_OF: tuple[tuple[str, str], ...] = (("attnseg.data", "attnseg.networks"),)


@dataclass(frozen=True)
class Import:
    """``source`` imports ``target`` at ``file``:``line``."""

    source: str
    target: str
    file: str
    line: int

    def __str__(self) -> str:
        return f"{self.source} -> {self.target} ({self.file}:{self.line})"


def module_names(package: Path) -> dict[str, Path]:
    """Dotted name -> file, for every module under ``package`` (a package is its ``__init__.py``)."""
    names = {}
    for path in sorted(package.rglob("*.py")):
        parts = path.relative_to(package.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names[".".join(parts)] = path
    return names


def lazy_exports(path: Path) -> dict[str, str]:
    """A package's ``_EXPORTS`` (name -> submodule, imported on first use by its ``__getattr__``)."""
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "_EXPORTS" for t in node.targets):
            return ast.literal_eval(node.value)
    return {}


def _owner(dotted: str, modules: dict[str, Path]) -> str | None:
    """The module ``dotted`` names, or the one that holds it (``attnseg.data.io.Image`` -> ``attnseg.data.io``)."""
    parts = dotted.split(".")
    for end in range(len(parts), 0, -1):
        name = ".".join(parts[:end])
        if name in modules:
            return name
    return None


def _imported(base: str, name: str, modules: dict[str, Path]) -> str | None:
    """The module that ``from base import name`` loads: a submodule, a lazily exported one, or ``base``."""
    if f"{base}.{name}" in modules:
        return f"{base}.{name}"
    owner = _owner(base, modules)
    if owner is not None and modules[owner].name == "__init__.py":
        lazy = lazy_exports(modules[owner]).get(name)
        if lazy is not None:
            return f"{owner}.{lazy}"
    return owner


def imports_of(name: str, modules: dict[str, Path], file: str) -> Iterator[Import]:
    """Every import of a package module by module ``name`` (in ``file``), wherever it stands in the file."""
    path = modules[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            targets = [_owner(alias.name, modules) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, *([base] if base else [])])
            targets = [_imported(base, alias.name, modules) for alias in node.names]
        else:
            continue
        for target in dict.fromkeys(targets):
            if target is not None and target != name:
                yield Import(name, target, file, node.lineno)


def import_graph(package: Path) -> list[Import]:
    modules = module_names(package)
    return [
        found
        for name, path in modules.items()
        for found in imports_of(name, modules, path.relative_to(package.parent).as_posix())
    ]


def cycles(imports: Iterable[Import]) -> list[list[Import]]:
    """One cycle through each strongly connected group of modules (Tarjan), as the imports that close it."""
    edges: dict[str, dict[str, Import]] = defaultdict(dict)
    for found in imports:
        edges[found.source].setdefault(found.target, found)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    groups: list[set[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in edges[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = set()
            while True:
                member = stack.pop()
                group.add(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(group)

    for node in list(edges):
        if node not in index:
            visit(node)
    return [_cycle_in(sorted(group), edges) for group in groups]


def _cycle_in(group: list[str], edges: dict[str, dict[str, Import]]) -> list[Import]:
    """A shortest cycle from the group's first module back to itself (breadth first, inside the group)."""
    start = group[0]
    came_from: dict[str, Import] = {}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for target, found in edges[node].items():
                if target == start:
                    path = [found]
                    while path[0].source != start:
                        path.insert(0, came_from[path[0].source])
                    return path
                if target in group and target not in came_from:
                    came_from[target] = found
                    following.append(target)
        frontier = following
    raise AssertionError(f"no cycle in {group}")


def layer_of(module: str) -> tuple[int, str] | None:
    """(layer index, entry) of a module: its longest entry in :data:`LAYERS`."""
    best: tuple[int, str] | None = None
    for rank, (_, entries) in enumerate(LAYERS):
        for entry in entries:
            matches = module == entry or (entry != ROOT and module.startswith(entry + "."))
            if matches and (best is None or len(entry) > len(best[1])):
                best = (rank, entry)
    return best


def layer_violations(imports: Iterable[Import]) -> list[str]:
    """Imports that go up a layer, across entries of one layer, or from ``data`` into models."""
    problems = []
    for found in imports:
        (source_rank, source), (target_rank, target) = layer_of(found.source), layer_of(found.target)
        across = target_rank == source_rank and source_rank > 0 and source != target
        if target_rank > source_rank:
            problems.append(f"{found}: '{LAYERS[source_rank][0]}' imports the higher '{LAYERS[target_rank][0]}'")
        elif across and (source, found.target) not in PEER_IMPORTS:
            problems.append(f"{found}: {source} and {target} share a layer and do not import each other")
        for lower, unknown in KNOWS_NOTHING_OF:
            if source == lower and (found.target + ".").startswith(unknown + "."):
                problems.append(f"{found}: {lower} knows nothing of {unknown}")
    return problems


def describe(cycle: list[Import]) -> str:
    return " -> ".join([cycle[0].source, *(f"{i.target} ({i.file}:{i.line})" for i in cycle)])


@pytest.fixture(scope="module")
def graph() -> list[Import]:
    return import_graph(PACKAGE)


def test_every_module_has_a_layer():
    unplaced = [name for name in module_names(PACKAGE) if layer_of(name) is None]
    assert not unplaced, f"place these modules in LAYERS (tests/test_layers.py): {unplaced}"


def test_no_import_cycles(graph):
    found = cycles(graph)
    assert not found, "import cycles between modules:\n" + "\n".join(describe(cycle) for cycle in found)


def test_imports_go_down_the_layers(graph):
    problems = layer_violations(graph)
    assert not problems, "imports against the layering:\n" + "\n".join(problems)


def test_the_peer_exceptions_are_still_needed(graph):
    """An exception that no import uses any more is dropped, so that the list stays the code's truth."""
    used = {(layer_of(found.source)[1], found.target) for found in graph}
    assert set(PEER_IMPORTS) <= used, f"no longer imported, drop from PEER_IMPORTS: {set(PEER_IMPORTS) - used}"


def test_the_checks_see_cycles_and_upward_imports_wherever_they_stand(tmp_path):
    """A package with a cycle hidden in functions, one under TYPE_CHECKING, and imports against the layers."""
    files = {
        "__init__.py": "",
        "errors.py": "",
        "data/__init__.py": '_EXPORTS = {"Image": "image"}\n',
        "data/image.py": "def f():\n    from attnseg.data.io import read\n",
        "data/io.py": "def read():\n    from attnseg.data import Image\n",
        "data/plan.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from . import sampling\n",
        "data/sampling.py": "import attnseg.data.plan\nfrom ..networks import nets\n",
        "networks/__init__.py": "",
        "networks/nets.py": "def build():\n    from attnseg.training.run import train\n",
        "training/run.py": "from attnseg.inference import predictor\n",
        "inference/predictor.py": "from attnseg.errors import DataError\n",
    }
    for name, text in files.items():
        (tmp_path / "attnseg" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "attnseg" / name).write_text(text)
    imports = import_graph(tmp_path / "attnseg")
    assert sorted(describe(cycle) for cycle in cycles(imports)) == [
        "attnseg.data.image -> attnseg.data.io (attnseg/data/image.py:2) -> attnseg.data.image (attnseg/data/io.py:2)",
        "attnseg.data.plan -> attnseg.data.sampling (attnseg/data/plan.py:3)"
        " -> attnseg.data.plan (attnseg/data/sampling.py:1)",
    ]
    problems = layer_violations(imports)
    assert any("networks.nets -> attnseg.training.run" in p and "higher" in p for p in problems)
    assert any("training.run -> attnseg.inference.predictor" in p and "share a layer" in p for p in problems)
    assert any("data.sampling -> attnseg.networks.nets" in p and "knows nothing of" in p for p in problems)
    assert len(problems) == 3
