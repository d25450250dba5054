"""Atomic file writes: a reader sees the old file or the new one, never half of one.

Each write goes to a temporary file in the same folder, is flushed to disk, and is moved over the
destination with ``os.replace`` (atomic on POSIX and Windows). A symbolic link is followed (its
target is replaced, the link kept), and what is not a regular file (a FIFO, /dev/null, a terminal)
is written directly. And a folder lock, for a folder that one process at a time may write (a
training run).
"""

from __future__ import annotations

import errno
import logging
import os
import stat
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; folders go unlocked
    fcntl = None

log = logging.getLogger(__name__)

_UMASK = os.umask(0)
os.umask(_UMASK)
_NEW_FILE_MODE = 0o666 & ~_UMASK  # what open() gives a new file under the umask (0644 under 022)


def usual_permissions(path: str | Path) -> None:
    """Give a file just written the permissions a new file gets under the umask (``_NEW_FILE_MODE``):
    safetensors 0.8 writes its files 0600, so a checkpoint shared with a group or copied for
    another user could not be read."""
    os.chmod(path, _NEW_FILE_MODE)


def check_destination(path: str | Path, folder: bool = False) -> None:
    """Raise now the error that writing to ``path`` (a file; a folder where ``folder``) would meet
    only after the work: ``path`` is a folder where a file is wanted or the other way round, or the
    nearest existing path above it is a file. Commands call it before decoding, not after."""
    path = Path(path)
    if path.exists() and path.is_dir() != folder:
        code = errno.ENOTDIR if folder else errno.EISDIR
        raise (NotADirectoryError if folder else IsADirectoryError)(code, os.strerror(code), str(path))
    above = next((p for p in path.parents if p.exists()), None)
    if above is not None and not above.is_dir():  # mkdir(parents=True) would fail there
        raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(above))


def _replaced_file(path: Path) -> Path | None:
    """The file a write to ``path`` replaces: ``path`` with its symbolic links followed, so the
    link stays a link and its target gets the new text. None where a link on the way is a
    process's open file (/dev/stdout → /proc/self/fd/1, /dev/fd/N): it names whatever the shell
    opened there (a pipe, a terminal, a file opened to append to), to be written through, not
    replaced."""
    for _ in range(40):  # Linux follows at most 40 links in a path
        path = Path(os.path.realpath(path.parent)) / path.name
        if path.parts[1:2] == ("proc",) or path.parts[1:3] == ("dev", "fd"):
            return None
        if not path.is_symlink():
            return path
        path = path.parent / os.readlink(path)
    raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), str(path))


def _atomic_target(path: Path) -> Path | None:
    """The file ``atomic_open(path)`` replaces through a temporary (``_replaced_file``); None
    where it writes ``path`` directly: it is there and is not a regular file (a FIFO, a device, a
    process's open file such as /dev/stdout)."""
    target = _replaced_file(path)
    return None if target is None or (path.exists() and not path.is_file()) else target


def written_in_place(path: str | Path) -> bool:
    """Whether ``atomic_open(path)`` writes ``path`` directly, not through a temporary, so a
    reader may already have what was written before an error."""
    return _atomic_target(Path(path)) is None


@contextmanager
def naming(path: str | Path) -> Iterator[None]:
    """An OSError from the block that names no file takes ``path``'s name: a write's or fsync's
    (ENOSPC on a full disk) names none, and the one-line error should say what was being written."""
    try:
        yield
    except OSError as exc:
        if exc.filename is None:
            exc.filename = str(path)
        raise


def renamed(exc: OSError, path: str | Path) -> OSError:
    """``exc`` named by the file or folder asked for, ``path``, not by the temporary that failed: the
    one-line error should say what was being written."""
    return type(exc)(exc.errno, exc.strerror, str(path))


@contextmanager
def atomic_open(path: str | Path, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[IO]:
    """Open a temporary sibling of ``path`` for writing; on success it replaces ``path``. A
    symbolic link's target is replaced, the link kept; a file already there keeps its permission
    bits, a new one gets 0666 less the umask. What is there and is not a regular file (a FIFO, a
    device such as /dev/null, a socket, a process's open file such as /dev/stdout) is opened and
    written directly, appended to: it has no content a rename could protect, and would itself be
    replaced."""
    path = Path(path)
    check_destination(path)  # by the path's own name: os.replace would name the temporary
    target = _atomic_target(path)
    if target is None:
        with naming(path), open(path, mode.replace("w", "a"), encoding=None if "b" in mode else encoding) as handle:
            yield handle
        return
    try:
        permissions = stat.S_IMODE(target.stat().st_mode)
    except FileNotFoundError:
        permissions = _NEW_FILE_MODE  # mkstemp makes 0600; give a new file the usual permissions
    target.parent.mkdir(parents=True, exist_ok=True)
    # the temporary's name within a file system's 255 bytes where the output's own nearly fills them
    # (".name.XXXXXXXX.tmp" is 14 bytes longer): its first 200 bytes name it enough
    stem = target.name.encode()[:200].decode(errors="ignore")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{stem}.", suffix=".tmp", dir=target.parent)
    except OSError as exc:  # a read-only or full folder
        raise renamed(exc, path) from None
    try:
        os.chmod(tmp, permissions)
        with naming(path), os.fdopen(fd, mode, encoding=None if "b" in mode else encoding) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    with atomic_open(path, "w") as handle:
        handle.write(text)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_open(path, "wb") as handle:
        handle.write(data)


class FolderBusy(OSError):
    """Another process holds the folder's lock."""


@contextmanager
def folder_lock(folder: str | Path) -> Iterator[None]:
    """Hold ``folder``/.lock while the block runs; raise ``FolderBusy`` (naming the holder's pid)
    if another process holds it. An advisory flock, which the OS releases when its process ends,
    however it ends, so a lock never goes stale."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "a+", encoding="utf-8") as handle:
        if fcntl is not None:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.seek(0)
                raise FolderBusy(errno.EBUSY, f"held by process {handle.read().strip() or '?'}", str(folder)) from None
            except OSError as exc:  # a file system without locks (some network ones): go on, unlocked
                log.warning("cannot lock %s (%s): nothing stops a second process from writing it too", folder,
                            exc.strerror)
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        yield
