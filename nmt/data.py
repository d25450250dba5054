"""Normalise, filter and split parallel text, and write the splits. No torch here.

The pairs come from ``nmt.corpus`` (local files or a hub dataset, as written). Splits are written
as plain text, one sentence a line, ``{split}.{lang}``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import unicodedata
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from nmt.atomic import atomic_write_text
from nmt.config import DataConfig, changed_settings, settings_json
from nmt.corpus import Pair, read_pairs
from nmt.errors import DataError
from nmt.lines import read_lines
from nmt.scripts import word_count

log = logging.getLogger(__name__)

SPLITS = ("train", "dev", "test")
_SPACE = re.compile(r"\s+")
# Characters a sentence carries unseen, from the web or right-to-left text, that no model should
# learn or write: control characters (not those Python counts as whitespace, as NEL), direction
# marks, embeddings and isolates (the Arabic letter mark too), the zero-width space, the word
# joiner and the BOM; dropped, so the text reads as it looks ("a\u200bb" is "ab"). The zero-width
# (non-)joiners stay: Persian, Indic scripts and emoji sequences need them. (SentencePiece's
# default normalisation, no longer used, turned some of these into spaces, kept the others, and
# folded what a translation must keep: nmt.tokenizer.)
_INVISIBLE = re.compile("[\x00-\x08\x0e-\x1b\x7f-\x84\x86-\x9f"  # controls
                        "\u061c\u200b\u200e\u200f\u202a-\u202e\u2060\u2066-\u2069\ufeff]")


@dataclass
class PreparedData:
    splits: dict[str, list[Pair]]
    dropped: Counter = field(default_factory=Counter)
    total: int = 0

    def stats(self) -> dict:
        return {
            "read": self.total,
            "kept": {name: len(pairs) for name, pairs in self.splits.items()},
            "dropped": dict(sorted(self.dropped.items())),
            "source_in_train": self.seen_in_train,
        }

    @cached_property  # asked by the log, the warning and stats.json
    def seen_in_train(self) -> dict[str, int]:
        """Dev and test pairs whose source sentence is also in the training split: a corpus that
        repeats sentences puts copies on both sides of a random split, and a score on them measures
        memory as much as translation."""
        train = {pair.src for pair in self.splits["train"]}
        return {name: sum(pair.src in train for pair in self.splits[name]) for name in ("dev", "test")}


def normalise(text: str) -> str:
    """Invisible characters dropped (``_INVISIBLE``; first, as one between a letter and its accent
    keeps them apart), Unicode NFC, every run of whitespace (tabs, NBSP, newlines) to one space,
    trimmed. Normalised text is its own normal form."""
    return _SPACE.sub(" ", unicodedata.normalize("NFC", _INVISIBLE.sub("", text))).strip()


def filter_pairs(pairs: list[Pair], config: DataConfig) -> tuple[list[Pair], Counter]:
    """Normalise every pair and drop the unusable ones; returns kept pairs and drop counts."""
    kept, dropped = [], Counter()
    for pair in pairs:
        src, tgt = normalise(pair.src), normalise(pair.tgt)
        n_src, n_tgt = word_count(src), word_count(tgt)  # a Chinese or Japanese letter counts as a word
        if n_src == 0 or n_tgt == 0:
            dropped["empty"] += 1
        elif min(n_src, n_tgt) < config.min_words:
            dropped["too_short"] += 1
        elif max(n_src, n_tgt) > config.max_words:
            dropped["too_long"] += 1
        elif max(n_src, n_tgt) / min(n_src, n_tgt) > config.max_ratio:
            dropped["length_ratio"] += 1
        else:
            kept.append(Pair(src, tgt, pair.id))
    return kept, dropped


def _group(pair_id: str) -> str:
    return pair_id.split(".", 1)[0]


def _listed(names: list[str], most: int = 8) -> str:
    return ", ".join(names[:most]) + (f", … ({len(names)} in all)" if len(names) > most else "")


def _rank(pair: Pair, seed: int) -> bytes:
    """A pair's place in a random split: a hash of its text keyed by the seed."""
    return hashlib.blake2b(f"{pair.src}\t{pair.tgt}".encode(), key=seed.to_bytes(8, "little"), digest_size=16).digest()


