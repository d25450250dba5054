"""The benchmark's own copy of the Bible data, SentencePiece model and piece text.

    benchmarks/.work/bible-es-en/data/        nmt.pipeline.prepare with configs/bible-es-en.yaml
    benchmarks/.work/bible-es-en/tokenizer/   nmt.pipeline.tokenize (SentencePiece, joint 6000)
    benchmarks/.work/bible-es-en/pieces/      {train,dev,test}.{es,en} as space-separated pieces, and
                                              vocab.tsv (piece<TAB>count, specials excluded)

The peers read the piece files, so every toolkit trains on the same pieces of the same
SentencePiece model and none of them runs a tokenizer of its own. Built once; rerun after
deleting the folder.
"""

from __future__ import annotations

import logging
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CONFIG = ROOT / "configs" / "bible-es-en.yaml"
WORK = ROOT / "benchmarks" / ".work" / "bible-es-en"
SPLITS = ("train", "dev", "test")

log = logging.getLogger("bench")


def ensure_work(work: Path = WORK) -> Path:
    from nmt import pipeline
    from nmt.config import RunPaths, load_config

    config = load_config(CONFIG)
    paths = RunPaths(work)
    if not (paths.data / "stats.json").is_file():
        log.info("preparing the Bible splits into %s", paths.data)
        pipeline.prepare(config, paths)
    if not (paths.tokenizer / "tokenizer.json").is_file():
        log.info("training SentencePiece into %s", paths.tokenizer)
        pipeline.tokenize(config, paths)
    wanted = [work / "pieces" / "vocab.tsv"] + [work / "pieces" / f"{s}.{config.data.src_lang}" for s in SPLITS]
    if not all(path.is_file() for path in wanted):
        write_pieces(work, config)
    return work


def write_pieces(work: Path, config) -> None:
    """Piece text for the peers (no <s> / </s>: each toolkit adds its own) and the vocabulary."""
    from nmt.atomic import atomic_write_text
    from nmt.data import split_path
    from nmt.lines import read_lines
    from nmt.tokenizer import Tokenizer

    tok = Tokenizer.from_folder(work / "tokenizer")
    out = work / "pieces"
    out.mkdir(parents=True, exist_ok=True)
    counts: Counter[str] = Counter()
    for split in SPLITS:
        for lang, proc in ((config.data.src_lang, tok.src), (config.data.tgt_lang, tok.tgt)):
            lines = read_lines(split_path(work / "data", split, lang))
            pieces = proc.encode(lines, out_type=str)
            if split == "train":
                for p in pieces:
                    counts.update(p)
            atomic_write_text(out / f"{split}.{lang}", "".join(" ".join(p) + "\n" for p in pieces))
    # Every non-special piece of the SentencePiece model, in its id order, with its training
    # count (at least 1, so no toolkit drops an unseen piece): the same vocabulary for all.
    specials = {"<pad>", "<unk>", "<s>", "</s>"}
    rows = []
    for i in range(tok.tgt_vocab):
        piece = tok.tgt.id_to_piece(i)
        if piece not in specials:
            rows.append(f"{piece}\t{max(1, counts[piece])}\n")
    atomic_write_text(out / "vocab.tsv", "".join(rows))
    log.info("piece text and a %d-piece vocabulary in %s", len(rows), out)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    print(ensure_work())
