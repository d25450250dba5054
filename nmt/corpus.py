"""Reading parallel text into pairs, as written (``nmt.data`` normalises, filters and splits them).

A local TSV/CSV/JSONL/Parquet/Arrow file with named columns, a hub dataset name (online, or offline from
the cache), or a folder holding a dataset (a hub dataset's files downloaded, or one saved with
``save_to_disk``) is loaded with Hugging Face ``datasets`` (a TSV or CSV file by nmt's own rules,
``nmt.delimited``); a pair of line-aligned text files is read here (``_load_text_pair``: datasets'
text loader ends a line at a lone "\r" too). No torch here.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

from nmt.config import DataConfig
from nmt.delimited import has_text, load_delimited, plain_name, warn_short_rows
from nmt.errors import DataError, path_error
from nmt.lines import read_lines

log = logging.getLogger(__name__)


@dataclass
class Pair:
    src: str
    tgt: str
    id: str = ""


def _file_kind(path: Path) -> str:
    name = plain_name(path)
    if name.endswith((".tsv", ".csv")):
        return "csv"
    if name.endswith((".jsonl", ".json")):
        return "json"
    if name.endswith(".parquet"):
        return "parquet"
    if name.endswith(".arrow"):
        return "arrow"
    return "text"


DATA_SUFFIXES = (".tsv", ".csv", ".json", ".jsonl", ".parquet", ".arrow", ".txt", ".gz", ".bz2", ".xz", ".zst")


def _names_a_file(source: str) -> bool:
    """Whether a ``source`` that does not exist was meant as a local file (then: not found) rather
    than a hub name: a data-file suffix, an explicit path, or a folder that exists here. Hub names
    may contain dots (``user/corpus-v0.1``), so any other suffix does not make a file."""
    path = Path(source)
    return (
        source.lower().endswith(DATA_SUFFIXES)
        or source.startswith(("/", "./", "../", "~"))
        or ("/" in source and path.parent.is_dir())
    )


@contextlib.contextmanager
def _quiet(logger_name: str, level: int = logging.ERROR):
    """The ``logger_name`` library's log lines below ``level`` left out, its level back after."""
    logger = logging.getLogger(logger_name)
    before = logger.level
    logger.setLevel(level)
    try:
        yield
    finally:
        logger.setLevel(before)


@contextlib.contextmanager
def _no_progress_bars():
    """datasets draws a progress bar for each local file it reads, on stderr, where the command line
    prints its one-line errors (on some installs the bars came first); a hub download keeps its bars.
    Its log lines go too, errors included: it logs a file it cannot parse (twice, through its own
    handler and the root's), which ``read_pairs`` reports itself in one line."""
    import datasets

    was_enabled = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    try:
        with _quiet("datasets", logging.CRITICAL):
            yield
    finally:
        if was_enabled:
            datasets.enable_progress_bars()


