"""Where one training step of the default model spends its time (torch.profiler, CPU).

    python benchmarks/profile_step.py [--precision bf16|fp32] [--steps 5] [--set model.enc_hidden=128 …]

Prints the operators with the most self CPU time over ``--steps`` steps after 3 warm-up steps,
then the steps' analytic FLOPs (``flops.py``) per second against the fp32 matmul peak, and what
that would be if only the matrix products took time (``profile_decode.ceiling``).
A diagnostic for finding speed levers, not a measurement for the results table.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from flops import Dims, training_flops  # noqa: E402
from peers.common import at_least_one  # noqa: E402
from profile_decode import ATTENTION, PRODUCTS, ceiling, fp32_peak, self_ms  # noqa: E402
from workdir import WORK, ensure_work  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--precision", default="bf16", choices=["bf16", "fp32"])
    parser.add_argument("--steps", type=at_least_one, default=5)
    parser.add_argument("--rows", type=int, default=25)
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="config overrides, e.g. model.enc_hidden=128 (OpenNMT-py's twin)")
    args = parser.parse_args()

    from nmt.batching import make_batch, token_batches
    from nmt.config import load_config
    from nmt.train import Trainer

    work = ensure_work(WORK)
    config = load_config(HERE.parent / "configs" / "bible-es-en.yaml",
                         [f"train.precision={args.precision}", "train.threads=2", *args.set])
    trainer = Trainer(config, work / "data", work / "tokenizer", work / "profile")
    torch.set_num_threads(2)
    batches = token_batches(trainer.train_src.lengths, trainer.train_tgt.lengths, config.train.max_tokens,
                            np.random.default_rng([config.train.seed, 0]))
    for index in batches[:3]:
        trainer._train_step(make_batch(trainer.train_src, index, trainer.train_tgt))
    profiled = batches[3 : 3 + args.steps]
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        for index in profiled:
            trainer._train_step(make_batch(trainer.train_src, index, trainer.train_tgt))
    events = prof.key_averages()
    print(events.table(sort_by="self_cpu_time_total", row_limit=args.rows))
    dims = Dims.from_config(config.model, trainer.tokenizer.tgt_vocab)
    gflop = sum(training_flops(dims, trainer.train_src.lengths[index], trainer.train_tgt.lengths[index] + 1)
                for index in profiled) / 1e9  # targets + </s>
    total_ms = sum(e.self_cpu_time_total for e in events) / 1e3
    print(f"\n{args.steps} steps, {args.precision}, {gflop:.0f} GFLOP (flops.py), {total_ms / 1e3:.2f} s profiled.")
    print(ceiling(gflop, total_ms, self_ms(events, PRODUCTS + ATTENTION), fp32_peak()))


if __name__ == "__main__":
    main()
