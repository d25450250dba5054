"""Atomic writes: a reader sees the old file or the new one, never half of one, and no temporary is left."""

import os
import subprocess
import sys

import pytest

from nmt.atomic import FolderBusy, atomic_open, atomic_write_text, check_destination, folder_lock


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


def test_a_file_in_the_way_of_the_folders_above_is_refused_by_its_name(tmp_path):
    (tmp_path / "notes.txt").write_text("kept\n")
    with pytest.raises(NotADirectoryError) as refused:
        atomic_write_text(tmp_path / "notes.txt" / "sub" / "out.txt", "text\n")
    assert refused.value.filename == str(tmp_path / "notes.txt")
    assert (tmp_path / "notes.txt").read_text() == "kept\n"
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


def test_check_destination_knows_files_from_folders(tmp_path):
    (tmp_path / "a-file").write_text("x")
    (tmp_path / "a-folder").mkdir()
    check_destination(tmp_path / "a-folder", folder=True)
    check_destination(tmp_path / "a-file")
    check_destination(tmp_path / "new" / "deeper", folder=True)  # nothing in the way: made when written
    with pytest.raises(NotADirectoryError):
        check_destination(tmp_path / "a-file", folder=True)
    with pytest.raises(IsADirectoryError):
        check_destination(tmp_path / "a-folder")


@pytest.mark.skipif(sys.platform == "win32", reason="advisory locks are POSIX")
def test_a_folder_lock_held_by_another_process_names_it_and_goes_when_it_ends(tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys; from nmt.atomic import folder_lock\n"
                               "with folder_lock(sys.argv[1]):\n print('held', flush=True); sys.stdin.read()",
         str(tmp_path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "held\n"
        with pytest.raises(FolderBusy, match=f"held by process {holder.pid}"):
            with folder_lock(tmp_path):
                pass
    finally:
        holder.kill()  # not a clean exit: the OS still lets the lock go
        holder.wait()
    with folder_lock(tmp_path):
        assert (tmp_path / ".lock").read_text() == f"{os.getpid()}\n"


@pytest.mark.skipif(sys.platform == "win32", reason="advisory locks are POSIX")
def test_a_file_system_without_locks_warns_and_goes_on(tmp_path, monkeypatch, caplog):
    import errno
    import fcntl

    def no_locks(handle, operation):
        raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))

    monkeypatch.setattr(fcntl, "flock", no_locks)
    with folder_lock(tmp_path):
        pass
    assert [r.getMessage() for r in caplog.records] == [
        f"cannot lock {tmp_path} ({os.strerror(errno.ENOLCK)}): nothing stops a second process from writing it too"]