def split_pairs(pairs: list[Pair], config: DataConfig) -> dict[str, list[Pair]]:
    """Split by whole groups (id prefix before the first dot) when groups are given, else randomly:
    dev and test the pairs of the lowest ``_rank`` (the seed's hash of each pair's text), so a split
    stays put as the corpus grows or its lines move. A shuffle of line numbers did not: one line
    added to 2,000 moved 35 of 100 test pairs into training, where a model trained again on the
    grown corpus learned them; now at most one moves, pushed along by a new pair ranked before it."""
    if config.dev_groups or config.test_groups:
        dev, test = set(config.dev_groups), set(config.test_groups)
        found = {_group(pair.id) for pair in pairs}
        if missing := [g for g in (*config.dev_groups, *config.test_groups) if g not in found]:  # a typo, most often
            raise DataError(f"{config.source}: no pair kept has group {', '.join(missing)} (data.dev_groups, "
                            f"data.test_groups); the ids' groups are {_listed(sorted(found))}")
        splits: dict[str, list[Pair]] = {name: [] for name in SPLITS}
        for pair in pairs:
            group = _group(pair.id)
            splits["dev" if group in dev else "test" if group in test else "train"].append(pair)
        return splits
    order = sorted(range(len(pairs)), key=lambda i: (_rank(pairs[i], config.seed), i))
    n_dev, n_test = config.dev_size, config.test_size
    if n_dev + n_test >= len(pairs):
        raise DataError(f"only {len(pairs)} pairs: too few for dev_size={n_dev} and test_size={n_test}")
    picked = {
        "dev": sorted(order[:n_dev]),
        "test": sorted(order[n_dev : n_dev + n_test]),
        "train": sorted(order[n_dev + n_test :]),
    }
    return {name: [pairs[i] for i in picked[name]] for name in SPLITS}


MANY_DROPPED = 0.1  # a filter dropping this share of the pairs read or more is said in a warning


def prepare(config: DataConfig) -> PreparedData:
    """Read, normalise, filter and split. Raises ``DataError`` on unusable input."""
    raw = read_pairs(config)
    kept, dropped = filter_pairs(raw, config)
    rules = {"empty": "with an empty side", "too_short": f"under data.min_words={config.min_words}",
             "too_long": f"over data.max_words={config.max_words}",
             "length_ratio": f"past data.max_ratio={config.max_ratio:g}"}
    few = ("; words are counted at spaces (a Chinese or Japanese letter as one), so a language written without "
           "spaces between words (Thai, Lao, Khmer, Burmese) counts few")
    for reason, n in dropped.items():  # half of an English–Thai corpus went past max_ratio, said at INFO only
        if kept and reason != "empty" and n >= MANY_DROPPED * len(raw):
            log.warning("%s: %d of %d pairs (%.0f %%) dropped as %s%s: change the setting if that is not what you "
                        "meant", config.source, n, len(raw), 100 * n / len(raw), rules[reason],
                        few if reason != "too_long" else "")
    if not kept:
        why = ", ".join(f"{n} {rules.get(reason, reason)}" for reason, n in sorted(dropped.items(), key=lambda kv: -kv[1]))
        raise DataError(f"{config.source}: the training set is empty after filtering ({len(raw)} pairs read, "
                        f"dropped: {why or 'none'})")
    splits = split_pairs(kept, config)
    if not splits["train"]:
        raise DataError(f"{config.source}: the training split is empty: every pair kept is in a dev or test group")
    for name, uses in (("dev", "training validates on it"), ("test", "evaluation reads it")):
        if not splits[name]:
            raise DataError(f"{config.source}: the {name} split is empty, and {uses} "
                            f"(data.{name}_groups, or data.{name}_size without groups)")
    prepared = PreparedData(splits, dropped, len(raw))
    log.info("read %d pairs, kept %s, dropped %s", len(raw), {n: len(p) for n, p in splits.items()}, dict(dropped))
    for name, seen in prepared.seen_in_train.items():
        if seen:  # the test split's scores are the ones reported; the dev split only picks the best step
            log.log(logging.WARNING if name == "test" else logging.INFO,
                    "%d of %d %s pairs have a source sentence that is also in the training split (the corpus repeats "
                    "it): scores on them measure memory as much as translation", seen, len(splits[name]), name)
    return prepared


def split_path(folder: Path, split: str, lang: str) -> Path:
    return Path(folder) / f"{split}.{lang}"


