"""Corpus scores from sacreBLEU, each with its signature, on detokenised text."""

from __future__ import annotations

from sacrebleu.metrics import BLEU, CHRF, TER

from nmt.errors import NmtError

METRICS = {"bleu": BLEU, "chrf": CHRF, "ter": TER}


def corpus_scores(hyps: list[str], refs: list[str], metrics: tuple[str, ...] = ("bleu", "chrf", "ter")) -> dict:
    """{name: {"score", "signature", "text"}} for each metric; sacreBLEU defaults (BLEU 13a)."""
    if len(hyps) != len(refs):
        raise NmtError(f"{len(hyps)} hypotheses but {len(refs)} references: line counts must match")
    out = {}
    for name in metrics:
        metric = METRICS[name]()
        result = metric.corpus_score(hyps, [refs])
        out[name] = {
            "score": round(float(result.score), 4),
            "signature": str(metric.get_signature()),
            "text": str(result),
        }
    return out


def sentence_chrf(hyp: str, ref: str) -> float:
    return float(CHRF().sentence_score(hyp, [ref]).score)
