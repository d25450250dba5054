"""Look inside a trained model's search: decode at several beam sizes, count search errors on
short sentences, and collect attention weights for heatmaps.

The objective every comparison uses is the one beam search maximises: log p(T | S) divided by
the GNMT length penalty lp(|T| + 1) = ((5 + |T| + 1) / 6) ** alpha (nmt.search).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np
import torch

from nmt.analysis import rounded_mean
from nmt.metrics import corpus_scores
from nmt.scripts import word_count
from nmt.search import Hypothesis, length_penalty, max_lengths, sequence_log_prob
from nmt.translate import Translator

log = logging.getLogger(__name__)

# Beam search keeps running sums; teacher forcing recomputes them in one pass. The two differ by
# float rounding (~1e-5), so a candidate must win by more than this to count as a search error.
SCORE_TOLERANCE = 1e-3


@dataclass
class Decoded:
    """The best hypothesis of each line (None for an empty line), its text, and the time taken."""

    best: list[Hypothesis | None]
    texts: list[str]
    seconds: float

    def subset(self, index: list[int]) -> "Decoded":
        share = len(index) / max(1, len(self.texts))  # time is apportioned, not measured again
        return Decoded([self.best[i] for i in index], [self.texts[i] for i in index], self.seconds * share)


def objective(hyp: Hypothesis, alpha: float) -> float:
    """What beam search maximises; greedy's ``score`` is raw log p, so it is recomputed here."""
    return hyp.log_prob / length_penalty(len(hyp.tokens) + 1, alpha)


def decode(translator: Translator, lines: list[str], beam: int, alpha: float, keep_attention: bool = False) -> Decoded:
    t0 = time.perf_counter()
    found = translator.hypotheses(lines, beam=beam, alpha=alpha, keep_attention=keep_attention)
    seconds = time.perf_counter() - t0
    best = [hyps[0] if hyps else None for hyps in found]
    texts = [translator.text(h) if h else "" for h in best]
    return Decoded(best, texts, seconds)


def spread(index: list[int], count: int) -> list[int]:
    """``count`` items of ``index`` evenly spaced through it (all of them when fewer)."""
    if count <= 0 or len(index) <= count:
        return list(index) if count > 0 else []
    return [index[int(j * len(index) / count)] for j in range(count)]


def _sweep_row(beam: int, decoded: Decoded, refs: list[str], alpha: float, lang: str) -> dict:
    found = [h for h in decoded.best if h is not None]
    bleu = corpus_scores(decoded.texts, refs, ("bleu",), lang)["bleu"]["score"] if refs else 0.0
    return {
        "beam": beam,
        "bleu": bleu,
        "mean_log_prob": rounded_mean([h.log_prob for h in found]),
        "mean_objective": rounded_mean([objective(h, alpha) for h in found]),
        "mean_tokens": rounded_mean([len(h.tokens) for h in found]),
        "sentences_per_s": round(len(decoded.texts) / max(decoded.seconds, 1e-9), 2),
    }


def beam_sweep(
    translator: Translator, sources: list[str], refs: list[str], beams: tuple[int, ...], alpha: float,
    index: list[int], known: dict[int, Decoded],
) -> list[dict]:
    """BLEU and the mean model log-probability per sentence at each beam size, on the lines in
    ``index``. Beams already decoded on the whole test set (``known``) are reused, not rerun."""
    lines, sub_refs = [sources[i] for i in index], [refs[i] for i in index]
    rows = []
    for beam in beams:
        decoded = known[beam].subset(index) if beam in known else decode(translator, lines, beam, alpha)
        rows.append(_sweep_row(beam, decoded, sub_refs, alpha, translator.config.data.tgt_lang))
        log.info("beam %d on %d sentences: BLEU %.2f", beam, len(lines), rows[-1]["bleu"])
    return rows


def model_objective(translator: Translator, source: str, tokens: list[int], alpha: float,
                    ended: bool = True) -> float | None:
    """The model objective of ``tokens`` (ended by </s>, or cut at the length limit) as the
    translation of ``source``, scored alone by teacher forcing in the caller's arithmetic
    (``Translator.scoring``); None when longer than the search may go (max_lengths), so no beam
    could have produced it."""
    cfg = translator.config.decode
    src_ids = translator.tokenizer.encode_src([source])[0]
    src = torch.tensor([src_ids], device=translator.device)
    lengths = torch.tensor([len(src_ids)], device=translator.device)
    if len(tokens) + ended > int(max_lengths(lengths, cfg.max_len_ratio, cfg.max_len_offset)[0]):
        return None
    translator.model.eval()
    log_prob = sequence_log_prob(translator.model, src, lengths, tokens, ended=ended)
    return log_prob / length_penalty(len(tokens) + 1, alpha)


