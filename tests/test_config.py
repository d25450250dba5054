"""Configs: typed, frozen, unknown keys and wrong types are errors, overrides work."""

import dataclasses
from pathlib import Path

import pytest

from conftest import ROOT, TINY_CONFIG
from nmt.config import ConfigError, DecodePrecision, choice_error, load_config, run_paths

ROOT_CONFIGS = ["configs/bible-es-en.yaml", "configs/tiny.yaml"]


@pytest.mark.parametrize("path", ROOT_CONFIGS)
def test_shipped_configs_load(path):
    from conftest import ROOT

    config = load_config(ROOT / path)
    assert config.model.cell in ("lstm", "gru", "rnn")
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.model.emb_dim = 3


def test_default_config_documents_every_key():
    """Every field of every section appears in the commented default config."""
    from conftest import ROOT
    import yaml

    raw = yaml.safe_load((ROOT / "configs/bible-es-en.yaml").read_text())
    defaults = load_config(None).to_dict()
    for section, values in defaults.items():
        if isinstance(values, dict):
            assert set(raw[section]) == set(values), section


def test_unknown_key_is_an_error(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model:\n  hiden: 3\n")
    with pytest.raises(ConfigError, match="unknown config key model.hiden"):
        load_config(path)


@pytest.mark.parametrize(
    "overrides,message",
    [
        ("model.emb_dim=big", "expected an integer"),
        ("model.cell=lstmx", "not one of"),
        ("train.lr=[1]", "expected a number"),
        ("model.tie_embeddings=1", "expected true or false"),
        ("nosuchsection.x=1", "unknown config key nosuchsection"),
        ("model.enc_layers=5", "between 1 and 4"),
        ("model.attention=none", "input_feeding needs attention"),
        ("train.trim_heap_every=-1", "train.trim_heap_every must be at least 0, not -1"),
        ("train.valid_every=0", "train.valid_every must be at least 1, not 0"),
        ("train.lr=-1", "train.lr must be greater than 0, not -1.0"),
        ("model.enc_hidden=-3", "model.enc_hidden must be at least 1, not -3"),
        ("decode.alpha=-0.5", "decode.alpha must be between 0 and 10, not -0.5"),
        ("decode.alpha=300", "decode.alpha must be between 0 and 10, not 300.0"),  # lp overflowed
        ("decode.max_len_ratio=-1", "decode.max_len_ratio must be between 0 and 100"),
        ("decode.max_len_ratio=1e300", "decode.max_len_ratio must be between 0 and 100"),  # a limit wrapped negative
        ("decode.max_len_offset=10000000000000000000", "decode.max_len_offset must be between 0 and 1000000"),
        ("decode.max_len_ratio=0.5 decode.max_len_offset=0", "leave a one-piece source no target token"),
        ("tokenizer.character_coverage=1.5", r"character_coverage must be in \[0.98, 1\]"),
        ("tokenizer.character_coverage=0.9", r"character_coverage must be in \[0.98, 1\]"),
        ("tokenizer.max_sentences=100", r"max_sentences must be 0 \(every sentence\) or above 100"),
        ("tokenizer.max_sentences=-1", "tokenizer.max_sentences must be at least 0, not -1"),
        ("train.max_tokens=0", "train.max_tokens must be at least train.max_train_len"),
        ("train.precision=int8", "not one of"),  # int8 is for decoding only
        ("decode.batch_size=0", "decode.batch_size must be at least 1"),
        # NaN fails every comparison, so it passed each range above; infinity has no meaning here
        ("train.lr=.nan", "train.lr must be a number, not nan"),
        ("train.lr=nan", "train.lr must be a number, not nan"),
        ("train.lr=.inf", "train.lr must be a finite number, not inf"),
        ("train.clip_norm=.nan", "train.clip_norm must be a number, not nan"),
        ("train.max_minutes=.nan", "train.max_minutes must be a number, not nan"),
        ("data.max_ratio=.inf", "data.max_ratio must be a finite number, not inf"),
        ("decode.max_len_ratio=.inf", "decode.max_len_ratio must be a finite number, not inf"),
        ("train.seed=-1", "train.seed must be between 0 and 18446744073709551615, not -1"),
        ("train.seed=18446744073709551616", "train.seed must be between 0 and 18446744073709551615"),
        ("data.seed=-1", "data.seed must be between 0 and 18446744073709551615, not -1"),
        # data: each of these prepared a corpus that was wrong, or failed later with a puzzling message
        ("data.src_lang=en", r"data.src_lang and data.tgt_lang are both 'en': they name the split files"),
        # the languages end file names: these wrote outside the run, made folders, or lost a side
        ("data.src_lang=../../../escape", r"data.src_lang ends file names \(train.<lang>\), so it must be a plain "
                                          r"name, without / or \\, not '../../../escape'"),
        ("data.src_lang=es/x", r"data.src_lang ends file names .* not 'es/x'"),
        ("data.tgt_lang=en\\x", r"data.tgt_lang ends file names .* not 'en\\\\x'"),
        ("data.src_lang=''", r"data.src_lang ends file names .* not ''"),
        ("data.tgt_lang=..", r"data.tgt_lang ends file names .* not '..'"),
        ('data.src_lang="es\\0"', r"data.src_lang ends file names .* not 'es\\x00'"),  # NUL: a traceback from open()
        ("data.tgt_lang=ids", r"data.tgt_lang cannot be 'ids': train.ids holds the pairs' ids"),
        ("data.src_lang=EN", r"data.src_lang 'EN' and data.tgt_lang 'en' differ only in case"),
        ("data.src_field=en", "data.src_field and data.tgt_field are both 'en'"),
        ("data.dev_groups=[RUT] data.test_groups=[RUT]", "data.dev_groups and data.test_groups share RUT"),
        ("data.id_field=null", r"split by the ids' groups, but data.id_field is null: give both as \[\]"),
        ("data.target=b.en", "data.target pairs two text files, which carry no ids"),
        ("data.min_words=50 data.max_words=10", r"data.min_words \(50\) is above data.max_words \(10\)"),
    ],
)
def test_bad_values_are_errors(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(TINY_CONFIG, overrides.split())


def test_no_float_setting_takes_nan_or_infinity():
    """NaN passed every range check (each comparison is False) and failed later: a traceback from
    Adam, or steps of NaN loss; train.max_minutes=.nan never ended a run."""
    defaults = load_config(TINY_CONFIG).to_dict()
    floats = [f"{section}.{key}" for section, values in defaults.items() if isinstance(values, dict)
              for key, value in values.items() if isinstance(value, float)]
    assert len(floats) >= 10
    for key in floats:
        with pytest.raises(ConfigError, match=rf"^{key} must be a number, not nan$"):
            load_config(TINY_CONFIG, [f"{key}=.nan"])
        for infinity in (".inf", "-.inf"):
            with pytest.raises(ConfigError, match=rf"^{key} must be a finite number, not -?inf$"):
                load_config(TINY_CONFIG, [f"{key}={infinity}"])


@pytest.mark.parametrize("seed", [0, 2**64 - 1])
def test_the_seed_range_is_what_torch_and_numpy_take(seed):
    """A seed below 0 was a traceback from numpy (default_rng), one above 2**64 - 1 from torch."""
    import numpy as np
    import torch

    config = load_config(TINY_CONFIG, [f"train.seed={seed}", f"data.seed={seed}"])
    torch.manual_seed(config.train.seed)
    np.random.default_rng([config.train.seed, 0])
    for wrong in (-1, 2**64):
        with pytest.raises(ConfigError, match=f"train.seed must be between 0 and {2**64 - 1}, not {wrong}"):
            load_config(TINY_CONFIG, [f"train.seed={wrong}"])


def test_overrides_are_typed():
    config = load_config(TINY_CONFIG, ["train.lr=1e-3", "model.cell=gru", "data.dev_groups=[RUT, TIT]",
                                       "decode.precision=int8"])
    assert config.train.lr == 0.001 and config.model.cell == "gru" and config.decode.precision == "int8"
    assert config.data.dev_groups == ("RUT", "TIT")


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")


def test_a_config_file_in_another_encoding_is_named(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes("# tiny\nname: años\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=rf"^{path}: not valid UTF-8 \(line 2, byte 14\)$"):
        load_config(path)


def test_choice_errors_name_the_setting_and_every_choice():
    """One list of choices per setting: the config, the CLI and Translator all check against it."""
    assert choice_error("--precision", "int8", DecodePrecision) is None
    assert choice_error("--precision", "fp16", DecodePrecision) == (
        "--precision must be auto, fp32, bf16 or int8, not 'fp16'")
    with pytest.raises(ConfigError, match="'fp16' is not one of auto, fp32, bf16, int8"):
        load_config(TINY_CONFIG, ["decode.precision=fp16"])


@pytest.mark.parametrize("name", ["../elsewhere", "a/b", "..", ".", '"a\\0b"'])
def test_a_run_name_must_be_a_folder_name(name):
    """runs/<name>/ must stay inside runs/; the check sits where the name becomes a folder, so a
    config (or a checkpoint's) with such a name still loads."""
    config = load_config(TINY_CONFIG, [f"name={name}"])
    with pytest.raises(ConfigError, match="name must be a folder name"):
        run_paths(config, "runs")
    assert run_paths(load_config(TINY_CONFIG), "runs").root == Path("runs") / "tiny"


def test_a_key_given_twice_in_the_yaml_is_an_error(tmp_path):
    """PyYAML keeps the last of two equal keys: a second train: section would silently drop the
    first one's settings."""
    path = tmp_path / "twice.yaml"
    path.write_text("name: x\ntrain:\n  lr: 0.1\nmodel:\n  emb_dim: 8\ntrain:\n  seed: 3\n")
    with pytest.raises(ConfigError, match=r"twice.yaml: line 6: 'train' is given twice"):
        load_config(path)
    path.write_text("name: x\ntrain:\n  lr: 0.1\n  seed: 3\n")
    assert load_config(path).train.lr == 0.1


def test_yaml_merge_keys_work_and_may_be_overridden(tmp_path):
    """`<<: *anchor` is YAML; the check for keys given twice took it for a key and called the file
    not valid YAML."""
    path = tmp_path / "merge.yaml"
    path.write_text("name: x\ntrain: &seeded\n  seed: 7\ndata:\n  seed: 8\n  <<: *seeded\n"
                    "decode: {<<: {beam: 4, alpha: 0.3}, beam: 2}\n")
    config = load_config(path)
    assert (config.train.seed, config.data.seed, config.decode.beam, config.decode.alpha) == (7, 8, 2, 0.3)
    path.write_text("name: x\ndata:\n  <<: {seed: 8}\n  seed: 9\n  seed: 10\n")
    with pytest.raises(ConfigError, match="line 5: 'seed' is given twice"):
        load_config(path)


def test_integers_are_read_as_yaml_1_2_reads_them(tmp_path):
    """YAML 1.1 read a leading zero as octal (seed: 010 was 8) and 1:30 as sexagesimal (90): now
    010 is ten, 1:30 is not a number, and 100_000, 0x10 and 0o10 still read as integers."""
    path = tmp_path / "ints.yaml"
    path.write_text("name: x\ndata:\n  seed: 010\ntrain:\n  max_steps: 100_000\n  seed: 0x10\n  valid_every: 0o10\n")
    config = load_config(path)
    assert (config.data.seed, config.train.max_steps, config.train.seed, config.train.valid_every) == (10, 100000, 16, 8)
    with pytest.raises(ConfigError, match="train.seed must be between 0 and 18446744073709551615, not -7"):
        load_config(path, ["train.seed=-007"])
    with pytest.raises(ConfigError, match="train.max_minutes: expected a number, got '1:30'"):
        load_config(path, ["train.max_minutes=1:30"])
    with pytest.raises(ConfigError, match="train.seed: expected an integer, got '0x_'"):
        load_config(path, ["train.seed=0x_"])


def test_a_date_is_text_and_tagged_or_unhashable_values_are_one_line(tmp_path):
    """YAML 1.1's dates made name: 2024-05-01 a date, and the config's copy ended in a traceback
    (in YAML 1.2 it is text); explicit tags (!!set, !!binary) and a list as a key did too."""
    path = tmp_path / "date.yaml"
    path.write_text("name: 2024-05-01\ndata:\n  src_field: 2024-05-01T10:00:00\n")
    config = load_config(path)
    assert (config.name, config.data.src_field) == ("2024-05-01", "2024-05-01T10:00:00")
    assert load_config(path, ["data.tgt_field=2024-05-02"]).data.tgt_field == "2024-05-02"
    for text, says in (("data: {dev_groups: !!set {JDG, RUT}}\n", "a value is not text, a number"),
                       ("data: {source: !!binary aGVsbG8=}\n", "a value is not text, a number"),
                       ("? [a]\n: 1\n", "line 1: a key must be a name, not a list")):
        path.write_text(text)
        with pytest.raises(ConfigError, match=says):
            load_config(path)
    with pytest.raises(ConfigError, match="a key must be a name, not a mapping"):
        load_config(None, ["train.lr={{a: 1}: 2}"])


def test_no_is_norwegian_not_false(tmp_path):
    """YAML 1.1 reads no/yes/on/off as booleans: src_lang: no (Norwegian) was 'expected a string,
    got False'. Booleans are true and false only, in the file and on the command line."""
    path = tmp_path / "nor.yaml"
    path.write_text("name: x\ndata:\n  src_lang: no\n  columns: [id, no, en]\n  src_field: no\n")
    config = load_config(path)
    assert (config.data.src_lang, config.data.columns, config.data.src_field) == ("no", ("id", "no", "en"), "no")
    assert load_config(path, ["data.tgt_lang=on"]).data.tgt_lang == "on"
    assert load_config(path, ["tokenizer.joint=False"]).tokenizer.joint is False
    with pytest.raises(ConfigError, match="tokenizer.joint: expected true or false, got 'yes'"):
        load_config(path, ["tokenizer.joint=yes"])


def test_a_value_that_contains_itself_is_named_in_one_line(tmp_path):
    """An alias inside its own anchor (x: &x [*x]) made PyYAML build a list holding itself, which
    ended in "ValueError: Circular reference detected" from the overrides' copy."""
    path = tmp_path / "self.yaml"
    path.write_text("name: tiny\nx: &x [*x]\n")
    with pytest.raises(ConfigError, match=rf"^{path}: line 2: \*x is inside &x itself; a value cannot contain itself$"):
        load_config(path)
    path.write_text("name: tiny\ndata: &d\n  seed: 3\n  <<: *d\n")
    with pytest.raises(ConfigError, match=rf"^{path}: line 4: \*d is inside &d itself"):
        load_config(path)
    with pytest.raises(ConfigError, match=r"^override value '&c \[\*c\]': line 1: \*c is inside &c itself"):
        load_config(TINY_CONFIG, ["data.columns=&c [*c]"])


def test_aliases_that_expand_past_any_config_are_refused_before_they_fill_memory(tmp_path):
    """Nine lines of aliases of aliases ("billion laughs"), or a long string repeated by aliases,
    are a small object as PyYAML builds it; the overrides' copy expanded them: 4.5 GB for eight
    such lines before the unknown-key error, and nine were killed for memory at 24 GB."""
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 9)]
    path = tmp_path / "laughs.yaml"
    path.write_text("name: tiny\n" + "\n".join(lines) + "\n")
    # a string: itself and its characters. a0: 1 + 9 × 4; a1 … a8: 1 + 9 × the one before; the
    # mapping 1, its keys 5 + 9 × 3, "tiny" 5
    a = [37]
    for _ in range(8):
        a.append(1 + 9 * a[-1])
    assert 1 + 32 + 5 + sum(a) == 1_797_873_239
    with pytest.raises(ConfigError, match=rf"^{path}: grows to 1,797,873,239 items \(values, and the characters of "
                                          rf"strings\) once its aliases are expanded \(\*name repeats &name's "
                                          rf"value\), more than the 1,000,000 a config may hold$"):
        load_config(path)
    path.write_text("name: tiny\nx: &s " + "x" * 100_000 + "\ny: [" + ", ".join(["*s"] * 10) + "]\n")
    with pytest.raises(ConfigError, match=rf"^{path}: grows to 1,100,0\d\d items"):  # a long string, repeated
        load_config(path)
    with pytest.raises(ConfigError, match=r"^override value .*: grows to 1,999,001 items"):  # 1 + 1,000 × 1,999
        load_config(TINY_CONFIG, ["data.columns=[" + ", ".join(["&x [" + ", ".join(["a"] * 999) + "]"]
                                                                + ["*x"] * 999) + "]"])
    path.write_text("name: tiny\ndata:\n  src_lang: &s es\n  columns: [id, *s, en]\n")  # an alias as configs use them
    assert load_config(path).data.columns == ("id", "es", "en")


def test_a_config_without_a_name_names_its_run_after_its_file(tmp_path):
    """It was bible-es-en: a trimmed config, or an empty file, prepared its splits over the default
    run's. make NAME=x expects configs/x.yaml, so the file's name is the run's."""
    (tmp_path / "mine.yaml").write_text("train:\n  lr: 0.001\n", encoding="utf-8")
    (tmp_path / "empty.yaml").write_text("", encoding="utf-8")
    (tmp_path / "named.yaml").write_text("name: other\n", encoding="utf-8")
    assert [load_config(tmp_path / f"{n}.yaml").name for n in ("mine", "empty", "named")] == ["mine", "empty", "other"]
    assert load_config(tmp_path / "mine.yaml", ["name=third"]).name == "third"
    assert load_config(ROOT / "configs" / "bible-es-en.yaml").name == "bible-es-en"


def test_the_readme_names_every_default_that_is_not_the_reference_config_s():
    """The README named three such keys; there were eight, train.precision among them (a config
    written from scratch trained in fp32, not bf16, unsaid)."""
    import re

    from nmt.config import Config

    readme = " ".join((ROOT / "README.md").read_text(encoding="utf-8").split())
    listed = readme.split("is not the reference file's value")[1].split("Start from a copy")[0]
    said = {key: (was, ref) for key, was, ref in re.findall(r"`([a-z_]+\.[a-z_]+)` (\S+) \((\w[^):]*)", listed)}
    default, reference = Config().to_dict(), load_config(ROOT / "configs" / "bible-es-en.yaml").to_dict()
    differ = {f"{section}.{key}": (str(value), str(reference[section][key]))
              for section, values in default.items() if section != "name"
              for key, value in values.items() if reference[section][key] != value}
    assert said == differ


def test_a_checkpoint_json_reads_as_the_config_it_was_trained_with(tmp_path):
    """The checkpoint's config is a run's record (runs/<name>/config/resolved.json is make's stamp
    of the current file, and runs trained with nmt train have none): `nmt train -c
    runs/x/best/checkpoint.json name=x2` reproduces it, where it failed on "unknown key config"."""
    from conftest import saved_tiny_model

    config, _, _, folder = saved_tiny_model(tmp_path)
    assert load_config(folder / "checkpoint.json") == config
    again = load_config(folder / "checkpoint.json", ["name=again", "train.seed=7"])
    assert (again.name, again.train.seed, again.model) == ("again", 7, config.model)
