"""Ranges and cross-field rules a config's types cannot express (``nmt.config`` reads and builds
the config, ``nmt.configfile`` checks its types): the least and most each number may take, NaN
and infinity refused, settings that contradict each other, the languages as file-name parts. Each
problem is one ``ConfigError`` line naming the key."""

from __future__ import annotations

import dataclasses
import math
import typing
from typing import TYPE_CHECKING, Any

from nmt.errors import ConfigError

if TYPE_CHECKING:  # nmt.config builds on this module
    from nmt.config import Config, DataConfig


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
    # data.seed the same range: the random split's hash key is its 8 bytes (nmt.data._rank)
    "data.seed": 2**64 - 1, "train.seed": 2**64 - 1,
    # lp(n) = ((5 + n) / 6) ** alpha: at 300 it overflowed a float from n = 59 (a traceback), at inf
    # every score was -0.0. GNMT tuned alpha in [0, 1]; up to 10, lp stays finite in float32 (the
    # beam's bound) up to n ≈ 42,800 target pieces, and in a Python float far beyond
    "decode.alpha": 10,
    # a target length limit (ratio × source pieces + offset) past int64 wrapped negative: every
    # translation was cut after its first token, silently; far above these no sentence gets near
    "decode.max_len_ratio": 100, "decode.max_len_offset": 1_000_000,
}
# Every float setting is a finite number: NaN passes every comparison above (all are False), and
# infinity means nothing for most (an infinite lr diverges); where it could read as "no limit"
# (train.max_minutes) a large number does the same, and a config stays strict JSON in checkpoints.


def _float_keys(config: Config) -> list[str]:
    """Every float setting of ``config``, as "section.key" (its sections: the fields that are
    dataclasses)."""
    keys = []
    for field in dataclasses.fields(config):
        if dataclasses.is_dataclass(section := getattr(config, field.name)):
            keys += [f"{field.name}.{key}" for key, hint in typing.get_type_hints(type(section)).items()
                     if hint is float]
    return keys


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


def validate(config: Config, checked: tuple[str, ...]) -> None:
    """Cross-field checks and ranges that types alone cannot express, of the ``checked`` sections
    (a dotted key there checks that key's range, not its section's cross-field rules). A
    checkpoint's config is checked only where decoding uses it (``DECODING``, and the languages,
    which name evaluate's files), so a range check added to training later does not stop older
    checkpoints from loading."""
    def is_checked(name: str) -> bool:
        return name in checked or name.split(".")[0] in checked

    for key in dict.fromkeys([*_float_keys(config), *_AT_LEAST, *_ABOVE_ZERO, *_AT_MOST]):  # each once, in order
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


def is_plain_name(text: str) -> bool:
    """Whether ``text`` names a file or folder inside the folder it is joined to: not "", "." or
    "..", and without "/", "\\" or NUL."""
    return text not in ("", ".", "..") and not any(char in text for char in "/\\\0")
