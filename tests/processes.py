"""Running multi-process commands in tests without ever hanging the suite.

:func:`run_torchrun` starts ``torchrun`` (``python -m torch.distributed.run``) with a hard timeout. When
the timeout expires, every process under torchrun is sent SIGUSR1 first: each attnseg rank has a
faulthandler on that signal (see :mod:`attnseg.distributed`) and prints every thread's Python stack to
its stderr. Then the whole process tree is killed and the test fails with those stacks in its
message, so the next hang explains itself. :func:`kill_when` kills a run on purpose, midway.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
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


def _dump_stacks_and_kill(process: subprocess.Popen) -> tuple[list[int], str, str]:
    """SIGUSR1 to every process under ``process`` (each attnseg rank prints its threads' stacks), then
    SIGKILL to all of them; returns (the ranks' pids, stdout, stderr)."""
    ranks = descendants(process.pid)
    _signal_all(ranks, signal.SIGUSR1)
    time.sleep(3)
    _signal_all([process.pid, *ranks], signal.SIGKILL)
    stdout, stderr = process.communicate(timeout=30)
    return ranks, stdout, stderr


def _wait_gone(pids: list[int], timeout: float) -> None:
    """Wait until none of ``pids`` runs any more (gone, or a zombie waiting to be reaped)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        running = []
        for pid in pids:
            with contextlib.suppress(OSError):
                state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
                if state != "Z":
                    running.append(pid)
        if not running:
            return
        time.sleep(0.01)
    raise AssertionError(f"processes {pids} still run {timeout:g} s after SIGKILL")


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


def kill_when(command: list[str], condition: Callable[[], bool], timeout: float, poll_s: float = 0.002) -> Finished:
    """Start ``command``, and SIGKILL it with every process under it as soon as ``condition()`` holds (a
    crash, a killed job, a node switched off); returns once none of them runs any more. Fails if the command ends first,
    or if the condition does not come within ``timeout`` (then with every rank's stack, as a hang)."""
    started = time.monotonic()
    # output to files, not pipes: nobody reads a pipe while the condition is polled, and a full one blocks
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        process = subprocess.Popen(command, env=child_env(), stdout=out, stderr=err, text=True, start_new_session=True)

        def output() -> str:
            out.seek(0), err.seek(0)
            return f"--- stdout ---\n{out.read()[-4000:]}\n--- stderr ---\n{err.read()[-12000:]}"

        while not condition():
            if process.poll() is not None:
                raise AssertionError(
                    f"{' '.join(command[:8])} ... ended (status {process.returncode}) before it could be killed\n"
                    + output()
                )
            if time.monotonic() - started > timeout:
                _dump_stacks_and_kill(process)
                raise Hung(f"the kill condition did not come within {timeout:g} s\n{output()}")
            time.sleep(poll_s)
        # torchrun starts each rank in a session of its own: list them before torchrun dies, kill all at once
        victims = [process.pid, *descendants(process.pid)]
        _signal_all(victims, signal.SIGKILL)
        process.wait(timeout=30)
        _wait_gone(victims, timeout=30)
        out.seek(0), err.seek(0)
        return Finished(process.returncode, out.read(), err.read(), time.monotonic() - started)
