"""Running multi-process commands in tests without ever hanging the suite, and without mistaking a slow
run for a stuck one.

:func:`run_watched` runs a command (``torchrun`` and its ranks, a training script) with a heartbeat:
``ATTNSEG_HEARTBEAT`` names a file that every attnseg process touches as it makes progress (start-up,
every training step, every collective, every output written, leaving the process group: see
:mod:`attnseg.hooks`). The run is declared stuck only when that file has not moved for ``stall_s``
seconds (generous: two ranks importing torch and MONAI on a busy 2-core machine is slow, not stuck),
or when it still runs after an overall ``ceiling_s``. Then every process under the command is sent
SIGUSR1 first: each attnseg rank has a faulthandler on that signal (see :mod:`attnseg.distributed`)
and prints every thread's Python stack to its stderr. Then the whole process tree is killed and the
test fails with those stacks in its message, so the next hang explains itself.

:func:`run_with_stack_dump` does the same with a plain timeout, for commands that do not beat (a
browser, a benchmark). A test that needs a run killed midway sets ``ATTNSEG_TEST_KILL_AT=POINT:N``
(:mod:`attnseg.hooks`): the process kills itself at that point, not at a moment guessed from the clock.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


@dataclass
class Finished:
    returncode: int
    stdout: str
    stderr: str
    seconds: float


class Hung(AssertionError):
    """The command outlived its timeout; the message holds every rank's stack."""


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (children first), from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(parent, []).append(int(entry.name))
    found, queue = [], [pid]
    while queue:
        for child in children.get(queue.pop(0), []):
            found.append(child)
            queue.append(child)
    return found


def _signal_all(pids: list[int], signum: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)


def _catches(pid: int, signum: int) -> bool:
    """Whether process ``pid`` handles ``signum`` (from /proc: SigCgt); an attnseg process watched by its
    heartbeat handles SIGUSR1 by printing its stacks, and torchrun's agent would die of it."""
    with contextlib.suppress(OSError, StopIteration, ValueError):
        status = Path(f"/proc/{pid}/status").read_text().splitlines()
        caught = next(line for line in status if line.startswith("SigCgt:")).split()[1]
        return bool(int(caught, 16) >> (signum - 1) & 1)
    return False


def _dump_stacks_and_kill(process: subprocess.Popen) -> tuple[list[int], str, str]:
    """SIGUSR1 to every process under ``process`` (each attnseg rank prints its threads' stacks), then
    SIGKILL to all of them; returns (the ranks' pids, stdout, stderr)."""
    ranks = descendants(process.pid)
    _signal_all(ranks, signal.SIGUSR1)
    time.sleep(3)
    _signal_all([process.pid, *ranks], signal.SIGKILL)
    stdout, stderr = process.communicate(timeout=30)
    return ranks, stdout, stderr


def torchrun_command(nproc: int, *args: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", *args]


def child_env() -> dict[str, str]:
    """The environment for a child process: this checkout importable, one thread per rank."""
    return {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "PYTHONFAULTHANDLER": "1"}


def run_with_stack_dump(
    command: list[str], timeout: float, env: dict[str, str] | None = None, cwd: Path | None = None
) -> Finished:
    """Run ``command``; on timeout, dump the stacks of every process under it, kill them all, raise Hung."""
    started = time.monotonic()
    process = subprocess.Popen(
        command,
        env=env or child_env(),
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        ranks, stdout, stderr = _dump_stacks_and_kill(process)
        raise Hung(
            f"{' '.join(command[:8])} ... did not finish within {timeout:g} s; stacks of the ranks "
            f"{ranks} and their output follow\n--- stdout ---\n{stdout[-4000:]}\n--- stderr ---\n{stderr[-12000:]}"
        ) from None
    return Finished(process.returncode, stdout, stderr, time.monotonic() - started)


# No heartbeat for this long and the run is stuck. Start-up (torchrun, then every rank importing torch and
# MONAI) is the longest stretch without one: ~10 s with two ranks on a busy 2-core machine, so 120 s
# leaves a wide margin, and a real hang still fails in two minutes instead of at CI's limit.
STALL_S = 120.0
# However alive it looks, a test's run never takes longer than this.
CEILING_S = 900.0


def run_watched(
    command: list[str],
    *,
    stall_s: float = STALL_S,
    ceiling_s: float = CEILING_S,
    env: dict[str, str] | None = None,
    poll_s: float = 0.1,
) -> Finished:
    """Run ``command`` with a heartbeat file (``ATTNSEG_HEARTBEAT``, on top of ``env`` or
    :func:`child_env`) until it ends. If the file has not moved for ``stall_s`` seconds (counted from the
    start until the first beat), or the run outlives ``ceiling_s``: dump the stacks of every process
    under it, kill them all, raise :class:`Hung` saying which."""
    started = time.monotonic()
    with (
        tempfile.TemporaryDirectory(prefix="attnseg-heartbeat-") as folder,
        tempfile.TemporaryFile("w+") as out,
        tempfile.TemporaryFile("w+") as err,
    ):
        heartbeat = Path(folder) / "heartbeat"
        environment = {**(env or child_env()), "ATTNSEG_HEARTBEAT": str(heartbeat)}
        # output to files, not pipes: nobody reads a pipe while the heartbeat is watched, and a full one blocks
        process = subprocess.Popen(command, env=environment, stdout=out, stderr=err, text=True, start_new_session=True)
        last_seen, moved, beats = None, started, 0
        while process.poll() is None:
            now = time.monotonic()
            with contextlib.suppress(FileNotFoundError):
                stamp = heartbeat.stat().st_mtime_ns
                if stamp != last_seen:
                    last_seen, moved, beats = stamp, now, beats + 1
            silent, running = now - moved, now - started
            if silent > stall_s or running > ceiling_s:
                everyone = [process.pid, *descendants(process.pid)]
                ranks = [pid for pid in everyone if _catches(pid, signal.SIGUSR1)]
                _signal_all(ranks, signal.SIGUSR1)
                time.sleep(3)
                _signal_all(everyone, signal.SIGKILL)
                process.wait(timeout=30)
                why = (
                    f"no heartbeat for {silent:.0f} s (stuck; {beats} change(s) seen in {running:.0f} s)"
                    if silent > stall_s
                    else f"still running after {running:.0f} s, its heartbeat moving (a loop that never ends?)"
                )
                out.seek(0), err.seek(0)
                raise Hung(
                    f"{' '.join(command[:8])} ... {why}; stacks of the ranks {ranks} and their output follow\n"
                    f"--- stdout ---\n{out.read()[-4000:]}\n--- stderr ---\n{err.read()[-12000:]}"
                )
            time.sleep(poll_s)
        out.seek(0), err.seek(0)
        return Finished(process.returncode, out.read(), err.read(), time.monotonic() - started)
