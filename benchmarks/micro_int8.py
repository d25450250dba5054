"""Micro-benchmark: one matrix product of decoding in fp32 (oneDNN and MKL), bf16 and int8
(``nmt.quantize.int8_linear``: quantization of the input rows and rescaling included).

    python benchmarks/micro_int8.py [--reps 200] [--threads 2]
    ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2 python benchmarks/micro_int8.py

The second form holds both libraries to AVX2 (no VNNI, no AVX-512): a stand-in for a CPU without
8-bit dot products on this one; oneDNN then has no bf16 product, and that column reads "—".

Shapes are decoding's: rows = sentences (× beam) still decoding, then the default model's output
layer (256 → 8,000), LSTM cell (512 / 256 → 1,024) and W_c (768 → 256). Rounds alternate the four
arms (this VM's speed drifts); the fastest round of each is kept. The source of the int8 row of the
lever table in benchmarks/README.md; not part of the results tables.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from micro_encoder import timed  # noqa: E402
from nmt.quantize import Int8Weight, int8_linear  # noqa: E402

SHAPES = [(1, 256, 8000), (8, 256, 8000), (64, 256, 8000), (320, 256, 8000), (64, 512, 1024), (320, 512, 1024),
          (64, 768, 256), (320, 768, 256)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} threads; µs per product (GFLOP/s), fastest of {args.rounds} rounds")
    print("| rows × in × out | fp32 MKL | fp32 oneDNN | bf16 (oneDNN) | int8 | int8 / fastest fp32 | int8 rel. error |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    g = torch.Generator().manual_seed(0)
    for rows, k, n in SHAPES:
        x, w, b = torch.randn(rows, k, generator=g), torch.randn(n, k, generator=g) * k**-0.5, torch.randn(n, generator=g)
        xb, wb, bb, q = x.bfloat16(), w.bfloat16(), b.bfloat16(), Int8Weight.of(w)
        arms = {
            "mkl": lambda: F.linear(x, w, b),
            "onednn": lambda: torch.ops.mkldnn._linear_pointwise(x, w, b, "none", [], ""),
            "bf16": lambda: torch.ops.mkldnn._linear_pointwise(xb, wb, bb, "none", [], ""),
            "int8": lambda: int8_linear(x, q, b),
        }
        best = {name: float("inf") for name in arms}
        with torch.no_grad():
            try:
                arms["bf16"]()
            except RuntimeError:  # no bf16 kernels (e.g. ONEDNN_MAX_CPU_ISA=AVX2)
                del arms["bf16"]
            for _ in range(args.rounds):
                for name, fn in arms.items():
                    best[name] = min(best[name], timed(fn, args.reps))
            ref = F.linear(x, w, b)
            error = float((int8_linear(x, q, b) - ref).norm() / ref.norm())
        flops = 2 * rows * k * n
        cell = lambda s: "—" if s == float("inf") else f"{s * 1e6:,.0f} ({flops / s / 1e9:.0f})"  # noqa: E731
        fp32 = min(best["mkl"], best["onednn"])
        print(f"| {rows} × {k} × {n} | {cell(best['mkl'])} | {cell(best['onednn'])} | {cell(best['bf16'])} | "
              f"{cell(best['int8'])} | {fp32 / best['int8']:.2f}× | {100 * error:.1f} % |")


if __name__ == "__main__":
    main()
