"""Where one training step of the default model spends its time (torch.profiler, CPU).

    python benchmarks/profile_step.py [--precision bf16|fp32] [--steps 5] [--set model.enc_hidden=128 …]

Prints the operators with the most self CPU time over ``--steps`` steps after 3 warm-up steps.
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

from workdir import WORK, ensure_work  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--precision", default="bf16", choices=["bf16", "fp32"])
    parser.add_argument("--steps", type=int, default=5)
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
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        for index in batches[3 : 3 + args.steps]:
            trainer._train_step(make_batch(trainer.train_src, index, trainer.train_tgt))
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.rows))


if __name__ == "__main__":
    main()
