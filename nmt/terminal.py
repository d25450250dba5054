"""What the command line shows and reads at a terminal: errors a user can fix as one line, a
pipelines/ script's arguments, the training progress bar, the count of lines translated, standard
input's lines, and where and how ``nmt translate`` writes (stdout, or a file written atomically,
compressed by its name; in chunks). Kept apart from ``nmt.cli``, which parses and calls."""

from __future__ import annotations

import atexit
import codecs
import contextlib
import errno
import functools
import io
import logging
import os
import re
import signal
import stat
import sys
from collections.abc import Callable
from pathlib import Path
from typing import IO, NoReturn

from nmt.errors import NmtError
from nmt.interrupt import Terminated, terminate_as_interrupt
from nmt.lines import utf8_where


def fail(message: str) -> NoReturn:
    """The user's error as one line on stderr; exit status 1."""
    print(f"error: {message}", file=sys.stderr, flush=True)
    raise SystemExit(1)


def guarded(command):
    """Turn the errors a user can fix into one line on stderr and exit status 1 (commands and
    pipelines/ scripts alike); Ctrl-C and SIGTERM into exit status 130, after what was being
    written is cleaned up, with a line saying what the output holds where the command said."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)
        try:
            with terminate_as_interrupt():
                return command(*args, **kwargs)
        except NmtError as exc:
            fail(str(exc))
        except BrokenPipeError:  # the reader went away (nmt translate … | head): stop quietly, as cat does
            _drop_stdout()
            raise SystemExit(128 + 13) from None  # a shell's status for a process SIGPIPE ended
        except OSError as exc:  # with the path it concerns: a missing or read-only file, a full disk …
            if exc.filename is None and exc.errno not in _NO_ROOM:
                raise
            fail(exc.strerror + (f": {exc.filename}" if exc.filename is not None else ""))
        except UnicodeDecodeError as exc:
            fail(f"input is not valid UTF-8 ({utf8_where(exc)})")
        except (MemoryError, RuntimeError) as exc:  # torch's CPU allocator raises a RuntimeError
            if (asked := _memory_asked(exc)) is None:
                raise
            fail(f"out of memory{asked}: smaller batches need less (train.batch_tokens, decode.batch_size), "
                 f"and so does a smaller beam")
        except KeyboardInterrupt as exc:  # training has logged where it resumes; translate says what was written
            # SIGTERM always gets a line: no one saw it come, as one sees a ^C, and a log should say
            # why the command stopped. 130 for both, as `nmt train` exits after either: "stopped on
            # request, cleaned up", where 143 would read as killed by the signal, cleanup and all.
            cause = " (SIGTERM)" if isinstance(exc, Terminated) else ""
            if cause or str(exc):
                print(f"interrupted{cause}" + (f": {exc}" if str(exc) else ""), file=sys.stderr, flush=True)
            # the command has stopped: a second Ctrl-C while Python shuts down (torch's exit handlers)
            # printed a traceback. Registered last, this runs first of the exit handlers.
            atexit.register(signal.signal, signal.SIGINT, signal.SIG_IGN)
            # stopped while torch was being imported, before it set its loggers to warnings only, its
            # exit handler's "FakeTensor cache stats:" lines came out under the root logger's INFO
            logging.getLogger("torch").setLevel(max(logging.getLogger("torch").level, logging.WARNING))
            raise SystemExit(130) from None

    return wrapper


def _memory_asked(exc: BaseException) -> str | None:
    """For running out of memory, what was asked for (" (20.00 GiB more asked for)", or ""); None
    for any other error. Python's MemoryError; torch's CPU allocator ("DefaultCPUAllocator: can't
    allocate memory: you tried to allocate N bytes", "not enough memory" on Windows: a
    RuntimeError with a C++ source line first), CUDA's OutOfMemoryError ("… Tried to allocate
    20.00 GiB …") and "CUDA error: out of memory", MPS's "MPS backend out of memory". A traceback of
    200 lines said it before."""
    text = str(exc)
    if not (isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError"
            or re.search(r"can't allocate memory|not enough memory|out of memory", text, re.IGNORECASE)):
        return None
    if found := re.search(r"allocate (\d+) bytes", text):
        return f" ({_size(int(found[1]))} more asked for)"
    if found := re.search(r"allocate ([\d.]+ [KMGT]iB)", text):
        return f" ({found[1]} more asked for)"
    return ""


def _size(count: int) -> str:
    """A number of bytes as people read it: 512 bytes, 1.50 MiB, 20.00 GiB."""
    for unit, power in (("TiB", 40), ("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if count >= 2**power:
            return f"{count / 2**power:,.2f} {unit}"
    return f"{count:,} bytes"


_NO_ROOM = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EIO)  # a write's errors, which name no file


def _drop_stdout() -> None:
    """Point stdout at /dev/null: what is still buffered would fail again as Python exits, with a
    second message ("Exception ignored … BrokenPipeError")."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # no file descriptor (a test's captured stdout): nothing to flush into a pipe
        pass


