"""TSV and CSV files as nmt reads them: a TSV's quote is text, a CSV's quoted field may hold a
comma; a row ends at "\n" only; every column is text; a byte-order mark is dropped; rows with more
fields than columns are refused, rows with fewer named in a warning. ``nmt.corpus`` loads them
through ``load_delimited``, and tells a file's kind by ``plain_name`` and an empty text file (a
JSON Lines one too) by ``has_text``. No torch here."""

from __future__ import annotations

import contextlib
import csv
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from nmt.errors import DataError
from nmt.lines import COMPRESSED

log = logging.getLogger(__name__)


def plain_name(path: Path) -> str:
    """The file's name in lower case, without a compression suffix: what kind of text it holds."""
    name = path.name.lower()
    for suffix in (".gz", ".bz2", ".xz", ".zst"):
        name = name.removesuffix(suffix)
    return name


def _dialect(path: Path) -> tuple[str, int]:
    """Delimiter and quoting of a TSV or CSV file. TSV: a quote is text (corpora quote speech);
    CSV: a field with a comma is quoted, as CSV writers do."""
    return ("\t", csv.QUOTE_NONE) if plain_name(path).endswith(".tsv") else (",", csv.QUOTE_MINIMAL)


def _open_text(path: Path) -> IO[str] | None:
    """``path`` opened as UTF-8 text, decompressed by its suffix, lines ending at "\\n" only; None
    for .zst (no zstd reader in the standard library: left to datasets)."""
    suffix = path.suffix.lower()
    if suffix == ".zst":
        return None
    # utf-8-sig: Excel's "CSV UTF-8" starts with a byte-order mark, which named the first column "\ufeffid"
    return COMPRESSED.get(suffix, open)(path, "rt", encoding="utf-8-sig", newline="\n")


def _rows(path: Path) -> Iterator[tuple[int, list[str]]]:
    """(line number, fields) of each non-blank row of a TSV or CSV file, as the parser reads it: a
    row ends at "\n" (csv's own reader also ends one at a lone "\r"); blank lines are skipped.
    Nothing for .zst (``_open_text``)."""
    if (opened := _open_text(path)) is None:
        return
    delimiter, quoting = _dialect(path)
    # csv's default limit of 131,072 characters a field refused (or, read after the first rows, ended
    # in a traceback) a file the loader reads whole: a long field is the length filter's to drop
    csv.field_size_limit(2**31 - 1)
    with opened as file:
        lines = (line.rstrip("\r\n").replace("\r", " ") + "\n" for line in file)
        reader = csv.reader(lines, delimiter=delimiter, quoting=quoting)
        for row in reader:
            if row:
                yield reader.line_num, row


def _names(rows: Iterator[tuple[int, list[str]]], columns: tuple[str, ...]) -> tuple[str, ...]:
    """The column names: ``columns`` (data.columns), or the header row taken from ``rows``."""
    return columns or tuple(next(rows, (0, ()))[1])


def _check_first_row(path: Path, columns: tuple[str, ...]) -> None:
    """Refuse a first data row with more fields than there are columns. The parser would take the
    extra leading fields as row labels and shift every column silently (ids read as sentences);
    a longer row further down it does refuse itself. And a header with no row under it, which
    datasets called "Instruction "train" corresponds to no data!". ``columns``: () when the first
    row is a header."""
    with contextlib.closing(_rows(path)) as rows:  # (closing: the file, after two rows)
        names = _names(rows, columns)
        line, first = next(rows, (0, []))
    if names and not columns and not first:
        raise DataError(f"{path} has a header row ({', '.join(names)}) and no rows under it: no pairs to read")
    if names and len(first) > len(names):
        named_by = "data.columns names" if columns else "the header names"
        raise DataError(f"{path}: line {line} has {len(first)} fields, but {named_by} {len(names)} "
                        f"({', '.join(names)}): every row needs one field per column")


def warn_short_rows(path: Path, columns: tuple[str, ...]) -> None:
    """A warning naming the rows with fewer fields than columns: the parser reads their missing
    fields as empty, so a missing tab looked like an empty sentence (the pair dropped as empty)."""
    rows = _rows(path)
    names = _names(rows, columns)
    short = [line for line, row in rows if len(row) < len(names)]
    if short:
        log.warning("%s: %d row(s) with fewer fields than the %d columns (%s), the first at line %d: their "
                    "missing fields read as empty, and such pairs are dropped", path, len(short), len(names),
                    ", ".join(names), short[0])


def has_text(path: Path) -> bool:
    """Whether the file holds anything but blank lines (read up to its first such line; a .zst
    file is taken to, ``_open_text``)."""
    if (opened := _open_text(path)) is None:
        return True
    with opened as file:
        return any(line.strip() for line in file)


def load_delimited(path: Path, columns: tuple[str, ...]):
    """A TSV or CSV file as a datasets table of text columns: named by ``columns`` (data.columns), or
    by its header row when that is (). A first row longer than the names is refused, and so are
    names given twice."""
    import datasets

    # A row ends at "\n" only: the parser's default also ended one at a lone "\r" inside a sentence,
    # which split the row in two (both halves dropped, the second's text read as an id). A CRLF's
    # "\r" stays at the end of the last field, where normalising removes it (and from names, below).
    delimiter, quoting = _dialect(path)
    options = dict(delimiter=delimiter, quoting=quoting, na_filter=False, lineterminator="\n")
    _check_first_row(path, columns)
    names = columns
    if not names:  # the header's names, as the checks read them (a CRLF's "\r" off the last), in its place
        with contextlib.closing(_rows(path)) as rows:
            names = _names(rows, ())
        options["header"] = 0
    if twice := sorted({name for name in names if names.count(name) > 1}):
        named_by = "data.columns names" if columns else "the header names"
        raise DataError(f"{path}: {named_by} {', '.join(twice)} twice; every column needs a name of its own")
    # every column text, named: with types guessed, ids 01.10 and 01.1 were both read as 1.1
    options["column_names"] = list(names)
    options["features"] = datasets.Features({name: datasets.Value("string") for name in names})
    return datasets.load_dataset("csv", data_files=str(path), split="train", **options)
