"""Text files of one sentence a line, as nmt reads them everywhere (prepared splits, nmt
translate's input, evaluation's source and references): lines counted as sacreBLEU counts them
(ended by "\\n" only; a last line without one counts, which ``wc -l`` leaves out), UTF-8, plain or
compressed by the file's suffix (.gz, .bz2, .xz). No torch here."""

from __future__ import annotations

import bz2
import gzip
import lzma
import zlib
from pathlib import Path

from nmt.errors import DataError, path_error

# openers of the compressed files nmt reads (and nmt translate writes), by suffix
COMPRESSED = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}


def read_lines(path: str | Path) -> list[str]:
    """Read a UTF-8 text file as lines without their line ends (``split_lines``); a clear error on
    bad input. A .gz, .bz2 or .xz file is decompressed (sacreBLEU reads .gz references too)."""
    path = Path(path)
    if error := path_error(path, "file"):
        raise DataError(error)
    suffix = path.suffix.lower()
    if suffix == ".zst":  # no zstd reader in the standard library
        raise DataError(f"{path}: zstd-compressed text is not supported; decompress it, or use gzip, bzip2 or xz")
    try:
        with COMPRESSED.get(suffix, open)(path, "rb") as file:  # bytes: text mode ends a line at a lone "\r" too
            data = file.read()
    except (OSError, EOFError, lzma.LZMAError, zlib.error) as exc:
        if isinstance(exc, OSError) and exc.filename is not None:  # not found, no permission …: the caller's
            raise
        raise DataError(f"{path}: not a valid {suffix.lstrip('.')} file ({exc})") from exc
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not valid UTF-8 ({utf8_where(exc)})") from exc
    return split_lines(text)


def utf8_where(exc: UnicodeDecodeError) -> str:
    """Where the bytes that are not UTF-8 begin, as a person finds them in an editor: "line 3,
    byte 118" (the byte counted from the start of the text, from 0)."""
    line = exc.object.count(b"\n", 0, exc.start) + 1
    return f"line {line}, byte {exc.start}"


def split_lines(text: str) -> list[str]:
    """Lines as sacreBLEU counts them: ended by "\\n" (a CRLF's "\\r" dropped; a last line without
    one counts, where ``wc -l`` leaves it out). Not str.splitlines(), which also ends a line at
    U+2028, NEL, a form feed and five more characters that a sentence may hold: translating such a
    file gave more lines than it had. A byte-order mark at the start is the file's encoding mark
    (Windows editors write one), not text: kept, it was part of the first sentence, and of a
    reference's first word for sacreBLEU."""
    lines = text.removeprefix("\ufeff").split("\n")
    if lines[-1] == "":  # the last line's end, or an empty text
        lines.pop()
    return [line[:-1] if line.endswith("\r") else line for line in lines]
