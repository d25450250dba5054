"""Decoding with and without ``nmt.hardware.hold_heap``: speed, page faults and peak memory.

    python benchmarks/heap_hold.py CHECKPOINT SOURCE --beam 5 --precision bf16 --pairs 3

glibc's settings hold for a whole process, so each arm decodes in a fresh process of its own, the
two alternated ``--pairs`` times (this VM's speed drifts). A process translates SOURCE once
through ``Translator.hypotheses``, as ``nmt translate`` does, after a 20-line warm-up; "off"
replaces ``hold_heap`` with a function that leaves glibc's defaults. Printed per process:
sentences/s, minor page faults of the pass and peak resident memory. The source of the
lever-table row on holding the heap (benchmarks/README.md).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def decode_once(args) -> dict:
    """One arm in this process: the counts of the one timed pass."""
    import torch

    sys.path.insert(0, str(ROOT))
    import nmt.translate
    from nmt.lines import read_lines

    if args.child == "off":  # the name Translator.hypotheses calls
        nmt.translate.hold_heap = lambda: False
    torch.set_num_threads(args.threads)
    translator = nmt.translate.Translator.from_checkpoint(args.checkpoint, "cpu")
    translator.follow_load = False  # --threads throughout
    lines = read_lines(Path(args.source))
    translator.hypotheses(lines[:20], beam=args.beam, precision=args.precision)
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    t0 = time.perf_counter()
    translator.hypotheses(lines, beam=args.beam, precision=args.precision)
    seconds = time.perf_counter() - t0
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {"held": args.child, "sentences_per_s": len(lines) / seconds, "page_faults": usage.ru_minflt - faults,
            "peak_rss_mib": usage.ru_maxrss / 1024}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint")
    parser.add_argument("source", help="a text file, one source sentence a line")
    parser.add_argument("--beam", type=int, default=5)
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--child", choices=("on", "off"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(decode_once(args)))
        return
    forwarded = [args.checkpoint, args.source, "--beam", str(args.beam), "--precision", args.precision,
                 "--threads", str(args.threads)]
    runs: dict[str, list[dict]] = {"off": [], "on": []}
    for _ in range(args.pairs):
        for arm in runs:
            out = subprocess.run([sys.executable, __file__, *forwarded, "--child", arm], check=True,
                                 capture_output=True, text=True)
            run = json.loads(out.stdout.splitlines()[-1])
            runs[arm].append(run)
            print(f"{arm:>3}: {run['sentences_per_s']:.1f} sent/s, {run['page_faults']:,} page faults, "
                  f"peak RSS {run['peak_rss_mib']:.0f} MiB", flush=True)
    best = {arm: max(run["sentences_per_s"] for run in found) for arm, found in runs.items()}
    print(f"beam {args.beam}, {args.precision}: held / default {best['on'] / best['off']:.2f} (fastest process of each)")


if __name__ == "__main__":
    main()