def split_texts(prepared: PreparedData, config: DataConfig) -> dict[str, str]:
    """The splits' files as ``write_splits`` writes them: {file name: text}."""
    texts = {}
    for name, pairs in prepared.splits.items():
        texts[split_path(Path(), name, config.src_lang).name] = "".join(p.src + "\n" for p in pairs)
        texts[split_path(Path(), name, config.tgt_lang).name] = "".join(p.tgt + "\n" for p in pairs)
        texts[f"{name}.ids"] = "".join(p.id + "\n" for p in pairs)
    return texts


def write_splits(prepared: PreparedData, folder: Path, config: DataConfig, texts: dict[str, str] | None = None
                 ) -> Path:
    """Write ``{split}.{lang}`` and ``{split}.ids`` files (``texts``: ``split_texts``' of them, where
    the caller has them), then ``stats.json`` last (the stage's marker)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for file, text in (texts if texts is not None else split_texts(prepared, config)).items():
        atomic_write_text(folder / file, text)
    stats_path = folder / "stats.json"
    stats = {**prepared.stats(), "settings": settings_json(config)}  # training checks it prepared these
    atomic_write_text(stats_path, json.dumps(stats, indent=2) + "\n")
    return stats_path


def settings_changed(record: Path, section: str, now: dict) -> str:
    """How the settings a stage recorded in ``record`` (``stats.json``, ``tokenizer.json``) differ
    from ``now``, old → new; "" where they do not, or the folder was made before the record."""
    was = json.loads(record.read_text(encoding="utf-8")).get("settings") if record.is_file() else None
    return changed_settings(section, was, now) if was is not None else ""


def check_made_with(record: Path, section: str, now: dict, stage: str) -> None:
    """A stage's folder was made under the config's section as it is now: ``nmt train`` after an
    edit of data.* or tokenizer.* (make reruns the stages itself) trained on the old splits or
    pieces, and the checkpoint recorded the new settings; ``nmt tokenize`` learned pieces of old
    splits. Folders made before the record: no check."""
    if changed := settings_changed(record, section, now):
        raise DataError(f"{record.parent} was made with other settings ({changed}); run {stage} again "
                        f"(make train does it itself)")


def check_test_split(data_dir: Path, config: DataConfig, model: str = "the checkpoint",
                     trained_here: Callable[[], bool] = lambda: False) -> None:
    """A ``DataError`` when ``data_dir`` was prepared under other data settings than ``model`` was
    trained with (``config``): prepared again with another seed, say, its test split can hold
    sentences the model was trained on. Unless ``trained_here()``: the model is known to have
    trained on this folder's train split as it is (asked only then: it reads the splits)."""
    changed = settings_changed(data_dir / "stats.json", "data", settings_json(config))
    if changed and not trained_here():
        raise DataError(f"{data_dir} was prepared with other settings than {model} was trained on ({changed}, "
                        f"the split's → the checkpoint's): its test split may hold training sentences; give --src "
                        f"and --ref, or prepare it again with the checkpoint's settings")


def read_test_pair(
    data_dir: Path, config: DataConfig, src: Path | None = None, ref: Path | None = None,
    trained_here: Callable[[], bool] = lambda: False,
) -> tuple[Path, Path, list[str], list[str]]:
    """Source and reference lines to evaluate: the given files, else the test split in
    ``data_dir``, which must have been prepared under ``config`` (the checkpoint's data settings:
    prepared again with another seed, say, it can hold sentences the model was trained on). Line
    counts must match and the set must not be empty."""
    given_src, given_ref = src, ref
    if src is None or ref is None:
        check_test_split(data_dir, config, trained_here=trained_here)
    paths = []
    for given, lang in ((src, config.src_lang), (ref, config.tgt_lang)):
        path = Path(given) if given is not None else split_path(data_dir, "test", lang)
        if given is None and not path.is_file():  # a checkpoint away from its run
            raise DataError(f"no test split at {path} (the checkpoint's run): give --src and --ref")
        paths.append(path)
    src, ref = paths
    sources, refs = read_lines(src), read_lines(ref)
    own = split_path(data_dir, "test", config.src_lang)
    if given_src is not None and given_ref is None and (not own.is_file() or sources != read_lines(own)):
        # other lines scored against the test split's references: a BLEU of 0.69, and no error
        raise DataError(f"--src {src} is not the run's test source, and no --ref was given for it: give --ref, "
                        f"its reference file (the run's test references are {ref})")
    if len(sources) != len(refs):
        raise DataError(f"{src} has {len(sources)} lines but {ref} has {len(refs)}")
    if not sources:
        raise DataError(f"{src} is empty: nothing to evaluate")
    return src, ref, sources, refs
