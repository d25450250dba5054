"""A/B of two decoding settings, alternated in one process (this VM's speed drifts between runs).

    python benchmarks/ab_decode.py CHECKPOINT SOURCE --beam 5 --a fp32 --b bf16
    git show d90e1d3:nmt/translate.py > /tmp/old/translate.py
    python benchmarks/ab_decode.py CHECKPOINT SOURCE --beam 5 --a fp32:/tmp/old/translate.py --b fp32
    python benchmarks/ab_decode.py CHECKPOINT SOURCE --beam 1 --a fp32 --b fp32 --a-batch 64 --b-batch 128

A setting is PRECISION[:FILES]: decode.precision, and optionally other versions (comma-separated)
of nmt/search.py (greedy_stream is taken from it; from one older than nmt/beam.py, beam_stream
too), nmt/beam.py (beam_stream), nmt/attention.py (the
attention modules' forward methods are), nmt/model.py (``Encoder.forward``, ``Seq2Seq.encode`` and
``Decoder._rnn_cells`` are), nmt/quantize.py (``int8_bilstm`` is), nmt/stretches.py (``by_length``,
the encoder's stretches, before 2026-12-07 part of nmt/model.py) or nmt/translate.py
(``Translator.hypotheses`` and ``Translator._search`` are), told apart by the file's name; the
rest of nmt is this checkout's. ``--a-batch`` and ``--b-batch`` set each one's
``decode.batch_size`` (default: the checkpoint's). A translate.py from before 2026-12-05 decodes
batch by batch, with this checkout's greedy and beam_search: the A/B of giving a finished
sentence's place to the next one. Each round translates SOURCE with A then B through
``Translator.hypotheses``; the fastest round of each is kept, and how many lines both translated
alike is printed (with ``--ref``, each one's BLEU). The source of the decoding rows of the lever
table in benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import nmt.attention  # noqa: E402
import nmt.model  # noqa: E402
import nmt.quantize  # noqa: E402
import nmt.translate  # noqa: E402
from nmt.lines import read_lines  # noqa: E402
from nmt_runs import with_decode_batch  # noqa: E402


def load_module(path: str):
    spec = importlib.util.spec_from_file_location(f"ab_{abs(hash(path))}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the file executes
    spec.loader.exec_module(module)
    return module


# What another version of a file replaces: nmt.translate's search functions, or classes' methods.
PATCHED = {
    "search.py": ("greedy_stream",),
    "beam.py": ("beam_stream",),
    "attention.py": ("AdditiveAttention.forward", "MultiplicativeAttention.forward"),
    "model.py": ("Encoder.forward", "Seq2Seq.encode", "Decoder._rnn_cells"),
    "quantize.py": ("int8_bilstm",),
    "stretches.py": ("by_length",),
    "translate.py": ("Translator.hypotheses", "Translator._search"),
}
# Where a replaced function is looked up when decoding: the module that imported it by name.
USED_IN = {"search.py": nmt.translate, "beam.py": nmt.translate, "quantize.py": nmt.model, "stretches.py": nmt.model}


def _owner(module, dotted: str):
    """The object holding ``dotted``'s last part in ``module`` (the module or one of its classes)."""
    cls, _, _ = dotted.rpartition(".")
    return getattr(module, cls) if cls else module


def _attribute(dotted: str) -> str:
    return dotted.rpartition(".")[2]


def _target(file: str, dotted: str):
    """Where this checkout's version of ``dotted`` is looked up: the module that imported a function
    (``USED_IN``), the class in nmt.<file> for a method."""
    return USED_IN[file] if "." not in dotted else _owner(sys.modules[f"nmt.{file[:-3]}"], dotted)


ORIGINALS = {(file, d): getattr(_target(file, d), _attribute(d)) for file, ds in PATCHED.items() for d in ds}


def setting(paths: str | None, translator: nmt.translate.Translator, batch: int | None = None):
    """A function that puts this setting's code in place: this checkout's, with the other versions
    of nmt/search.py, nmt/beam.py, nmt/attention.py, nmt/model.py, nmt/quantize.py or nmt/stretches.py in ``paths``
    (comma-separated) instead; and, with ``batch``, sets ``translator``'s decode.batch_size (else
    the checkpoint's)."""
    config = with_decode_batch(translator.config, batch)
    patches = dict(ORIGINALS)
    for path in filter(None, (paths or "").split(",")):
        file = Path(path).name
        if file not in PATCHED:
            raise SystemExit(f"error: {path}: expected a file named {', '.join(PATCHED)}")
        loaded = load_module(path)
        if file == "quantize.py":  # the int8 weights int8_products (this checkout's) holds
            loaded._WEIGHTS = nmt.quantize._WEIGHTS
        for dotted in PATCHED[file]:
            if not hasattr(_owner(loaded, dotted), _attribute(dotted)):
                raise SystemExit(f"error: {path} has no {dotted} (a search.py older than 2026-12-05 streams no "
                                 "batches: A/B it through its translate.py, which calls this checkout's greedy "
                                 "and beam_search)")
            patches[file, dotted] = getattr(_owner(loaded, dotted), _attribute(dotted))
        if file == "search.py" and hasattr(loaded, "beam_stream"):  # older than nmt/beam.py: beam search too
            patches["beam.py", "beam_stream"] = loaded.beam_stream

    def apply() -> None:
        for (file, dotted), value in patches.items():
            setattr(_target(file, dotted), _attribute(dotted), value)
        translator.config = config

    return apply


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint")
    parser.add_argument("source", help="a text file, one source sentence a line")
    parser.add_argument("--beam", type=int, default=5)
    parser.add_argument("--a", default="fp32", help="PRECISION[:FILES]")
    parser.add_argument("--b", default="bf16", help="PRECISION[:FILES]")
    parser.add_argument("--a-batch", type=int, help="A's decode.batch_size (default: the checkpoint's)")
    parser.add_argument("--b-batch", type=int, help="B's decode.batch_size (default: the checkpoint's)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--ref", help="reference translations of SOURCE: also print each setting's BLEU")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    translator = nmt.translate.Translator.from_checkpoint(args.checkpoint, "cpu")
    translator.follow_load = False  # --threads throughout
    lines = read_lines(Path(args.source))
    settings = {}
    for name, spec, batch in (("A", args.a, args.a_batch), ("B", args.b, args.b_batch)):
        precision, _, path = spec.partition(":")
        settings[name] = (spec if batch is None else f"{spec} batch {batch}", precision,
                          setting(path or None, translator, batch))
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
    same = sum(a == b for a, b in zip(outputs["A"], outputs["B"]))
    print(f"B / A: {min(seconds['A']) / min(seconds['B']):.2f}; same output: {outputs['A'] == outputs['B']} "
          f"({same} of {len(lines)} lines identical)")
    if args.ref:
        from nmt.metrics import corpus_scores

        refs = read_lines(Path(args.ref))
        for name, (spec, _, _) in settings.items():
            text = translator.tokenizer.decode_tgt(outputs[name])
            scores = corpus_scores(text, refs, ("bleu", "chrf"))
            print(f"{name} {spec}: BLEU {scores['bleu']['score']:.2f}, chrF {scores['chrf']['score']:.2f}")


if __name__ == "__main__":
    main()
