"""Dev BLEU against wall-clock minutes, from training runs' metrics.jsonl — for before/after tables.

    python benchmarks/curve.py runs/bible-es-en/metrics.jsonl [more.jsonl …] [--thresholds 10 15 20]

For every validation: its step, the minute its result was known (the run's elapsed time at that
step plus the validation's own seconds: validations are inside the budget) and the dev BLEU; then,
per run, the first minute at which dev BLEU reached each threshold.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from nmt.analysis import read_curves


def validations(path: Path) -> list[tuple[int, float, float]]:
    """(step, minutes when known, dev BLEU) for each validation of one run: the record's own time
    at its end, or in logs from before it had one, the time at the last training line up to its step
    plus its own seconds (a validation off the 20-step log grid, as the last one, came out early by
    the steps since that line)."""
    curves = read_curves(path)
    elapsed = {record["step"]: record["elapsed_s"] for record in curves["train"]}
    out = []
    for record in curves["valid"]:
        if "elapsed_s" in record:
            out.append((record["step"], record["elapsed_s"] / 60, record["dev_bleu"]))
            continue
        before = max((s for s in elapsed if s <= record["step"]), default=None)
        start = elapsed[before] if before is not None else 0.0
        out.append((record["step"], (start + record["valid_seconds"]) / 60, record["dev_bleu"]))
    return out


def first_minute(curve: list[tuple[int, float, float]], threshold: float) -> float | None:
    return next((minute for _, minute, bleu in curve if bleu >= threshold), None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("metrics", nargs="+", type=Path)
    parser.add_argument("--thresholds", nargs="*", type=float, default=[5, 10, 15, 20, 25])
    args = parser.parse_args()
    for path in args.metrics:
        curve = validations(path)
        print(f"{path}:")
        print("  " + ", ".join(f"step {s}: {b:.2f} at {m:.1f} min" for s, m, b in curve))
        reached = [(t, first_minute(curve, t)) for t in args.thresholds]
        print("  minutes to dev BLEU ≥ " + " / ".join(f"{t:g}: {'—' if m is None else f'{m:.1f}'}" for t, m in reached))


if __name__ == "__main__":
    main()
