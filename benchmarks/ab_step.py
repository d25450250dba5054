"""A/B of two training configurations, interleaved batch by batch on the same batches.

    python benchmarks/ab_step.py --a train.fused_rnn=false --b train.fused_rnn=true [--steps 20]
    python benchmarks/ab_step.py --a model.attention=bahdanau --b model.attention=luong --both train.precision=fp32
    git show REV:nmt/recurrence.py > /tmp/old.py
    python benchmarks/ab_step.py --a-recurrence /tmp/old.py --both model.enc_hidden=128   (old code vs this)
    python benchmarks/ab_step.py --a-fp32-matmul mkl --b-fp32-matmul onednn --both train.precision=fp32

On a shared VM the speed of the machine drifts by tens of percent over minutes, so two runs one
after the other compare the machine as much as the code. Here both configurations train their
own model (same seed, same initial weights), and each batch is stepped by A and by B back to back
(the order alternating), so drift touches both alike; the figure to read is the median of the
per-batch speed ratios, with its quartiles. A diagnostic for choosing levers, not a results table.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from ab_decode import load_module  # noqa: E402
from peers.common import at_least_one  # noqa: E402
from workdir import CONFIG, WORK, ensure_work  # noqa: E402

_load = functools.cache(load_module)


def trainer_for(overrides: list[str], run_dir: Path):
    from nmt.config import load_config
    from nmt.train import Trainer

    config = load_config(CONFIG, ["train.threads=2", *overrides])
    return Trainer(config, WORK / "data", WORK / "tokenizer", run_dir)


@contextlib.contextmanager
def recurrence_from(path: str | None):
    """The training fast path (``bilstm``, ``attention_decoder``) of another nmt/recurrence.py."""
    import nmt.model

    if path is None:
        yield
        return
    module = _load(path)  # once per file: ab_decode's loader, cached
    saved = nmt.model.bilstm, nmt.model.attention_decoder
    nmt.model.bilstm, nmt.model.attention_decoder = module.bilstm, module.attention_decoder
    try:
        yield
    finally:
        nmt.model.bilstm, nmt.model.attention_decoder = saved


@contextlib.contextmanager
def fp32_matmul(choice: str | None):
    """fp32 products without autograd through ``choice`` (mkl | onednn; nmt.linear), None: as set."""
    from nmt.linear import ENV, onednn_fp32

    if choice is None:
        yield
        return
    saved = os.environ.get(ENV)
    os.environ[ENV] = choice
    onednn_fp32.cache_clear()
    try:
        yield
    finally:
        if saved is None:
            del os.environ[ENV]
        else:
            os.environ[ENV] = saved
        onednn_fp32.cache_clear()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--a", nargs="*", default=[], help="config overrides of A")
    parser.add_argument("--b", nargs="*", default=[], help="config overrides of B")
    parser.add_argument("--both", nargs="*", default=[], help="overrides for both")
    parser.add_argument("--a-recurrence", metavar="FILE", help="A runs the fast path of this nmt/recurrence.py")
    for name in ("a", "b"):
        parser.add_argument(f"--{name}-fp32-matmul", choices=["mkl", "onednn"],
                            help=f"{name.upper()}'s fp32 products without autograd (nmt.linear's choice)")
    parser.add_argument("--steps", type=at_least_one, default=20, help="timed batches (after 2 warm-up batches)")
    parser.add_argument("--max-tokens", type=int, default=3000)
    args = parser.parse_args()

    from nmt.batching import make_batch, token_batches

    ensure_work(WORK)
    scratch = HERE / ".work" / "ab"
    common = [*args.both, f"train.max_tokens={args.max_tokens}"]
    trainers = {"A": trainer_for([*common, *args.a], scratch / "a"), "B": trainer_for([*common, *args.b], scratch / "b")}
    torch.set_num_threads(2)
    first = trainers["A"]
    batches = token_batches(first.train_src.lengths, first.train_tgt.lengths, args.max_tokens,
                            np.random.default_rng([first.config.train.seed, 0]))
    seconds, tokens, ratios = {"A": 0.0, "B": 0.0}, {"A": 0, "B": 0}, []
    for i, index in enumerate(batches[: args.steps + 2]):
        batch = make_batch(first.train_src, index, first.train_tgt)
        took = {}
        for name in ("A", "B") if i % 2 == 0 else ("B", "A"):
            matmul = args.a_fp32_matmul if name == "A" else args.b_fp32_matmul
            with recurrence_from(args.a_recurrence if name == "A" else None), fp32_matmul(matmul):
                t0 = time.perf_counter()
                _, n_tokens, _ = trainers[name]._train_step(batch)
                took[name] = time.perf_counter() - t0
            if i >= 2:
                seconds[name] += took[name]
                tokens[name] += n_tokens
        if i >= 2:
            ratios.append(took["A"] / took["B"])
    label_a = args.a + ([f"recurrence {args.a_recurrence}"] if args.a_recurrence else [])
    label_a += [f"fp32 products: {args.a_fp32_matmul}"] if args.a_fp32_matmul else []
    label_b = args.b + ([f"fp32 products: {args.b_fp32_matmul}"] if args.b_fp32_matmul else [])
    for name, overrides in (("A", label_a), ("B", label_b)):
        print(f"{name} {' '.join(overrides) or '(defaults)'}: {tokens[name] / seconds[name]:,.0f} target tokens/s")
    q1, median, q3 = np.percentile(ratios, [25, 50, 75])
    print(f"B / A speed, per batch: median {median:.2f}x (quartiles {q1:.2f}-{q3:.2f}, {len(ratios)} batches)"
          + (f"; both: {' '.join(args.both)}" if args.both else ""))


if __name__ == "__main__":
    main()
