"""attnseg.fileio.staged_folder: a folder is replaced whole or not at all; exclusive_use: one holder at a time."""

import os
from pathlib import Path

import pytest

from attnseg.errors import OutputExistsError
from attnseg.fileio import exclusive_use, staged_folder


def test_a_staged_folder_replaces_the_old_one_on_success(tmp_path: Path) -> None:
    target = tmp_path / "out"
    target.mkdir()
    (target / "old.txt").write_text("old")
    with staged_folder(target) as staging:
        assert staging.parent == tmp_path and not any(staging.iterdir())
        (staging / "new.txt").write_text("new")
        assert (target / "old.txt").exists()  # untouched until the block succeeds
    assert sorted(p.name for p in target.iterdir()) == ["new.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_a_failed_staged_folder_leaves_the_old_one_and_no_trace(tmp_path: Path) -> None:
    target = tmp_path / "nested" / "out"
    with pytest.raises(RuntimeError, match="half way"), staged_folder(target) as staging:
        (staging / "part.txt").write_text("part")
        raise RuntimeError("half way")
    assert not target.exists() and list((tmp_path / "nested").iterdir()) == []


def test_a_held_folder_is_refused_to_a_second_holder_until_released(tmp_path: Path) -> None:
    folder = tmp_path / "new" / "run"
    with exclusive_use(folder, ".lock", "job"):
        assert (folder / ".lock").read_text() == f"{os.getpid()}\n"  # created, with the holder named
        # a second open of the lock file is a second holder, even in this process (flock is per open file)
        refused = rf"{folder} is in use by another job \(process {os.getpid()},"
        with pytest.raises(OutputExistsError, match=refused), exclusive_use(folder, ".lock", "job"):
            pass
    with exclusive_use(folder, ".lock", "job"):  # released at the end of the block
        pass
