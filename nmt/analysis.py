"""The report's numbers that need only text: confidence intervals, paired tests, scores by source
length, sentence-level chrF rankings, and the training curves in ``metrics.jsonl``. No torch.

Every statistic is sacreBLEU's own machinery (``sacrebleu.significance.PairedTest``, paired
bootstrap resampling, seeded by ``SACREBLEU_SEED``, default 12345), so each number can be
reproduced on the written hypothesis files with the ``sacrebleu`` command line:

    sacrebleu REF -i HYP -m bleu chrf ter --confidence        # a system's interval
    sacrebleu REF -i BASE SYS -m bleu chrf ter --paired-bs    # a comparison
(with ``nmt.metrics.cli_options`` for the target language: -tok zh, say)
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from sacrebleu.significance import PairedTest

from nmt.errors import NmtError
from nmt.metrics import metric, sentence_chrf
from nmt.scripts import word_count

log = logging.getLogger(__name__)

METRIC_NAMES = ("bleu", "chrf", "ter")
LOWER_IS_BETTER = {"ter"}
BOOTSTRAP = 1000  # resamples; sacreBLEU's default for --confidence and --paired-bs
LENGTH_EDGES = (10, 20, 30, 40, 60)  # upper bounds (source words) of all but the last bucket


def bootstrap_seed() -> str:
    """The seed sacreBLEU's resampling uses (its environment variable, or its default)."""
    return os.environ.get("SACREBLEU_SEED", "12345")


def _paired(named: list[tuple[str, list[str]]], refs: list[str], metrics: tuple[str, ...], n: int,
            lang: str) -> dict:
    """Run sacreBLEU's paired bootstrap over ``named`` (the first is the baseline).

    Returns {metric: [Result per system]}; a Result has score, mean and ci (the half-width of the
    95 % percentile interval) and, for all but the baseline, p_value."""
    if not refs:
        raise NmtError("cannot score an empty test set")
    tester = PairedTest(named, {m: metric(m, lang) for m in metrics}, [refs], test_type="bs", n_samples=n)
    _, table = tester()
    # the table is keyed by sacreBLEU's display names (BLEU, chrF2, TER) in the order given
    return dict(zip(metrics, (table[key] for key in list(table)[1:])))


def _interval(result, name: str) -> dict:
    """sacreBLEU reports an interval as mean ± half-width; low/high are those two ends, within the
    range metric ``name`` can take (on a small test set BLEU's interval reached [34.65, 101.55])."""
    mean, half = float(result.mean), float(result.ci)
    top = float("inf") if name == "ter" else 100.0  # TER counts edits per reference word: above 100 too
    out = {
        "score": round(float(result.score), 4),
        "mean": round(mean, 4),
        "ci": round(half, 4),
        "low": round(max(0.0, mean - half), 4),
        "high": round(min(top, mean + half), 4),
    }
    if result.p_value is not None:
        out["p_value"] = float(result.p_value)
    return out


def interval_only(values: dict) -> dict:
    """An interval without the p-value against the first system."""
    return {k: v for k, v in values.items() if k != "p_value"}


def confidence_intervals(
    systems: dict[str, list[str]], refs: list[str], metrics: tuple[str, ...] = METRIC_NAMES, n: int = BOOTSTRAP,
    lang: str = "",
) -> dict[str, dict[str, dict]]:
    """{system: {metric: {score, mean, ci, low, high}}}: 95 % bootstrap intervals, every system
    resampled on the same sentence draws, so these are also paired tests against the first
    system: every other system carries ``p_value`` (see ``compare``)."""
    table = _paired(list(systems.items()), refs, metrics, n, lang)
    return {
        name: {m: _interval(table[m][i], m) for m in metrics} for i, name in enumerate(systems)
    }


def compare(baseline: str, system: str, intervals: dict[str, dict[str, dict]]) -> dict:
    """The paired test of ``system`` against ``baseline`` from ``confidence_intervals`` output in
    which ``baseline`` was the first system. delta = system - baseline; ``better`` names the
    better system when p < 0.05, else None."""
    out = {"baseline": baseline, "system": system, "metrics": {}}
    for m, base in intervals[baseline].items():
        other = intervals[system][m]
        delta = other["score"] - base["score"]
        gain = -delta if m in LOWER_IS_BETTER else delta
        # With equal scores sacreBLEU's p degenerates to 1 / (n + 1); no test can call a zero
        # difference significant, so report p = 1 there.
        p_value = other["p_value"] if delta != 0 else 1.0
        significant = p_value < 0.05
        out["metrics"][m] = {
            "baseline": base["score"],
            "system": other["score"],
            "delta": round(delta, 4),
            "p_value": round(p_value, 4),
            "significant": bool(significant),
            "better": (system if gain > 0 else baseline) if significant else None,
        }
    return out


