"""Atomic file writes: a temporary file in the destination's folder, renamed into place with ``os.replace``.

A reader never sees a half-written report or model, and a crash leaves the previous file (if any) intact.
Nothing is overwritten unless the caller asks for it.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from attnseg.errors import ConfigError


def check_writable(path: str | os.PathLike[str], overwrite: bool = False) -> Path:
    """Return ``path`` as a Path; raise ConfigError if it exists and ``overwrite`` is False, or is a folder."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{path} is a folder; give a file name to write")
    if path.exists() and not overwrite:
        raise ConfigError(f"{path} already exists; pass overwrite=True (--overwrite) to replace it")
    return path


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike[str], overwrite: bool = False, suffix: str = "") -> Iterator[Path]:
    """Yield an unused temporary path next to ``path``; on success rename it to ``path``, on error remove it.

    ``suffix`` is appended to the temporary name, for writers that choose a format by extension.
    The destination's folder is created if needed.
    """
    path = check_writable(path, overwrite)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{suffix}", dir=path.parent)
    os.close(handle)
    temporary = Path(name)
    # The writer creates the file anew, so it gets the usual permissions (mkstemp's are owner-only)
    # and writers that refuse an existing file (or check its type) are happy.
    temporary.unlink()
    try:
        yield temporary
        # Checked again: another process may have created the file while we were writing.
        check_writable(path, overwrite)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def atomic_write_text(path: str | os.PathLike[str], text: str, overwrite: bool = False) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically; returns the path."""
    with atomic_output(path, overwrite) as temporary:
        temporary.write_text(text, encoding="utf-8")
    return Path(path)


def atomic_write_json(
    path: str | os.PathLike[str], obj: Any, overwrite: bool = False, allow_nan: bool = True, indent: int = 2
) -> Path:
    """Write ``obj`` as JSON atomically; returns the path.

    ``allow_nan=True`` writes NaN as the bare token ``NaN`` (what Python's json and nnU-Net's
    summary.json use); strict consumers want ``allow_nan=False``, which raises on NaN instead.
    """
    text = json.dumps(obj, indent=indent, allow_nan=allow_nan) + "\n"
    return atomic_write_text(path, text, overwrite)
