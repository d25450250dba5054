"""What the peer drivers share: arguments, the step clock, result files.

A driver runs inside its peer's own virtual environment (benchmarks/.peers/<peer>/venv) and
imports the peer in-process, so the toolkit's own training loop and search run unchanged; the
driver only wraps one function of each (the optimizer step, the batch search) with a clock.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

# The matched model (configs/bible-es-en.yaml) — each driver maps these onto its toolkit's options.
EMB, ENC_HIDDEN, ENC_LAYERS, DEC_HIDDEN, DEC_LAYERS, ATTN = 256, 256, 2, 256, 1, 256
DROPOUT, LR, CLIP, SMOOTHING, SEED = 0.3, 0.002, 1.0, 0.1, 1
DECODE_BATCH, MAX_LEN_A, MAX_LEN_B, ALPHA = 64, 2, 10, 0.6
SRC, TGT = "es", "en"


def at_least_one(text: str) -> int:
    """An argparse type for --warmup and --steps: the clock runs from the end of the last warm-up
    step to the end of the last timed one, so with 0 of either there is nothing to time."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def parse(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("what", choices=["prepare", "train", "decode"])
    parser.add_argument("--out", required=True)
    parser.add_argument("--work", required=True, help="benchmarks/.work/bible-es-en")
    parser.add_argument("--peer-work", required=True, help="this peer's scratch folder")
    parser.add_argument("--max-tokens", type=int, default=3000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--warmup", type=at_least_one, default=10)
    parser.add_argument("--steps", type=at_least_one, default=100)
    parser.add_argument("--beam", type=int, default=5)
    parser.add_argument("--sentences", type=int, default=0, help="first N sentences of --split; 0 = all")
    parser.add_argument("--split", default="dev", choices=["dev", "test"], help="the split to decode")
    parser.add_argument("--minutes", type=float, default=0,
                        help="train for this wall-clock budget instead of --warmup + --steps steps")
    parser.add_argument("--repeats", type=int, default=3, help="passes per search call; the fastest is timed")
    parser.add_argument("--decode-batch", type=int, default=DECODE_BATCH, help="sentences decoded at a time")
    args = parser.parse_args(argv)
    args.work, args.peer_work = Path(args.work), Path(args.peer_work)
    args.peer_work.mkdir(parents=True, exist_ok=True)
    import torch

    torch.set_num_threads(args.threads)
    return args


def pieces(args, split: str, lang: str) -> Path:
    return args.work / "pieces" / f"{split}.{lang}"


def decode_source(args) -> Path:
    """The source pieces of ``--split``, or of its first ``--sentences`` lines (the target side is
    cut alongside: fairseq and JoeyNMT read both)."""
    if not args.sentences:
        return pieces(args, args.split, SRC)
    for lang in (SRC, TGT):
        lines = pieces(args, args.split, lang).read_text(encoding="utf-8").splitlines(keepends=True)
        (args.peer_work / f"{args.split}.first{args.sentences}.{lang}").write_text(
            "".join(lines[: args.sentences]), encoding="utf-8")
    return args.peer_work / f"{args.split}.first{args.sentences}.{SRC}"


def prefix(path: Path) -> Path:
    """pieces/test.es → pieces/test: the file prefix fairseq and JoeyNMT take."""
    return Path(str(path)[: -len(SRC) - 1])


def vocab(args) -> list[tuple[str, int]]:
    rows = (args.work / "pieces" / "vocab.tsv").read_text(encoding="utf-8").splitlines()
    return [(p, int(c)) for p, c in (r.split("\t") for r in rows)]


class StepClock:
    """Records the end time and the target-token count of each optimizer step."""

    def __init__(self, warmup: int, steps: int):
        self.warmup, self.steps = warmup, steps
        self.ends: list[float] = []
        self.tokens: list[int] = []
        self.src_lens: list[np.ndarray] = []
        self.tgt_lens: list[np.ndarray] = []

    def record(self, n_tokens: int, src_lens=None, tgt_lens=None) -> None:
        self.ends.append(time.perf_counter())
        self.tokens.append(int(n_tokens))
        if src_lens is not None:
            self.src_lens.append(np.asarray(src_lens))
            self.tgt_lens.append(np.asarray(tgt_lens))

    @property
    def done(self) -> bool:
        return len(self.ends) >= self.warmup + self.steps

    def result(self) -> dict:
        w, n = self.warmup, self.steps
        if len(self.ends) < w + n:
            raise RuntimeError(f"only {len(self.ends)} steps were recorded, {w + n} needed")
        seconds = self.ends[w + n - 1] - self.ends[w - 1]
        tokens = sum(self.tokens[w : w + n])
        out = {
            "warmup_steps": w,
            "timed_steps": n,
            "seconds": seconds,
            "target_tokens": tokens,
            "tokens_per_s": tokens / seconds,
            "step_seconds_median": float(np.median(np.diff(self.ends[w - 1 : w + n]))),
            "threads": __import__("torch").get_num_threads(),
        }
        if self.src_lens:
            src = np.concatenate(self.src_lens[w : w + n])
            tgt = np.concatenate(self.tgt_lens[w : w + n])
            out.update(sentences=int(len(src)), source_tokens=int(src.sum()), mean_src_len=float(src.mean()),
                       mean_tgt_len=float(tgt.mean()), src_lens=src.tolist(), tgt_lens=tgt.tolist())
        return out


class BudgetSpent(Exception):
    """Raised from a wrapped step to end a toolkit's training loop once the budget is spent."""


class Budget:
    """A wall-clock training budget (``--minutes``), the same rule for every toolkit: the clock
    starts when the first optimizer step starts, and the step during which it runs out is the
    last one (the driver then saves the weights and stops the toolkit's loop)."""

    def __init__(self, minutes: float):
        self.seconds = minutes * 60
        self.start: float | None = None
        self.steps = 0
        self.tokens = 0
        self.elapsed = 0.0

    def begin(self) -> None:
        if self.start is None:
            self.start = time.perf_counter()

    def step_done(self, n_tokens: int) -> None:
        self.steps += 1
        self.tokens += int(n_tokens)
        self.elapsed = time.perf_counter() - self.start

    @property
    def spent(self) -> bool:
        return self.start is not None and time.perf_counter() - self.start >= self.seconds

    def result(self) -> dict:
        return {"budget_minutes": self.seconds / 60, "steps": self.steps, "target_tokens": self.tokens,
                "train_minutes": self.elapsed / 60, "threads": __import__("torch").get_num_threads()}


class SearchClock:
    """Wraps a search function; runs every call ``repeats`` times and accumulates the fastest.

    Search in eval mode is deterministic, so the repeats return the same output; keeping the
    fastest of them filters the machine's transient noise (single 1-5 s passes swung up to
    1.8x between runs on the 2-core VM)."""

    def __init__(self, repeats: int = 3):
        self.repeats = repeats
        self.seconds = 0.0
        self.calls = 0

    def wrap(self, fn):
        def timed(*a, **k):
            best = float("inf")
            for _ in range(self.repeats):
                t0 = time.perf_counter()
                out = fn(*a, **k)
                best = min(best, time.perf_counter() - t0)
            self.seconds += best
            self.calls += 1
            return out

        return timed


def decode_result(args, clock: SearchClock, hyp_lines: list[str], sentences: int) -> dict:
    """Sentences/s and tokens/s over the search time; tokens = output pieces + 1 (</s>) each. Exact
    for fairseq, which ends every hypothesis with </s>; OpenNMT-py and JoeyNMT stop one at their
    length limit without it, so each sentence cut there counts a token more than was decoded
    (benchmarks/README.md, "Target tokens decoded")."""
    lengths = [len(h.split()) + 1 for h in hyp_lines]
    if len(hyp_lines) != sentences:
        raise RuntimeError(f"{len(hyp_lines)} hypotheses for {sentences} sentences")
    return {
        "beam": args.beam,
        "sentences": sentences,
        "target_tokens": int(sum(lengths)),
        "seconds": clock.seconds,
        "sentences_per_s": sentences / clock.seconds,
        "repeats": clock.repeats,
        "tokens_per_s": sum(lengths) / clock.seconds,
        "mean_output_len": float(np.mean(lengths)),
        "search_calls": clock.calls,
        "batch_size": args.decode_batch,
        "threads": __import__("torch").get_num_threads(),
    }


def own_peak_rss() -> dict:
    """This process's peak resident memory, MiB: VmHWM from /proc/self/status, read as it writes its
    result. Not ru_maxrss (getrusage, wait4): on Linux a process starts with its parent's high-water
    mark, kept across fork and exec, so under a harness holding 220 MiB a process of 14 MiB reported
    220. Empty where there is no /proc/self/status; the harness then falls back to ru_maxrss, saying so."""
    try:
        status = Path("/proc/self/status").read_text(encoding="utf-8").splitlines()
    except OSError:
        return {}
    kib = next((int(line.split()[1]) for line in status if line.startswith("VmHWM:")), None)
    return {} if kib is None else {"peak_rss_mib": round(kib / 1024, 1), "peak_rss_from": "VmHWM"}


def write(args, result: dict) -> None:
    """The result at --out, with this process's own peak memory (``own_peak_rss``: bench.py reports it)."""
    Path(args.out).write_text(json.dumps({**result, **own_peak_rss()}, indent=2) + "\n", encoding="utf-8")


def run_main(module_main, argv: list[str]) -> None:
    """Call a toolkit's command-line entry point in-process with these arguments."""
    old = sys.argv
    sys.argv = [str(a) for a in argv]
    try:
        module_main()
    except SystemExit as exc:
        if exc.code not in (0, None):
            raise
    finally:
        sys.argv = old


def env_check() -> None:
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        if name not in os.environ:
            print(f"warning: {name} is not set", file=sys.stderr)
