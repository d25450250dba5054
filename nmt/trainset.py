"""What training reads: the prepared train and dev splits, encoded once into arrays, and a
fingerprint of them and the tokenizer, which a resumed run must match."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nmt.batching import Sequences, token_batches
from nmt.config import Config, settings_json
from nmt.data import check_made_with, split_path
from nmt.errors import DataError
from nmt.lines import read_lines
from nmt.tokenizer import Tokenizer

log = logging.getLogger(__name__)


@dataclass
class TrainingData:
    train_src: Sequences  # the pairs within train.max_train_len
    train_tgt: Sequences
    train_ids: np.ndarray  # (kept,) each kept pair's line in the train split
    split_lengths: tuple[np.ndarray, np.ndarray]  # every train pair's source and target lengths
    dev_src: Sequences  # the whole dev split: dev loss
    dev_tgt: Sequences
    dev_lines: list[str]  # the dev sentences translated for BLEU (train.valid_max_sentences of them)
    dev_refs: list[str]
    fingerprint: str  # inputs_fingerprint


def load_training_data(data_dir: Path, tokenizer: Tokenizer, tokenizer_dir: Path, config: Config) -> TrainingData:
    """The train split's pairs that fit train.max_train_len and the dev split, encoded; a one-line
    error where no pair fits or the dev split is empty."""
    check_made_with(Path(data_dir) / "stats.json", "data", settings_json(config.data), "nmt prepare")
    check_made_with(Path(tokenizer_dir) / "tokenizer.json", "tokenizer", settings_json(config.tokenizer),
                     "nmt tokenize")
    limit = config.train.max_train_len
    src, tgt = encode_split(tokenizer, *read_split(data_dir, "train", config))
    keep = np.flatnonzero(fits(src.lengths, tgt.lengths, limit))
    if keep.size < len(src):  # said, so a corpus of long sentences does not train on a fraction unawares
        log.info("%d of %d training pairs left out: longer than train.max_train_len=%d pieces",
                 len(src) - keep.size, len(src), limit)
    if keep.size == 0:  # no batch could be made: the loop would turn through empty epochs
        raise DataError(f"no training pair fits train.max_train_len={limit} pieces "
                        f"(the shortest pair needs {int(np.maximum(src.lengths, tgt.lengths + 1).min())})")
    dev_lines, dev_refs = read_split(data_dir, "dev", config)  # read once: loss and BLEU
    if not dev_lines:
        raise DataError(f"{data_dir}: the dev split is empty; training validates on it")
    dev_src, dev_tgt = encode_split(tokenizer, dev_lines, dev_refs)
    shown = config.train.valid_max_sentences or len(dev_lines)
    return TrainingData(_subset(src, keep), _subset(tgt, keep), keep, (src.lengths, tgt.lengths), dev_src, dev_tgt,
                        dev_lines[:shown], dev_refs[:shown], inputs_fingerprint(data_dir, tokenizer_dir, config))


BATCHING = ("seed", "max_tokens", "max_train_len")  # the train settings an epoch's batches are made by


def epoch_batches(split_lengths: tuple[np.ndarray, np.ndarray], rest: list | None, epoch: int, *, seed: int,
                  max_tokens: int, max_train_len: int) -> list[np.ndarray]:
    """Epoch ``epoch``'s batches, as lines of the train split: the pairs within max_train_len (of
    ``rest`` only, when given), in token batches shuffled by (seed, epoch): the same batches every
    time for the same settings."""
    src, tgt = split_lengths
    pool = np.flatnonzero(fits(src, tgt, max_train_len))
    if rest is not None:
        pool = pool[np.isin(pool, rest)]
    if pool.size == 0:  # an epoch's rest that the new max_train_len leaves nothing of
        return []
    return [pool[b] for b in token_batches(src[pool], tgt[pool], max_tokens, np.random.default_rng([seed, epoch]))]


def rest_of_epoch(split_lengths: tuple[np.ndarray, np.ndarray], rest: list | None, epoch: int, done: int,
                  settings: dict) -> list[int]:
    """The pairs epoch ``epoch`` had still to see after ``done`` of its batches made under
    ``settings`` (the train settings ``BATCHING`` names): a run resumed under others goes on with
    these, so each pair is still seen once an epoch, where counting batches in a list made
    otherwise skipped some and repeated others."""
    batches = epoch_batches(split_lengths, rest, epoch, **settings)
    return sorted(int(line) for batch in batches[done:] for line in batch)


def fits(src_lengths: np.ndarray, tgt_lengths: np.ndarray, limit: int) -> np.ndarray:
    """Which pairs train.max_train_len = ``limit`` keeps (the target's </s> or <s> makes it one longer)."""
    return (src_lengths <= limit) & (tgt_lengths < limit)


def read_split(data_dir: Path, split: str, config: Config) -> tuple[list[str], list[str]]:
    """Source and target lines of a prepared split; the two sides must have as many lines."""
    src = read_lines(split_path(data_dir, split, config.data.src_lang))
    tgt = read_lines(split_path(data_dir, split, config.data.tgt_lang))
    if len(src) != len(tgt):
        raise DataError(f"{data_dir}: {split} sides differ in line count ({len(src)} vs {len(tgt)})")
    return src, tgt


def inputs_fingerprint(data_dir: Path, tokenizer_dir: Path, config: Config, splits: dict[str, bytes] | None = None
                       ) -> str:
    """sha256 of what training reads: the train and dev splits and the SentencePiece models. A run
    resumes only on the same inputs: a corpus edited in place keeps the config, but retrains the
    tokenizer, and weights learned on the old pieces' ids would go on training on the new ones.
    ``splits``: the splits' bytes by file name (``input_splits``), for splits not written yet;
    else ``data_dir``'s files."""
    names = input_splits(config)
    data = splits if splits is not None else {name: (Path(data_dir) / name).read_bytes() for name in names}
    digest = hashlib.sha256()
    for name, content in [(name, data[name]) for name in names] + [
            (path.name, path.read_bytes()) for path in sorted(Path(tokenizer_dir).glob("*.model"))]:
        digest.update(name.encode() + b"\0" + content)
    return digest.hexdigest()


def input_splits(config: Config) -> list[str]:
    """The split files training reads, as ``inputs_fingerprint`` takes them: train and dev, source
    and target."""
    sides = (config.data.src_lang, config.data.tgt_lang)
    return [split_path(Path(), split, lang).name for split in ("train", "dev") for lang in sides]


def encode_split(tokenizer: Tokenizer, src: list[str], tgt: list[str]) -> tuple[Sequences, Sequences]:
    return Sequences.from_lists(tokenizer.encode_src(src)), Sequences.from_lists(tokenizer.encode_tgt(tgt))


def _subset(seqs: Sequences, keep: np.ndarray) -> Sequences:
    return Sequences.from_lists([seqs.get(i).tolist() for i in keep])
