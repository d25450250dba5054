"""nmt's speed benchmark on a CUDA GPU: the measurements of bench.py, in one process.

    python benchmarks/gpu.py                          every arm below (a few minutes on an H200)
    python benchmarks/gpu.py --steps 20 --decode-sentences 200    quicker, rougher
    python benchmarks/gpu.py --checkpoint DIR         decode with this (trained) model
    python benchmarks/gpu.py --device cpu --steps 2 --warmup 1 --decode-sentences 20 --arms 0
                                                       a dry run of the harness on the CPU

Training arms: target tokens/s over ``--steps`` steps after ``--warmup`` (nmt_runs.run_train: the
batches of epoch 0, batch building inside the clock), GFLOP/s against the GPU's matmul peak
measured in the same run, and peak GPU memory. Beside the default settings, the levers that
matter on a GPU: bf16 against fp32, the decoder's fast path against autograd, the encoder through
nmt.recurrence against cuDNN, the loss in small against large row chunks, larger batches.
Decoding arms: the dev split with greedy and beam 5, fp32 and bf16, in batches of 64 sentences
(as on CPU) and of 1000; each with its BLEU, and, given ``--cpu-hyps``, how many lines equal the
CPU's output of the same checkpoint. The clocks see finished GPU work: every training step
reads its loss (``loss.item()``), every search call returns token lists.

No peer is measured here: the peers' side-by-side runs are CPU-only (benchmarks/README.md).
Results: <results>/<date>-<gpu>-cuda.json and .md.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import logging
import platform
import sys
import time
import traceback
from argparse import Namespace
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT))

import nmt_runs  # noqa: E402
from bench import code_version, dev_source, free_stem  # noqa: E402
from peers.common import at_least_one  # noqa: E402
from report import at_code  # noqa: E402
from workdir import WORK, ensure_work  # noqa: E402

import nmt.loss  # noqa: E402
import nmt.model  # noqa: E402
from nmt.atomic import atomic_write_text  # noqa: E402

log = logging.getLogger("bench")

# (label, nmt_runs variant, precision, max_tokens, config overrides, levers): the first is the default
# (on a GPU: the encoder through cuDNN, the decoder through nmt.recurrence; nmt.model.FUSED_ENCODER_DEVICES).
TRAIN_ARMS = [
    ("default", "bahdanau", "bf16", 3000, [], {}),
    ("default, fp32", "bahdanau", "fp32", 3000, [], {}),
    ("default, autograd decoder (train.fused_rnn=false)", "bahdanau", "bf16", 3000, ["train.fused_rnn=false"], {}),
    ("default, encoder through nmt.recurrence", "bahdanau", "bf16", 3000, [], {"recurrence_encoder": True}),
    ("default, fp32, encoder through nmt.recurrence", "bahdanau", "fp32", 3000, [], {"recurrence_encoder": True}),
    ("default, loss in 256-row chunks", "bahdanau", "bf16", 3000, [], {"loss_chunk": 256}),
    ("luong", "luong", "bf16", 3000, [], {}),
    ("enc 2×128", "enc128", "bf16", 3000, [], {}),
    ("default, 12k-token batches", "bahdanau", "bf16", 12000, [], {}),
    ("default, 12k-token batches, fp32", "bahdanau", "fp32", 12000, [], {}),
]
DECODE_ARMS = [(precision, beam, batch) for batch in (64, 1000) for precision in ("fp32", "bf16") for beam in (1, 5)]


@contextlib.contextmanager
def levers(recurrence_encoder: bool = False, loss_chunk: int | None = None):
    """Module settings an arm changes, restored afterwards."""
    saved = nmt.model.FUSED_ENCODER_DEVICES, nmt.loss.GPU_CHUNK_ROWS
    if recurrence_encoder:
        nmt.model.FUSED_ENCODER_DEVICES = saved[0] | {"cuda"}
    if loss_chunk:
        nmt.loss.GPU_CHUNK_ROWS = loss_chunk
    try:
        yield
    finally:
        nmt.model.FUSED_ENCODER_DEVICES, nmt.loss.GPU_CHUNK_ROWS = saved


def gpu_peak(device: torch.device, dtype: torch.dtype, sizes=(4096, 8192), seconds: float = 1.0) -> dict:
    """Best TFLOP/s of square ``torch.mm`` products (2·n³ FLOPs each) on random data, timed with CUDA
    events; fp32 with TF32 off, as nmt's fp32 training runs (PyTorch's default). On the CPU (a dry
    run): bench.py's CPU peak."""
    if device.type == "cpu":
        return {"tflops": round(nmt_runs.matmul_peak(dtype, sizes=(1024,), seconds=0.5)["gflops"] / 1e3, 3)}
    best, per_size = 0.0, {}
    for n in sizes:
        a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
        for _ in range(3):
            torch.mm(a, b)
        torch.cuda.synchronize(device)
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        reps, t0 = 0, time.perf_counter()
        start.record()
        while time.perf_counter() - t0 < seconds:
            torch.mm(a, b)
            reps += 1
        end.record()
        torch.cuda.synchronize(device)
        rate = 2 * n**3 * reps / (start.elapsed_time(end) / 1e3) / 1e12
        per_size[n] = round(rate, 1)
        best = max(best, rate)
    return {"tflops": round(best, 1), "per_size": per_size}


