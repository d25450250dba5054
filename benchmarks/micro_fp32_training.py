"""Micro-benchmark: the fp32 matrix products of one training step, MKL (PyTorch's default) against
oneDNN (``nmt.linear.mm``'s other path).

    python benchmarks/micro_fp32_training.py [--reps-flop 2e8] [--rounds 3] [--threads 2]
    ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2 python benchmarks/micro_fp32_training.py

Shapes are the default model's with 3,000-token batches (B ≈ 85 sentences, S·B ≈ 3,000 positions):
the encoder's input projections and per-step products, the decoder's per-step products, the fused
loss's chunks of 256 rows, and the weight gradients, whose left operand is a transpose (Xᵀ δ: a sum
over the rows of X). The encoder's steps are batched over its two directions (``torch.baddbmm``),
also timed as one oneDNN product per direction. Rounds alternate the arms (this VM's speed
drifts); the fastest of each is kept. The source of the product figures of the fp32-training lever
in benchmarks/README.md; not part of the results tables.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from micro_encoder import timed  # noqa: E402

B, POSITIONS = 85, 3000
# name, rows, inner, out, whether the left operand is a transpose (a weight gradient)
PRODUCTS = [
    ("encoder input projection, layer 1", POSITIONS, 256, 2048, False),
    ("encoder input projection, layer 2", POSITIONS, 512, 2048, False),
    ("encoder step W_h h (one direction)", B, 256, 1024, False),
    ("encoder step backward (one direction)", B, 1024, 256, False),
    ("encoder δx, layer 2", POSITIONS, 2048, 512, False),
    ("decoder step [ã ; h] → gates", B, 512, 1024, False),
    ("decoder step W_c [c ; h]", B, 768, 256, False),
    ("decoder step backward → [ã ; h]", B, 1024, 512, False),
    ("loss chunk: logits", 256, 256, 6000, False),
    ("loss chunk: δh", 256, 6000, 256, False),
    ("encoder δW_x, layer 2 (transposed left)", 2048, POSITIONS, 512, True),
    ("decoder δW (transposed left)", 1024, POSITIONS, 512, True),
    ("loss chunk: δW (transposed left)", 6000, 256, 256, True),
]
BATCHED = [("encoder step, both directions", B, 256, 1024), ("encoder step backward, both directions", B, 1024, 256)]


def fastest(arms: dict, reps: int, rounds: int) -> dict[str, float]:
    best = {name: float("inf") for name in arms}
    for _ in range(rounds):
        for name, fn in arms.items():
            best[name] = min(best[name], timed(fn, reps))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps-flop", type=float, default=2e8, help="repetitions × FLOPs per timing (≥ 3 reps)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    linear = torch.ops.mkldnn._linear_pointwise
    g = torch.Generator().manual_seed(0)
    print(f"torch {torch.__version__}, {args.threads} threads; GFLOP/s, fastest of {args.rounds} rounds")
    print("| product | rows × inner × out | MKL | oneDNN | oneDNN / MKL |")
    print("|---|---|---:|---:|---:|")
    with torch.no_grad():
        for name, rows, inner, out, transposed in PRODUCTS:
            a = torch.randn(inner, rows, generator=g).t() if transposed else torch.randn(rows, inner, generator=g)
            w = torch.randn(out, inner, generator=g)  # held (out, inner); the product reads its transpose
            reps = max(3, int(args.reps_flop / (rows * inner * out)))
            best = fastest({"mkl": lambda: a @ w.t(), "onednn": lambda: linear(a, w, None, "none", [], "")},
                           reps, args.rounds)
            flops = 2 * rows * inner * out / 1e9
            print(f"| {name} | {rows} × {inner} × {out} | {flops / best['mkl']:.0f} | {flops / best['onednn']:.0f} | "
                  f"{best['mkl'] / best['onednn']:.2f}× |")
        for name, rows, inner, out in BATCHED:
            a, w = torch.randn(2, rows, inner, generator=g), torch.randn(2, out, inner, generator=g)
            base = torch.randn(2, rows, out, generator=g)
            w_t = w.transpose(1, 2)
            per_direction = lambda: torch.stack(  # noqa: E731
                [linear.binary(a[d], base[d], w[d], None, "add") for d in range(2)])
            reps = max(3, int(args.reps_flop / (2 * rows * inner * out)))
            best = fastest({"mkl": lambda: torch.baddbmm(base, a, w_t), "onednn": per_direction}, reps, args.rounds)
            flops = 4 * rows * inner * out / 1e9
            print(f"| {name}: baddbmm vs one oneDNN product per direction, stacked | 2 × {rows} × {inner} × {out} | "
                  f"{flops / best['mkl']:.0f} | {flops / best['onednn']:.0f} | {best['mkl'] / best['onednn']:.2f}× |")


if __name__ == "__main__":
    main()
