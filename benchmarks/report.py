"""What every benchmark prints: the date, the machine, the library versions, the command, and Markdown
tables with same-run ratios.

Timings from one machine are only comparable with timings from the same run on the same machine; the
tables therefore carry ratios against a baseline measured in the same process, and never mix devices.
"""

from __future__ import annotations

import datetime
import os
import platform
import shlex
import sys
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path

import torch

PACKAGES = ("attnseg", "torch", "monai", "numpy")


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine(device: torch.device | str = "cpu") -> str:
    """One line: the processor (or GPU), cores, torch threads, memory, OS."""
    device = torch.device(device)
    memory = ""
    if hasattr(os, "sysconf") and "SC_PHYS_PAGES" in os.sysconf_names:
        memory = f", {os.sysconf('SC_PHYS_PAGES') * os.sysconf('SC_PAGE_SIZE') / 2**30:.0f} GiB RAM"
    cpu = f"{cpu_name()}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads{memory}"
    if device.type == "cuda":
        properties = torch.cuda.get_device_properties(device)
        return f"{properties.name} ({properties.total_memory / 2**30:.0f} GiB), host: {cpu}"
    return f"{cpu}, {platform.system()} {platform.release()}"


def versions() -> str:
    found = []
    for package in PACKAGES:
        try:
            found.append(f"{package} {metadata.version(package)}")
        except metadata.PackageNotFoundError:
            continue
    return ", ".join([*found, f"Python {platform.python_version()}"])


def header(title: str, device: torch.device | str = "cpu") -> str:
    """The title, then date, machine, versions and the command that printed it."""
    command = " ".join(shlex.quote(arg) for arg in [Path(sys.executable).name, "-m", _module(), *sys.argv[1:]])
    return (
        f"### {title}\n\n"
        f"- date: {datetime.date.today().isoformat()}\n"
        f"- machine: {machine(device)}\n"
        f"- versions: {versions()}\n"
        f"- command: `{command}`\n"
    )


def _module() -> str:
    main = sys.modules["__main__"]
    spec = getattr(main, "__spec__", None)
    return spec.name if spec is not None else Path(sys.argv[0]).stem


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def ratio(value: float | None, baseline: float | None) -> str:
    if value is None or not baseline:
        return "n/a"
    return f"{value / baseline:.2f}x"


def mib(value: float | None) -> str:
    return "n/a" if value is None else f"{value:,.0f} MiB"
