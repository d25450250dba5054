"""Micro-benchmark: the encoder's bidirectional LSTM over a packed batch (what nmt runs) against
the same LSTM over the padded batch (what a dense call costs), forward + backward.

    python benchmarks/micro_encoder.py [--reps 20]

The padded call is NOT the same maths for the backward direction (it reads the padding first);
it only bounds what a dense formulation (e.g. per-direction calls on length-reversed inputs)
could gain. A diagnostic for speed levers, not part of the results table.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from workdir import WORK, ensure_work  # noqa: E402


def timed(fn, reps: int) -> float:
    for _ in range(3):
        fn()
    t0 = time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - t0) / reps


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reps", type=int, default=20)
    args = parser.parse_args()
    torch.set_num_threads(2)

    from nmt.batching import Sequences, make_batch, token_batches
    from nmt.config import load_config
    from nmt.data import split_path
    from nmt.lines import read_lines
    from nmt.model import build_model
    from nmt.tokenizer import Tokenizer

    work = ensure_work(WORK)
    config = load_config(HERE.parent / "configs" / "bible-es-en.yaml")
    tok = Tokenizer.from_folder(work / "tokenizer")
    lines = read_lines(split_path(work / "data", "train", "es"))[:4000]
    tgt_lines = read_lines(split_path(work / "data", "train", "en"))[:4000]
    src, tgt = Sequences.from_lists(tok.encode_src(lines)), Sequences.from_lists(tok.encode_tgt(tgt_lines))
    batches = token_batches(src.lengths, tgt.lengths, 3000, np.random.default_rng(1))
    index = batches[len(batches) // 2]
    batch = make_batch(src, index, tgt)
    torch.manual_seed(1)
    model = build_model(config.model, tok.src_vocab, tok.tgt_vocab).train()
    enc = model.encoder
    print(f"batch: {batch.src.shape[0]} sentences × {batch.src.shape[1]} source positions")

    def packed():
        out, h, c = enc(batch.src, batch.src_lengths)
        (out.sum() + h.sum() + c.sum()).backward()

    def dense():
        x = enc.dropout(enc.embed(batch.src))
        out, (h, c) = enc.rnn(x)
        (out.sum() + h.sum() + c.sum()).backward()

    for name, precision in (("fp32", False), ("bf16 autocast", True)):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision):
            p, d = timed(packed, args.reps), timed(dense, args.reps)
        print(f"{name}: packed {p * 1000:.1f} ms, padded dense {d * 1000:.1f} ms, ratio {p / d:.2f}")


if __name__ == "__main__":
    main()