def reference_objective(translator: Translator, source: str, reference: str, alpha: float) -> float | None:
    """The model objective of the reference translation (``model_objective``)."""
    return model_objective(translator, source, translator.tokenizer.encode_tgt([reference])[0], alpha)


def short_sentences(translator: Translator, sources: list[str], max_pieces: int, count: int) -> list[int]:
    """Up to ``count`` evenly spread lines with something to translate, of at most ``max_pieces``
    source pieces, and none longer than the model was trained on: such a line is decoded in parts
    (``nmt.segment``), whose summed score no search over the whole line is comparable with."""
    max_pieces = min(max_pieces, translator.config.train.max_train_len)
    ids = translator.tokenizer.encode_src(sources)
    short = [i for i, seq in enumerate(ids) if 1 < len(seq) <= max_pieces]  # (</s> alone: nothing to translate)
    return spread(short, count)


def search_errors(
    translator: Translator, sources: list[str], refs: list[str], beams: tuple[int, ...], alpha: float,
    index: list[int], wide: int,
) -> list[dict]:
    """Per beam size, the share of the lines in ``index`` where beam search provably missed a
    translation the model scores higher: the output of a ``wide`` beam, or the reference.

    Exhaustive search is out of reach for a real vocabulary, so these are lower bounds on the
    true search-error rate. No lines, no rows."""
    if not index:
        return []
    lines = [sources[i] for i in index]
    widest = decode(translator, lines, wide, alpha).best
    found = {beam: decode(translator, lines, beam, alpha).best for beam in beams}

    def scored(hyps: list[Hypothesis | None]) -> list[float | None]:
        objectives = []
        for line, hyp in zip(lines, hyps):
            own = None if hyp is None else model_objective(translator, line, hyp.tokens, alpha)
            if hyp is not None and own is None:  # no room for </s>: it was cut at the length limit
                own = model_objective(translator, line, hyp.tokens, alpha, ended=False)
            objectives.append(own)
        return objectives

    # every objective compared is computed alike: one sentence at a time, in the arithmetic the search
    # ran in (bf16 or int8 scores differ from fp32's, and a reference equal to the output had beaten it)
    with torch.no_grad(), translator.scoring():
        wide_obj, own_obj = scored(widest), {beam: scored(hyps) for beam, hyps in found.items()}
        ref_obj = [reference_objective(translator, sources[i], refs[i], alpha) for i in index]
    rows = []
    for beam in beams:
        by_wide, by_ref, either = 0, 0, 0
        for own, w, r in zip(own_obj[beam], wide_obj, ref_obj):
            if own is None:  # no output to compare
                continue
            beat_wide = w is not None and w > own + SCORE_TOLERANCE
            beat_ref = r is not None and r > own + SCORE_TOLERANCE
            by_wide, by_ref, either = by_wide + beat_wide, by_ref + beat_ref, either + (beat_wide or beat_ref)
        n = max(1, len(lines))
        rows.append({
            "beam": beam,
            "beaten_by_wide_beam": round(by_wide / n, 4),
            "beaten_by_reference": round(by_ref / n, 4),
            "search_errors": round(either / n, 4),
        })
    return rows


def heatmap_sentences(sources: list[str], count: int) -> list[int]:
    """``count`` non-empty lines, longest first: the longest half of them plus lines spread over
    the rest of the length range, so long sentences are always shown."""
    order = sorted((i for i, s in enumerate(sources) if s.strip()), key=lambda i: (-word_count(sources[i]), i))
    longest = order[: (count + 1) // 2]
    return longest + spread(order[len(longest):], count - len(longest))


def attention_maps(translator: Translator, sources: list[str], index: list[int], beam: int, alpha: float) -> list[dict]:
    """Attention weights of the best hypothesis of each line in ``index``: weights (T', S) with a
    row per target piece (plus </s> when it ended) and a column per source piece (</s> included).
    Empty when the model has no attention."""
    decoded = decode(translator, [sources[i] for i in index], beam, alpha, keep_attention=True)
    maps = []
    for i, hyp in zip(index, decoded.best):
        if hyp is None or hyp.attention is None:
            continue
        src_pieces = translator.tokenizer.src_pieces(sources[i])
        weights = hyp.attention.numpy()  # (steps, source pieces with </s>)
        ended = weights.shape[0] > len(hyp.tokens)
        maps.append({
            "index": i,
            "source_pieces": src_pieces,
            "target_pieces": translator.tokenizer.tgt_pieces(hyp.tokens) + (["</s>"] if ended else []),
            "weights": np.asarray(weights, dtype=np.float32),
        })
    return maps

