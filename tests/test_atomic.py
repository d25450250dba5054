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


def test_a_folder_that_takes_no_new_file_is_named_by_the_file_asked_for(tmp_path, monkeypatch):
    """A read-only folder: the error named the temporary ("Read-only file system:
    /tmp/ro/.x.txt.l1xqrjtn.tmp"), a file the user never asked for."""
    import errno
    import tempfile

    def read_only(prefix, suffix, dir):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), os.path.join(dir, f"{prefix}l1xqrjtn{suffix}"))

    monkeypatch.setattr(tempfile, "mkstemp", read_only)
    with pytest.raises(OSError) as raised:
        atomic_write_text(tmp_path / "x.txt", "new\n")
    assert (raised.value.errno, raised.value.filename) == (errno.EROFS, str(tmp_path / "x.txt"))
    assert list(tmp_path.iterdir()) == []


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


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX links and permission bits")
def test_a_symbolic_link_stays_a_link_and_its_target_gets_the_text(tmp_path):
    (tmp_path / "real.txt").write_text("old\n")
    (tmp_path / "link.txt").symlink_to("real.txt")
    atomic_write_text(tmp_path / "link.txt", "new\n")
    assert os.readlink(tmp_path / "link.txt") == "real.txt"
    assert (tmp_path / "real.txt").read_text() == "new\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link.txt", "real.txt"]


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX permission bits")
def test_a_private_file_stays_private_and_a_new_one_follows_the_umask(tmp_path):
    private = tmp_path / "private.txt"
    private.write_text("old\n")
    private.chmod(0o600)
    atomic_write_text(private, "new\n")
    assert private.read_text() == "new\n" and private.stat().st_mode & 0o777 == 0o600
    umask = os.umask(0o022)
    os.umask(umask)
    atomic_write_text(tmp_path / "new.txt", "text\n")
    assert (tmp_path / "new.txt").stat().st_mode & 0o777 == 0o666 & ~umask


@pytest.mark.skipif(sys.platform == "win32", reason="FIFOs are POSIX")
@pytest.mark.parametrize("through_link", [False, True])
def test_a_fifo_is_written_to_not_replaced(tmp_path, through_link):
    """As /dev/null, a terminal or a pipe's /dev/stdout: the reader gets the text, the FIFO stays."""
    import stat

    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    if through_link:  # as /dev/stdout is a link
        (tmp_path / "out").symlink_to(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # there before the writer: its open does not block
    try:
        atomic_write_text(tmp_path / ("out" if through_link else "fifo"), "text\n")
        assert os.read(reader, 100) == b"text\n"
    finally:
        os.close(reader)
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    assert sorted(p.name for p in tmp_path.iterdir()) == (["fifo", "out"] if through_link else ["fifo"])


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="Linux's /proc/self/fd")
def test_a_processs_open_file_is_written_through_not_replaced(tmp_path):
    """``-o /dev/stdout`` with stdout appending to a log (``>> log``): the log keeps what it had."""
    log = tmp_path / "log.txt"
    log.write_text("earlier\n")
    with open(log, "a") as opened:
        atomic_write_text(f"/proc/self/fd/{opened.fileno()}", "new\n")
    assert log.read_text() == "earlier\nnew\n"
    assert [p.name for p in tmp_path.iterdir()] == ["log.txt"]


@pytest.mark.parametrize("letter", ["x", "é"])
def test_a_name_that_nearly_fills_the_file_systems_limit_is_written_atomically(tmp_path, letter):
    """The temporary is the name with 14 bytes around it: for names of 241–255 bytes it was too
    long (Errno 36, naming the temporary), where writing the name itself works."""
    path = tmp_path / (letter * (250 // len(letter.encode())))
    path.write_text("earlier\n")
    atomic_write_text(path, "later\n")
    assert path.read_text() == "later\n" and [p.name for p in tmp_path.iterdir()] == [path.name]
