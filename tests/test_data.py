"""Data preparation: formats, normalisation, filters, splits and the errors users meet."""

import dataclasses
import gzip
import json
import re
import unicodedata

import pytest

from conftest import ROOT, TINY_TSV
from nmt.config import DataConfig
from nmt.corpus import Pair, read_pairs
from nmt.data import filter_pairs, normalise, prepare, write_splits
from nmt.errors import DataError
from nmt.lines import read_lines, split_lines


def test_normalise_nfc_and_whitespace():
    decomposed = "Jos" + "e\u0301"  # e + combining acute
    assert normalise(f"  {decomposed}\u00a0 y\t\tMaría \n") == "José y María"


def test_normalise_drops_invisible_characters_but_keeps_joiners():
    """Zero-width spaces, direction marks, a BOM and control characters, which text from the web
    or right-to-left sources carries unseen; the zero-width (non-)joiners Persian and emoji need stay."""
    assert normalise("\ufeffY\u200b dijo\u200e \u202bDios\u202c\x07: luz\u2066\u2069\u2060") == "Y dijo Dios: luz"
    assert normalise("می\u200cخواهم 👩\u200d💻") == "می\u200cخواهم 👩\u200d💻"
    assert normalise("a\x85b\x1cc") == "a b c"  # NEL and the separators are whitespace, not invisible
    assert normalise("\u061c") == ""  # the Arabic letter mark: a line of it had a sentence made up


def test_normalised_text_is_its_own_normal_form():
    """An invisible character between a letter and its accent kept them apart through NFC, then
    was dropped: "Jose\u0301", not NFC, and normalising again gave another text."""
    for text in ("Jose\u200b\u0301 cafe\u200e\u0301", "n\ufeff\u0303o", " a\u00a0\u200bb\t", "e\u0301\u061c"):
        once = normalise(text)
        assert normalise(once) == once == unicodedata.normalize("NFC", once)
    assert normalise("Jose\u200b\u0301") == "José"


def test_tiny_tsv_splits_by_book(tmp_path):
    config = DataConfig(source=str(TINY_TSV), dev_groups=("RUT",), test_groups=("JON",))
    prepared = prepare(config)
    assert {n: len(p) for n, p in prepared.splits.items()} == {"train": 500, "dev": 40, "test": 34}
    assert all(p.id.startswith("RUT.") for p in prepared.splits["dev"])
    write_splits(prepared, tmp_path, config)
    assert len((tmp_path / "test.en").read_text(encoding="utf-8").splitlines()) == 34
    assert json.loads((tmp_path / "stats.json").read_text())["kept"]["train"] == 500


def test_a_path_from_the_home_folder_is_read(tmp_path, monkeypatch):
    """data.source: ~/corpora/x.tsv in a YAML file, which no shell expands (it was "not found"); a
    pair of text files likewise, and the stamp that reruns make's stages when they change."""
    import shutil

    monkeypatch.syspath_prepend(str(ROOT / "pipelines"))
    from stamp_config import _data_files

    (tmp_path / "corpora").mkdir()
    shutil.copy(TINY_TSV, tmp_path / "corpora" / "bible.tsv")
    for lang in ("es", "en"):
        (tmp_path / "corpora" / f"x.{lang}").write_text("uno dos\n", encoding="utf-8")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert len(read_pairs(DataConfig(source="~/corpora/bible.tsv"))) == len(read_pairs(DataConfig(source=str(TINY_TSV))))
    assert len(read_pairs(DataConfig(source="~/corpora/x.es", target="~/corpora/x.en"))) == 1
    assert list(_data_files("~/corpora/bible.tsv", None)) == ["~/corpora/bible.tsv"]


def test_chinese_and_japanese_sentences_are_counted_in_letters_by_the_length_filters():
    """A whitespace count made a Chinese sentence one word, past data.max_ratio 3 beside any English
    sentence of four words or more: a zh–en corpus was dropped almost whole."""
    pairs = [Pair("要有光。就有了光。", "Let there be light, and there was light.", "1"),
             Pair("神は「光あれ」と言われた。", "And God said, Let there be light.", "2"),
             Pair("光", "Let there be light, and there was light.", "3")]  # 1 against 8: still a bad pair
    kept, dropped = filter_pairs(pairs, DataConfig(max_words=12))
    assert [p.id for p in kept] == ["1"] and dropped == {"length_ratio": 1, "too_long": 1}  # 2: 13 words


def test_a_group_that_names_no_pair_is_refused(tmp_path):
    """A misspelt book would silently leave the dev or test split empty: training would fail at its
    first validation, evaluation after the whole training."""
    config = DataConfig(source=str(TINY_TSV), dev_groups=("RUT", "RTH"), test_groups=("jon",))
    with pytest.raises(DataError, match=r"no pair kept has group RTH, jon .*groups are GEN, JON, RUT"):
        prepare(config)


@pytest.mark.parametrize("split, groups", [("dev", {"dev_groups": (), "test_groups": ("JON",)}),
                                           ("test", {"dev_groups": ("RUT",), "test_groups": ()}),
                                           ("training", {"dev_groups": ("GEN", "RUT"), "test_groups": ("JON",)})])
def test_an_empty_split_is_refused(split, groups):
    with pytest.raises(DataError, match=f"the {split} split is empty"):
        prepare(DataConfig(source=str(TINY_TSV), **groups))


def test_csv_fields_with_commas_are_quoted_and_kept_whole(tmp_path):
    """A CSV writer quotes a field holding a comma; in a TSV a quote is text (corpora quote speech)."""
    path = tmp_path / "c.csv"
    path.write_text('id,es,en\nA.1,"Dijo: sí, señor.","He said, “Yes, sir.”"\nA.2,Hola,Hello\n', encoding="utf-8")
    pairs = read_pairs(DataConfig(source=str(path), columns=()))
    assert [(p.id, p.src, p.tgt) for p in pairs] == [("A.1", "Dijo: sí, señor.", "He said, “Yes, sir.”"),
                                                      ("A.2", "Hola", "Hello")]
    tsv = tmp_path / "c.tsv"
    tsv.write_text('A.1\t"Sí," dijo.\t"Yes," he said.\n', encoding="utf-8")
    assert read_pairs(DataConfig(source=str(tsv)))[0].src == '"Sí," dijo.'


