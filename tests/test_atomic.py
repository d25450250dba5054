"""Atomic writes: a reader sees the old file or the new one, never half of one, and no temporary is left."""

import pytest

from nmt.atomic import atomic_open, atomic_write_text


def test_a_write_that_fails_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "out.txt"
    path.write_text("old\n")
    with pytest.raises(RuntimeError):
        with atomic_open(path) as handle:
            handle.write("half of the new")
            raise RuntimeError("interrupted")
    assert path.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]
    atomic_write_text(path, "new\n")
    assert path.read_text() == "new\n"


def test_a_folder_as_the_destination_is_refused_by_its_own_name(tmp_path):
    (tmp_path / "out").mkdir()
    with pytest.raises(IsADirectoryError) as refused:
        atomic_write_text(tmp_path / "out", "text\n")
    assert refused.value.filename == str(tmp_path / "out")  # not a temporary's name
    assert [p.name for p in tmp_path.iterdir()] == ["out"] and not any((tmp_path / "out").iterdir())