def _has_rows(path: Path) -> bool:
    """Whether a Parquet or Arrow file holds a row (datasets' readers took "BatchSize must be greater
    than 0" from an empty Parquet file's row group, "Instruction "train" corresponds to no data!"
    from an empty Arrow file). An Arrow file is a stream (datasets' own) or an IPC file."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if _file_kind(path) == "parquet":
        return pq.read_metadata(path).num_rows > 0
    with pa.memory_map(str(path)) as source:
        if source.read(6) != b"ARROW1":  # (an IPC file's magic; a stream read as one takes it for a length)
            source.seek(0)
            return any(batch.num_rows for batch in pa.ipc.open_stream(source))
        reader = pa.ipc.open_file(source)  # its footer lists its batches
        return any(reader.get_batch(i).num_rows for i in range(reader.num_record_batches))


def _holds_nothing(path: Path) -> bool:
    """Whether a data file is empty: 0 bytes, a Parquet or Arrow file of no rows, a text file of
    blank lines (the parsers' words for one: "No columns to parse" …)."""
    kind = _file_kind(path)
    return path.stat().st_size == 0 or not (_has_rows(path) if kind in ("parquet", "arrow") else has_text(path))


# what datasets' Parquet reader says of an empty file, naming none (its row group of no rows; 0 bytes)
EMPTY_PARQUET = re.compile(r"BatchSize must be greater than 0|Parquet file size is 0 bytes")
# pandas' parser on a row with more fields than the rows before it (past the first data row)
_PARSER_FIELDS = re.compile(r"Expected (?P<expected>\d+) fields in line (?P<line>\d+), saw (?P<saw>\d+)")


def _empty_parquet(folder: Path) -> Path | None:
    """The first Parquet file in a dataset folder without rows (an interrupted download's 0 bytes
    too), None if none: asked only when the load failed as on such a file (``EMPTY_PARQUET``), so
    an empty shard of a config not asked for is not blamed for another error. One it cannot read as
    Parquet is not called empty."""
    for path in sorted(dataset_files(folder)):
        if _file_kind(path) == "parquet":
            try:
                if _holds_nothing(path):
                    return path
            except Exception:  # pyarrow's error for a file that is not Parquet: datasets' own names it
                continue
    return None


def _load_local_table(path: Path, config: DataConfig):
    import datasets

    kind = _file_kind(path)
    if kind in ("parquet", "arrow") and path.name.lower() != plain_name(path):
        # (pyarrow reads a file by its footer or stream, not through a decompressor: "Parquet magic
        # bytes not found in footer. Either the file is corrupted or this is not a parquet file.")
        raise DataError(f"{path} is a compressed {kind.capitalize()} file, which cannot be read as it is: "
                        f"decompress it first")
    if _holds_nothing(path):
        raise DataError(f"{path} is empty: no pairs to read")
    with _no_progress_bars():
        if kind == "parquet":  # the hub's own format: typed columns, read as they are
            return datasets.load_dataset("parquet", data_files=str(path), split="train")
        if kind == "arrow":  # datasets' own cache and save_to_disk files (Arrow streams), or an Arrow IPC file
            return datasets.load_dataset("arrow", data_files=str(path), split="train")
        if kind == "json":
            return datasets.load_dataset("json", data_files=str(path), split="train")
        return load_delimited(path, tuple(config.columns))


def _load_text_pair(src: Path, tgt: Path) -> list[Pair]:
    """Pairs of line-aligned text files, each read by ``read_lines``. Not datasets' text loader,
    which opens files with universal newlines: a stray "\r" inside a sentence ended a line there, so
    a 40-line file read as 41 and its pair "differed in line count" (or, with one such "\r" on each
    side, pairs were silently misaligned)."""
    sides = [read_lines(src), read_lines(tgt)]
    if len(sides[0]) != len(sides[1]):
        raise DataError(
            f"aligned files differ in line count: {src} has {len(sides[0])}, {tgt} has {len(sides[1])}"
        )
    return [Pair(s, t, str(i)) for i, (s, t) in enumerate(zip(*sides))]


def dataset_files(folder: Path) -> list[Path]:
    """The files of a dataset folder: those in ``folder`` and its subfolders, hidden ones aside (a
    download's .cache), through links to folders too, which datasets reads (``Path.rglob`` did not
    enter them, so make's stamp missed a changed shard there); a folder reached twice, by a link
    back up, is listed once."""
    files, seen = [], set()
    for top, folders, names in os.walk(folder, followlinks=True):
        if (real := os.path.realpath(top)) in seen:
            folders[:] = []
            continue
        seen.add(real)
        folders[:] = [name for name in folders if not name.startswith(".")]
        files += [Path(top, name) for name in names if not name.startswith(".")]
    return files


def _load_local_dataset(folder: Path, config: DataConfig):
    """Split ``data.hub_split`` of the dataset in ``folder``: one written by ``save_to_disk`` (its
    ``state.json`` or ``dataset_dict.json`` says so; it has no configs), else the files of a hub
    dataset, downloaded (``hf download NAME --repo-type dataset --local-dir FOLDER``), which
    datasets reads as it would the hub name, ``data.hub_config`` included, without a network."""
    import datasets

    with _no_progress_bars():
        if (folder / "state.json").is_file() or (folder / "dataset_dict.json").is_file():
            if config.hub_config is not None:
                raise DataError(f"{folder} is a dataset saved with save_to_disk, which has no configs; leave "
                                f"data.hub_config empty (null)")
            table = datasets.load_from_disk(str(folder))
            if not isinstance(table, datasets.DatasetDict):
                if config.hub_split != DataConfig.hub_split:  # (the default, train, reads it whole)
                    raise DataError(f"{folder} is a single dataset saved with save_to_disk, without splits; "
                                    f"leave data.hub_split as {DataConfig.hub_split}, not {config.hub_split!r}")
                return table
            if config.hub_split not in table:
                raise DataError(f"{folder}: no split {config.hub_split!r} for data.hub_split (splits: "
                                f"{', '.join(table)})")
            return table[config.hub_split]
        if not any(not path.name.startswith(".") for path in folder.iterdir()):  # (.cache: a download's own)
            raise DataError(f"{folder} is an empty folder; data.source names a data file, a folder holding a "
                            f"dataset, or a hub dataset")
        if tables := sorted(path.name for path in dataset_files(folder) if _file_kind(path) == "csv"):
            log.warning("%s: its TSV/CSV files (%s) are read by datasets' CSV rules, which guess types (id 01.10 "
                        "reads as 1.1) and parse quotes; give one such file directly to have nmt's", folder,
                        ", ".join(tables[:3]) + (", …" if len(tables) > 3 else ""))
        # A README without YAML front matter (a corpus's own notes): huggingface_hub logs "Repo card
        # metadata block was not found", twice (its handler and the root's); the files are read by layout
        with _quiet("huggingface_hub"):
            return _load_dataset(str(folder), config)


def _load_dataset(name: str, config: DataConfig):
    """``datasets.load_dataset`` of a hub name or a dataset folder, with data.hub_config and
    data.hub_split. A dataset of several configs asked for none names them, in one line (its
    error's first line, all the command line shows, said only "Config name is missing.")."""
    import datasets

    try:
        return datasets.load_dataset(name, config.hub_config, split=config.hub_split)
    except ValueError as exc:
        if config.hub_config is not None or not str(exc).startswith("Config name is missing"):
            raise
        names = re.search(r"available configs: (\[.*?\])", str(exc))
        raise DataError(f"{name} holds several configs{' ' + names.group(1) if names else ''}: set data.hub_config "
                        f"to one") from None


def _no_hub_settings(source: Path, config: DataConfig) -> None:
    """Refuse data.hub_config, or a data.hub_split other than the default, for a local file: it has
    neither configs nor splits, and either was ignored without a word (hub_split: test read the
    whole file as if it were the test split)."""
    if config.hub_config is not None or config.hub_split != DataConfig.hub_split:
        raise DataError(f"{source} is a file, without configs or splits: leave data.hub_config empty (null) and "
                        f"data.hub_split as {DataConfig.hub_split} (they choose within a hub dataset or folder)")


def read_pairs(config: DataConfig) -> list[Pair]:
    """Load raw pairs as described by ``config`` (no normalisation yet)."""
    source = Path(config.source).expanduser()  # ~/corpora/x.tsv: a YAML value no shell has expanded
    try:
        if config.target is not None:
            target = Path(config.target).expanduser()
            for path in (source, target):
                if error := path_error(path, "data file"):
                    raise DataError(error)
                if _file_kind(path) != "text":  # its lines would be taken as sentences, columns and all
                    raise DataError(f"{path} is a table, but data.target pairs two plain text files; "
                                    f"for a table leave data.target empty (null)")
            _no_hub_settings(source, config)
            return _load_text_pair(source, target)
        if source.is_dir():
            table = _load_local_dataset(source, config)
        elif source.exists():
            if _file_kind(source) == "text":  # one side of the text: the other is data.target
                raise DataError(f"{source} is a plain text file, one side of the corpus: set data.target to the "
                                f"other side's file, or give a TSV, CSV, JSONL, Parquet or Arrow file")
            _no_hub_settings(source, config)
            table = _load_local_table(source, config)
        elif _names_a_file(config.source):
            raise DataError(f"data file not found: {source}" + ("" if source.is_absolute() else
                                                                 f" (relative to the working folder, {Path.cwd()})"))
        else:  # a hub dataset name
            # Without a network huggingface_hub logs each of its 5 retries, twice (its own handler and
            # the root's): 22 lines over 23 s before the one-line error. One line says what is tried.
            log.info("loading %s from the Hugging Face Hub", config.source)
            with _quiet("huggingface_hub"):
                table = _load_dataset(config.source, config)
    except UnicodeDecodeError as exc:
        raise _not_utf8(source, config.source, exc.reason) from exc
    except DataError:
        raise
    except Exception as exc:  # datasets wraps parser errors in many types
        cause = exc
        while (inner := cause.__cause__ or cause.__context__) is not None:
            cause = inner
        if isinstance(cause, UnicodeDecodeError):
            raise _not_utf8(source, config.source, cause.reason) from exc
        from datasets.exceptions import DatasetGenerationError

        shown = exc
        if isinstance(exc, DatasetGenerationError):  # "An error occurred …": the parser's error beneath says where
            shown = exc.__cause__ or exc.__context__ or exc
        text = str(shown).strip()
        message = text.splitlines()[0] if text else type(shown).__name__
        if source.is_file() and (where := _bad_json_line(source)):  # the parser counts rows from 0, within a block
            message = where
        elif source.is_dir() and EMPTY_PARQUET.search(text) and (empty := _empty_parquet(source)) is not None:
            message = f"{empty} is empty (no rows); remove it or download it again"
        elif (fields := _PARSER_FIELDS.search(text)) is not None:  # pandas' words for a row too long, in nmt's
            message = (f"line {fields['line']} has {fields['saw']} fields, but the rows above it have "
                       f"{fields['expected']}: every row needs one field per column (a tab inside a sentence of a "
                       f"TSV, or an unquoted comma in a CSV)")
        raise DataError(f"cannot load {config.source}: {message}") from exc
    pairs = _pairs_from_table(table, config)
    if source.is_file() and _file_kind(source) == "csv" and any(not pair.src or not pair.tgt for pair in pairs):
        warn_short_rows(source, tuple(config.columns))  # (a second read only where a field is empty)
    return pairs


def _not_utf8(source: Path, given: str, reason: str) -> DataError:
    """The error for a data file that is not UTF-8, with the line and byte where it stops being
    UTF-8 (``read_lines``' words): the parsers decode in blocks of a few KB, so their error's byte
    counted from the block, and from under datasets came without one."""
    if source.is_file() and source.suffix.lower() != ".zst":
        try:
            read_lines(source)
        except DataError as exc:
            return exc
    return DataError(f"{given}: not valid UTF-8 ({reason})")


def _bad_json_line(path: Path) -> str | None:
    """Where a JSON Lines file first fails to parse ("line N is not valid JSON: why"), None for
    another kind of file or none found."""
    import json

    if not plain_name(path).endswith(".jsonl"):
        return None
    for number, line in enumerate(read_lines(path), 1):
        try:
            if line.strip():
                json.loads(line)
        except json.JSONDecodeError as exc:
            return f"line {number} is not valid JSON ({exc.msg} at column {exc.colno})"
    return None


class _NoField(DataError):
    """A record with no field of the name asked for at some level (``_field``)."""


def _field(record: dict, name: str, index: int, source: str):
    """Look up ``a.b`` in nested records (hub translation sets keep pairs under ``translation``);
    None where a level has no value. A name that leads nowhere is the config's mistake (a language
    code mistyped, a dot too many), said with what the record holds there (``_NoField`` where the
    level is there without the field: a value missing from some records is no mistake of the
    config's, ``_pairs_from_table``)."""
    value, parts = record, name.split(".")
    for depth, part in enumerate(parts):
        if value is None:
            return None
        above = ".".join(parts[:depth])
        if not isinstance(value, dict):
            raise DataError(f"{source}: record {index + 1}: {above} holds {type(value).__name__}, not fields, so "
                            f"it has no {name!r}")
        if part not in value:
            raise _NoField(f"{source}: record {index + 1}: no field {name!r} ({above} holds: "
                           f"{', '.join(sorted(map(str, value)))})")
        value = value[part]
    return value


def _pairs_from_table(table, config: DataConfig) -> list[Pair]:
    columns = set(table.column_names)
    for key, name, side in (("src_field", config.src_field, "source"), ("tgt_field", config.tgt_field, "target")):
        if name.split(".")[0] not in columns:  # (src_lang: de with a header's de column: src_field stays es)
            raise DataError(f"{config.source}: no column {name!r} (columns: {', '.join(sorted(columns))}); "
                            f"data.{key} names the column of the {side} sentences")
    if config.columns and len(table) and all(str(table[0].get(name)).strip() == name
                                             for name in (config.src_field, config.tgt_field)):
        raise DataError(f"{config.source}: its first row is a header ({', '.join(table[0].values())}), but "
                        f"data.columns names the columns of a headerless file; set data.columns: [] for a header")
    has_id = config.id_field is not None and config.id_field.split(".")[0] in columns  # nested as the sentences
    if (config.dev_groups or config.test_groups) and not has_id:  # line numbers have no groups
        raise DataError(f"{config.source}: no id column {config.id_field!r} (columns: {', '.join(sorted(columns))}) "
                        f"for data.dev_groups and data.test_groups, which split by the ids' groups; name the id "
                        f"column in data.id_field, or give both groups as [] for a random split")
    pairs, valueless = [], {}  # field name: records (numbered from 1) without a value
    missing, found = {}, set()  # field name: the first record's _NoField; the names some record has a value for
    try:
        for i, record in enumerate(table):
            texts = []
            for name in (config.src_field, config.tgt_field):
                try:
                    texts.append(_text(record, name, i, config.source))
                except _NoField as exc:  # a JSON record whose translation lacks one language: a value missing
                    texts.append(None)
                    missing.setdefault(name, exc)
            src, tgt = texts
            for name, text in ((config.src_field, src), (config.tgt_field, tgt)):
                if text is None:
                    valueless.setdefault(name, []).append(i + 1)
                else:
                    found.add(name)
            pair_id = str(_field(record, config.id_field, i, config.source)).strip() if has_id else str(i)  # CRLF: \r
            pairs.append(Pair(src or "", tgt or "", pair_id))
    except UnicodeDecodeError as exc:  # JSON's reader lets bad bytes in a string through, to here
        raise DataError(f"{config.source}: record {len(pairs) + 1} is not valid UTF-8 ({exc.reason})") from None
    for name, exc in missing.items():  # no record has a value there: the name is the config's mistake (a
        if name not in found:  # language code mistyped), said with what the first record holds
            raise exc
    for name, records in valueless.items():  # a JSON record without the field, or null there
        log.warning("%s: %d record(s) without a value for %s (missing or null), the first record %d: read as "
                    "empty, and such pairs are dropped", config.source, len(records), name, records[0])
    return pairs


def _text(record: dict, name: str, index: int, source: str) -> str | None:
    """Field ``name`` of a record as text (a number as written), None where it has no value; a list
    or a mapping is no sentence, and its Python form would have been trained on as one."""
    value = _field(record, name, index, source)
    if isinstance(value, dict):
        raise DataError(f"{source}: record {index + 1}: {name} holds a mapping, not text "
                        f"(name a field inside it, as translation.es)")
    if isinstance(value, list):
        raise DataError(f"{source}: record {index + 1}: {name} holds a list, not text")
    return None if value is None else str(value)