def gpu_machine(device: torch.device) -> dict:
    if device.type == "cpu":
        return {"gpu": f"no GPU: a dry run on the CPU ({platform.processor() or platform.machine()})",
                "gpu_memory_gib": 0, "compute_capability": "-", "multiprocessors": 0, "torch": torch.__version__,
                "cuda": None, "cudnn": None, "python": platform.python_version(), "cpu_threads": torch.get_num_threads()}
    props = torch.cuda.get_device_properties(device)
    return {
        "gpu": props.name,
        "gpu_memory_gib": round(props.total_memory / 2**30, 1),
        "compute_capability": f"{props.major}.{props.minor}",
        "multiprocessors": props.multi_processor_count,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version(),
        "python": platform.python_version(),
        "cpu_threads": torch.get_num_threads(),
    }


def train_arm(arm, args, work: Path, runs: Path) -> dict:
    label, variant, precision, max_tokens, overrides, lever = arm
    slug = "".join(ch if ch.isalnum() else "-" for ch in label.lower()).strip("-")
    ns = Namespace(work=str(work), precision=precision, variant=variant, max_tokens=max_tokens, set=overrides,
                   run_dir=str(runs / slug), warmup=args.warmup, steps=args.steps, device=args.device)
    with levers(**lever):
        result = nmt_runs.run_train(ns)
    return {"label": label, "max_tokens": max_tokens, **result}


def decode_arm(arm, args, checkpoint: Path, src: Path, refs: list[str], cpu_hyps: dict, tmp: Path) -> dict:
    from nmt.lines import read_lines
    from nmt.metrics import corpus_scores

    precision, beam, batch = arm
    hyps_path = tmp / f"decode-{precision}-beam{beam}-batch{batch}.hyp"
    ns = Namespace(checkpoint=str(checkpoint), src=str(src), beam=beam, precision=precision, stopping="bound",
                   repeats=args.repeats, hyps=str(hyps_path), device=args.device, decode_batch=batch)
    result = nmt_runs.run_decode(ns)
    hyps = read_lines(hyps_path)
    result["bleu"] = corpus_scores(hyps, refs, ("bleu",))["bleu"]["score"]
    if beam in cpu_hyps:
        same = sum(h == c for h, c in zip(hyps, cpu_hyps[beam]))
        result["same_as_cpu_fp32"] = f"{same}/{len(hyps)}"
    return result


def run_decodes(args, work: Path, tmp: Path, results: dict, save) -> dict:
    """Every decoding arm with ``--checkpoint`` (default: the first training arm's model)."""
    checkpoint = Path(args.checkpoint) if args.checkpoint else Path(results["train"][0].get("checkpoint", ""))
    src = dev_source(work, args)  # bench.py's: the dev text, or its first --decode-sentences lines
    refs = (work / "data" / "dev.en").read_text(encoding="utf-8").splitlines()[: args.decode_sentences or None]
    cpu_hyps = {int(b): Path(f).read_text(encoding="utf-8").splitlines()
                for b, f in (spec.split("=", 1) for spec in args.cpu_hyps)}
    shown = checkpoint.relative_to(ROOT) if checkpoint.is_relative_to(ROOT) else checkpoint
    out = {"checkpoint": str(shown), "sentences": len(refs), "repeats": args.repeats, "arms": []}
    results["decode"] = out
    for arm in DECODE_ARMS:
        out["arms"].append(guarded(f"decode {arm}", decode_arm, arm, args, checkpoint, src, refs, cpu_hyps, tmp))
        save()
    return out


def guarded(what: str, fn, *a) -> dict:
    """One arm; a failure is recorded (and the run goes on) rather than losing the arms before it."""
    t0 = time.perf_counter()
    try:
        out = fn(*a)
    except Exception as exc:  # noqa: BLE001 — the report names it; the other arms still run
        log.error("%s failed: %s", what, exc)
        return {"label": what, "error": f"{type(exc).__name__}: {exc}", "trace": traceback.format_exc()[-2000:]}
    log.info("%s: %.0f s", what, time.perf_counter() - t0)
    return out


