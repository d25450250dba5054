"""Typed, frozen experiment configuration.

One YAML file per experiment is read into the dataclasses below (``nmt.configfile``: YAML 1.2,
types checked). Unknown keys and values of the wrong type are errors (``ConfigError``), so a typo
never silently falls back to a default. Dotted overrides (``train.lr=0.001``) are applied before
validation, which checks the ranges and cross-field rules types cannot express.
"""

from __future__ import annotations

import dataclasses
import json
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from nmt.configfile import apply_overrides, build, load_yaml
from nmt.errors import ConfigError, path_error


# Settings whose choices are also checked outside a config (the CLI's options, Translator's
# arguments, the benchmarks' flags): one list each, here.
Precision = Literal["auto", "fp32", "bf16"]  # auto: bf16 where it is native (nmt.hardware)
DecodePrecision = Literal["auto", "fp32", "bf16", "int8"]
StoppingRule = Literal["bound", "finished"]


def choice_error(setting: str, value: object, choices: Any) -> str | None:
    """None where ``value`` is one of the Literal ``choices``, else the one-line message
    "<setting> must be a, b or c, not 'x'"."""
    options = typing.get_args(choices)
    if value in options:
        return None
    return f"{setting} must be {', '.join(options[:-1])} or {options[-1]}, not {value!r}"


@dataclass(frozen=True)
class DataConfig:
    source: str = "data/bible.es-en.tsv.gz"  # local TSV/CSV/JSONL file, text file, or hub name
    target: str | None = None  # second text file when `source` is the source side of a pair
    src_lang: str = "es"
    tgt_lang: str = "en"
    columns: tuple[str, ...] = ("id", "es", "en")  # names for a headerless TSV/CSV; () = header row
    src_field: str = "es"
    tgt_field: str = "en"
    id_field: str | None = "id"  # None: no ids, random split only
    hub_config: str | None = None
    hub_split: str = "train"
    min_words: int = 1
    max_words: int = 80
    max_ratio: float = 3.0  # longer side / shorter side, in whitespace words
    dev_groups: tuple[str, ...] = ("JDG", "RUT", "JON", "PHP", "1JN", "TIT")
    test_groups: tuple[str, ...] = ("DAN", "ACT", "ROM", "JAS", "1PE")
    dev_size: int = 1000  # used when no groups are given: a seeded random split
    test_size: int = 2000
    seed: int = 1


@dataclass(frozen=True)
class TokenizerConfig:
    model_type: Literal["unigram", "bpe"] = "unigram"
    vocab_size: int = 8000
    joint: bool = True  # one model for both languages (lets target embeddings be tied)
    character_coverage: float = 1.0
    max_sentences: int = 2_000_000  # SentencePiece input_sentence_size; 0 = every sentence


@dataclass(frozen=True)
class ModelConfig:
    cell: Literal["lstm", "gru", "rnn"] = "lstm"
    emb_dim: int = 256
    enc_hidden: int = 256  # per direction; the encoder is bidirectional
    enc_layers: int = 1
    dec_hidden: int = 256
    dec_layers: int = 1
    attention: Literal["none", "bahdanau", "luong"] = "bahdanau"
    attn_dim: int = 256
    input_feeding: bool = True  # feed the previous attentional vector into the decoder RNN
    dropout: float = 0.2
    tie_embeddings: bool = True  # target embeddings == output projection (needs emb == dec)


@dataclass(frozen=True)
class TrainConfig:
    seed: int = 1
    max_tokens: int = 4000  # target tokens per batch (token budget)
    lr: float = 0.002
    min_lr: float = 1e-5
    lr_patience: int = 2  # validations without dev-BLEU gain before the lr is halved
    patience: int = 6  # validations without gain before training stops
    clip_norm: float = 1.0
    label_smoothing: float = 0.1
    max_steps: int = 100_000
    max_minutes: float = 60.0  # wall-clock budget of the training loop
    valid_every: int = 500
    valid_max_sentences: int = 0  # 0 = the whole dev split
    max_train_len: int = 128  # drop training pairs longer than this many pieces
    # bf16: autocast the forward pass (weights stay fp32); auto: bf16 where it is native (CPUs with
    # avx512_bf16 or AMX, CUDA), else fp32 (nmt.hardware.resolve_precision)
    precision: Precision = "fp32"
    threads: int = 0  # 0 = choose automatically
    fused_rnn: bool = True  # LSTMs through nmt.recurrence (hand-written backward); false = autograd, op by op
    trim_heap_every: int = 10  # steps between returning free heap pages to the OS (glibc); 0 = never
    keep_checkpoints: int = 1  # the most recent checkpoints kept (besides best), for nmt average


