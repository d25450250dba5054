"""One measurement of nmt per process (so each has its own peak RSS), called by bench.py.

    python benchmarks/nmt_runs.py peak   --out R.json
    python benchmarks/nmt_runs.py train  --out R.json --work DIR [--precision auto|bf16|fp32] [--warmup W --steps N]
    python benchmarks/nmt_runs.py decode --out R.json --checkpoint DIR --src FILE --beam K
    python benchmarks/nmt_runs.py budget --out R.json --work DIR --run-dir DIR --minutes M

Every run uses ``torch.set_num_threads(THREADS)`` (2: this machine's cores, the same for peers) and
the CPU unless ``--device`` names another; benchmarks/gpu.py calls run_train / run_decode
in-process on a GPU. ``--set KEY=VALUE`` adds config overrides (``train.fused_rnn=false`` …).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import sys
import time
import typing
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from peers.common import at_least_one  # noqa: E402

from nmt.config import DecodePrecision, StoppingRule  # noqa: E402

THREADS = 2
CONFIG = ROOT / "configs" / "bible-es-en.yaml"
# The models measured: the default, its Luong twin (fairseq's attention) and its twin with
# OpenNMT-py's encoder width (its brnn needs 2 x 128 with a 256 decoder); and the default model
# trained without the LSTM fast path (the before of a before/after).
VARIANTS = {"bahdanau": [], "luong": ["model.attention=luong"], "enc128": ["model.enc_hidden=128"],
            "plain_rnn": ["train.fused_rnn=false"]}


def _write(path: str, result: dict) -> None:
    Path(path).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


# -- matmul peak ---------------------------------------------------------------------------------
def matmul_peak(dtype: torch.dtype, sizes=(1024, 2048, 3072, 4096), seconds: float = 1.5, onednn: bool = False) -> dict:
    """Best GFLOP/s of square products over ``sizes`` (2·n³ FLOPs each), ``seconds`` per size:
    ``torch.mm`` (fp32: MKL's sgemm; bf16: oneDNN), or with ``onednn`` oneDNN's fp32 product
    (``torch.ops.mkldnn._linear_pointwise``, what ``nmt.linear`` uses)."""
    best, per_size = 0.0, {}
    for n in sizes:
        a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
        product = (lambda: torch.ops.mkldnn._linear_pointwise(a, b, None, "none", [], "")) if onednn else (
            lambda: torch.mm(a, b))
        product()  # warm-up: first call picks the kernel and touches the memory
        reps, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            product()
            reps += 1
        rate = 2 * n**3 * reps / (time.perf_counter() - t0) / 1e9
        per_size[n] = round(rate, 1)
        best = max(best, rate)
    return {"gflops": round(best, 1), "per_size": per_size}


def fp32_peak(seconds: float = 1.5) -> dict:
    """The fp32 peak is the better of MKL's sgemm and oneDNN's: on AMD CPUs MKL takes a slower code
    path (the AMD EPYC VM: 198 vs 433 GFLOP/s), so MKL alone would understate the machine."""
    mkl = matmul_peak(torch.float32, seconds=seconds)
    with torch.no_grad():
        onednn = (matmul_peak(torch.float32, seconds=seconds, onednn=True)
                  if hasattr(torch.ops.mkldnn, "_linear_pointwise") else None)
    fp32 = dict(max([mkl, onednn] if onednn else [mkl], key=lambda r: r["gflops"]))
    fp32["by_library"] = {"mkl": mkl, "onednn": onednn}
    return fp32


def run_peak(args) -> dict:
    fp32 = fp32_peak()
    from nmt.hardware import native_bf16

    if not native_bf16("cpu"):  # emulated bf16 runs at a few GFLOP/s: minutes of products, no use as a peak
        return {"fp32": fp32, "bf16_not_measured": "bf16 is not native on this CPU"}
    return {"fp32": fp32, "bf16": matmul_peak(torch.bfloat16)}


# -- training ------------------------------------------------------------------------------------
def run_train(args) -> dict:
    """Time ``Trainer._train_step`` over fixed batches, the data pipeline (make_batch) included.

    The clock covers steps warmup+1 … warmup+steps: from the end of step ``warmup`` to the end of
    the last step, so batch building between steps is inside it. The batches are those of epoch 0
    of the real training run (same seed, same token_batches)."""
    from flops import Dims, describe, training_flops

    from nmt.batching import make_batch, token_batches
    from nmt.checkpoint import save_checkpoint
    from nmt.config import load_config
    from nmt.train import Trainer

    work = Path(args.work)
    overrides = [f"train.precision={args.precision}", f"train.threads={THREADS}", f"train.max_tokens={args.max_tokens}",
                 *VARIANTS[args.variant], *args.set]
    config = load_config(CONFIG, overrides)
    run_dir = Path(args.run_dir) if args.run_dir else work / f"nmt-{args.variant}-{args.precision}"
    shutil.rmtree(run_dir, ignore_errors=True)  # a fresh model every time, never a resumed one
    trainer = Trainer(config, work / "data", work / "tokenizer", run_dir, args.device)
    gpu_memory = _GpuMemory(trainer.device)
    torch.set_num_threads(THREADS)
    rng = np.random.default_rng([config.train.seed, 0])
    batches = token_batches(trainer.train_src.lengths, trainer.train_tgt.lengths, config.train.max_tokens, rng)
    total = args.warmup + args.steps
    if len(batches) < total:
        raise SystemExit(f"only {len(batches)} batches in an epoch; ask for fewer steps")
    ends, tokens, src_lens, tgt_lens, losses = [], [], [], [], []
    for i, index in enumerate(batches[:total]):
        batch = make_batch(trainer.train_src, index, trainer.train_tgt).to(trainer.device)
        loss, n_tokens, _ = trainer._train_step(batch)
        ends.append(time.perf_counter())
        if i >= args.warmup:
            tokens.append(n_tokens)
            src_lens.append(trainer.train_src.lengths[index])
            tgt_lens.append(trainer.train_tgt.lengths[index] + 1)  # + </s>
        losses.append(loss)
    seconds = ends[-1] - ends[args.warmup - 1]
    dims = Dims.from_config(config.model, trainer.tokenizer.tgt_vocab)
    src_all, tgt_all = np.concatenate(src_lens), np.concatenate(tgt_lens)
    flops = sum(training_flops(dims, s, t) for s, t in zip(src_lens, tgt_lens))
    assert int(tgt_all.sum()) == sum(tokens)
    step_times = np.diff(ends[args.warmup - 1 :])
    save_checkpoint(run_dir / "final", trainer.model, config, trainer.tokenizer, total)
    return {
        "precision": trainer.precision,  # --precision resolved (auto → bf16 where native, else fp32)
        "variant": args.variant,
        "attention": config.model.attention,
        "warmup_steps": args.warmup,
        "timed_steps": args.steps,
        "seconds": seconds,
        "target_tokens": int(sum(tokens)),
        "source_tokens": int(src_all.sum()),
        "sentences": int(len(src_all)),
        "tokens_per_s": sum(tokens) / seconds,
        "step_seconds_median": float(np.median(step_times)),
        "mean_src_len": float(src_all.mean()),
        "mean_tgt_len": float(tgt_all.mean()),
        "train_flops": flops,
        "gflops_per_s": flops / seconds / 1e9,
        "flops_per_target_token": flops / sum(tokens),
        "flop_model": describe(dims),
        "loss_first": losses[0],
        "loss_last": float(np.mean(losses[-10:])),
        "threads": torch.get_num_threads(),
        "device": str(trainer.device),
        "overrides": list(args.set),
        "checkpoint": str(run_dir / "final"),
        **gpu_memory.result(),
    }


def run_budget(args) -> dict:
    """The default training loop (Trainer.train: bucketed batches, dev validation every
    train.valid_every steps inside the budget, lr halving on a plateau) for ``--minutes`` of wall
    clock, from a fresh run folder; its last weights are ``<run-dir>/last``."""
    from nmt.config import load_config
    from nmt.train import Trainer

    work, run_dir = Path(args.work), Path(args.run_dir)
    shutil.rmtree(run_dir, ignore_errors=True)  # never resume: the budget starts from scratch
    overrides = [f"train.precision={args.precision}", f"train.threads={THREADS}", f"train.max_tokens={args.max_tokens}",
                 *VARIANTS[args.variant], f"train.max_minutes={args.minutes}", *args.set]
    config = load_config(CONFIG, overrides)
    trainer = Trainer(config, work / "data", work / "tokenizer", run_dir, args.device)
    torch.set_num_threads(THREADS)
    tokens, step = [0], trainer._train_step

    def counted(batch):
        out = step(batch)
        tokens[0] += out[1]
        return out

    trainer._train_step = counted
    summary = trainer.train()
    return {"budget_minutes": args.minutes, "steps": summary["steps"], "target_tokens": tokens[0],
            "train_minutes": summary["train_minutes"], "best_dev_bleu_greedy": summary["best_dev_bleu"],
            "best_step": summary["best_step"], "threads": torch.get_num_threads(),
            "checkpoint": str(run_dir / "last"), "model": {"variant": args.variant, "precision": trainer.precision}}


class _GpuMemory:
    """Peak GPU memory allocated by tensors from here on (CUDA only; the CPU's is the process's RSS)."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        if self.cuda:
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
        self.device = device

    def result(self) -> dict:
        if not self.cuda:
            return {}
        return {"gpu_peak_mib": round(torch.cuda.max_memory_allocated(self.device) / 2**20, 1)}


# -- decoding ------------------------------------------------------------------------------------
def with_decode_batch(config, batch: int | None):
    """config with decode.batch_size set to ``batch``; config itself where batch is None or 0 (the
    checkpoint's own). For the decoding scripts' batch options (this one, ab_decode, profile_decode)."""
    if not batch:
        return config
    return dataclasses.replace(config, decode=dataclasses.replace(config.decode, batch_size=batch))


def run_decode(args) -> dict:
    """Decode a file; time the search alone (generation only: encoder and search, the fastest of
    ``SearchClock.repeats`` passes; nmt's search is one call over the whole input, its batches
    made before the clock starts, as the peers' are) and, for information, the whole
    ``Translator.hypotheses`` (tokenising too, every pass)."""
    import nmt.translate as translate_module
    from peers.common import SearchClock
    from nmt.lines import read_lines
    from nmt.hardware import resolve_decode_precision

    torch.set_num_threads(THREADS)
    translator = translate_module.Translator.from_checkpoint(args.checkpoint, args.device)
    translator.follow_load = False  # THREADS throughout, as the peers get
    torch.set_num_threads(THREADS)
    translator.config = with_decode_batch(translator.config, args.decode_batch)
    lines = read_lines(Path(args.src))
    clock = SearchClock(args.repeats)  # the peers' clock: each search call repeated, the fastest pass kept
    def timed(stream):
        def search(model, batches, *args, **kwargs):
            batches = list(batches)  # tokens to tensors: off the clock
            return iter(clock.wrap(lambda: list(stream(model, batches, *args, **kwargs)))())

        return search

    searches = translate_module.greedy_stream, translate_module.beam_stream
    translate_module.greedy_stream, translate_module.beam_stream = (timed(search) for search in searches)
    gpu_memory = _GpuMemory(translator.device)
    t0 = time.perf_counter()
    try:
        found = translator.hypotheses(lines, beam=args.beam, precision=args.precision, stopping=args.stopping,
                                      scored=not args.unscored)
    finally:  # unwrapped again: a caller in the same process (benchmarks/gpu.py) decodes more than once
        translate_module.greedy_stream, translate_module.beam_stream = searches
    total_seconds = time.perf_counter() - t0
    lengths = [len(h[0].tokens) + 1 if h else 0 for h in found]  # pieces + </s>
    if args.hyps:
        hyps = [translator.tokenizer.decode_tgt([h[0].tokens])[0] if h else "" for h in found]
        Path(args.hyps).write_text("".join(h + "\n" for h in hyps), encoding="utf-8")
    return {
        "beam": args.beam,
        "precision": resolve_decode_precision(args.precision, translator.device, "--precision"),
        "stopping": args.stopping,
        "scored": not args.unscored,
        "sentences": len(lines),
        "target_tokens": int(sum(lengths)),
        "seconds": clock.seconds,
        "sentences_per_s": len(lines) / clock.seconds,
        "tokens_per_s": sum(lengths) / clock.seconds,
        "repeats": clock.repeats,
        "mean_output_len": float(np.mean(lengths)),
        "seconds_hypotheses_all_passes": total_seconds,  # tokenising and every repeat included
        "batch_size": translator.config.decode.batch_size,
        "threads": torch.get_num_threads(),
        "device": str(translator.device),
        **({"hyps": str(args.hyps)} if args.hyps else {}),
        **gpu_memory.result(),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["peak", "train", "decode", "budget"])
    parser.add_argument("--out", required=True)
    parser.add_argument("--work")
    parser.add_argument("--precision", default="auto", choices=typing.get_args(DecodePrecision),
                        help="auto: bf16 where it is native (nmt.hardware.native_bf16), else fp32; "
                             "int8: decode only (nmt.quantize)")
    parser.add_argument("--variant", default="bahdanau", choices=list(VARIANTS))
    parser.add_argument("--max-tokens", type=int, default=3000)
    parser.add_argument("--warmup", type=at_least_one, default=10)
    parser.add_argument("--steps", type=at_least_one, default=100)
    parser.add_argument("--checkpoint")
    parser.add_argument("--src")
    parser.add_argument("--beam", type=int, default=5)
    parser.add_argument("--hyps")
    parser.add_argument("--stopping", default="bound", choices=typing.get_args(StoppingRule), help="decode: beam search's rule")
    parser.add_argument("--unscored", action="store_true", help="decode: greedy search without log-probabilities, "
                        "as Translator.translate (nmt translate) decodes")
    parser.add_argument("--repeats", type=int, default=3, help="passes per search call; the fastest is timed")
    parser.add_argument("--minutes", type=float, default=15.0, help="budget: wall-clock training minutes")
    parser.add_argument("--run-dir", help="train / budget: the run folder (deleted first)")
    parser.add_argument("--device", default="cpu", help="cpu (the default), cuda, cuda:1 …")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="train / budget: a config override, e.g. train.fused_rnn=false (repeatable)")
    parser.add_argument("--decode-batch", type=int, default=0, help="decode: sentences per batch (0 = the config's)")
    args = parser.parse_args(argv)
    torch.set_num_threads(THREADS)
    run = {"peak": run_peak, "train": run_train, "decode": run_decode, "budget": run_budget}[args.what]
    _write(args.out, run(args))


if __name__ == "__main__":
    main()