@pytest.mark.parametrize("name", ["h.tsv", "h.csv"])
def test_a_header_row_read_as_data_is_refused(tmp_path, name):
    sep = "\t" if name.endswith(".tsv") else ","
    (tmp_path / name).write_text(f"id{sep}es{sep}en\nA.1{sep}hola{sep}hello\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"first row is a header \(id, es, en\).*data.columns: \[\]"):
        read_pairs(DataConfig(source=str(tmp_path / name)))  # columns: [id, es, en], as for a headerless file
    assert len(read_pairs(DataConfig(source=str(tmp_path / name), columns=()))) == 1


@pytest.mark.parametrize("name, columns, text", [
    ("h.tsv", (), "id\tes\ten\nA.1\thola\thello\textra\nA.2\tadiós\tbye\n"),
    ("h.csv", (), "\nid,es,en\nA.1,hola,hello,extra\nA.2,adiós,bye,more\n"),
    ("n.tsv.gz", ("id", "es", "en"), "A.1\thola\thello\textra\nA.2\tadiós\tbye\tmore\n"),
    ("r.tsv", (), "id\tes\ten\r\nA.1\tho\rla\thello\textra\r\nA.2\tadiós\tbye\r\n"),
], ids=["header-tsv", "header-csv-after-a-blank-line", "headerless-tsv-gz", "crlf-tsv-a-lone-cr-in-a-sentence"])
def test_a_first_row_longer_than_the_columns_is_refused_not_shifted(tmp_path, name, columns, text):
    """The parser would read the extra leading field as a row label: ids as sources, sources as
    targets, without a word."""
    path = tmp_path / name
    data = text.encode()
    path.write_bytes(gzip.compress(data) if name.endswith(".gz") else data)
    line = 3 if text.startswith("\n") else 2 if not columns else 1
    with pytest.raises(DataError, match=rf"line {line} has 4 fields, but .* names 3 \(id, es, en\): every row"):
        read_pairs(DataConfig(source=str(path), columns=columns))


@pytest.mark.parametrize("name, text, words", [
    ("c.csv", "id,es,en\nA.1,hola,hello\nA.2,uno,dos,tres,cuatro\n",  # (pandas' "Expected 3 fields in line 3, saw 5")
     r"line 3 has 5 fields, but the rows above it have 3: every row needs one field per column \(a tab inside"),
    ("c.tsv", "id\tes\ten\nA.1\thola\thello\nA.2\tuno\tdos\ttres\n", r"line 3 has 4 fields, but the rows above"),
    ("c.jsonl", '{"id": "A.1", "es": "hola", "en": "hello"}\n{bad\n', r"line 2 is not valid JSON \(Expecting"),
    ("c.jsonl", '{"es": "hola", "en": "hello"}\n\n{"es": "uno", "en": \n', "line 3 is not valid JSON"),
])
def test_a_file_the_parser_rejects_is_one_line_saying_where(tmp_path, capfd, name, text, words):
    """A JSON Lines file: the line that fails, numbered from 1 (the parser's rows count from 0); a
    table row longer than the ones above it: its line and fields, in nmt's words, not pandas'."""
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    with pytest.raises(DataError, match=f"cannot load .*{words}"):
        read_pairs(DataConfig(source=str(path), columns=()))
    assert capfd.readouterr().err == ""  # the CLI's one-line error is the only line on stderr


def test_a_missing_column_names_the_setting_to_change(tmp_path):
    """src_lang: de with a header's de column: "no column 'es'" did not say that data.src_field,
    whose default stays es, names it."""
    path = tmp_path / "c.tsv"
    path.write_text("id\tde\ten\nA.1\thallo\thello\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"no column 'es' \(columns: de, en, id\); data.src_field names the column of "
                                        r"the source sentences$"):
        read_pairs(DataConfig(source=str(path), columns=(), src_lang="de"))


def test_local_files_load_without_progress_bars(tmp_path, monkeypatch):
    """The command line owns stderr: no datasets progress bar while a local file is read, and the
    user's own setting is back afterwards."""
    import datasets

    states = []
    load = datasets.load_dataset
    monkeypatch.setattr(datasets, "load_dataset",
                        lambda *a, **k: states.append(datasets.is_progress_bar_enabled()) or load(*a, **k))
    read_pairs(DataConfig(source=str(TINY_TSV)))
    assert states == [False] and datasets.is_progress_bar_enabled()


def test_gzipped_tsv_with_quotes_is_read_verbatim(tmp_path):
    path = tmp_path / "c.tsv.gz"
    rows = ['A.1.1\tDijo: "Sea la luz"\tHe said, "Let there be light"', "A.1.2\tNA\tnull"]
    path.write_bytes(gzip.compress(("\n".join(rows) + "\n").encode()))
    pairs = read_pairs(DataConfig(source=str(path)))
    assert pairs[0].src == 'Dijo: "Sea la luz"' and pairs[0].tgt == 'He said, "Let there be light"'
    assert (pairs[1].src, pairs[1].tgt) == ("NA", "null")  # not turned into missing values


def test_jsonl_with_nested_fields(tmp_path):
    path = tmp_path / "c.jsonl"
    lines = [{"translation": {"de": f"hallo {i}", "en": f"hello {i}"}} for i in range(5)]
    path.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    config = DataConfig(source=str(path), src_field="translation.de", tgt_field="translation.en", id_field=None,
                        dev_groups=(), test_groups=())
    pairs = read_pairs(config)
    assert [(p.src, p.tgt) for p in pairs][:2] == [("hallo 0", "hello 0"), ("hallo 1", "hello 1")]


def test_a_nested_id_field_gives_the_ids_and_their_groups(tmp_path):
    """id_field: meta.id, nested as the sentences may be: it was "no id column 'meta.id'", and with a
    random split it was ignored without a word (line numbers taken as ids)."""
    path = tmp_path / "c.jsonl"
    books = ["GEN", "GEN", "RUT", "JON", "GEN"]
    lines = [{"meta": {"id": f"{book}.1.{i}"}, "translation": {"de": f"hallo {i}", "en": f"hello {i}"}}
             for i, book in enumerate(books)]
    path.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    config = DataConfig(source=str(path), src_field="translation.de", tgt_field="translation.en", id_field="meta.id",
                        dev_groups=("RUT",), test_groups=("JON",))
    assert [p.id for p in read_pairs(config)] == [f"{book}.1.{i}" for i, book in enumerate(books)]
    prepared = prepare(config)
    assert [[p.id for p in prepared.splits[name]] for name in ("dev", "test")] == [["RUT.1.2"], ["JON.1.3"]]


@pytest.mark.parametrize("src_field, words", [
    ("translation.fr", r"record 1: no field 'translation.fr' \(translation holds: de, en\)"),  # a code mistyped
    ("translation.de.x", r"record 1: translation.de holds str, not fields, so it has no 'translation.de.x'"),
])
def test_a_field_name_that_leads_nowhere_is_refused_in_one_line(tmp_path, src_field, words):
    """Before: a KeyError or a TypeError ('string indices must be integers') with a traceback."""
    path = tmp_path / "c.jsonl"
    lines = [{"translation": {"de": f"hallo {i}", "en": f"hello {i}"}} for i in range(3)]
    path.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    config = DataConfig(source=str(path), src_field=src_field, tgt_field="translation.en", id_field=None,
                        dev_groups=(), test_groups=())
    with pytest.raises(DataError, match=words):
        read_pairs(config)


def test_a_record_whose_translation_lacks_one_language_is_a_missing_value_not_a_mistaken_name(tmp_path, caplog):
    """{"translation": {"de": "uno"}} among records that have "en": prepare stopped with "no field
    'translation.en'", blaming the config, where the README promises a warning and the pair
    dropped, as for a flat field or a null."""
    import logging

    path = tmp_path / "c.jsonl"
    lines = [{"translation": {"de": f"hallo {i}", "en": f"hello {i}"}} for i in range(4)]
    lines[2]["translation"].pop("en")
    path.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    config = DataConfig(source=str(path), src_field="translation.de", tgt_field="translation.en", id_field=None,
                        dev_groups=(), test_groups=())
    with caplog.at_level(logging.WARNING, logger="nmt.corpus"):
        pairs = read_pairs(config)
    assert [(p.src, p.tgt) for p in pairs] == [("hallo 0", "hello 0"), ("hallo 1", "hello 1"), ("hallo 2", ""),
                                              ("hallo 3", "hello 3")]
    said = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(said) == 1 and "1 record(s) without a value for translation.en (missing or null), the first record 3" \
        in said[0]


@pytest.mark.parametrize("field, value, words", [
    ("es", ["x", "y"], "record 2: es holds a list, not text"),
    ("es", {"text": "x"}, r"record 2: es holds a mapping, not text \(name a field inside it"),
])
def test_a_record_whose_sentence_is_not_text_is_refused(tmp_path, field, value, words):
    """Its Python form ("['x', 'y']") was trained on as a sentence."""
    path = tmp_path / "c.jsonl"
    records = [{"id": "A.1", "es": "hola", "en": "hello"}, {"id": "A.2", "es": value, "en": "bye"}]
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    with pytest.raises(DataError, match=words):
        read_pairs(DataConfig(source=str(path), columns=()))


def test_numbers_are_read_as_written(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text('{"id": 1, "es": 0, "en": 12}\n', encoding="utf-8")
    assert read_pairs(DataConfig(source=str(path), columns=()))[0] == Pair("0", "12", "1")


def test_csv_with_header(tmp_path):
    path = tmp_path / "c.csv"
    path.write_text("source,target\nuno,one\ndos,two\n")
    pairs = read_pairs(DataConfig(source=str(path), columns=(), src_field="source", tgt_field="target",
                                  dev_groups=(), test_groups=()))
    assert [(p.src, p.tgt) for p in pairs] == [("uno", "one"), ("dos", "two")]


@pytest.mark.parametrize("name", ["h.tsv", "h.csv"])
def test_a_table_with_a_header_keeps_every_field_as_written(tmp_path, name):
    """Types were guessed when the first row was a header: ids 01.10 and 01.1 both became 1.1, and
    sentences that are numbers lost their zeros; without a header every field already stayed text."""
    sep = "\t" if name.endswith(".tsv") else ","
    path = tmp_path / name
    path.write_text("".join(sep.join(row) + "\n" for row in [("id", "es", "en"), ("01.1", "007", "1.50"),
                                                             ("01.10", "0", "1e3")]), encoding="utf-8")
    pairs = read_pairs(DataConfig(source=str(path), columns=(), dev_groups=(), test_groups=()))
    assert [(p.id, p.src, p.tgt) for p in pairs] == [("01.1", "007", "1.50"), ("01.10", "0", "1e3")]
    path.write_text(f"id{sep}es{sep}es\nA.1{sep}hola{sep}hello\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"h\.(tsv|csv): the header names es twice; every column needs a name of its own"):
        read_pairs(DataConfig(source=str(path), columns=(), dev_groups=(), test_groups=()))


@pytest.mark.parametrize("name", ["excel.csv", "excel.tsv", "corpus.tsv-export.csv"])
def test_a_header_after_a_byte_order_mark_and_a_csv_named_tsv_something_read_right(tmp_path, name):
    """Excel's "CSV UTF-8" starts with a byte-order mark, which named the first column "\ufeffid"
    ("no id column 'id' (columns: en, es, \ufeffid)"); and any name holding ".tsv" was read as TSV."""
    sep = "\t" if name.endswith(".tsv") else ","
    path = tmp_path / name
    path.write_bytes("\ufeff".encode() + f"id{sep}es{sep}en\nA.1{sep}hola{sep}hello\nB.1{sep}adiós{sep}bye\n".encode())
    pairs = read_pairs(DataConfig(source=str(path), columns=(), dev_groups=("B",), test_groups=()))
    assert [(p.id, p.src, p.tgt) for p in pairs] == [("A.1", "hola", "hello"), ("B.1", "adiós", "bye")]


def test_invalid_utf8_inside_a_json_string_names_the_file_and_record(tmp_path):
    """JSON's reader let the bad bytes through, and the error blamed "input" at a line and byte
    of the sentence itself."""
    path = tmp_path / "c.jsonl"
    path.write_bytes(b"".join(b'{"id": "A.%d", "es": "hola", "en": "hello"}\n' % i for i in range(350))
                     + b'{"id": "A.350", "es": "ma\xe1ana", "en": "tomorrow"}\n')
    with pytest.raises(DataError, match=r"c\.jsonl: record 351 is not valid UTF-8"):
        read_pairs(DataConfig(source=str(path), dev_groups=(), test_groups=()))


@pytest.mark.parametrize("long_row", [0, 5])
def test_a_field_longer_than_csv_s_limit_is_read_and_left_to_the_length_filter(tmp_path, long_row):
    """csv's default limit (131,072 characters a field), in the checks before loading, refused a
    file whose first row had such a field and ended in a traceback when a later one did."""
    rows = [(f"A.{i}", f"hola {i}", f"hello {i}") for i in range(10)]
    rows[long_row] = (rows[long_row][0], "palabra " * 20_000, "word")
    rows[7] = rows[7][:2]  # a short row: its warning reads every row
    path = tmp_path / "long.tsv"
    path.write_text("".join("\t".join(row) + "\n" for row in rows), encoding="utf-8")
    pairs = read_pairs(DataConfig(source=str(path)))
    assert len(pairs) == 10 and len(pairs[long_row].src) > 131_072


def test_groups_without_an_id_column_are_refused_in_one_line(tmp_path):
    """Line numbers stood in for the ids, and the split then listed them as the groups found."""
    path = tmp_path / "c.csv"
    path.write_text("source,target\nuno,one\ndos,two\n")
    config = DataConfig(source=str(path), columns=(), src_field="source", tgt_field="target", dev_groups=("RUT",))
    with pytest.raises(DataError, match=r"no id column 'id' \(columns: source, target\) for data.dev_groups"):
        read_pairs(config)


def test_aligned_text_files_and_random_split(tmp_path):
    src, tgt = tmp_path / "a.es", tmp_path / "a.en"
    src.write_text("".join(f"frase {i}\n" for i in range(30)))
    tgt.write_text("".join(f"sentence {i}\n" for i in range(30)))
    config = DataConfig(source=str(src), target=str(tgt), dev_groups=(), test_groups=(), dev_size=5, test_size=5)
    prepared = prepare(config)
    sizes = {n: len(p) for n, p in prepared.splits.items()}
    assert sizes == {"train": 20, "dev": 5, "test": 5}
    again = prepare(config)  # seeded: the same split every time
    assert [p.src for p in again.splits["dev"]] == [p.src for p in prepared.splits["dev"]]
    all_src = {p.src for split in prepared.splits.values() for p in split}
    assert len(all_src) == 30  # nothing lost, nothing duplicated


def test_a_filter_dropping_a_large_share_of_the_pairs_is_a_warning(tmp_path, caplog):
    """English–Thai: the Thai side counts a word or two at spaces, and 976 of 2,000 pairs went past
    data.max_ratio, said only in an INFO line. A tenth or more is now a warning naming the setting."""
    import logging

    path = tmp_path / "c.tsv"
    rows = [f"X.1.{i}\tthe cat sat on the mat today\tแมวนั่งบนเสื่อวันนี้" for i in range(4)]
    rows += [f"X.2.{i}\tthe cat sat\tแมว นั่ง บน" for i in range(16)]
    rows += ["D.1.1\tthe cat\tแมว นั่ง", "T.1.1\tthe mat\tเสื่อ นี้"]
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    config = DataConfig(source=str(path), src_lang="en", tgt_lang="th", columns=("id", "en", "th"), src_field="en",
                        tgt_field="th", dev_groups=("D",), test_groups=("T",))
    for ratio, warned in ((3.0, True), (10.0, False)):
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="nmt.data"):
            prepared = prepare(dataclasses.replace(config, max_ratio=ratio))
        said = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert prepared.dropped.get("length_ratio", 0) == (4 if warned else 0)
        assert len(said) == warned
        assert not warned or said[0].startswith(f"{path}: 4 of 22 pairs (18 %) dropped as past data.max_ratio=3; ")


def test_filters_count_what_they_drop(tmp_path):
    path = tmp_path / "c.tsv"
    rows = [
        "X.1.1\tuna frase corta\ta short sentence",
        "X.1.2\t\tempty source",
        "X.1.3\tuno\tone two three four five six seven",
        "X.1.4\t" + "palabra " * 20 + "\t" + "word " * 20,
        "D.1.1\tuna frase\ta sentence",
        "T.1.1\totra frase\tanother sentence",
    ]
    path.write_text("\n".join(rows) + "\n")
    config = DataConfig(source=str(path), max_words=10, max_ratio=3.0, dev_groups=("D",), test_groups=("T",))
    prepared = prepare(config)
    assert {name: len(pairs) for name, pairs in prepared.splits.items()} == {"train": 1, "dev": 1, "test": 1}
    assert dict(prepared.dropped) == {"empty": 1, "length_ratio": 1, "too_long": 1}


def test_test_pairs_whose_source_is_also_in_training_are_counted_and_warned_about(tmp_path, caplog):
    """A corpus that repeats sentences puts copies on both sides of a random split: scores on
    them measure memory. They were neither counted nor said."""
    import json
    import logging

    path = tmp_path / "c.tsv"
    rows = [f"A.{i}\thola {i % 30} amigo\thello {i} friend\n" for i in range(120)]  # 30 sources, 4 times each
    path.write_text("".join(rows), encoding="utf-8")
    config = DataConfig(source=str(path), dev_groups=(), test_groups=(), dev_size=10, test_size=10)
    with caplog.at_level(logging.INFO, logger="nmt.data"):
        prepared = prepare(config)
    seen = prepared.seen_in_train
    assert seen == {"dev": 10, "test": 10}  # with 90 of 120 in training, every source's copy is there
    assert [r.levelname for r in caplog.records if "also in the training split" in r.getMessage()] == ["INFO", "WARNING"]
    assert "10 of 10 test pairs have a source sentence that is also in the training split" in caplog.text
    write_splits(prepared, tmp_path / "data", config)
    assert json.loads((tmp_path / "data" / "stats.json").read_text())["source_in_train"] == seen


def test_a_random_split_stays_put_as_the_corpus_grows_or_its_lines_move(tmp_path):
    """One line added to a 2,000-line corpus moved 35 of its 100 test pairs into training (a shuffle
    of line numbers): a model trained again on the grown corpus learned them."""
    pairs = [f"X.{i}\tfrase número {i}\tsentence number {i}\n" for i in range(2000)]
    config = DataConfig(source=str(tmp_path / "c.tsv"), dev_groups=(), test_groups=(), dev_size=100, test_size=100)

    def splits(rows):
        (tmp_path / "c.tsv").write_text("".join(rows), encoding="utf-8")
        return {name: {p.src for p in chosen} for name, chosen in prepare(config).splits.items()}

    before = splits(pairs)
    grown = splits(["X.new\tuna frase nueva\ta new sentence\n", *pairs])
    assert len(before["test"] & grown["train"]) <= 1 and len(before["dev"] - grown["dev"]) <= 1
    assert len(before["test"] ^ grown["test"]) <= 4  # at most one out, one in, and the new pair's own push
    assert splits(pairs[::-1]) == before  # the same pairs in another order: the same split
    config = dataclasses.replace(config, seed=2)
    assert len(splits(pairs)["test"] & before["test"]) < 20  # another seed, another sample


@pytest.mark.parametrize("source", ["no/such/file.tsv", "missing.jsonl", "corpus.tsv.gz", "./nothing-here"])
def test_missing_file(source):
    """A relative path is the working folder's, not the config file's: the error says which folder."""
    import re
    from pathlib import Path

    with pytest.raises(DataError, match=f"data file not found: {re.escape(str(Path(source)))} \\(relative to the "
                                        f"working folder, {re.escape(str(Path.cwd()))}\\)$"):
        read_pairs(DataConfig(source=source))
    with pytest.raises(DataError, match=r"data file not found: /no/such\.tsv$"):
        read_pairs(DataConfig(source="/no/such.tsv"))


def test_an_empty_folder_or_one_sided_text_file_as_the_source_is_refused(tmp_path):
    (tmp_path / "corpus" / ".cache").mkdir(parents=True)  # (what a download leaves beside the files)
    with pytest.raises(DataError, match="corpus is an empty folder; data.source names a data file, a folder holding"):
        read_pairs(DataConfig(source=str(tmp_path / "corpus")))
    (tmp_path / "side.es").write_text("hola\n")
    with pytest.raises(DataError, match="side.es is a plain text file, one side of the corpus: set data.target"):
        read_pairs(DataConfig(source=str(tmp_path / "side.es")))  # read as comma-separated before
    with pytest.raises(DataError, match="is a table, but data.target pairs two plain text files"):
        read_pairs(DataConfig(source=str(TINY_TSV), target=str(tmp_path / "side.es")))


@pytest.mark.parametrize("compress", [None, "gz", "xz"])
def test_aligned_text_files_are_split_into_lines_as_wc_counts_them(tmp_path, compress):
    """A stray carriage return inside a sentence (CRLF files edited by hand, spreadsheet exports)
    and a byte-order mark: 4 lines by ``wc -l`` on each side are 4 pairs, in order. datasets' text
    loader split at the lone "\r" (5 lines against 4: "differ in line count") and kept the mark in
    the first sentence."""
    import gzip
    import lzma

    sides = {"es": "\ufeffuno\r\ndos\rdos y medio\r\ntres\u2028tres\r\ncuatro\r\n",
             "en": "one\ntwo and a half\nthree\ncuatro four\n"}
    paths = {}
    for lang, text in sides.items():
        data = text.encode("utf-8")
        paths[lang] = tmp_path / (f"c.{lang}" + (f".{compress}" if compress else ""))
        paths[lang].write_bytes({"gz": gzip.compress, "xz": lzma.compress}.get(compress, bytes)(data))
        assert data.count(b"\n") == 4  # wc -l
    pairs = read_pairs(DataConfig(source=str(paths["es"]), target=str(paths["en"])))
    assert [(p.src, p.tgt) for p in pairs] == [("uno", "one"), ("dos\rdos y medio", "two and a half"),
                                               ("tres\u2028tres", "three"), ("cuatro", "cuatro four")]
    assert filter_pairs(pairs, DataConfig())[0][1].src == "dos dos y medio"  # "\r" is whitespace to normalise


@pytest.mark.parametrize("suffix", ["tsv", "csv"])
@pytest.mark.parametrize("header", [True, False])
@pytest.mark.parametrize("end", ["\n", "\r\n"])
def test_a_table_row_ends_at_its_line_end_not_at_a_carriage_return_inside_it(tmp_path, suffix, header, end):
    """A lone "\r" inside a sentence split its row in two: both halves were dropped (as empty) and
    the second's text read as an id. Now each line is one row, in files with LF or CRLF line ends,
    with a header or named by data.columns; a CRLF's "\r" is in no name, id or sentence."""
    sep = "\t" if suffix == "tsv" else ","
    rows = [("es", "en", "id"), ("hola mundo", "hello world", "a.1"), ("la ca\rsa", "the house", "b.1"),
            ("el perro", "the dog", "c.1")]  # the id last: where a CRLF's "\r" would stay
    path = tmp_path / f"t.{suffix}"
    path.write_bytes("".join(sep.join(row) + end for row in rows[0 if header else 1:]).encode())
    config = DataConfig(source=str(path), columns=[] if header else ["es", "en", "id"], dev_groups=[], test_groups=[])
    pairs = read_pairs(config)
    assert [(p.src, p.tgt, p.id) for p in pairs] == [(es, en.rstrip("\r"), i) for es, en, i in rows[1:]]
    kept, dropped = filter_pairs(pairs, config)
    assert [p.src for p in kept] == ["hola mundo", "la ca sa", "el perro"] and not dropped
    if header:  # a header read as data where data.columns says there is none: still found, CRLF or not
        with pytest.raises(DataError, match="its first row is a header"):
            read_pairs(dataclasses.replace(config, columns=["es", "en", "id"]))


def test_invalid_utf8_in_the_target_text_file_names_that_file(tmp_path):
    """Where, as an editor shows it: the line, and the byte for a tool that seeks."""
    (tmp_path / "a.es").write_text("uno\ndos\n", encoding="utf-8")
    (tmp_path / "a.en").write_bytes(b"one\ncaf\xe9\n")
    with pytest.raises(DataError, match=r"a\.en: not valid UTF-8 \(line 2, byte 7\)"):
        read_pairs(DataConfig(source=str(tmp_path / "a.es"), target=str(tmp_path / "a.en")))


def test_mismatched_aligned_files(tmp_path):
    (tmp_path / "a.es").write_text("uno\ndos\n")
    (tmp_path / "a.en").write_text("one\n")
    with pytest.raises(DataError, match="differ in line count.*2.*1"):
        read_pairs(DataConfig(source=str(tmp_path / "a.es"), target=str(tmp_path / "a.en")))


@pytest.mark.parametrize("name", ["bad.tsv", "bad.es"])
def test_invalid_utf8(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(b"X.1.1\tcaf\xe9\tcoffee\n")
    other = tmp_path / "bad.en"
    other.write_text("coffee\n")
    config = DataConfig(source=str(path), target=str(other) if name.endswith(".es") else None)
    with pytest.raises(DataError, match="not valid UTF-8"):
        read_pairs(config)


@pytest.mark.parametrize("name", ["long.tsv", "long.csv", "long.tsv.gz"])
def test_a_bad_byte_far_into_a_table_is_named_by_line_and_byte(tmp_path, name):
    """The parsers decode in blocks of a few KB: a bad byte past the first block was reported as
    "not valid UTF-8 (invalid start byte)", with nothing to find it by in a corpus of thousands of
    lines (a byte counted from its block, or none)."""
    import gzip

    separator = b"," if ".csv" in name else b"\t"
    rows = [separator.join([b"id", b"es", b"en"])]
    rows += [separator.join([b"A.%d" % i, b"hola %d" % i, b"hello %d" % i]) for i in range(2000)]
    data = b"\n".join(rows).replace(b"hola 1500", b"hol\xe9 1500") + b"\n"
    path = tmp_path / name
    path.write_bytes(gzip.compress(data) if name.endswith(".gz") else data)
    bad = data.index(b"\xe9")
    assert bad > 32_768 and data.count(b"\n", 0, bad) + 1 == 1502
    with pytest.raises(DataError, match=rf"^{re.escape(str(path))}: not valid UTF-8 \(line 1502, byte {bad}\)$"):
        read_pairs(DataConfig(source=str(path)))


def test_empty_training_set_after_filtering_names_the_filter(tmp_path):
    """It said how many pairs were read, not which setting dropped them."""
    config = DataConfig(source=str(TINY_TSV), min_words=500, max_words=1000)
    with pytest.raises(DataError, match=r"training set is empty after filtering \(\d+ pairs read, dropped: \d+ "
                                        r"under data.min_words=500\)"):
        prepare(config)


@pytest.mark.parametrize("name", ["wmt/wmt14", "someone/corpus-v0.1"])
def test_hub_dataset_names_go_to_the_hub_loader(monkeypatch, name):
    """A name that is not a local path is loaded from the hub with the configured config and split
    (checked offline by standing in for the hub); a dot in the name does not make it a file."""
    import datasets

    calls = []

    def fake_load_dataset(name, config=None, split=None, **options):
        calls.append((name, config, split))
        rows = [{"de": "Hallo Welt", "en": "Hello world"}, {"de": "Guten Tag", "en": "Good day"}]
        return datasets.Dataset.from_dict({"translation": rows})

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    config = DataConfig(source=name, hub_config="de-en", hub_split="validation",
                        src_field="translation.de", tgt_field="translation.en", id_field=None, dev_groups=(),
                        test_groups=())
    pairs = read_pairs(config)
    assert calls == [(name, "de-en", "validation")]
    assert [(p.src, p.tgt) for p in pairs] == [("Hallo Welt", "Hello world"), ("Guten Tag", "Good day")]


HUB_ROWS = [{"de": "Hallo Welt", "en": "Hello world"}, {"de": "Guten Tag", "en": "Good day"},
            {"de": "Danke", "en": "Thanks"}]
HUB_CONFIG = dict(src_field="translation.de", tgt_field="translation.en", id_field=None, dev_groups=(), test_groups=())


def _parquet(path, rows):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path)


def test_a_parquet_file_is_read_as_a_table(tmp_path):
    """The hub's own format (what a dataset's files are when downloaded): columns by name, nested
    translation records too, numbers as written, read without a network."""
    _parquet(tmp_path / "c.parquet", [{"id": f"A.{i}", "es": s, "en": t, "n": i}
                                       for i, (s, t) in enumerate([("hola", "hello"), ("adiós", "bye")], 1)])
    pairs = read_pairs(DataConfig(source=str(tmp_path / "c.parquet")))
    assert [(p.src, p.tgt, p.id) for p in pairs] == [("hola", "hello", "A.1"), ("adiós", "bye", "A.2")]
    assert [p.id for p in read_pairs(DataConfig(source=str(tmp_path / "c.parquet"), id_field="n"))] == ["1", "2"]
    _parquet(tmp_path / "t.parquet", [{"translation": row} for row in HUB_ROWS])
    pairs = read_pairs(DataConfig(source=str(tmp_path / "t.parquet"), **HUB_CONFIG))
    assert [(p.src, p.tgt) for p in pairs] == [(r["de"], r["en"]) for r in HUB_ROWS]
    with pytest.raises(DataError, match="data file not found: .*missing.parquet"):
        read_pairs(DataConfig(source=str(tmp_path / "missing.parquet")))
    (tmp_path / "failed-download.parquet").touch()  # (pyarrow: "Parquet file size is 0 bytes")
    with pytest.raises(DataError, match="failed-download.parquet is empty: no pairs to read"):
        read_pairs(DataConfig(source=str(tmp_path / "failed-download.parquet")))
    (tmp_path / "bad.parquet").write_text("id\tes\ten\n", encoding="utf-8")
    with pytest.raises(DataError, match="cannot load .*bad.parquet: "):
        read_pairs(DataConfig(source=str(tmp_path / "bad.parquet")))


def test_a_hub_dataset_downloaded_to_a_folder_is_read_offline(tmp_path):
    """A hub dataset's files, downloaded (hf download NAME --repo-type dataset --local-dir
    FOLDER): its README's configs and splits are read as the hub name's would be, with
    data.hub_config and data.hub_split, under HF_DATASETS_OFFLINE=1 (set by the tests)."""
    folder = tmp_path / "opus"
    _parquet(folder / "de-en" / "train-00000-of-00001.parquet", [{"translation": row} for row in HUB_ROWS])
    _parquet(folder / "de-en" / "test-00000-of-00001.parquet", [{"translation": HUB_ROWS[0]}])
    _parquet(folder / "de-fr" / "train-00000-of-00001.parquet", [{"translation": {"de": "Ja", "fr": "Oui"}}])
    (folder / ".cache").mkdir()
    (folder / "README.md").write_text(
        "---\nconfigs:\n"
        "- config_name: de-en\n  data_files:\n  - split: train\n    path: de-en/train-*\n"
        "  - split: test\n    path: de-en/test-*\n"
        "- config_name: de-fr\n  data_files:\n  - split: train\n    path: de-fr/train-*\n---\n", encoding="utf-8")
    pairs = read_pairs(DataConfig(source=str(folder), hub_config="de-en", **HUB_CONFIG))
    assert [(p.src, p.tgt) for p in pairs] == [(r["de"], r["en"]) for r in HUB_ROWS]
    test = read_pairs(DataConfig(source=str(folder), hub_config="de-en", hub_split="test", **HUB_CONFIG))
    assert [(p.src, p.tgt) for p in test] == [("Hallo Welt", "Hello world")]
    with pytest.raises(DataError, match=f"cannot load {folder}: .*de-it"):
        read_pairs(DataConfig(source=str(folder), hub_config="de-it", **HUB_CONFIG))
    # none asked for: the configs are named (the error's first line alone said "Config name is missing.")
    with pytest.raises(DataError, match=r"opus holds several configs \['de-en', 'de-fr'\]: set data.hub_config to one$"):
        read_pairs(DataConfig(source=str(folder), **HUB_CONFIG))


def test_a_folder_of_tsv_files_is_read_with_a_warning_that_datasets_rules_apply(tmp_path, caplog):
    """A folder's TSV files go through datasets' CSV reader, which guesses types (ids 01.10 and
    01.1 both read as 1.1) and parses quotes: said, with the way to nmt's own reading."""
    import logging

    (tmp_path / "corpus").mkdir()
    (tmp_path / "corpus" / "train.tsv").write_text("id\tes\ten\nA.1\thola\thello\n", encoding="utf-8")
    with caplog.at_level(logging.WARNING, logger="nmt.corpus"):
        pairs = read_pairs(DataConfig(source=str(tmp_path / "corpus"), columns=()))
    assert [(p.src, p.tgt) for p in pairs] == [("hola", "hello")]
    assert [r.getMessage() for r in caplog.records] == [
        f"{tmp_path / 'corpus'}: its TSV/CSV files (train.tsv) are read by datasets' CSV rules, which guess types (id "
        f"01.10 reads as 1.1) and parse quotes; give one such file directly to have nmt's"]


@pytest.mark.parametrize("splits", [False, True], ids=["dataset", "dataset-dict"])
def test_a_dataset_saved_to_disk_is_read(tmp_path, splits):
    """A folder written by datasets' save_to_disk (load_dataset refuses it); of a DatasetDict the
    split data.hub_split, and a split it does not have is named with those it has."""
    import datasets

    table = datasets.Dataset.from_dict({"translation": HUB_ROWS})
    saved = datasets.DatasetDict({"train": table, "validation": table.select([0])}) if splits else table
    saved.save_to_disk(str(tmp_path / "saved"))
    pairs = read_pairs(DataConfig(source=str(tmp_path / "saved"), **HUB_CONFIG))
    assert [(p.src, p.tgt) for p in pairs] == [(r["de"], r["en"]) for r in HUB_ROWS]
    if splits:
        pairs = read_pairs(DataConfig(source=str(tmp_path / "saved"), hub_split="validation", **HUB_CONFIG))
        assert len(pairs) == 1
        with pytest.raises(DataError, match=r"saved: no split 'test' for data.hub_split \(splits: train, validation\)"):
            read_pairs(DataConfig(source=str(tmp_path / "saved"), hub_split="test", **HUB_CONFIG))
    else:  # one split only: another asked for was read whole, without a word
        with pytest.raises(DataError, match=r"saved is a single dataset saved with save_to_disk, without splits; "
                                            r"leave data.hub_split as train, not 'test'$"):
            read_pairs(DataConfig(source=str(tmp_path / "saved"), hub_split="test", **HUB_CONFIG))
    with pytest.raises(DataError, match="saved is a dataset saved with save_to_disk, which has no configs; leave "
                                        r"data.hub_config empty \(null\)"):  # it was ignored without a word
        read_pairs(DataConfig(source=str(tmp_path / "saved"), hub_config="de-en", **HUB_CONFIG))


def test_an_empty_parquet_file_is_refused_in_one_line(tmp_path):
    """A Parquet file without rows is empty, as a TSV file without lines is (datasets' reader
    stopped at its one row group of none: "BatchSize must be greater than 0, got 0")."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"es": pa.array([], pa.string()), "en": pa.array([], pa.string())}),
                   tmp_path / "c.parquet")
    with pytest.raises(DataError, match=r"c.parquet is empty: no pairs to read"):
        read_pairs(DataConfig(source=str(tmp_path / "c.parquet"), **HUB_CONFIG | dict(src_field="es", tgt_field="en")))


@pytest.mark.parametrize("shard", ["no-rows", "0-bytes"])
def test_an_empty_parquet_shard_in_a_folder_is_named(tmp_path, shard):
    """One empty shard among a folder's files (an interrupted download leaves 0 bytes) fails the
    load, and the error names the file (datasets' said "BatchSize must be greater than 0, got 0" or
    "Parquet file size is 0 bytes", naming none)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = tmp_path / "corpus"
    _parquet(folder / "data" / "train-00000-of-00002.parquet", [{"translation": row} for row in HUB_ROWS])
    empty = folder / "data" / "train-00001-of-00002.parquet"
    if shard == "0-bytes":
        empty.touch()
    else:
        pq.write_table(pa.table({"translation": pa.array([], pa.struct([("de", pa.string()), ("en", pa.string())]))}),
                       empty)
    with pytest.raises(DataError, match=f"^cannot load {re.escape(str(folder))}: {re.escape(str(empty))} is empty "
                                        r"\(no rows\); remove it or download it again$"):
        read_pairs(DataConfig(source=str(folder), **HUB_CONFIG))
    with pytest.raises(DataError) as failed:  # a load failing for another reason is not blamed on it
        read_pairs(DataConfig(source=str(folder), hub_config="de-it", **HUB_CONFIG))
    assert "de-it" in str(failed.value) and "is empty" not in str(failed.value)


@pytest.mark.parametrize("setting", [dict(hub_split="test"), dict(hub_config="de-en")], ids=["split", "config"])
@pytest.mark.parametrize("kind", ["parquet", "tsv", "text-pair"])
def test_a_file_refuses_a_hub_config_or_split_it_would_ignore(tmp_path, setting, kind):
    """A file has no configs or splits: data.hub_split: test read a whole file as if it were the
    test split, without a word; the defaults read it as before."""
    if kind == "parquet":
        _parquet(tmp_path / "c.parquet", [{"translation": row} for row in HUB_ROWS])
        config = dict(source=str(tmp_path / "c.parquet"), **HUB_CONFIG)
    elif kind == "tsv":
        (tmp_path / "c.tsv").write_text("A.1\thola\thello\n", encoding="utf-8")
        config = dict(source=str(tmp_path / "c.tsv"), dev_groups=(), test_groups=())
    else:
        (tmp_path / "c.es").write_text("hola\n", encoding="utf-8")
        (tmp_path / "c.en").write_text("hello\n", encoding="utf-8")
        config = dict(source=str(tmp_path / "c.es"), target=str(tmp_path / "c.en"), dev_groups=(), test_groups=())
    assert len(read_pairs(DataConfig(**config))) >= 1
    with pytest.raises(DataError, match=r"c\.(parquet|tsv|es) is a file, without configs or splits: leave "
                                        r"data.hub_config empty \(null\) and data.hub_split as train"):
        read_pairs(DataConfig(**config, **setting))


def test_an_arrow_file_is_read_as_a_table(tmp_path):
    """An Arrow file: one of datasets' own (its cache, a save_to_disk folder's data file, Arrow
    streams) or an Arrow IPC file written by pyarrow; it was called "a plain text file"."""
    import datasets
    import pyarrow as pa

    datasets.Dataset.from_dict({"translation": HUB_ROWS}).save_to_disk(str(tmp_path / "saved"))
    [stream] = (tmp_path / "saved").glob("*.arrow")
    pairs = read_pairs(DataConfig(source=str(stream), **HUB_CONFIG))
    assert [(p.src, p.tgt) for p in pairs] == [(r["de"], r["en"]) for r in HUB_ROWS]
    table = pa.Table.from_pylist([{"id": "A.1", "es": "hola", "en": "hello"}])
    with pa.OSFile(str(tmp_path / "c.arrow"), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)
    assert [(p.src, p.tgt, p.id) for p in read_pairs(DataConfig(source=str(tmp_path / "c.arrow")))] == [
        ("hola", "hello", "A.1")]
    with pa.OSFile(str(tmp_path / "none.arrow"), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table.slice(0, 0))
    (tmp_path / "failed.arrow").touch()
    with pa.OSFile(str(tmp_path / "none-stream.arrow"), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table.slice(0, 0))  # an Arrow stream, as datasets writes, of no rows
    for empty in ("none.arrow", "failed.arrow", "none-stream.arrow"):
        with pytest.raises(DataError, match=f"^{re.escape(str(tmp_path / empty))} is empty: no pairs to read$"):
            read_pairs(DataConfig(source=str(tmp_path / empty)))
    with pytest.raises(DataError, match="data file not found: .*missing.arrow"):
        read_pairs(DataConfig(source=str(tmp_path / "missing.arrow")))


def test_a_folder_whose_readme_has_no_configs_is_read_without_log_lines(tmp_path, caplog):
    """A README without YAML front matter (a corpus's own notes): the files are read by their layout,
    and huggingface_hub's "Repo card metadata block was not found" (twice: its handler and the
    root's) stays off stderr, where the command line prints its one-line errors."""
    folder = tmp_path / "corpus"
    _parquet(folder / "data" / "train-00000-of-00001.parquet", [{"translation": row} for row in HUB_ROWS])
    (folder / "README.md").write_text("# A corpus\n", encoding="utf-8")
    pairs = read_pairs(DataConfig(source=str(folder), **HUB_CONFIG))
    assert [(p.src, p.tgt) for p in pairs] == [(r["de"], r["en"]) for r in HUB_ROWS]
    assert [record.getMessage() for record in caplog.records if record.name.startswith("huggingface_hub")] == []


def test_a_data_folder_is_stamped_by_the_files_in_it(tmp_path, monkeypatch):
    """make reruns data preparation when a file in a data.source folder changes, as when a file
    does; a download's hidden cache is left out."""
    import os

    monkeypatch.syspath_prepend(str(ROOT / "pipelines"))
    from stamp_config import _data_files

    _parquet(tmp_path / "opus" / "de-en" / "train.parquet", [{"translation": HUB_ROWS[0]}])
    (tmp_path / "opus" / ".cache" / "huggingface").mkdir(parents=True)
    (tmp_path / "opus" / ".cache" / "huggingface" / "x.lock").write_text("")
    before = _data_files(str(tmp_path / "opus"), None)
    assert list(before) == [f"{tmp_path}/opus/de-en/train.parquet"]
    assert _data_files(f"{tmp_path}/opus/", None) == before  # a trailing slash: the same keys (not opus//de-en)
    os.utime(tmp_path / "opus" / "de-en" / "train.parquet", ns=(0, 10**9))
    assert _data_files(str(tmp_path / "opus"), None) != before


def test_a_data_folder_s_linked_folders_are_stamped_too(tmp_path, monkeypatch):
    """A folder inside data.source that is a link to another (the shards kept on a bigger disk) is
    read by datasets, so its files are in make's stamp: a changed shard reruns preparation."""
    import os

    monkeypatch.syspath_prepend(str(ROOT / "pipelines"))
    from stamp_config import _data_files

    _parquet(tmp_path / "disk" / "de-en" / "train.parquet", [{"translation": HUB_ROWS[0]}])
    (tmp_path / "opus").mkdir()
    (tmp_path / "opus" / "de-en").symlink_to(tmp_path / "disk" / "de-en")
    before = _data_files(str(tmp_path / "opus"), None)
    assert list(before) == [f"{tmp_path}/opus/de-en/train.parquet"]
    os.utime(tmp_path / "disk" / "de-en" / "train.parquet", ns=(0, 10**9))
    assert _data_files(str(tmp_path / "opus"), None) != before


def test_hub_dataset_offline_is_a_clear_error():
    """With HF_DATASETS_OFFLINE=1 (set by the tests) a hub name fails with one line, no traceback."""
    with pytest.raises(DataError, match="cannot load no-such-user/no-such-corpus"):
        read_pairs(DataConfig(source="no-such-user/no-such-corpus"))


@pytest.mark.parametrize("name, columns, text, short, line", [
    ("few.tsv", (), "id\tes\ten\nA.1\thola\thello\nA.2\tsolo español\nA.3\tadiós\tbye\nA.4\tuno\n", 2, 3),
    ("few.csv.gz", ("id", "es", "en"), "A.1,hola,hello\n\nA.2,\"sí, solo\"\nA.3,adiós,bye\n", 1, 3),
], ids=["tsv-header", "csv-gz-headerless"])
def test_rows_with_fewer_fields_than_columns_are_named_in_a_warning(tmp_path, caplog, name, columns, text, short,
                                                                     line):
    """A missing tab read as an empty sentence: the pair is dropped as empty, so the rows are named.
    An empty field in a whole row is no warning."""
    import logging

    path = tmp_path / name
    path.write_bytes(gzip.compress(text.encode()) if name.endswith(".gz") else text.encode())
    with caplog.at_level(logging.WARNING, logger="nmt.delimited"):
        read_pairs(DataConfig(source=str(path), columns=columns))
    assert [r.getMessage() for r in caplog.records] == [
        f"{path}: {short} row(s) with fewer fields than the 3 columns (id, es, en), the first at line {line}: their "
        f"missing fields read as empty, and such pairs are dropped"]
    caplog.clear()
    whole = tmp_path / "whole.tsv"
    whole.write_text("id\tes\ten\nA.1\thola\t\n", encoding="utf-8")
    with caplog.at_level(logging.WARNING, logger="nmt.delimited"):
        assert read_pairs(DataConfig(source=str(whole), columns=()))[0].tgt == ""
    assert caplog.records == []


def test_jsonl_records_without_a_field_are_named_in_a_warning(tmp_path, caplog):
    import logging

    path = tmp_path / "c.jsonl"
    path.write_text('{"id": "A.1", "es": "hola", "en": "hello"}\n{"id": "A.2", "es": "solo"}\n'
                    '{"id": "A.3", "es": "uno", "en": null}\n{"id": "A.4", "es": "", "en": "empty"}\n', encoding="utf-8")
    with caplog.at_level(logging.WARNING, logger="nmt.corpus"):
        pairs = read_pairs(DataConfig(source=str(path)))
    assert [(p.src, p.tgt) for p in pairs] == [("hola", "hello"), ("solo", ""), ("uno", ""), ("", "empty")]
    assert [r.getMessage() for r in caplog.records] == [
        f"{path}: 2 record(s) without a value for en (missing or null), the first record 2: read as empty, "
        f"and such pairs are dropped"]  # an empty string is a value: no warning for A.4


def test_an_unreachable_hub_says_what_it_tried_and_fails_in_one_line(monkeypatch, caplog):
    """Without a network huggingface_hub logged each of its retries twice (22 lines over 23 s)
    before the error; now one line says what is tried, then the error (a stand-in for the hub)."""
    import logging

    import datasets

    def unreachable(name, config=None, split=None, **options):
        for retry in range(1, 6):
            logging.getLogger("huggingface_hub.utils._http").warning("Retrying in 1s [Retry %d/5].", retry)
        raise ConnectionError(f"Couldn't reach '{name}' on the Hub (LocalEntryNotFoundError)")

    monkeypatch.setattr(datasets, "load_dataset", unreachable)
    level = logging.getLogger("huggingface_hub").level
    with caplog.at_level(logging.INFO), pytest.raises(DataError, match=r"^cannot load some/corpus: Couldn't reach"):
        read_pairs(DataConfig(source="some/corpus"))
    assert [r.getMessage() for r in caplog.records] == ["loading some/corpus from the Hugging Face Hub"]
    assert logging.getLogger("huggingface_hub").level == level  # as it was


@pytest.mark.parametrize("name", ["refs.en", "refs.en.gz"])
def test_lines_are_read_as_sacrebleu_reads_them(tmp_path, name):
    """A plain file and a gzipped one (sacreBLEU reads .gz references)."""
    from sacrebleu.utils import smart_open

    path = tmp_path / name
    data = "one\u2028two\nthree\x85four\x0c\nfive\r\n\nsix\rseven".encode()
    path.write_bytes(gzip.compress(data) if name.endswith(".gz") else data)
    with smart_open(str(path)) as handle:
        theirs = [line.rstrip("\r\n") for line in handle]
    assert read_lines(path) == theirs == ["one\u2028two", "three\x85four\x0c", "five", "", "six\rseven"]
    assert split_lines("") == [] and split_lines("\n") == [""]


@pytest.mark.parametrize("suffix", [".bz2", ".xz"])
def test_compressed_files_are_read_and_broken_ones_are_one_line_errors(tmp_path, suffix):
    import bz2
    import lzma

    compress = {".bz2": bz2.compress, ".xz": lzma.compress}[suffix]
    path = tmp_path / f"in.es{suffix}"
    path.write_bytes(compress("uno\r\ndos\rtres\n".encode()))
    assert read_lines(path) == ["uno", "dos\rtres"]
    path.write_bytes(compress(b"uno\n")[:12])  # cut short, as by a full disk
    with pytest.raises(DataError, match=rf"in\.es{re.escape(suffix)}: not a valid {suffix[1:]} file \("):
        read_lines(path)
    path.with_suffix(".gz").write_bytes(b"plain text\n")  # a name that lies
    with pytest.raises(DataError, match=r"in\.es\.gz: not a valid gz file \(Not a gzipped file"):
        read_lines(path.with_suffix(".gz"))


@pytest.mark.parametrize("name, text", [("c.tsv", ""), ("c.tsv", "\n\n"), ("c.jsonl", ""), ("c.tsv.gz", "")])
def test_an_empty_corpus_file_is_named_empty(tmp_path, name, text):
    """The parsers said "No columns to parse from file", 'Instruction "train" corresponds to no
    data!' or "StopIteration"."""
    path = tmp_path / name
    path.write_bytes(gzip.compress(text.encode()) if name.endswith(".gz") else text.encode())
    for columns in ((), ("id", "es", "en")):
        with pytest.raises(DataError, match=f"^{re.escape(str(path))} is empty: no pairs to read$"):
            read_pairs(DataConfig(source=str(path), columns=columns))


@pytest.mark.parametrize("name, text", [("h.tsv", "id\tes\ten\n"), ("h.csv", "id,es,en\r\n\n")])
def test_a_header_with_no_rows_under_it_is_named_as_such(tmp_path, name, text):
    """datasets said 'Instruction "train" corresponds to no data!'."""
    path = tmp_path / name
    path.write_text(text, encoding="utf-8", newline="")
    with pytest.raises(DataError, match=f"^{re.escape(str(path))} has a header row \\(id, es, en\\) and no rows "
                                        f"under it: no pairs to read$"):
        read_pairs(DataConfig(source=str(path), columns=()))


@pytest.mark.parametrize("kind", ["parquet", "arrow"])
def test_a_compressed_parquet_or_arrow_file_is_refused_by_name(tmp_path, kind):
    """pyarrow reads these by their footer or stream, not through a decompressor: a gzipped
    Parquet file was "corrupted or … not a parquet file", a gzipped Arrow file failed on its bytes."""
    import gzip

    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pylist([{"id": "A.1", "es": "hola", "en": "hello"}])
    plain = tmp_path / f"c.{kind}"
    if kind == "parquet":
        pq.write_table(table, plain)
    else:
        with pa.OSFile(str(plain), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
            writer.write_table(table)
    packed = tmp_path / f"c.{kind}.gz"
    packed.write_bytes(gzip.compress(plain.read_bytes()))
    assert [(p.src, p.tgt) for p in read_pairs(DataConfig(source=str(plain)))] == [("hola", "hello")]
    name = kind.capitalize()
    with pytest.raises(DataError, match=f"^{re.escape(str(packed))} is a compressed {name} file, which cannot "
                                        f"be read as it is: decompress it first$"):
        read_pairs(DataConfig(source=str(packed)))


def test_the_length_filters_keep_their_limits_and_look_at_both_sides():
    """max_words and max_ratio are the most kept (a pair at the limit stays); min_words the fewest,
    on the shorter side, source or target."""
    config = DataConfig(min_words=2, max_words=6, max_ratio=2.0)
    words = lambda n: " ".join(["w"] * n)  # noqa: E731
    cases = {
        (6, 6): None, (7, 6): "too_long", (6, 7): "too_long",  # max_words: at it kept, past it dropped
        (3, 6): None, (6, 3): None, (4, 7): "too_long",  # max_ratio 2: exactly 2 kept
        (2, 5): "length_ratio", (5, 2): "length_ratio",
        (2, 2): None, (1, 2): "too_short", (2, 1): "too_short",  # min_words on either side
    }
    for (n_src, n_tgt), dropped in cases.items():
        kept, counts = filter_pairs([Pair(words(n_src), words(n_tgt), "X.1.1")], config)
        assert (dict(counts), len(kept)) == (({dropped: 1}, 0) if dropped else ({}, 1)), (n_src, n_tgt)
