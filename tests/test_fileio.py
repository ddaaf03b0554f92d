"""attnseg.fileio.staged_folder: a folder is replaced whole or not at all."""

from pathlib import Path

import pytest

from attnseg.fileio import staged_folder


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
