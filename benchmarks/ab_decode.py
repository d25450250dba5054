"""A/B of two decoding settings, alternated in one process (this VM's speed drifts between runs).

    python benchmarks/ab_decode.py CHECKPOINT SOURCE --beam 5 --a fp32 --b bf16
    git show 667e7f3:nmt/search.py > /tmp/old/search.py
    python benchmarks/ab_decode.py CHECKPOINT SOURCE --beam 5 --a fp32:/tmp/old/search.py --b fp32

A setting is PRECISION[:FILE]: decode.precision, and optionally another version of nmt/search.py
(greedy and beam_search are taken from it), of nmt/attention.py (the attention modules' forward
methods are) or of nmt/model.py (``Encoder.forward`` is), told apart by the file's name; the rest of nmt is this checkout's. Each round
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

import nmt.attention  # noqa: E402
import nmt.model  # noqa: E402
import nmt.search  # noqa: E402
import nmt.translate  # noqa: E402
from nmt.data import read_lines  # noqa: E402

ATTENTIONS = (nmt.attention.AdditiveAttention, nmt.attention.MultiplicativeAttention)


def load_module(path: str):
    spec = importlib.util.spec_from_file_location(f"ab_{abs(hash(path))}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the file executes
    spec.loader.exec_module(module)
    return module


def setting(path: str | None):
    """A function that puts this setting's code in place: this checkout's, or the other version
    of nmt/search.py, nmt/attention.py or nmt/model.py in ``path``."""
    search, attention, model = nmt.search, nmt.attention, nmt.model
    name = Path(path).name if path else None
    if name in ("search.py", "attention.py", "model.py"):
        loaded = load_module(path)
        search, attention, model = (loaded if name == f"{m}.py" else default
                                    for m, default in (("search", search), ("attention", attention), ("model", model)))
    elif path:
        raise SystemExit(f"error: {path}: expected a file named search.py, attention.py or model.py")
    forwards = {cls: getattr(attention, cls.__name__).forward for cls in ATTENTIONS}
    forwards[nmt.model.Encoder] = model.Encoder.forward

    def apply() -> None:
        nmt.translate.greedy, nmt.translate.beam_search = search.greedy, search.beam_search
        for cls, forward in forwards.items():
            cls.forward = forward

    return apply


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint")
    parser.add_argument("source", help="a text file, one source sentence a line")
    parser.add_argument("--beam", type=int, default=5)
    parser.add_argument("--a", default="fp32", help="PRECISION[:FILE]")
    parser.add_argument("--b", default="bf16", help="PRECISION[:FILE]")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    translator = nmt.translate.Translator.from_checkpoint(args.checkpoint, "cpu")
    lines = read_lines(Path(args.source))
    settings = {}
    for name, spec in (("A", args.a), ("B", args.b)):
        precision, _, path = spec.partition(":")
        settings[name] = (spec, precision, setting(path or None))
    seconds: dict[str, list[float]] = {"A": [], "B": []}
    outputs = {}
    for _, precision, apply in settings.values():  # warm-up: first-call kernel set-up of each setting
        apply()
        translator.hypotheses(lines[:20], beam=args.beam, precision=precision)
    for _ in range(args.rounds):
        for name, (_, precision, apply) in settings.items():
            apply()
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