def render(results: dict) -> str:
    m, peak = results["machine"], results["matmul_peak"]
    lines = [
        f"Machine: {m['gpu']} ({m['gpu_memory_gib']} GiB, compute capability {m['compute_capability']}), "
        f"torch {m['torch']}, CUDA {m['cuda']}, cuDNN {m['cudnn']}, Python {m['python']}; {results['date']}.",
        f"Command: `{results['command']}`{at_code(results)} ({results['minutes']} min).",
        f"Matrix-multiply peak in the same run (torch.mm, square 4096 / 8192): bf16 {peak['bf16']['tflops']} "
        f"TFLOP/s, fp32 (no TF32) {peak['fp32']['tflops']} TFLOP/s.",
        f"Training: {results['settings']['timed_steps']} timed steps after {results['settings']['warmup_steps']} "
        "warm-up steps, the default model unless the arm says otherwise.",
        "",
        "| training arm | precision | batch tokens | tok/s | vs default | step ms (median) | GFLOP/s | % of peak "
        "| GPU peak MiB |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    base = next((r.get("tokens_per_s") for r in results["train"] if "tokens_per_s" in r), None)
    for r in results["train"]:
        if "error" in r:
            lines.append(f"| {r['label']} | failed: {r['error'][:80]} | | | | | | | |")
            continue
        tflops = peak[r["precision"]]["tflops"]
        lines.append(
            f"| {r['label']} | {r['precision']} | {r['max_tokens']:,} | {r['tokens_per_s']:,.0f} | "
            f"{r['tokens_per_s'] / base:.2f}× | {1e3 * r['step_seconds_median']:.1f} | {r['gflops_per_s']:,.0f} | "
            f"{100 * r['gflops_per_s'] / (1e3 * tflops):.2f} % | {r.get('gpu_peak_mib', 0):,.0f} |")
    d = results.get("decode")
    if d is None:
        return "\n".join(lines) + "\n"
    lines += ["", f"Decoding: {d['sentences']} dev sentences with `{d['checkpoint']}`, generation time only "
              f"(fastest of {d['repeats']} passes per search call), stopping rule `bound`.", "",
              "| precision | beam | batch | sent/s | tok/s | out len | BLEU | same as CPU fp32 | GPU peak MiB |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in d["arms"]:
        if "error" in r:
            lines.append(f"| failed: {r['error'][:80]} | | | | | | | | |")
            continue
        lines.append(f"| {r['precision']} | {r['beam']} | {r['batch_size']} | {r['sentences_per_s']:,.1f} | "
                     f"{r['tokens_per_s']:,.0f} | {r['mean_output_len']:.1f} | {r['bleu']:.2f} | "
                     f"{r.get('same_as_cpu_fp32', '—')} | {r.get('gpu_peak_mib', 0):,.0f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--warmup", type=at_least_one, default=10)
    parser.add_argument("--steps", type=at_least_one, default=50)
    parser.add_argument("--arms", default="", help="comma-separated indices of TRAIN_ARMS to run (default: all)")
    parser.add_argument("--checkpoint", help="decode with this checkpoint (default: the default arm's model)")
    parser.add_argument("--cpu-hyps", nargs="*", default=[], metavar="BEAM=FILE",
                        help="the CPU's fp32 output of --checkpoint on the same sentences, per beam size")
    parser.add_argument("--no-decode", action="store_true", help="training arms only")
    parser.add_argument("--decode-sentences", type=int, default=0, help="first N dev sentences (0 = all)")
    parser.add_argument("--repeats", type=int, default=2, help="passes per search call; the fastest is timed")
    parser.add_argument("--results", default=str(HERE / "results"))
    parser.add_argument("--name", default="")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("benchmarks/gpu.py: no CUDA device here (torch.cuda.is_available() is False); "
                         "--device cpu for a dry run of the harness")
    started = dt.datetime.now(dt.timezone.utc)
    work = ensure_work(WORK)
    tmp = HERE / ".work" / "gpu"
    tmp.mkdir(parents=True, exist_ok=True)
    results = {"date": started.isoformat(timespec="seconds"),
               "command": "python benchmarks/gpu.py " + " ".join(sys.argv[1:] if argv is None else argv),
               "code": code_version(),
               "machine": gpu_machine(device),
               "settings": {"warmup_steps": args.warmup, "timed_steps": args.steps}}
    words = "".join(ch if ch.isalnum() else " " for ch in results["machine"]["gpu"].lower()).split()
    name = args.name or f"{started:%Y-%m-%d}-{'-'.join(w for w in words if w != 'nvidia')}-cuda"
    out_dir = Path(args.results)
    out_dir.mkdir(parents=True, exist_ok=True)
    name = free_stem(out_dir, name)  # chosen once: save() rewrites this run's own file, no other

    def save() -> None:  # after every arm: a run cut short keeps what it measured
        results["minutes"] = round((dt.datetime.now(dt.timezone.utc) - started).total_seconds() / 60, 1)
        atomic_write_text(out_dir / f"{name}.json", json.dumps(results, indent=2) + "\n")

    results["matmul_peak"] = {"bf16": gpu_peak(device, torch.bfloat16), "fp32": gpu_peak(device, torch.float32)}
    log.info("peak: %s", results["matmul_peak"])
    chosen = [TRAIN_ARMS[int(i)] for i in args.arms.split(",")] if args.arms else TRAIN_ARMS
    results["train"] = []
    for arm in chosen:
        results["train"].append(guarded(arm[0], train_arm, arm, args, work, tmp / "runs"))
        save()
    if not args.no_decode:
        results["decode"] = run_decodes(args, work, tmp, results, save)
    markdown = render(results)
    atomic_write_text(out_dir / f"{name}.md", markdown)
    print(markdown)


if __name__ == "__main__":
    main()