def script_args(doc: str) -> list[str]:
    """A pipelines/ script's arguments. With none: its usage line as a one-line error (exit 1);
    with -h or --help: its docstring (exit 0)."""
    argv = sys.argv[1:]
    if argv[:1] in (["-h"], ["--help"]):
        print(doc.strip())
        raise SystemExit(0)
    if not argv:
        usage = next(line.strip() for line in doc.splitlines() if line.strip().startswith("python pipelines/"))
        fail(f"usage: {usage}")
    return argv


class ProgressBar:
    """A tqdm bar fed by the trainer's per-step progress callback. It appears at the first step, so
    an error found before training (bad data, a bad path) stays the only line on stderr. While it
    shows, log lines (validations, learning-rate changes) print above it, not glued to its line;
    stdout is left to the command's result. Where stderr is not a terminal there is no bar."""

    def __init__(self) -> None:
        self.bar = None
        self.logging = contextlib.ExitStack()

    def __call__(self, p) -> None:
        if self.bar is None:
            from tqdm import tqdm
            from tqdm.contrib.logging import logging_redirect_tqdm

            # disable=None: only at a terminal; a log file (2>log, a scheduler's) got a redrawn bar a second
            self.bar = tqdm(unit="step", dynamic_ncols=True, file=sys.stderr, mininterval=1.0, disable=None)
            self.logging.enter_context(logging_redirect_tqdm())
        self.bar.n = p.step
        self.bar.set_postfix({"loss": f"{p.loss:.3f}", "tok/s": f"{p.tokens_per_s:,.0f}", "lr": f"{p.lr:.2g}"},
                             refresh=False)
        self.bar.update(0)

    def __enter__(self) -> "ProgressBar":
        return self

    def __exit__(self, *exc) -> None:
        self.logging.close()
        if self.bar is not None:
            self.bar.close()


class _WholeWrites:
    """stdout's text written whole, or an error. Under PYTHONUNBUFFERED (python -u, common in
    containers and CI) stdout's text layer sits on the bare file and drops what a short write
    leaves: to a pipe whose reader went away (``| head``), lines were lost with no BrokenPipeError
    and status 0, not 141."""

    def __init__(self, raw: io.RawIOBase, text: IO[str]):
        # one encoder for the whole output, past any BOM: utf-8-sig or utf-16 put one before each chunk
        self.raw, self.encoder = raw, codecs.getincrementalencoder(text.encoding)(text.errors or "strict")
        self.encoder.setstate(0)
        text.flush()

    def write(self, text: str) -> None:
        data = memoryview(self.encoder.encode(text))
        while data:
            data = data[self.raw.write(data) or 0:]  # None: a non-blocking file took nothing yet

    def flush(self) -> None:
        self.raw.flush()


