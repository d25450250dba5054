"""Training beside another busy process: how fast each goes, with our threads fixed or governed.

    python benchmarks/contention.py [--seconds 120] [--rounds 1] [--name NAME]
    python benchmarks/contention.py --decode CHECKPOINT [--lines 1000] [--rounds 1] [--name NAME]

Runs ``nmt train`` (the default model, configs/bible-es-en.yaml, on the benchmark's Bible data)
as a user would, as process A; once A has logged its first steps, starts a second ``nmt train``,
B, in its own run folder, and measures both for ``--seconds``. Arms (A's train.threads, B's):

    alone        A 0,  no B      A's speed on a quiet machine, the reference
    fixed/nmt    A 2,  B 0       A keeps the threads it chose alone (what nmt did before
                                 nmt.hardware.ThreadGovernor); B, started beside it, chooses 1
    governed/nmt A 0,  B 0       both nmt's default
    fixed/2      A 2,  B 2       B as any PyTorch program: a thread per core, whatever else runs
    governed/2   A 0,  B 2

Speeds are target tokens per second of training step, from each run's metrics.jsonl: the
20-step windows it logged (stamped when first seen, polled every 0.25 s), each in proportion to
its part inside the measured span, which starts 30 s after B (its setup) and lasts ``--seconds``. Validation is off (train.valid_every huge). Each arm waits for
a quiet machine first. Writes benchmarks/results/<date>-<NAME>.{json,md} (-2, -3, … where that name
holds results already).

With ``--decode``, A is instead greedy fp32 decoding of the first ``--lines`` dev verses with
CHECKPOINT (``Translator.translate`` in a process of its own, timed inside it after a warm-up),
alone or once B (``nmt train``, train.threads 2) has logged its first steps, with
``follow_load`` off (torch's 2 threads throughout, as before) or on (nmt's default); B's speed is
taken over A's process.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

from bench import code_version, command_line, machine, machine_slug, save_results, wait_for_quiet  # noqa: E402
from workdir import CONFIG, ensure_work  # noqa: E402

ARMS = {  # name: (A's train.threads, B's train.threads or None)
    "alone": (0, None),
    "fixed/nmt": (2, 0),
    "governed/nmt": (0, 0),
    "fixed/2": (2, 2),
    "governed/2": (0, 2),
}
DECODE_ARMS = {"decode alone": (True, None), "decode fixed/2": (False, 2), "decode governed/2": (True, 2)}
DECODE = """
import json, sys, time, torch
from nmt.lines import read_lines
from nmt.translate import Translator
lines = read_lines(sys.argv[2])[: int(sys.argv[3])]
translator = Translator.from_checkpoint(sys.argv[1])
translator.follow_load = sys.argv[4] == "1"
translator.translate(lines[:20])  # warm: the first batch's kernels chosen, the heap grown
t0 = time.perf_counter()
translator.translate(lines)
seconds = time.perf_counter() - t0
print(json.dumps({"seconds": seconds, "sentences_per_s": len(lines) / seconds}))
"""
SETUP_S = 30.0  # from B's start to its first step, with room (~10 s here)
FOREVER = ["train.max_steps=10000000", "train.valid_every=10000000", "train.max_minutes=600"]

log = logging.getLogger("contention")


class Run:
    """One ``nmt train`` process in its own run folder, its metrics lines stamped as they appear."""

    def __init__(self, tmp: Path, work: Path, name: str, threads: int):
        runs = tmp / "runs"
        folder = runs / name
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        for part in ("data", "tokenizer"):  # the benchmark's prepared data, as make train's stages leave it
            (folder / part).symlink_to(work / part)
        self.metrics, self.lines = folder / "metrics.jsonl", []  # (seen at, record)
        self.log = open(tmp / f"{name}.log", "w", encoding="utf-8")
        cmd = [sys.executable, "-m", "nmt", "train", "-c", str(CONFIG), "--runs", str(runs), f"name={name}",
               f"train.threads={threads}", *FOREVER]
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, cwd=ROOT,
                                     env={**os.environ, "PYTHONUNBUFFERED": "1"})

    def poll(self) -> None:
        if self.metrics.is_file():
            lines = self.metrics.read_text(encoding="utf-8").splitlines()
            now = time.monotonic()
            for line in lines[len(self.lines):]:
                if line.endswith("}"):
                    self.lines.append((now, json.loads(line)))

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGKILL)  # no checkpoint to wait for: the run is thrown away
        self.proc.wait()
        self.log.close()

    def speed(self, start: float, end: float) -> dict:
        return speed(self.lines, start, end)


def speed(lines: list[tuple[float, dict]], start: float, end: float) -> dict:
    """Tokens per second of step over [start, end] from (seen at, metrics record) pairs: each
    logged window's tokens in proportion to the part of it inside (a window ends when it was seen
    and began its length, the records' elapsed_s difference, before)."""
    tokens = seconds = 0.0
    threads = []
    lines = [(seen, rec) for seen, rec in lines if rec["kind"] == "train"]  # a validation's line has no speed
    for (_, before), (seen, rec) in zip([(0.0, {"elapsed_s": 0.0})] + lines, lines):
        span = rec["elapsed_s"] - before["elapsed_s"]
        inside = min(seen, end) - max(seen - span, start)
        if inside > 0 and span > 0:
            tokens, seconds = tokens + rec["tokens_per_s"] * inside, seconds + inside
            threads.append(rec.get("threads"))
    return {"tokens_per_s": round(tokens / seconds, 1) if seconds else None, "seconds": round(seconds, 1),
            "threads": threads}