@dataclass(frozen=True)
class DecodeConfig:
    beam: int = 5
    alpha: float = 0.6  # GNMT length penalty exponent, 0 to 10; 0 = raw log-probability
    max_len_ratio: float = 2.0
    max_len_offset: int = 10
    # sentences decoded at once (a finished one's place goes to the next) and encoded at once; 128
    # decoded 0.97-1.25x (median 1.09x) as fast as 64 on the Zen 4 VM, same BLEU (benchmarks/README.md, "Levers")
    batch_size: int = 128
    # bf16: autocast matmuls, log-probabilities still fp32; int8 (CPU): matrix products in 8-bit
    # integers (nmt.quantize); both may change some translations slightly
    precision: DecodePrecision = "fp32"
    # When a beam-search sentence stops: "bound" once no live hypothesis can still beat its best
    # finished one (exact with respect to the beam); "finished" once `beam` hypotheses have finished
    # (fairseq's rule, Hugging Face's early_stopping=True): fewer steps, outputs may differ.
    stopping: StoppingRule = "bound"
    # a line longer than train.max_train_len source pieces is translated in parts cut where its
    # sentences end (nmt.segment: the model stops early on what is longer than it saw); false: whole
    split_long: bool = True


@dataclass(frozen=True)
class Config:
    name: str = "bible-es-en"
    data: DataConfig = field(default_factory=DataConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    decode: DecodeConfig = field(default_factory=DecodeConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False)


def settings_json(section: Any) -> dict[str, Any]:
    """A config section as it reads back from JSON (tuples become lists): what files record."""
    return json.loads(json.dumps(dataclasses.asdict(section)))


def changed_settings(section: str, was: dict[str, Any], now: dict[str, Any]) -> str:
    """The keys of a recorded section that differ from ``now``: "train.lr 0.005 → 0.002, …"."""
    return ", ".join(f"{section}.{key} {was.get(key)} → {value}" for key, value in now.items() if was.get(key) != value)


SECTIONS = tuple(f.name for f in dataclasses.fields(Config) if f.name != "name")  # data, tokenizer, model, …
# What a loaded checkpoint is used for: sections, or single keys of the sections it is not (decoding
# cuts a line longer than train.max_train_len source pieces into parts, nmt.segment)
DECODING = ("model", "decode", "train.max_train_len")


def from_dict(raw: dict[str, Any], checked: tuple[str, ...] = SECTIONS) -> Config:
    """A config from plain data: every type checked, and the ranges of the ``checked`` sections
    (and keys: "train.max_train_len")."""
    config = build(Config, raw)
    validate(config, checked)
    return config


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Read a YAML config (or the defaults when ``path`` is None) and apply overrides."""
    raw: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if error := path_error(path, "config file"):
            raise ConfigError(error)
        try:
            raw = load_yaml(path.read_text(encoding="utf-8")) or {}
        except UnicodeDecodeError as exc:
            raise ConfigError(f"{path}: not valid UTF-8 (byte {exc.start})") from exc
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from exc
        except ConfigError as exc:
            raise ConfigError(f"{path}: {exc}") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: the top level must be a mapping")
    return from_dict(apply_overrides(raw, overrides or []))


# Ranges that types cannot express: the least value each number may take ...
_AT_LEAST = {
    "data.max_ratio": 1, "data.dev_size": 0, "data.test_size": 0, "data.seed": 0,
    "tokenizer.vocab_size": 8, "tokenizer.max_sentences": 0,
    "model.emb_dim": 1, "model.enc_hidden": 1, "model.dec_hidden": 1, "model.attn_dim": 1,
    "train.seed": 0, "train.min_lr": 0, "train.lr_patience": 1, "train.patience": 1, "train.max_steps": 1,
    "train.valid_every": 1, "train.valid_max_sentences": 0, "train.max_train_len": 1, "train.threads": 0,
    "train.trim_heap_every": 0, "train.keep_checkpoints": 1,
    # alpha ≥ 0: the "bound" stopping rule needs lp(n) to grow with n (nmt.beam.beam_search)
    "decode.beam": 1, "decode.alpha": 0, "decode.max_len_ratio": 0, "decode.max_len_offset": 0, "decode.batch_size": 1,
}
# ... those that must be above 0 ...
_ABOVE_ZERO = ("train.lr", "train.clip_norm", "train.max_minutes")
# ... and the most they may take
_AT_MOST = {
    # train.seed: torch.manual_seed takes up to 2**64 - 1, numpy's default_rng nothing below 0 (above);
    # data.seed (random.Random) the same range, as Random(-5) would shuffle as Random(5) does
    "data.seed": 2**64 - 1, "train.seed": 2**64 - 1,
    # lp(n) = ((5 + n) / 6) ** alpha: at 300 it overflowed a float from n = 59 (a traceback), at inf
    # every score was -0.0. GNMT tuned alpha in [0, 1]; up to 10, lp stays finite in float32 (the
    # beam's bound) up to n ≈ 42,800 target pieces, and in a Python float far beyond
    "decode.alpha": 10,
}
# Every float setting is a finite number: NaN passes every comparison above (all are False), and
# infinity means nothing for most (an infinite lr diverges); where it could read as "no limit"
# (train.max_minutes) a large number does the same, and a config stays strict JSON in checkpoints.


def _float_keys() -> tuple[str, ...]:
    """Every float setting, as "section.key"."""
    sections = typing.get_type_hints(Config)
    return tuple(f"{section}.{key}" for section in SECTIONS
                 for key, hint in typing.get_type_hints(sections[section]).items() if hint is float)


def range_error(setting: str, value: float, key: str) -> str | None:
    """None where ``value`` is in the range of the config ``key`` ("decode.alpha"), else the
    one-line message "<setting> must be …, not x" (``setting``: the key, or the CLI option that
    sets it)."""
    if isinstance(value, float) and math.isnan(value):
        return f"{setting} must be a number, not {value}"
    if isinstance(value, float) and math.isinf(value):
        return f"{setting} must be a finite number, not {value}"
    least, most = _AT_LEAST.get(key), _AT_MOST.get(key)
    if least is not None and most is not None and not least <= value <= most:
        return f"{setting} must be between {least} and {most}, not {value}"
    if least is not None and value < least:
        return f"{setting} must be at least {least}, not {value}"
    if most is not None and value > most:
        return f"{setting} must be at most {most}, not {value}"
    if key in _ABOVE_ZERO and value <= 0:
        return f"{setting} must be greater than 0, not {value}"
    return None


def _setting(config: Config, name: str) -> Any:
    section, key = name.split(".")
    return getattr(getattr(config, section), key)


def validate(config: Config, checked: tuple[str, ...] = SECTIONS) -> None:
    """Cross-field checks and ranges that types alone cannot express, of the ``checked`` sections
    (a dotted key there checks that key's range, not its section's cross-field rules). A
    checkpoint's config is checked only where decoding uses it (``DECODING``, and the languages,
    which name evaluate's files), so a range check added to training later does not stop older
    checkpoints from loading."""
    def is_checked(name: str) -> bool:
        return name in checked or name.split(".")[0] in checked

    for key in dict.fromkeys([*_float_keys(), *_AT_LEAST, *_ABOVE_ZERO, *_AT_MOST]):  # each once, in order
        if is_checked(key) and (error := range_error(key, _setting(config, key), key)):
            raise ConfigError(error)
    for wrong, message in _language_problems(config.data):  # whatever is checked: evaluate names files by them
        if wrong:
            raise ConfigError(message)
    m, t, d = config.model, config.train, config.decode
    problems = {
        "data": _data_problems(config.data),
        "model": [(not 1 <= m.enc_layers <= 4 or not 1 <= m.dec_layers <= 4,
                   "model.enc_layers and model.dec_layers must be between 1 and 4"),
                  (m.tie_embeddings and m.emb_dim != m.dec_hidden,
                   "model.tie_embeddings needs model.emb_dim == model.dec_hidden"),
                  (m.input_feeding and m.attention == "none",
                   "model.input_feeding needs attention; set it to false with attention: none"),
                  (not 0.0 <= m.dropout < 1.0, "model.dropout must be in [0, 1)")],
        "train": [(not 0.0 <= t.label_smoothing < 1.0, "train.label_smoothing must be in [0, 1)"),
                  (t.max_tokens < t.max_train_len, "train.max_tokens must be at least train.max_train_len")],
        # SentencePiece's own ranges, checked before it runs (its message names a C++ condition)
        "tokenizer": [(not 0.98 <= config.tokenizer.character_coverage <= 1.0,
                       "tokenizer.character_coverage must be in [0.98, 1], SentencePiece's range"),
                      (0 < config.tokenizer.max_sentences <= 100,
                       "tokenizer.max_sentences must be 0 (every sentence) or above 100, SentencePiece's range")],
        "decode": [(int(d.max_len_ratio) + d.max_len_offset < 1,  # nmt.search.max_lengths of 1 piece
                    "decode.max_len_ratio and decode.max_len_offset leave a one-piece source no target token")],
    }
    for section in checked:
        for wrong, message in problems.get(section, []):
            if wrong:
                raise ConfigError(message)


def _language_problems(d: DataConfig) -> list[tuple[bool, str]]:
    """The languages end file names: the split files (runs/<name>/data/train.es, train.ids beside
    them) and evaluate's outputs (hyps/beam5.en)."""
    problems = []
    for key, lang in (("data.src_lang", d.src_lang), ("data.tgt_lang", d.tgt_lang)):
        problems += [(not is_plain_name(lang), f"{key} ends file names (train.<lang>), so it must be a plain name, "
                                               f"without / or \\, not {lang!r}"),
                     (lang.casefold() == "ids", f"{key} cannot be {lang!r}: train.ids holds the pairs' ids")]
    return problems + [
        (d.src_lang == d.tgt_lang, f"data.src_lang and data.tgt_lang are both {d.src_lang!r}: they name the "
                                   f"split files (train.{d.src_lang}), so they must differ"),
        (d.src_lang.casefold() == d.tgt_lang.casefold(),  # (macOS and Windows file systems ignore case)
         f"data.src_lang {d.src_lang!r} and data.tgt_lang {d.tgt_lang!r} differ only in case: train.{d.src_lang} "
         f"and train.{d.tgt_lang} would be one file where file names ignore case"),
    ]


def _data_problems(d: DataConfig) -> list[tuple[bool, str]]:
    grouped, shared = bool(d.dev_groups or d.test_groups), sorted(set(d.dev_groups) & set(d.test_groups))
    random_split = "give both as [] for a random split (data.dev_size, data.test_size)"
    return [
        (d.target is None and d.src_field == d.tgt_field,
         f"data.src_field and data.tgt_field are both {d.src_field!r}: the source would be its own translation"),
        (bool(shared), f"data.dev_groups and data.test_groups share {', '.join(shared)}: a group goes to one split"),
        (grouped and d.target is not None, f"data.dev_groups and data.test_groups split by the ids' groups, but "
                                           f"data.target pairs two text files, which carry no ids: {random_split}"),
        (grouped and d.target is None and d.id_field is None,
         f"data.dev_groups and data.test_groups split by the ids' groups, but data.id_field is null: {random_split}"),
        (d.min_words > d.max_words, f"data.min_words ({d.min_words}) is above data.max_words ({d.max_words})"),
    ]


@dataclass(frozen=True)
class RunPaths:
    """Where each stage of one experiment writes: ``runs/<name>/…``."""

    root: Path

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def tokenizer(self) -> Path:
        return self.root / "tokenizer"

    @property
    def best(self) -> Path:
        return self.root / "best"

    @property
    def report(self) -> Path:
        return self.root / "report.md"


def is_plain_name(text: str) -> bool:
    """Whether ``text`` names a file or folder inside the folder it is joined to: not "", "." or
    "..", and without "/", "\\" or NUL."""
    return text not in ("", ".", "..") and not any(char in text for char in "/\\\0")


def run_paths(config: Config, runs_dir: str | Path = "runs") -> RunPaths:
    """Checked here, not in ``validate``: the name matters only as a folder (a checkpoint trained
    under any name loads)."""
    if not is_plain_name(config.name):  # runs/<name>/ stays in runs/
        raise ConfigError(f"name must be a folder name, without / or \\, not {config.name!r}")
    return RunPaths(Path(runs_dir) / config.name)
