"""Typed, frozen experiment configuration.

One YAML file per experiment is read into the dataclasses below (``nmt.configfile``: YAML 1.2,
types checked). Unknown keys and values of the wrong type are errors (``ConfigError``), so a typo
never silently falls back to a default. Dotted overrides (``train.lr=0.001``) are applied before
validation, which checks the ranges and cross-field rules types cannot express (``nmt.configcheck``).
"""

from __future__ import annotations

import dataclasses
import json
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from nmt.configcheck import is_plain_name, validate
from nmt.configfile import apply_overrides, build, load_yaml
from nmt.errors import ConfigError, path_error
from nmt.lines import utf8_where


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
    source: str = "data/bible.es-en.tsv.gz"  # TSV/CSV/JSONL/Parquet/Arrow file, text file, hub name or dataset folder
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
    max_ratio: float = 3.0  # longer side / shorter side, in words (nmt.scripts.word_count)
    dev_groups: tuple[str, ...] = ("JDG", "RUT", "JON", "PHP", "1JN", "TIT")
    test_groups: tuple[str, ...] = ("DAN", "ACT", "ROM", "JAS", "1PE")
    dev_size: int = 1000  # used when no groups are given: a seeded random split, stable as the corpus grows
    test_size: int = 2000
    seed: int = 1


@dataclass(frozen=True)
class TokenizerConfig:
    model_type: Literal["unigram", "bpe"] = "unigram"
    vocab_size: int = 8000
    joint: bool = True  # one model for both languages (lets target embeddings be tied)
    character_coverage: float = 1.0
    max_sentences: int = 2_000_000  # lines SentencePiece trains on, a seeded sample where there are more; 0 = all


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
    trim_heap_every: int = 100  # steps between returning free heap pages to the OS (glibc); 0 = never
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
    """Read a YAML config (or the defaults when ``path`` is None) and apply overrides. A file
    without ``name`` names the run after itself (configs/x.yaml → x). A checkpoint's
    checkpoint.json reads as the config it was trained with."""
    raw: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if error := path_error(path, "config file"):
            raise ConfigError(error)
        try:
            raw = load_yaml(path.read_text(encoding="utf-8")) or {}
        except UnicodeDecodeError as exc:
            raise ConfigError(f"{path}: not valid UTF-8 ({utf8_where(exc)})") from exc
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from exc
        except ConfigError as exc:
            raise ConfigError(f"{path}: {exc}") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: the top level must be a mapping")
        if "format_version" in raw and isinstance(raw.get("config"), dict):  # a checkpoint's checkpoint.json:
            raw = raw["config"]  # the config it was trained with, the run's record (name=… trains it afresh)
        # no name: the file's, as make NAME=x expects configs/x.yaml (it was bible-es-en, and a
        # trimmed config prepared its splits over the default run's)
        raw = {"name": path.stem, **raw}
    return from_dict(apply_overrides(raw, overrides or []))


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


def run_paths(config: Config, runs_dir: str | Path = "runs") -> RunPaths:
    """Checked here, not in ``validate``: the name matters only as a folder (a checkpoint trained
    under any name loads)."""
    if not is_plain_name(config.name):  # runs/<name>/ stays in runs/
        raise ConfigError(f"name must be a folder name, without / or \\, not {config.name!r}")
    return RunPaths(Path(runs_dir) / config.name)