def wait_until(runs: list[Run], condition, timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        for run in runs:
            if run.proc.poll() is not None:
                raise SystemExit(f"nmt train exited ({run.proc.returncode}); see its log in the tmp folder")
        if time.monotonic() > deadline:
            raise SystemExit("nmt train logged nothing in time")
        time.sleep(0.25)
        for run in runs:
            run.poll()


def measure(arm: str, seconds: float, tmp: Path, work: Path) -> dict:
    threads_a, threads_b = ARMS[arm]
    busy = wait_for_quiet(600)
    a = Run(tmp, work, "a", threads_a)
    runs = [a]
    try:
        wait_until(runs, lambda: len(a.lines) >= 2)  # warm: two windows (40 steps) logged
        if threads_b is not None:
            b = Run(tmp, work, "b", threads_b)
            runs.append(b)
        start = time.monotonic() + SETUP_S  # B's data loaded, its model built
        wait_until(runs, lambda: time.monotonic() >= start)
        end = start + seconds
        wait_until(runs, lambda: all(run.lines and run.lines[-1][0] >= end for run in runs), timeout=seconds + 600)
    finally:
        for run in runs:
            run.stop()
    result = {"arm": arm, "a_threads_setting": threads_a, "b_threads_setting": threads_b,
              "busy_before": round(busy, 2), "a": a.speed(start, end)}
    if threads_b is not None:
        result["b"] = runs[1].speed(start, end)
    log.info("%s: %s", arm, json.dumps(result))
    return result


def measure_decode(arm: str, checkpoint: Path, lines: int, tmp: Path, work: Path) -> dict:
    follow, threads_b = DECODE_ARMS[arm]
    busy = wait_for_quiet(600)
    runs = [Run(tmp, work, "b", threads_b)] if threads_b is not None else []
    try:
        if runs:
            wait_until(runs, lambda: len(runs[0].lines) >= 1)  # B set up and 20 steps in
        start = time.monotonic()
        done = subprocess.run([sys.executable, "-c", DECODE, str(checkpoint), str(work / "data" / "dev.es"),
                               str(lines), "1" if follow else "0"], cwd=ROOT, capture_output=True, text=True,
                              check=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
        end = time.monotonic()
        if runs:
            wait_until(runs, lambda: runs[0].lines[-1][0] >= end, timeout=900)
    finally:
        for run in runs:
            run.stop()
    result = {"arm": arm, "follow_load": follow, "b_threads_setting": threads_b, "busy_before": round(busy, 2),
              "lines": lines, "a": json.loads(done.stdout.strip().splitlines()[-1])}
    if runs:
        result["b"] = runs[0].speed(start, end)
    log.info("%s: %s", arm, json.dumps(result))
    return result


def _head(results: dict, title: str) -> list[str]:
    m = results["machine"]
    return [f"# {title} ({results['created']})", "",
            f"Machine: {m['cpu']} ({m['cpu_vendor_family_model']}), {m['cores_available']} cores, torch {m['torch']}; "
            f"code {results['code']}.", f"Command: `{results['command']}`.", ""]


def _alone(results: dict, arm: str, key: str) -> float:
    """The mean speed of the rounds with A alone: what the others are divided by."""
    alone = [r["a"][key] for r in results["arms"] if r["arm"] == arm]
    return sum(alone) / len(alone) if alone else float("nan")


def render_decode(results: dict) -> str:
    ref = _alone(results, "decode alone", "sentences_per_s")
    lines = [*_head(results, "Decoding beside a training"),
             f"A: greedy fp32 decoding of {results['lines']} dev verses with `{results['checkpoint']}`; B: `nmt "
             "train` of the default model with train.threads 2, started first. follow_load: A gives a thread "
             "back while another process takes a core (nmt's default) or keeps torch's 2.", "",
             "| arm | follow_load | A sent/s | A / alone | B tok/s over A's process |", "|---|---|---:|---:|---:|"]
    for r in results["arms"]:
        b = r.get("b", {}).get("tokens_per_s")
        lines.append(f"| {r['arm']} | {r['follow_load']} | {r['a']['sentences_per_s']:,.1f} | "
                     f"{r['a']['sentences_per_s'] / ref:.2f} | {'—' if b is None else f'{b:,.0f}'} |")
    return "\n".join(lines) + "\n"


def render(results: dict) -> str:
    ref = _alone(results, "alone", "tokens_per_s")
    lines = [*_head(results, "Training beside another busy process"),
             "A: `nmt train` of the default model; B: a second one started beside it (`train.threads` "
             "of each below; 0 = nmt's default, threads chosen around other processes' load). Target "
             f"tokens per second of training step over {results['seconds']:g} s with both running; "
             f"A alone: {ref:,.0f} tok/s (mean of the 'alone' rounds).", "",
             "| arm | A threads setting | B threads setting | A tok/s | A / alone | B tok/s | A + B tok/s | A's thread counts logged | B's |",
             "|---|---:|---:|---:|---:|---:|---:|---|---|"]
    for r in results["arms"]:
        a, b = r["a"], r.get("b")
        b_speed = b["tokens_per_s"] if b else None
        both = a["tokens_per_s"] + (b_speed or 0)
        lines.append(f"| {r['arm']} | {r['a_threads_setting']} | {'—' if b is None else r['b_threads_setting']} | "
                     f"{a['tokens_per_s']:,.0f} | {a['tokens_per_s'] / ref:.2f} | "
                     f"{'—' if b_speed is None else f'{b_speed:,.0f}'} | {both:,.0f} | "
                     f"{' '.join(map(str, a['threads']))} | {' '.join(map(str, b['threads'])) if b else '—'} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=120.0, help="measured span with both running")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    parser.add_argument("--name", help="results file name after the date (default: <machine>-contention)")
    parser.add_argument("--decode", type=Path, metavar="CHECKPOINT", help="measure decoding beside a training")
    parser.add_argument("--lines", type=int, default=1000, help="dev verses decoded (--decode)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    work = ensure_work()
    tmp = HERE / ".work" / "contention"
    tmp.mkdir(parents=True, exist_ok=True)
    m = machine()
    results = {"created": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "machine": m,
               "code": code_version(), "command": command_line("contention.py", sys.argv[1:] if argv is None else argv),
               "seconds": args.seconds, "arms": []}
    if args.decode:
        results.update(checkpoint=str(args.decode), lines=args.lines)
    for _ in range(args.rounds):
        for arm in DECODE_ARMS if args.decode else args.arms:
            results["arms"].append(measure_decode(arm, args.decode, args.lines, tmp, work) if args.decode
                                   else measure(arm, args.seconds, tmp, work))
    name = args.name or f"{machine_slug(m)}-contention{'-decode' if args.decode else ''}"
    stem = f"{datetime.now(timezone.utc):%Y-%m-%d}-{name}"
    print(save_results(HERE / "results", stem, results, render_decode if args.decode else render))


if __name__ == "__main__":
    main()