@contextlib.contextmanager
def written(output: Path | None):
    """Where nmt translate writes: stdout, or ``output`` atomically (``nmt.atomic.atomic_open``),
    compressed where its name ends in .gz, .bz2 or .xz, as --input is read (a plain file named
    .gz would have been a trap for whatever reads it next)."""
    from nmt.atomic import atomic_open, naming
    from nmt.lines import COMPRESSED

    if output is None:
        raw = getattr(sys.stdout, "buffer", None)
        with naming("stdout"):  # > file on a full disk: the error says stdout
            yield _WholeWrites(raw, sys.stdout) if isinstance(raw, io.RawIOBase) else sys.stdout
        return
    compress = COMPRESSED.get(output.suffix.lower())
    if compress is None:
        with atomic_open(output) as out:
            yield out
        return
    with atomic_open(output, "wb") as raw, compress(raw, "wt", encoding="utf-8") as out:
        yield out


def same_file(input: Path, output: Path) -> bool:
    """Whether ``output`` names the regular file ``input`` names (the same path, a link to it, a
    hard link): writing it would replace the source. A terminal or pipe both read and written
    (-i /dev/stdin -o /dev/stdout) is no such case."""
    try:
        read, write = os.stat(input), os.stat(output)
    except OSError:  # one is not there (yet): not the same file; reading says what is wrong
        return False
    return (read.st_dev, read.st_ino) == (write.st_dev, write.st_ino) and stat.S_ISREG(read.st_mode)


def is_stdout(path: Path) -> bool:
    """Whether ``path`` is this process's stdout (/dev/stdout, /dev/fd/1, or the file stdout was
    sent to): written through stdout, not replaced atomically, which put the translation in a new
    file in the place of the shell's (``{ echo a; nmt translate -o /dev/stdout; echo b; } > f``
    lost the translation) or failed on a device."""
    try:
        named, ours = os.stat(path), os.fstat(sys.stdout.fileno())
    except (OSError, ValueError, AttributeError, io.UnsupportedOperation):  # no such file; no descriptor (a test's)
        return False
    return (named.st_dev, named.st_ino) == (ours.st_dev, ours.st_ino)


def lines_bar(total: int):
    """Lines translated so far, on stderr, while a file or a pipe is translated: a long file no
    longer looks hung. Only where stderr is a terminal (tqdm's disable=None), so a log or a pipe
    gets no bar; it clears itself at the end (leave=False), leaving the output alone."""
    from tqdm import tqdm

    return tqdm(total=total, unit="line", file=sys.stderr, disable=None, leave=False, dynamic_ncols=True,
                mininterval=0.5)


def write_in_chunks(lines: list[str], render: Callable[[list[str], Callable[[int], object]], list[str]],
                    output: Path | None, chunk: int) -> None:
    """``render``'s output lines for ``lines``, ``chunk`` lines at a time, each chunk written before
    the next is rendered (``written``: stdout, or ``output`` atomically), so memory does not grow
    with the input; ``lines_bar`` counts them. On Ctrl-C or SIGTERM the interrupt goes on, saying
    what the output holds (a pipe's reader got each chunk as it was done): ``guarded`` prints it."""
    from nmt.atomic import written_in_place

    done = 0
    try:
        with lines_bar(len(lines)) as bar, written(output) as out:
            for start in range(0, len(lines), chunk):
                rendered = render(lines[start : start + chunk], bar.update)
                out.write("".join(line + "\n" for line in rendered))
                out.flush()
                done += len(rendered)
    except KeyboardInterrupt as exc:
        if output is not None and not written_in_place(output):
            held = f"nothing written to {output}, which is as it was"
        else:  # stdout, a FIFO, a device: its reader got each chunk as it was done
            held = f"{output or 'stdout'} has the first {done:,} of {len(lines):,} lines"
        raise type(exc)(held) from None


def stdin_lines() -> list[str]:
    from nmt.lines import split_lines

    data = sys.stdin.buffer.read() if hasattr(sys.stdin, "buffer") else sys.stdin.read().encode()
    return split_lines(data.decode("utf-8"))