def paired_test(
    baseline: tuple[str, list[str]],
    system: tuple[str, list[str]],
    refs: list[str],
    metrics: tuple[str, ...] = METRIC_NAMES,
    n: int = BOOTSTRAP,
    lang: str = "",
) -> dict:
    """Paired bootstrap test of ``system`` against ``baseline`` on each metric (see ``compare``)."""
    return compare(baseline[0], system[0], confidence_intervals(dict([baseline, system]), refs, metrics, n, lang))


def length_ratio(hyps: list[str], refs: list[str], lang: str = "") -> dict:
    """Hypothesis / reference length in BLEU's tokens, as BLEU's brevity penalty sees it."""
    result = metric("bleu", lang).corpus_score(hyps, [refs])
    ratio = result.sys_len / result.ref_len if result.ref_len else 0.0
    return {"ratio": round(ratio, 4), "hyp_len": int(result.sys_len), "ref_len": int(result.ref_len)}


def _bucket_ranges(edges: tuple[int, ...]) -> list[tuple[int, int | None]]:
    lows = (1,) + tuple(e + 1 for e in edges)
    return list(zip(lows, tuple(edges) + (None,)))


def length_buckets(
    sources: list[str], refs: list[str], systems: dict[str, list[str]],
    edges: tuple[int, ...] = LENGTH_EDGES, n: int = BOOTSTRAP, lang: str = "",
) -> list[dict]:
    """BLEU and chrF (with intervals) and the length ratio per source-length bucket (in words, a
    Chinese or Japanese letter a word: ``nmt.scripts.word_count``).

    Empty buckets are left out; sentences with an empty source count in the first bucket."""
    words = [word_count(s) for s in sources]  # a Chinese or Japanese letter a word, as the filters count
    buckets = []
    for low, high in _bucket_ranges(edges):
        index = [i for i, w in enumerate(words) if (w >= low or low == 1) and (high is None or w <= high)]
        if not index:
            continue
        sub_refs = [refs[i] for i in index]
        sub = {name: [hyps[i] for i in index] for name, hyps in systems.items()}
        intervals = confidence_intervals(sub, sub_refs, ("bleu", "chrf"), n, lang)
        scores = {name: {m: interval_only(v) for m, v in by_metric.items()} for name, by_metric in intervals.items()}
        for name in sub:
            scores[name]["length"] = length_ratio(sub[name], sub_refs, lang)
        label = f"{low}–{high}" if high is not None else f"{low}+"
        buckets.append({"label": label, "low": low, "high": high, "sentences": len(index), "systems": scores})
    return buckets


def best_and_worst(sources: list[str], refs: list[str], hyps: list[str], count: int) -> dict:
    """The ``count`` best and worst sentences by sentence-level chrF (ties: earlier line first).

    When the test set has fewer than 2 * count lines, the two lists share no sentence."""
    chrf = [sentence_chrf(h, r) for h, r in zip(hyps, refs)]
    count = min(count, max(1, len(chrf) // 2)) if chrf else 0
    rising = sorted(range(len(chrf)), key=lambda i: (chrf[i], i))
    falling = sorted(range(len(chrf)), key=lambda i: (-chrf[i], i))

    def rows(index: list[int]) -> list[dict]:
        return [
            {"index": i, "chrf": round(chrf[i], 2), "source": sources[i], "reference": refs[i], "hypothesis": hyps[i]}
            for i in index
        ]

    return {"best": rows(falling[:count]), "worst": rows(rising[:count]), "mean_sentence_chrf": rounded_mean(chrf)}


def rounded_mean(values: list[float]) -> float:
    """Mean to 4 decimals (0 for no values), as report numbers are stored."""
    return round(sum(values) / len(values), 4) if values else 0.0


def find_run_dir(checkpoint: Path) -> Path | None:
    """The run folder holding ``metrics.jsonl`` above a checkpoint (runs/x/best → runs/x,
    runs/x/checkpoints/step-N → runs/x), or None."""
    checkpoint = Path(checkpoint)
    for start in (checkpoint, checkpoint.resolve()):
        for folder in list(start.parents)[:3]:
            if (folder / "metrics.jsonl").is_file():
                return folder
    return None


def read_curves(metrics_path: Path) -> dict[str, list[dict]]:
    """{"train": [...], "valid": [...]} from metrics.jsonl, one record per step (the last one
    logged wins, so a resumed run is not counted twice), in step order."""
    records: dict[tuple[str, int], dict] = {}
    for number, line in enumerate(Path(metrics_path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            log.warning("%s:%d: not JSON, skipped", metrics_path, number)
            continue
        if record.get("kind") in ("train", "valid") and "step" in record:
            records[(record["kind"], int(record["step"]))] = record
    return {
        kind: [records[key] for key in sorted(k for k in records if k[0] == kind)] for kind in ("train", "valid")
    }
