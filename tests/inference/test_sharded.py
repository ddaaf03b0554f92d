"""`attnseg predict` under torchrun: 2 CPU processes (gloo) share the cases out, and a run killed midway
is finished by the same command with --skip-existing. Each test costs two torchrun runs (~10 s each),
watched by their heartbeat (tests/processes.py: a slow start is waited for, a stuck run fails with every
rank's stack)."""

from pathlib import Path

import numpy as np
import pytest

from attnseg.data import write_image
from attnseg.inference.predictor import Predictor
from tests.fixtures import oblique_geometry, synthetic_case
from tests.processes import child_env, run_watched, torchrun_command


def _scans(folder: Path, count: int) -> Path:
    """``count`` scans of different sizes (so that sharing out by size matters), on the training grid."""
    rng = np.random.default_rng(7)
    for i in range(count):
        shape = (64 + 8 * (i % 4), 56 + 4 * (i % 3), 16 + 4 * (i % 5))
        image, _ = synthetic_case(shape, rng, classes=3)
        write_image(folder / f"scan{i:02d}.nii.gz", image[None], oblique_geometry())
    return folder


def _torchrun_predict(model: Path, scans: Path, out: Path, *extra: str, env: dict[str, str] | None = None):
    command = torchrun_command(
        2, "-m", "attnseg", "predict", "-m", str(model), "-i", str(scans), "-o", str(out),
        "--probabilities", "--device", "cpu", "--no-progress", *extra,
    )  # fmt: skip
    return run_watched(command, env=env)


def _files(folder: Path, qc: bool = True) -> dict[str, bytes]:
    """The outputs in ``folder`` (not the hidden leftovers of a killed write); ``qc=False``: the masks and
    probabilities alone (a resumed run's qc.json holds the cases it predicted)."""
    return {
        p.name: p.read_bytes()
        for p in sorted(folder.iterdir())
        if not p.name.startswith(".") and (qc or not p.name.startswith("qc."))
    }


def _stats(folder: Path) -> dict[str, tuple[int, int]]:
    return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in sorted(folder.iterdir())}


def _summary(result) -> str:
    """Rank 0's summary on stdout (the other rank prints nothing), or the ranks' errors."""
    assert result.stdout.count("wrote ") == 1, result.stdout + result.stderr[-6000:]
    return result.stdout


@pytest.fixture
def reference(trained_model, tmp_path):
    """The scans, and what one process writes for them."""
    scans = _scans(tmp_path / "scans", 6)
    Predictor([trained_model]).predict_files(scans, tmp_path / "one", save_probabilities=True, progress=False)
    return scans, _files(tmp_path / "one")


def test_two_processes_write_every_case_once_as_one_process_does(trained_model, reference, tmp_path):
    scans, expected = reference
    out = tmp_path / "two"
    result = _torchrun_predict(trained_model, scans, out)
    assert result.returncode == 0, result.stderr[-6000:]
    summary = _summary(result)
    assert "wrote 6 mask(s)" in summary and "on 2 processes" in summary
    per_process = [int(n) for n in summary.split("(per process: ")[1].split(")")[0].split(", ")]
    # every rank reported and no case ran twice; how many each took depends on scheduling (a rank that
    # starts late may find the work done), and that each claim goes to one rank is tested in test_distributed
    assert len(per_process) == 2 and sum(per_process) == 6
    assert _files(out) == expected  # byte for byte, masks, probabilities and the quality control
    assert sorted(p.name for p in out.iterdir()) == sorted(expected)  # nothing else left behind

    before = _stats(out)
    rerun = _torchrun_predict(trained_model, scans, out, "--skip-existing")
    assert rerun.returncode == 0, rerun.stderr[-6000:]
    summary = _summary(rerun)
    assert summary.startswith("wrote 0 mask(s)") and "skipped 6 case(s)" in summary
    assert _stats(out) == before  # the rerun wrote nothing


def test_a_killed_run_resumes_with_only_what_is_missing(trained_model, reference, tmp_path):
    """A rank is SIGKILLed while it writes (ATTNSEG_TEST_KILL_AT=output-staged:4, see attnseg.hooks: each
    rank kills itself when its 4th output, its second case's mask, is written in the hidden staging folder
    but not yet renamed into place; torchrun then stops the other). The same command with --skip-existing
    predicts only the cases without a complete mask, and a corrupt scan among the good ones is reported
    by the rank that met it while the others are written."""
    scans, expected = reference
    (scans / "scan99.nii.gz").write_bytes(b"\x1f\x8b\x08\x00 not really a scan")
    out = tmp_path / "killed"

    killed = _torchrun_predict(
        trained_model, scans, out, env={**child_env(), "ATTNSEG_TEST_KILL_AT": "output-staged:4"}
    )
    assert killed.returncode != 0 and "ATTNSEG_TEST_KILL_AT=output-staged:4: SIGKILL" in killed.stderr, (
        killed.stdout + killed.stderr[-6000:]
    )
    # whoever died first had one case complete and the next one half-written; the other rank had at most
    # as much when it was stopped (6 good cases for 2 ranks: one takes a second case, so a kill always comes)
    done = {p.name for p in out.iterdir() if p.name in expected and "_probabilities" not in p.name}
    assert 1 <= len(done) <= 2, sorted(out.iterdir())
    assert any(p.name.startswith(".") for p in out.iterdir()), sorted(out.iterdir())  # the mask being staged
    unfinished = {p.name.replace("_probabilities", "") for p in out.glob("*_probabilities.nii.gz")} - done
    assert unfinished, sorted(out.iterdir())  # its probabilities written, its mask not
    kept = {name: stat for name, stat in _stats(out).items() if name in expected}

    resumed = _torchrun_predict(trained_model, scans, out, "--skip-existing")
    assert resumed.returncode == 1, resumed.stderr[-6000:]  # the corrupt scan
    summary = _summary(resumed)
    assert summary.startswith(f"wrote {6 - len(done)} mask(s)") and f"skipped {len(done)} case(s)" in summary
    assert "1 case(s) FAILED:\n  scan99 (rank " in summary and "scan99.nii.gz: cannot read NIfTI file" in summary
    assert {name: stat for name, stat in _stats(out).items() if name in kept} == kept  # finished ones untouched
    assert _files(out, qc=False) == {name: data for name, data in expected.items() if not name.startswith("qc.")}
