"""A/B of two decoding settings, alternated in one process (this VM's speed drifts between runs).

    python benchmarks/ab_decode.py CHECKPOINT SOURCE --beam 5 --a fp32 --b bf16
    git show 667e7f3:nmt/search.py > /tmp/old_search.py
    python benchmarks/ab_decode.py CHECKPOINT SOURCE --beam 5 --a fp32:/tmp/old_search.py --b fp32

A setting is PRECISION[:SEARCH_FILE]: decode.precision, and optionally another version of
nmt/search.py to take greedy / beam_search from (the rest of nmt is this checkout's). Each round
translates SOURCE with A then B through ``Translator.hypotheses``; the fastest round of each is
kept, and whether both gave the same output is printed. The source of the decoding rows of the
lever table in benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import nmt.search  # noqa: E402
import nmt.translate  # noqa: E402
from nmt.data import read_lines  # noqa: E402


def search_module(path: str | None):
    """nmt.search, or the module in ``path`` (another version of nmt/search.py)."""
    if not path:
        return nmt.search
    spec = importlib.util.spec_from_file_location(f"search_{abs(hash(path))}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the file executes
    spec.loader.exec_module(module)
    return module


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint")
    parser.add_argument("source", help="a text file, one source sentence a line")
    parser.add_argument("--beam", type=int, default=5)
    parser.add_argument("--a", default="fp32", help="PRECISION[:SEARCH_FILE]")
    parser.add_argument("--b", default="bf16", help="PRECISION[:SEARCH_FILE]")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    translator = nmt.translate.Translator.from_checkpoint(args.checkpoint, "cpu")
    lines = read_lines(Path(args.source))
    settings = {}
    for name, spec in (("A", args.a), ("B", args.b)):
        precision, _, path = spec.partition(":")
        settings[name] = (spec, precision, search_module(path or None))
    seconds: dict[str, list[float]] = {"A": [], "B": []}
    outputs = {}
    for _, precision, _ in settings.values():  # warm-up: first-call kernel set-up of each precision
        translator.hypotheses(lines[:20], beam=args.beam, precision=precision)
    for _ in range(args.rounds):
        for name, (_, precision, module) in settings.items():
            nmt.translate.greedy, nmt.translate.beam_search = module.greedy, module.beam_search
            t0 = time.perf_counter()
            found = translator.hypotheses(lines, beam=args.beam, precision=precision)
            seconds[name].append(time.perf_counter() - t0)
            outputs[name] = [h[0].tokens if h else [] for h in found]
    for name, (spec, _, _) in settings.items():
        rates = [len(lines) / s for s in seconds[name]]
        print(f"{name} {spec}: {max(rates):.1f} sent/s (rounds {' / '.join(f'{r:.1f}' for r in rates)})")
    print(f"B / A: {min(seconds['A']) / min(seconds['B']):.2f}; same output: {outputs['A'] == outputs['B']}")


if __name__ == "__main__":
    main()
