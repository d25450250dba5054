"""Decoders approximating argmax_T p(T | S): greedy, and exhaustive (a test oracle); batched beam
search, which shares this module's scores and batch streaming, is ``nmt.beam``.

A hypothesis's log p is the sum of its token log-probabilities (</s> included). Beam search and
the exhaustive oracle score it as log p divided by the GNMT length penalty lp(n) = ((5 + n) / 6)
** alpha, n its pieces counting </s> (alpha = 0 leaves raw log p); greedy search has no alpha, and
its score is raw log p (or none: ``greedy_stream`` can leave scores out).
A hypothesis ends at </s>, or is cut at its sentence's length limit (``max_lengths``: tokens,
</s> counted; a cut one's log p has no </s> term, its lp counts one). <pad> and <s> are never
produced.

A batch holds at most ``capacity`` sentences (``decode.batch_size``); when one finishes, the next
sentence waiting takes its place in the batch, in place (``greedy_stream``, ``nmt.beam.beam_stream``), so
steps run full batches until the input runs dry; then finished sentences leave the batch (below). Why:
a batch's last sentences ran steps of their own (greedy, Luong model: 916 of 2,161 steps with
fewer than 8 of the batch's 64 sentences). On the Bible test split decoder steps fell by
24-44 %, a pass ran 1.01-1.07x faster, same output (the Zen 4 VM; benchmarks/README.md,
"Levers"). Rows taken in are only as wide as their own longest source, not their encoder batch's:
every row attends over the widest one held. Once nothing waits, a finished sentence's rows stay
(their output unread) until half the batch has finished, then the batch is compacted to the rest:
the products see a few batch sizes instead of one per finished sentence, so oneDNN builds fewer
kernels and the memory is copied less often (bf16 greedy 1.05x and beam 5 1.04x in a fresh
process on the Intel AMX VM, fp32 1.00x, same output).

The decoders run under ``torch.no_grad``, not ``torch.inference_mode``: inference mode turns off
autocast's cache of cast weights, so bf16 decoding re-cast every weight matrix at every step
(measured 1.1x beam-5 and 1.2x greedy for the cache; no difference in fp32).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import torch

from nmt import topk
from nmt.model import Seq2Seq
from nmt.state import DecoderState, Memory
from nmt.tokenizer import BOS, EOS, PAD


@dataclass
class Hypothesis:
    tokens: list[int]  # without </s>
    log_prob: float  # sum of token log-probabilities, </s> included when it was produced; NaN unscored
    score: float  # log_prob / lp(length): what the search maximises; NaN unscored
    attention: torch.Tensor | None = None  # (len(tokens) + ended, source length) weights, when asked for
    cuts: tuple[int, ...] = ()  # a line translated in parts (nmt.translate): where each part after the first begins


NAN = float("nan")  # an unscored hypothesis's log_prob and score


def length_penalty(length: int | torch.Tensor, alpha: float):
    return ((5.0 + length) / 6.0) ** alpha


def max_lengths(src_lengths: torch.Tensor, ratio: float, offset: int) -> torch.Tensor:
    """Most target tokens (</s> included) allowed per sentence: ratio * source length + offset, the
    product rounded down as written in decimals (1.3 * 90 is 117, though 116.99999 in float32). A
    hypothesis ends in </s> within that many tokens, or is cut at that many pieces without one (its
    length penalty then counts an </s> as a finished one's does: lp(pieces + 1))."""
    return (src_lengths.double() * ratio + 1e-9).long() + offset


def forbid_specials(log_probs: torch.Tensor) -> torch.Tensor:
    """log_probs (R, V) with <pad> and <s> at -inf, in place: never produced."""
    log_probs[:, PAD] = float("-inf")
    log_probs[:, BOS] = float("-inf")
    return log_probs


Encoded = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # src (B, S), lengths (B,), limits (B,)
# sentences taken from the encoded ones waiting: numbers, source lengths, length limits, memory, start state
Taken = tuple[list[int], list[int], list[int], Memory, DecoderState]


class Waiting:
    """Sentences encoded and waiting for a place in the decoding batch, numbered in the order the
    batches come. A batch is encoded only when a place is free and no sentence waits, so at most
    one encoder batch is held beyond the sentences being decoded."""

    def __init__(self, model: Seq2Seq, batches: Iterable[Encoded]):
        self.model, self.batches = model, iter(batches)
        self.memory: Memory | None = None
        self.state: DecoderState | None = None
        self.lengths: list[int] = []
        self.limits: list[int] = []
        self.first = 0  # number of the current batch's row 0
        self.next = 0  # its first row still waiting

    def take(self, n: int) -> Taken | None:
        """Up to n sentences of one batch: their numbers, source lengths, length limits, memory rows
        and start states; None once every batch has been taken."""
        while self.next == len(self.lengths):  # (an empty batch is passed over)
            self.memory = self.state = None  # taken: freed before the next batch is encoded
            batch = next(self.batches, None)
            if batch is None:
                return None
            src, lengths, limits = batch
            self.first += len(self.lengths)
            self.lengths, self.limits, self.next = lengths.tolist(), limits.tolist(), 0
            if self.lengths:
                self.memory, self.state = self.model.encode(src, lengths)
        taken = slice(self.next, min(self.next + n, len(self.lengths)))
        self.next = taken.stop
        lengths, limits = self.lengths[taken], self.limits[taken]
        if len(lengths) == len(self.lengths):  # the whole batch
            memory, state = self.memory, self.state
        else:  # as wide as its longest sentence: the others attend over no more than they need
            index = torch.arange(taken.start, taken.stop, device=self.memory.mask.device)
            memory, state = self.memory.narrowed(max(lengths)).select(index), self.state.select(index)
        return list(range(self.first + taken.start, self.first + taken.stop)), lengths, limits, memory, state


@dataclass
class _Greedy:
    """One sentence being decoded greedily."""

    number: int
    src_length: int
    limit: int
    tokens: list[int] = field(default_factory=list)
    log_prob: float = 0.0
    attention: list[torch.Tensor] = field(default_factory=list)

    def hypothesis(self) -> Hypothesis:
        attention = torch.stack(self.attention) if self.attention else None
        return Hypothesis(self.tokens, self.log_prob, self.log_prob, attention)


@torch.no_grad()
def greedy(
    model: Seq2Seq, src: torch.Tensor, lengths: torch.Tensor, limits: torch.Tensor, keep_attention: bool = False,
    scored: bool = True,
) -> list[Hypothesis]:
    """Pick the most probable token at every step. src (B, S), lengths (B,), limits (B,)."""
    found = dict(greedy_stream(model, [(src, lengths, limits)], src.size(0), keep_attention, scored))
    return [found[i] for i in range(src.size(0))]


@torch.no_grad()
def greedy_stream(
    model: Seq2Seq, batches: Iterable[Encoded], capacity: int, keep_attention: bool = False, scored: bool = True,
) -> Iterator[tuple[int, Hypothesis]]:
    """Greedy search over a stream of batches, at most ``capacity`` sentences at a time: a sentence
    that finishes gives its place to the next one waiting (``Waiting``), so the batch stays full
    until the stream runs dry. Yields (number, hypothesis) as sentences finish, numbered in stream
    order. A hypothesis's attention is (steps, its source length).

    Not ``scored``: each token is the best of the logits, which the log-softmax only shifts, and no
    log-probabilities are computed (a hypothesis's log_prob and score are NaN). The same tokens
    (tested) without the softmax's pass over every step's (R, V) values: greedy bf16 decoding
    1.06x as fast on the Intel AMX VM, fp32 1.03x (benchmarks/README.md, "Levers").
    ``Translator.translate`` decodes so; whatever reports scores asks for them. (Where two logits
    lie within an fp32 rounding of each other, the log-softmax could round them equal; the logits
    still order them.)"""
    waiting = Waiting(model, batches)
    first = waiting.take(capacity)
    if first is None:
        return
    numbers, src_lengths, limits, memory, state = first
    rows: list[_Greedy | None] = [_Greedy(*row) for row in zip(numbers, src_lengths, limits)]
    prev = torch.full((len(rows),), BOS, dtype=torch.long, device=memory.mask.device)
    live = len(rows)
    while live:
        logits, state, weights = model.step_logits(prev, state, memory)
        best_lp, best = topk.best_tokens(forbid_specials(torch.log_softmax(logits, dim=-1) if scored else logits),
                                         topk.BLOCK, topk.BLOCK_ROWS)
        free = []
        for r, (tok, lp) in enumerate(zip(best.tolist(), best_lp.tolist() if scored else itertools.repeat(NAN))):
            sentence = rows[r]
            if sentence is None:  # a finished sentence's row, kept until the batch is compacted
                continue
            sentence.log_prob += lp
            if keep_attention and weights is not None:
                sentence.attention.append(weights[r, : sentence.src_length].float().cpu())
            if tok != EOS:
                sentence.tokens.append(tok)
            if tok == EOS or len(sentence.tokens) >= sentence.limit:
                yield sentence.number, sentence.hypothesis()
                rows[r] = None
                free.append(r)
                live -= 1
        prev = best
        while free and (new := waiting.take(len(free))) is not None:  # fill free places in place
            numbers, src_lengths, limits, new_memory, new_state = new
            places, free = free[: len(numbers)], free[len(numbers) :]
            index = torch.tensor(places, device=prev.device)
            memory = memory.put(index, new_memory)
            state.put(index, new_state)
            prev.index_fill_(0, index, BOS)
            for r, row in zip(places, zip(numbers, src_lengths, limits)):
                rows[r] = _Greedy(*row)
            live += len(places)
        if free and 0 < live <= len(rows) // 2:  # nothing waits: compact the batch to its live rows
            keep = torch.tensor([r for r, sentence in enumerate(rows) if sentence is not None], dtype=torch.long)
            rows = [sentence for sentence in rows if sentence is not None]
            keep = keep.to(prev.device)
            width = max(sentence.src_length for sentence in rows)
            memory, state, prev = memory.narrowed(width).select(keep), state.select(keep), prev[keep]


@torch.no_grad()
def sequence_log_prob(model: Seq2Seq, src: torch.Tensor, lengths: torch.Tensor, tokens: list[int], ended: bool):
    """log p(tokens [+ </s>] | src) of one sentence (src (1, S)), by teacher forcing."""
    target = tokens + ([EOS] if ended else [])
    tgt_in = torch.tensor([[BOS] + target[:-1]], device=src.device)
    log_probs = torch.log_softmax(model(src, lengths, tgt_in).float(), dim=-1)[0]
    return float(log_probs.gather(1, torch.tensor(target, device=src.device).unsqueeze(1)).sum())


@torch.no_grad()
def exhaustive(model: Seq2Seq, src: torch.Tensor, lengths: torch.Tensor, limit: int, alpha: float = 0.0) -> Hypothesis:
    """The exact best hypothesis of one sentence (src (1, S)) by scoring every sequence.

    Feasible only for tiny vocabularies and limits: (V - 2) ** limit sequences are enumerated.
    The test oracle for beam search.
    """
    memory, state = model.encode(src, lengths)
    prefixes: list[list[int]] = [[]]
    prefix_lp = torch.zeros(1, device=src.device)
    best: Hypothesis | None = None
    prev = torch.tensor([BOS], device=src.device)
    for t in range(limit):
        log_probs, state, _ = model.decode_step(prev, state, memory)
        log_probs = forbid_specials(log_probs)
        vocab = log_probs.size(-1)
        total = prefix_lp.unsqueeze(1) + log_probs  # (P, V)
        for p, prefix in enumerate(prefixes):
            for tok in range(vocab):
                lp = float(total[p, tok])
                if lp == float("-inf") or (tok != EOS and t + 1 < limit):
                    continue
                tokens = prefix if tok == EOS else prefix + [tok]
                score = lp / length_penalty(len(tokens) + 1, alpha)
                if best is None or score > best.score:
                    best = Hypothesis(tokens, lp, score)
        grow = [(p, tok) for p, tok in itertools.product(range(len(prefixes)), range(vocab))
                if tok not in (EOS, PAD, BOS)]
        if t + 1 >= limit or not grow:
            break
        rows = torch.tensor([p for p, _ in grow], device=src.device)
        toks = torch.tensor([tok for _, tok in grow], device=src.device)
        prefix_lp = total[rows, toks]
        prefixes = [prefixes[p] + [tok] for p, tok in grow]
        memory, state = memory.select(rows), state.select(rows)  # one row per prefix
        prev = toks
    assert best is not None
    return best
