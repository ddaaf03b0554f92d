"""Test and diagnostic hooks, switched on by environment variables read once at import.

With a variable unset (the normal case) its hook is a function call that tests one module constant and
returns: nothing is written, counted or formatted.

* ``ATTNSEG_HEARTBEAT=PATH`` (diagnostic): the process touches ``PATH`` (creating it) when attnseg is
  imported, on entering and leaving every collective and the process group, after every training step
  and every output file written. A watcher tells a slow run from a stuck one by whether ``PATH``'s
  modification time still moves: the tests' ``run_watched`` (``tests/processes.py``) kills a
  multi-process run only when nothing beat for a long while, after asking every process for its stack
  (with the variable set, ``SIGUSR1`` makes the process print every thread's Python stack). Every beat
  comes from the work itself, never from a background thread, so a stuck process stops beating.
* ``ATTNSEG_TEST_KILL_AT=POINT:N`` (tests only): the process sends itself SIGKILL (no clean-up, no
  flushing: a crash, a killed job) the N-th time it reaches ``POINT``, so that a test kills a run at a
  place it chooses instead of guessing one from the clock. Points, counted per process:

  ``train-step``
      after an optimizer step of the trainer (counted over all epochs of this process);
  ``output-staged``
      an output image completely written in its hidden staging folder, not yet renamed into place
      (:func:`attnseg.data.io.write_image`).
"""

from __future__ import annotations

import faulthandler
import os
import signal
import sys
import threading

HEARTBEAT = os.environ.get("ATTNSEG_HEARTBEAT") or None
if HEARTBEAT is not None and hasattr(signal, "SIGUSR1"):
    faulthandler.register(signal.SIGUSR1, all_threads=True)  # a watcher that sees no beat asks for the stacks


def _kill_point(value: str | None) -> tuple[str, int] | None:
    if not value:
        return None
    point, _, count = value.rpartition(":")
    if not point or not count.isdigit() or int(count) < 1:
        raise ValueError(f"ATTNSEG_TEST_KILL_AT={value!r}: expected POINT:N with N >= 1, e.g. train-step:150")
    return point, int(count)


KILL_AT = _kill_point(os.environ.get("ATTNSEG_TEST_KILL_AT"))
_reached: dict[str, int] = {}
_lock = threading.Lock()


def beat() -> None:
    """Touch the heartbeat file (``ATTNSEG_HEARTBEAT``), if there is one."""
    if HEARTBEAT is None:
        return
    try:
        os.utime(HEARTBEAT)
    except FileNotFoundError:
        try:
            with open(HEARTBEAT, "a"):
                pass
        except OSError:  # a diagnostic must never break the run
            pass
    except OSError:
        pass


def progress(point: str, *where: object) -> None:
    """The run moved on at ``point``: a heartbeat, and the kill of ``ATTNSEG_TEST_KILL_AT`` when this is
    its N-th time. ``where`` (formatted only for the kill's message) says where, e.g. epoch and step."""
    beat()
    if KILL_AT is None or KILL_AT[0] != point:
        return
    with _lock:
        _reached[point] = count = _reached.get(point, 0) + 1
    if count == KILL_AT[1]:
        details = " ".join(map(str, where))
        sys.stderr.write(f"attnseg: ATTNSEG_TEST_KILL_AT={point}:{count}: SIGKILL to process {os.getpid()} {details}\n")
        sys.stderr.flush()
        os.kill(os.getpid(), signal.SIGKILL)
