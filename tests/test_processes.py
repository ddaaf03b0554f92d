"""tests/processes.py's run_watched: a run that beats is waited for, however long; one that stops beating
is killed after its stack was printed; one that beats for ever is stopped at the ceiling."""

import sys

import pytest

from tests.processes import Hung, run_watched

BEATING = "import time\nfrom attnseg import hooks\nfor _ in range({n}):\n    time.sleep(0.25)\n    hooks.beat()\n"


def test_a_slow_run_that_beats_is_not_stuck():
    finished = run_watched([sys.executable, "-c", BEATING.format(n=32)], stall_s=5)  # ~8 s, beats every 0.25 s
    assert finished.returncode == 0 and finished.seconds > 5


def test_a_run_that_stops_beating_fails_with_its_stack():
    stuck = "import time\nimport attnseg  # one beat\n\ndef waiting_for_ever():\n    time.sleep(600)\n\n"
    stuck += "waiting_for_ever()\n"
    with pytest.raises(Hung, match=r"(?s)no heartbeat for \d+ s.*in waiting_for_ever"):
        run_watched([sys.executable, "-c", stuck], stall_s=3)


def test_a_run_that_beats_for_ever_ends_at_the_ceiling():
    with pytest.raises(Hung, match="still running after"):
        run_watched([sys.executable, "-c", BEATING.format(n=10_000)], stall_s=5, ceiling_s=4)
