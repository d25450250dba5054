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

from peers.common import at_least_one, write  # noqa: E402

from nmt.config import DecodePrecision, StoppingRule  # noqa: E402

THREADS = 2
CONFIG = ROOT / "configs" / "bible-es-en.yaml"
# The models measured: the default, its Luong twin (fairseq's attention) and its twin with
# OpenNMT-py's encoder width (its brnn needs 2 x 128 with a 256 decoder); and the default model
# trained without the LSTM fast path (the before of a before/after).
VARIANTS = {"bahdanau": [], "luong": ["model.attention=luong"], "enc128": ["model.enc_hidden=128"],
            "plain_rnn": ["train.fused_rnn=false"]}


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
class _Timed(Exception):
    """Raised at the end of the last timed step: it ends ``Trainer.train`` there, before the closing
    validation its loop runs (no peer's timed run validates)."""


def run_train(args) -> dict:
    """Time nmt's own training loop, ``Trainer.train``, over the batches of the real run from its
    start (epoch 0's: same seed, same token_batches), as the peers' drivers time their toolkits'.

    The clock (``peers.common.StepClock``, the peers' too) covers steps warmup+1 … warmup+steps:
    from the end of step ``warmup`` to the end of the last step, where a step ends once the loop
    has done its upkeep after the update (the metrics window and its log line every 20 steps,
    ``trim_heap`` every train.trim_heap_every steps, the thread governor's look under
    train.threads 0), so batch building (make_batch) and that upkeep are inside it. Dev
    validation is off (train.valid_every past the last step), as the peers' is."""
    from peers.common import StepClock

    from nmt.checkpoint import save_checkpoint
    from nmt.config import load_config
    from nmt.train import Trainer

    work, total = Path(args.work), args.warmup + args.steps
    overrides = [f"train.precision={args.precision}", f"train.threads={THREADS}", f"train.max_tokens={args.max_tokens}",
                 f"train.valid_every={total + 1}", *VARIANTS[args.variant], *args.set]
    config = load_config(CONFIG, overrides)
    run_dir = Path(args.run_dir) if args.run_dir else work / f"nmt-{args.variant}-{args.precision}"
    shutil.rmtree(run_dir, ignore_errors=True)  # a fresh model every time, never a resumed one
    trainer = Trainer(config, work / "data", work / "tokenizer", run_dir, args.device)  # train.threads: THREADS
    gpu_memory = _GpuMemory(trainer.device)
    clock, steps, timed = StepClock(args.warmup, args.steps), [], {}
    step = trainer._train_step

    def counted(batch):  # the loss, target tokens and sentence lengths of each step
        loss, n_tokens, norm = step(batch)
        src, tgt = trainer.train_src.lengths[batch.index], trainer.train_tgt.lengths[batch.index] + 1  # + </s>
        steps.append((loss, n_tokens, src, tgt))
        return loss, n_tokens, norm

    def step_done(progress) -> None:  # called by the loop once a step's upkeep is done
        clock.record(*steps[-1][1:])
        if clock.done:
            timed.update(clock.result())  # threads as the loop set them, before train() resets them
            raise _Timed

    trainer._train_step = counted
    try:
        trainer.train(step_done)
    except _Timed:
        pass
    if not timed:
        raise SystemExit(f"nmt's training loop stopped after {len(steps)} of {total} steps: {trainer.state.stopped}")
    save_checkpoint(run_dir / "final", trainer.model, config, trainer.tokenizer, total)
    return _train_result(args, trainer, config, timed, [loss for loss, *_ in steps], gpu_memory)


def _train_result(args, trainer, config, timed: dict, losses: list[float], gpu_memory: "_GpuMemory") -> dict:
    """StepClock's result with the analytic FLOPs of the timed batches (flops.py) and the run's
    particulars."""
    from flops import Dims, describe, training_flops

    src, tgt = np.array(timed.pop("src_lens")), np.array(timed.pop("tgt_lens"))
    assert int(tgt.sum()) == timed["target_tokens"]
    dims = Dims.from_config(config.model, trainer.tokenizer.tgt_vocab)
    flops = training_flops(dims, src, tgt)
    return {
        "precision": trainer.precision,  # --precision resolved (auto → bf16 where native, else fp32)
        "variant": args.variant,
        "attention": config.model.attention,
        "timed_loop": "Trainer.train",  # results without it timed Trainer._train_step alone, not the loop's upkeep
        **timed,
        "train_flops": flops,
        "gflops_per_s": flops / timed["seconds"] / 1e9,
        "flops_per_target_token": flops / timed["target_tokens"],
        "flop_model": describe(dims),
        "loss_first": losses[0],
        "loss_last": float(np.mean(losses[-10:])),
        "device": str(trainer.device),
        "overrides": list(args.set),
        "checkpoint": str(Path(trainer.run_dir) / "final"),
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
    decoded = [0]  # target tokens of every search call (decoded_tokens)

    def timed(stream):
        def search(model, batches, *args, **kwargs):
            batches = list(batches)  # tokens to tensors: off the clock
            found = clock.wrap(lambda: list(stream(model, batches, *args, **kwargs)))()
            decoded[0] += decoded_tokens(found, batches)
            return iter(found)

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
    if args.hyps:
        hyps = [translator.tokenizer.decode_tgt([h[0].tokens])[0] if h else "" for h in found]
        Path(args.hyps).write_text("".join(h + "\n" for h in hyps), encoding="utf-8")
    return {
        "beam": args.beam,
        "precision": resolve_decode_precision(args.precision, translator.device, "--precision"),
        "stopping": args.stopping,
        "scored": not args.unscored,
        "sentences": len(lines),
        "target_tokens": decoded[0],
        "seconds": clock.seconds,
        "sentences_per_s": len(lines) / clock.seconds,
        "tokens_per_s": decoded[0] / clock.seconds,
        "repeats": clock.repeats,
        "mean_output_len": decoded[0] / len(lines),  # an empty line decodes nothing
        "seconds_hypotheses_all_passes": total_seconds,  # tokenising and every repeat included
        "batch_size": translator.config.decode.batch_size,
        "threads": torch.get_num_threads(),
        "device": str(translator.device),
        **({"hyps": str(args.hyps)} if args.hyps else {}),
        **gpu_memory.result(),
    }


def decoded_tokens(found: list, batches: list) -> int:
    """Target tokens one search call decoded, one a step: each sentence's best hypothesis's pieces,
    and its </s> where it has one. A sentence's limit (the batch's third part,
    ``nmt.search.max_lengths``) counts its </s>, so a hypothesis of as many pieces as its limit was
    cut there without one; a shorter one ended with </s>. ``found``: the search's (number,
    hypothesis) pairs, numbered in batch order (beam search's: (number, n-best list))."""
    limits = [limit for *_, batch_limits in batches for limit in batch_limits.tolist()]
    best = [(number, hyps[0] if isinstance(hyps, list) else hyps) for number, hyps in found]
    return sum(len(h.tokens) + (len(h.tokens) < limits[number]) for number, h in best)


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
    write(args, run(args))  # with this process's own peak memory, as the peers' drivers


if __name__ == "__main__":
    main()
