"""Lines longer than the model was trained on: what cutting them where sentences end buys.

    python benchmarks/long_lines.py CHECKPOINT [--split dev] [--verses 512] [--joins 1,2,4,8,16,32] [--name NAME]

Joins ``--joins`` consecutive verses of the benchmark's Bible split (``--split``; source and
reference alike) into one line, and translates the lines greedily in fp32 five ways, a line cut
only when it is longer than the checkpoint's train.max_train_len source pieces:

    whole        decode.split_long false: the line as it is (nmt before nmt.segment)
    nmt          decode.split_long true, Translator.translate as users run it: parts of up to
                 half the length (nmt.segment.split_long)
    clauses      every sentence and clause a part of its own (nmt.segment.clauses)
    parts of L   parts of up to the full length L
    parts of L/4 parts of up to a quarter

Per join: the lines' mean and longest source pieces, and per way sacreBLEU's BLEU against the
joined references, output words / reference words, and seconds. A join of 1 is the verses as they
are (none longer than the length: every way the same). Writes
benchmarks/results/<date>-<NAME>.{json,md}.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

from bench import code_version, command_line, machine, machine_slug, save_results  # noqa: E402
from workdir import WORK, ensure_work  # noqa: E402

WAYS = ("whole", "nmt", "clauses", "parts of L", "parts of L/4")


def joined(lines: list[str], join: int) -> list[str]:
    """Every ``join`` consecutive lines as one (a last, shorter group dropped)."""
    return [" ".join(lines[i : i + join]) for i in range(0, len(lines) - join + 1, join)]


def cut(translator, way: str, line: str, length: int) -> list[str]:
    """The parts ``way`` decodes for ``line`` (``length``: its source pieces)."""
    from nmt.segment import clauses, split_long

    longest = translator.config.train.max_train_len
    if length <= longest or way == "whole":
        return [line]
    if way == "clauses":
        return clauses(line)
    part = {"parts of L": longest, "parts of L/4": longest // 4}[way]
    return split_long(line, translator.tokenizer.src_lengths, longest, part)


def translated(translator, way: str, lines: list[str]) -> tuple[list[str], float]:
    """Each line's translation (its parts' side by side) and the seconds taken."""
    decode = dataclasses.replace(translator.config.decode, split_long=way == "nmt")
    translator.config = dataclasses.replace(translator.config, decode=decode)
    t0 = time.perf_counter()
    if way == "nmt":
        return translator.translate(lines, beam=1, precision="fp32"), time.perf_counter() - t0
    lengths = translator.tokenizer.src_lengths(lines)
    parts = [cut(translator, way, line, n) for line, n in zip(lines, lengths)]
    flat = translator.translate([p for line_parts in parts for p in line_parts], beam=1, precision="fp32")
    out, at = [], 0
    for line_parts in parts:
        out.append(" ".join(flat[at : at + len(line_parts)]))
        at += len(line_parts)
    return out, time.perf_counter() - t0


def measure(translator, sources: list[str], refs: list[str], joins: list[int]) -> list[dict]:
    import sacrebleu

    rows = []
    for join in joins:
        src, ref = joined(sources, join), joined(refs, join)
        lengths = translator.tokenizer.src_lengths(src)
        row = {"join": join, "lines": len(src), "mean_pieces": round(sum(lengths) / len(src), 1),
               "longest_pieces": max(lengths), "ways": {}}
        ref_words = sum(len(r.split()) for r in ref)
        for way in WAYS:
            out, seconds = translated(translator, way, src)
            row["ways"][way] = {"bleu": round(sacrebleu.corpus_bleu(out, [ref]).score, 2),
                                "words_ratio": round(sum(len(o.split()) for o in out) / ref_words, 3),
                                "seconds": round(seconds, 2)}
        logging.info("%s", json.dumps(row))
        rows.append(row)
    return rows


def render(results: dict) -> str:
    head = ["join", "lines", "source pieces (mean / longest)"] + [f"{way}: BLEU (words / ref, s)" for way in WAYS]
    lines = [f"# Long lines, {results['date']}", "", f"Machine: {results['machine']['cpu']}, "
             f"{results['machine']['cores_available']} cores, torch {results['machine']['torch']}. "
             f"Code {results['code']}. Checkpoint {results['checkpoint']} (train.max_train_len "
             f"{results['max_train_len']}). Command: `{results['command']}`", "",
             "| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for row in results["rows"]:
        cells = [str(row["join"]), str(row["lines"]), f"{row['mean_pieces']:g} / {row['longest_pieces']}"]
        cells += [f"{w['bleu']:.2f} ({w['words_ratio']:.2f}, {w['seconds']:.1f})" for w in row["ways"].values()]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    from nmt.translate import Translator

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--split", default="dev")
    parser.add_argument("--verses", type=int, default=512)
    parser.add_argument("--joins", default="1,2,4,8,16,32")
    parser.add_argument("--name", default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    data = ensure_work(WORK) / "data"
    sources = (data / f"{args.split}.es").read_text(encoding="utf-8").splitlines()[: args.verses]
    refs = (data / f"{args.split}.en").read_text(encoding="utf-8").splitlines()[: args.verses]
    translator = Translator.from_checkpoint(args.checkpoint, "cpu")
    translator.follow_load = False  # the same threads for every way
    m = machine()
    results = {"date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "machine": m,
               "code": code_version(), "command": command_line("long_lines.py", sys.argv[1:] if argv is None else argv),
               "checkpoint": args.checkpoint, "max_train_len": translator.config.train.max_train_len,
               "rows": measure(translator, sources, refs, [int(j) for j in args.joins.split(",")])}
    name = args.name or f"{machine_slug(m)}-long-lines"
    print(save_results(HERE / "results", f"{datetime.now(timezone.utc):%Y-%m-%d}-{name}", results, render))


if __name__ == "__main__":
    main()
