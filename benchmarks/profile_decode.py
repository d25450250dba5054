"""Where greedy decoding spends its time, and how fast it could be if only its products took any.

    python benchmarks/profile_decode.py CHECKPOINT SOURCE [--precision fp32|bf16|int8] [--sentences N] [--batch B] [--unscored]

Translates SOURCE greedily once unprofiled (the speed a user gets), once under torch.profiler, and
prints the operators with the most self CPU time. Greedy search computes log-probabilities
(``Translator.hypotheses``' default) unless ``--unscored``: then it runs as ``nmt translate`` does,
without them (``nmt.search.greedy_stream``). Then, with the analytic FLOP counts of
``flops.py`` (only the products a perfect implementation could not avoid), splits the profiled
time into the encoder's products (under ``Seq2Seq.encode``: oneDNN's fused LSTM kernel, whose
gates run inside it, or the product operators of the int8 encoder), the decoder's linear products
(LSTM cell, combine layer, output layer: oneDNN, MKL or int8 product operators outside the
encoder), the attention's batched products, and the rest (everything else, the encoder's own
included: gates, copies, softmax, the best token, the search's bookkeeping), each with its
GFLOP/s against the fp32 matmul peak measured here
(``nmt_runs.fp32_peak``, the better of MKL and oneDNN).

The bound it ends with: with "the rest" taking no time, the FLOPs over the products' time alone.
Against a peer's share of the same peak (``decode_trained.py``'s GFLOP/s table) it says how large
a decoding ratio this precision can reach on this machine. A diagnostic, not a results-table
measurement: the profiler adds a few microseconds to every operator call.
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

from flops import Dims, per_pair, per_sentence, per_source_token, per_target_token  # noqa: E402

# Operators that are linear products in one precision or another (self time; composites such as
# aten::linear have ~0 self time, their kernels are counted)
PRODUCTS = ("mkldnn::_linear_pointwise", "aten::addmm", "aten::addmm_", "aten::mm", "aten::_int_mm", "aten::linear",
            "aten::addmv_")
ATTENTION = ("aten::bmm", "aten::baddbmm")
LSTM_KERNELS = ("aten::mkldnn_rnn_layer",)  # oneDNN's whole LSTM layer, products and gates in one call
ENCODE = "nmt: encode"


def self_ms(events, names: tuple[str, ...]) -> float:
    """Self time of the operators ``names`` among profiler events (averaged or raw), in ms."""
    return sum(e.self_cpu_time_total for e in events if e.key in names) / 1e3


def fp32_peak() -> float:
    """The fp32 matmul peak here, GFLOP/s (``nmt_runs.fp32_peak``: the better of MKL and oneDNN)."""
    from nmt_runs import fp32_peak as measured

    return measured(seconds=1.0)["gflops"]


def ceiling(gflop: float, total_ms: float, products_ms: float, peak: float) -> str:
    """The whole run's GFLOP/s and what it would be if only the products took time."""
    whole, bound = gflop / (total_ms / 1e3), gflop / (products_ms / 1e3)
    return (f"Whole: {whole:.1f} GFLOP/s ({100 * whole / peak:.0f} % of the fp32 peak {peak:.1f}, profiled); "
            f"products {100 * products_ms / total_ms:.0f} % of the time; with the rest taking no time: "
            f"{bound:.1f} GFLOP/s ({100 * bound / peak:.0f} %), {bound / whole:.2f}x the profiled speed.")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint")
    parser.add_argument("source")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "int8"])
    parser.add_argument("--sentences", type=int, default=0, help="the first N lines (0: all)")
    parser.add_argument("--rows", type=int, default=15)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, help="decode.batch_size (default: the checkpoint's)")
    parser.add_argument("--unscored", action="store_true",
                        help="greedy search without log-probabilities, as nmt translate decodes")
    args = parser.parse_args(argv)

    from nmt.lines import read_lines
    from nmt.translate import Translator
    from nmt_runs import with_decode_batch

    torch.set_num_threads(args.threads)
    translator = Translator.from_checkpoint(args.checkpoint, device="cpu")
    translator.follow_load = False  # --threads throughout
    translator.config = with_decode_batch(translator.config, args.batch)
    lines = [line for line in read_lines(args.source) if line.strip()]
    lines = lines[: args.sentences] if args.sentences else lines
    model, encode = translator.model, translator.model.encode

    def labelled_encode(*a, **kw):
        with torch.profiler.record_function(ENCODE):
            return encode(*a, **kw)

    model.encode = labelled_encode
    scored = not args.unscored
    translator.hypotheses(lines[:64], beam=1, precision=args.precision, scored=scored)  # warm-up
    t0 = time.perf_counter()
    found = translator.hypotheses(lines, beam=1, precision=args.precision, scored=scored)
    plain_s = time.perf_counter() - t0
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        translator.hypotheses(lines, beam=1, precision=args.precision, scored=scored)
    events = prof.key_averages()
    print(events.table(sort_by="self_cpu_time_total", row_limit=args.rows))

    peak = fp32_peak()
    dims = Dims.from_config(translator.config.model, translator.tokenizer.tgt_vocab)
    src = np.array([len(ids) for ids in translator.tokenizer.encode_src(lines)], dtype=np.float64)
    tgt = np.array([len(hyps[0].tokens) + 1 for hyps in found], dtype=np.float64)  # + </s> (or the cut)
    # the encoder's FLOPs include the keys' projection and the bridge, which run inside encode
    flops = {"encoder products": src.sum() * per_source_token(dims) + len(src) * per_sentence(dims),
             "decoder products": tgt.sum() * per_target_token(dims),
             "attention products": (src * tgt).sum() * per_pair(dims)}
    total_ms = sum(e.self_cpu_time_total for e in events) / 1e3
    encoder = [e for e in prof.events() if _under(e, ENCODE)]
    encoder_products_ms = self_ms(encoder, PRODUCTS)
    ms = {"encoder products": encoder_products_ms + self_ms(encoder, LSTM_KERNELS),
          "decoder products": self_ms(events, PRODUCTS) - encoder_products_ms,
          "attention products": self_ms(events, ATTENTION)}
    ms["rest"] = total_ms - sum(ms.values())
    how = f"greedy{'' if scored else ' (unscored)'}, {args.precision}, {translator.config.decode.batch_size} a batch"
    print(f"\n{len(lines)} sentences, {how}: {len(lines) / plain_s:.1f} sent/s unprofiled ({plain_s:.2f} s)"
          f", {total_ms / 1e3:.2f} s profiled; fp32 matmul peak {peak:.1f} GFLOP/s")
    print("| part | profiled s | share | GFLOP | GFLOP/s | of the fp32 peak |\n|---|---:|---:|---:|---:|---:|")
    for part, part_ms in ms.items():
        gflop = flops.get(part, 0.0) / 1e9
        rate = gflop / (part_ms / 1e3) if gflop else 0.0
        cells = [f"{gflop:.0f}", f"{rate:.1f}", f"{100 * rate / peak:.0f} %"] if gflop else ["—", "—", "—"]
        print(f"| {part} | {part_ms / 1e3:.2f} | {100 * part_ms / total_ms:.0f} % | " + " | ".join(cells) + " |")
    print("\n" + ceiling(sum(flops.values()) / 1e9, total_ms, total_ms - ms["rest"], peak))


def _under(event, label: str) -> bool:
    """Whether a profiler event ran inside a record_function ``label``."""
    parent = event.cpu_parent
    while parent is not None:
        if parent.name == label:
            return True
        parent = parent.cpu_parent
    return False


if __name__ == "__main__":
    main()
