"""Atomic file writes: nothing a user has is lost to a crash, a full disk or a second run; and the one
JSON reader, which turns any damaged file into an error that names it.

Every writer goes through ``atomic_path``: the data goes to a temporary file in the destination's
folder (same file system, so the final rename is atomic) and replaces the destination only once it
is complete. An existing destination is kept unless the caller asks to overwrite it. A folder that one
run writes for a long time (a training's model directory) is held with ``exclusive_use`` so that a
second run pointed at it stops at once instead of interleaving its files with the first one's.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from attnseg.errors import AttnsegError, ConfigError, DataError, OutputExistsError


def check_writable(path: str | os.PathLike, overwrite: bool = False) -> Path:
    """``path`` as a Path; raises if it is a folder, or exists and ``overwrite`` is False."""
    path = Path(path)
    if path.is_dir():
        raise OutputExistsError(f"{path} is a folder; give a file name to write")
    if path.exists() and not overwrite:
        raise OutputExistsError(f"{path} exists; pass overwrite=True (--overwrite on the command line) to replace it")
    return path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yield an unused temporary path beside ``path``; on success rename it onto ``path``.

    The temporary name keeps the destination's suffixes (``x.nii.gz`` -> ``.x.<random>.tmp.nii.gz``) so
    writers that pick a format by extension still work. The writer creates the file itself, so it gets
    the usual permissions. On error the temporary file is removed and the destination is untouched.
    """
    path = check_writable(path, overwrite)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(path.suffixes)
    stem = path.name[: len(path.name) - len(suffix)] if suffix else path.name
    handle, name = tempfile.mkstemp(prefix=f".{stem}.", suffix=f".tmp{suffix}", dir=path.parent)
    os.close(handle)
    temporary = Path(name)
    temporary.unlink()  # reserved a unique name; mkstemp's owner-only mode must not reach the output
    try:
        yield temporary
        with open(temporary, "rb") as written:
            os.fsync(written.fileno())
        check_writable(path, overwrite)  # again: another process may have created it meanwhile
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


@contextlib.contextmanager
def staged_folder(folder: Path) -> Iterator[Path]:
    """Yield an empty temporary folder beside ``folder``; on success it replaces ``folder`` (an existing one
    is removed first: the caller decides whether that is allowed). On error the temporary folder is removed
    and ``folder`` is untouched, so a reader never sees a half-written folder under its name."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        yield staging
        if folder.exists():
            shutil.rmtree(folder)
        staging.rename(folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


@contextlib.contextmanager
def exclusive_use(folder: Path, lock_name: str, what: str) -> Iterator[None]:
    """Hold ``folder`` (created if needed) for this process until the block ends; a second holder is refused
    with :class:`OutputExistsError` naming the folder and the process that holds it.

    The hold is a ``flock`` on ``folder/lock_name``: the kernel drops it when the process ends however it
    ends (SIGKILL, a crash), so a killed run never leaves a stale lock behind for ``--resume`` to trip on.
    The lock file stays; removing it would let a third process lock a new file while a second one still
    waits on the old one. It holds the holder's process id, for the message.
    """
    path = folder / lock_name
    try:
        folder.mkdir(parents=True, exist_ok=True)
        handle = open(path, "a+", encoding="utf-8")  # noqa: SIM115 (held open for the whole block)
    except OSError as error:
        raise ConfigError(f"{folder}: cannot write there ({error.strerror or error}); choose another output") from error
    try:
        import fcntl
    except ImportError:  # Windows has no flock: the run goes on unheld, as before the hold existed
        with handle:
            yield
        return
    with handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            raise OutputExistsError(
                f"{folder} is in use by another {what} (process {holder}, see {path}); wait for it to end, "
                "or choose another output"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def write_text(path: str | os.PathLike, text: str, overwrite: bool = False) -> Path:
    with atomic_path(path, overwrite) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_json(path: str | os.PathLike, data: Any, overwrite: bool = False, allow_nan: bool = True) -> Path:
    """JSON with a trailing newline. ``allow_nan=True`` writes NaN as the bare token ``NaN`` (what
    nnU-Net's summary.json does); strict consumers want ``allow_nan=False``, which raises instead."""
    return write_text(path, json.dumps(data, indent=2, allow_nan=allow_nan) + "\n", overwrite)


def read_json(path: str | os.PathLike, expect: type = dict, error: type[AttnsegError] = DataError) -> Any:
    """The JSON value in ``path``, which must be of type ``expect`` (``object`` accepts anything).

    A missing, unreadable, binary, malformed or wrongly shaped file raises ``error`` naming the file.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except FileNotFoundError as cause:
        raise error(f"{path}: no such file") from cause
    except (OSError, UnicodeDecodeError) as cause:
        raise error(f"{path}: cannot read it as text ({cause})") from cause
    except json.JSONDecodeError as cause:
        raise error(f"{path}: not valid JSON ({cause.msg} at line {cause.lineno})") from cause
    except RecursionError as cause:
        raise error(f"{path}: JSON nested too deeply") from cause
    if not isinstance(data, expect):
        kinds = {dict: "an object {...}", list: "a list [...]"}
        raise error(f"{path}: expected {kinds.get(expect, expect.__name__)}, got {type(data).__name__}")
    return data
