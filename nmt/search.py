"""Decoders approximating argmax_T p(T | S): greedy, batched beam, and exhaustive (a test oracle).

All three score a hypothesis the same way: the sum of its token log-probabilities (</s> included),
divided by the GNMT length penalty lp(n) = ((5 + n) / 6) ** alpha; alpha = 0 leaves raw log p
(greedy search can leave scores out: ``greedy_stream``).
A hypothesis ends at </s>, or is cut at its sentence's ``max_len`` tokens. <pad> and <s> are
never produced.

A batch holds at most ``capacity`` sentences (``decode.batch_size``); when one finishes, the next
sentence waiting takes its place in the batch, in place (``greedy_stream``, ``beam_stream``), so
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
from nmt.config import StoppingRule, choice_error
from nmt.model import DecoderState, Memory, Seq2Seq
from nmt.tokenizer import BOS, EOS, PAD


@dataclass
class Hypothesis:
    tokens: list[int]  # without </s>
    log_prob: float  # sum of token log-probabilities, </s> included when it was produced; NaN unscored
    score: float  # log_prob / lp(length): what the search maximises; NaN unscored
    attention: torch.Tensor | None = None  # (len(tokens) + ended, source length) weights, when asked for


NAN = float("nan")  # an unscored hypothesis's log_prob and score


def length_penalty(length: int | torch.Tensor, alpha: float):
    return ((5.0 + length) / 6.0) ** alpha


def max_lengths(src_lengths: torch.Tensor, ratio: float, offset: int) -> torch.Tensor:
    """Most target tokens (</s> included) allowed per sentence: ratio * source length + offset."""
    return (src_lengths.float() * ratio).long() + offset


def _forbid_specials(log_probs: torch.Tensor) -> torch.Tensor:
    log_probs[:, PAD] = float("-inf")
    log_probs[:, BOS] = float("-inf")
    return log_probs


Encoded = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # src (B, S), lengths (B,), limits (B,)
# sentences taken from the encoded ones waiting: numbers, source lengths, length limits, memory, start state
Taken = tuple[list[int], list[int], list[int], Memory, DecoderState]


class _Waiting:
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
    that finishes gives its place to the next one waiting (``_Waiting``), so the batch stays full
    until the stream runs dry. Yields (number, hypothesis) as sentences finish, numbered in stream
    order. A hypothesis's attention is (steps, its source length).

    Not ``scored``: each token is the best of the logits, which the log-softmax only shifts, and no
    log-probabilities are computed (a hypothesis's log_prob and score are NaN). The same tokens
    (tested) without the softmax's pass over every step's (R, V) values: greedy bf16 decoding
    1.06x as fast on the Intel AMX VM, fp32 1.03x (benchmarks/README.md, "Levers").
    ``Translator.translate`` decodes so; whatever reports scores asks for them. (Where two logits
    lie within an fp32 rounding of each other, the log-softmax could round them equal; the logits
    still order them.)"""
    waiting = _Waiting(model, batches)
    first = waiting.take(capacity)
    if first is None:
        return
    numbers, src_lengths, limits, memory, state = first
    rows: list[_Greedy | None] = [_Greedy(*row) for row in zip(numbers, src_lengths, limits)]
    prev = torch.full((len(rows),), BOS, dtype=torch.long, device=memory.mask.device)
    live = len(rows)
    while live:
        logits, state, weights = model.step_logits(prev, state, memory)
        best_lp, best = topk.best_tokens(_forbid_specials(torch.log_softmax(logits, dim=-1) if scored else logits),
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
def beam_search(
    model: Seq2Seq,
    src: torch.Tensor,
    lengths: torch.Tensor,
    limits: torch.Tensor,
    beam: int,
    alpha: float = 0.0,
    nbest: int = 1,
    keep_attention: bool = False,
    stopping: str = "bound",
) -> list[list[Hypothesis]]:
    """Batched beam search; returns the ``nbest`` best hypotheses of every sentence, best first.

    Each step expands the k live hypotheses of every sentence, keeps the k best of the k·V
    candidates; candidates ending in </s> move to the sentence's finished list and leave the
    beam. When a sentence stops (at its length limit in any case):

    - ``stopping="bound"``: once it has ``nbest`` finished hypotheses and no live one can still
      beat them: log p only falls as tokens are added and lp grows with length (alpha ≥ 0), so a live
      hypothesis's best reachable score is log p / lp(max_len). Exact with respect to the beam.
    - ``stopping="finished"``: once ``beam`` hypotheses have finished (fairseq's rule). A live
      hypothesis might still have beaten them; fewer steps.

    With beam 1 (either rule) this is greedy search.
    """
    found = dict(beam_stream(model, [(src, lengths, limits)], src.size(0), beam, alpha, nbest, keep_attention,
                             stopping))
    return [found[i] for i in range(src.size(0))]


@dataclass
class _Beam:
    """One sentence in beam search: its k rows of the batch are a group."""

    number: int
    src_length: int
    begin: int  # the column of the history where its hypotheses' tokens begin
    finished: list[Hypothesis] = field(default_factory=list)


def _start_scores(n: int, k: int, device: torch.device) -> torch.Tensor:
    """(n, k) cumulative log-probabilities of n sentences starting: one live hypothesis each."""
    scores = torch.full((n, k), float("-inf"), device=device)
    scores[:, 0] = 0.0
    return scores


@dataclass
class _BeamBatch:
    """``beam_stream``'s batch: n places of k rows each (a sentence's rows adjacent), and all that
    must move with the rows when they are reordered, refilled or compacted."""

    k: int
    groups: list[_Beam | None]  # (n,) None: a finished sentence's place, until refilled or compacted
    memory: Memory  # one row per place, shared by its k rows
    state: DecoderState  # (n·k) rows
    limit: torch.Tensor  # (n,) tokens allowed, </s> included (CPU)
    steps: torch.Tensor  # (n,) tokens so far (CPU)
    scores: torch.Tensor  # (n, k) cumulative log-probabilities of the live hypotheses, -inf elsewhere
    prev: torch.Tensor  # (n·k,) each row's last token
    history: torch.Tensor  # (n·k, t) tokens, from the oldest group's first on
    attn_history: torch.Tensor | None = None  # (n·k, t, S) attention weights, with keep_attention

    @classmethod
    def start(cls, taken: Taken, k: int) -> "_BeamBatch":
        """The batch of sentences ``taken`` from ``_Waiting``, each with one live hypothesis."""
        numbers, src_lengths, limits, memory, state = taken
        n, device = len(numbers), memory.mask.device
        return cls(k, [_Beam(number, length, 0) for number, length in zip(numbers, src_lengths)], memory,
                   state.repeat(k), torch.tensor(limits), torch.zeros(n, dtype=torch.long),
                   _start_scores(n, k, device), torch.full((n * k,), BOS, dtype=torch.long, device=device),
                   torch.full((n * k, 0), BOS, dtype=torch.long, device=device))

    def rows(self, places: torch.Tensor) -> torch.Tensor:
        """The k rows of each of ``places`` (m,) → (m·k,)."""
        return (places.unsqueeze(1) * self.k + torch.arange(self.k, device=places.device)).view(-1)

    def advance(self, state: DecoderState, origin: torch.Tensor, token: torch.Tensor, scores: torch.Tensor,
                weights: torch.Tensor | None) -> None:
        """Keep a step's k candidates per sentence (n, k) each: row j of a group continues the
        group's row ``origin`` with ``token``; ``scores`` -inf where it ended. ``weights``: that
        step's attention (n·k, S) to keep, or None."""
        n = len(self.groups)
        rows = (origin + torch.arange(n, device=origin.device).unsqueeze(1) * self.k).view(-1)
        self.history = torch.cat([self.history.index_select(0, rows), token.view(-1, 1)], dim=1)
        if weights is not None:
            step_attn = weights.index_select(0, rows).unsqueeze(1).float()
            self.attn_history = step_attn if self.attn_history is None else torch.cat(
                [self.attn_history.index_select(0, rows), step_attn], dim=1)
        self.state, self.scores, self.prev = state.select(rows), scores, token.view(-1)
        self.steps += 1

    def put(self, places: list[int], taken: Taken) -> None:
        """Sentences ``taken`` from ``_Waiting`` into free ``places``, as many as were taken."""
        numbers, src_lengths, limits, memory, state = taken
        g_index = torch.tensor(places)
        g_on_device, r_index = g_index.to(self.prev.device), self.rows(g_index).to(self.prev.device)
        self.memory = self.memory.put(g_on_device, memory)
        if self.attn_history is not None and self.attn_history.size(2) < self.memory.width:  # widened
            self.attn_history = torch.nn.functional.pad(self.attn_history,
                                                        (0, self.memory.width - self.attn_history.size(2)))
        self.state.put(r_index, state.repeat(self.k))
        self.scores.index_copy_(0, g_on_device, _start_scores(len(places), self.k, self.prev.device))
        self.prev.index_fill_(0, r_index, BOS)
        self.limit[g_index] = torch.tensor(limits)
        self.steps[g_index] = 0
        for g, number, length in zip(places, numbers, src_lengths):
            self.groups[g] = _Beam(number, length, self.history.size(1))

    def compact(self) -> None:
        """Drop the places of finished sentences; the memory narrows to the longest source left."""
        g_keep = torch.tensor([g for g, group in enumerate(self.groups) if group is not None], dtype=torch.long)
        self.groups = [group for group in self.groups if group is not None]
        device = self.prev.device
        r_keep, g_on_device = self.rows(g_keep).to(device), g_keep.to(device)
        self.limit, self.steps, self.scores = self.limit[g_keep], self.steps[g_keep], self.scores[g_on_device]
        width = max(group.src_length for group in self.groups)
        self.memory, self.state = self.memory.narrowed(width).select(g_on_device), self.state.select(r_keep)
        self.prev, self.history = self.prev[r_keep], self.history[r_keep]
        if self.attn_history is not None:
            self.attn_history = self.attn_history[r_keep, :, :width]

    def forget_read_history(self) -> None:
        """Drop the history columns before the oldest held group's first token: none reads them."""
        held = [group for group in self.groups if group is not None]
        if held and (old := min(group.begin for group in held)) > 0:
            self.history = self.history[:, old:]
            self.attn_history = None if self.attn_history is None else self.attn_history[:, old:]
            for group in held:
                group.begin -= old


@torch.no_grad()
def beam_stream(
    model: Seq2Seq,
    batches: Iterable[Encoded],
    capacity: int,
    beam: int,
    alpha: float = 0.0,
    nbest: int = 1,
    keep_attention: bool = False,
    stopping: str = "bound",
) -> Iterator[tuple[int, list[Hypothesis]]]:
    """``beam_search`` over a stream of batches, at most ``capacity`` sentences (k rows each) at a
    time, a finished sentence's place given to the next one waiting, as in ``greedy_stream``.
    Yields (number, n-best list) as sentences finish, numbered in stream order."""
    if error := choice_error("stopping", stopping, StoppingRule):
        raise ValueError(error)
    if alpha < 0:  # lp(n) would shrink with n, and the "bound" rule's bound would not be one
        raise ValueError(f"alpha must be at least 0, not {alpha}")
    enough = nbest if stopping == "bound" else beam
    waiting = _Waiting(model, batches)
    first = waiting.take(capacity)
    if first is None:
        return
    batch = _BeamBatch.start(first, beam)
    live = len(batch.groups)
    while live:
        log_probs, state, weights = model.decode_step(batch.prev, batch.state, batch.memory)
        top, origin, token = topk.best_candidates(batch.scores, _forbid_specials(log_probs), topk.BLOCK)  # (n, k) each
        is_eos = (token == EOS) & torch.isfinite(top)
        batch.advance(state, origin, token, top.masked_fill(is_eos, float("-inf")),
                      weights if keep_attention else None)
        live_best = batch.scores.max(dim=-1).values  # (n,)
        bound = live_best / length_penalty(batch.limit.to(live_best.device).float(), alpha)  # best reachable
        ending = _Ending(top.tolist(), is_eos.tolist(), (batch.steps >= batch.limit).tolist(), bound.tolist())
        free = _collect_finished(batch.groups, ending, batch.history, batch.attn_history, alpha, enough,
                                 stopping == "bound")
        for g in free:
            yield batch.groups[g].number, batch.groups[g].finished[:nbest]
            batch.groups[g] = None
        live -= len(free)
        while free and (new := waiting.take(len(free))) is not None:  # fill free places in place
            places, free = free[: len(new[0])], free[len(new[0]) :]
            batch.put(places, new)
            live += len(places)
        if free and 0 < live <= len(batch.groups) // 2:  # nothing waits: compact the batch to its live groups
            batch.compact()
        batch.forget_read_history()


@dataclass
class _Ending:
    """One beam step's candidates as Python lists (read once per step, not element by element)."""

    top: list[list[float]]  # (n, k) cumulative log-probabilities
    eos: list[list[bool]]  # (n, k) candidate ends in </s>
    at_limit: list[bool]  # (n,) the group reached its length limit
    bound: list[float]  # (n,) best score any live candidate can still reach


def _collect_finished(
    groups: list[_Beam | None],
    ending: _Ending,
    history: torch.Tensor,
    attn_history: torch.Tensor | None,
    alpha: float,
    enough: int,
    bounded: bool,
) -> list[int]:
    """Move candidates that ended (</s> or the length limit) to their sentence's finished list,
    best first; return the groups whose search is over: at the limit, or with ``enough`` finished
    hypotheses (and, if ``bounded``, the ``enough``-th best no worse than the live bound)."""
    done, k = [], len(ending.top[0]) if ending.top else 0
    for g, group in enumerate(groups):
        if group is None:  # a finished sentence's rows, kept until the batch is compacted
            continue
        tops, eos, at_limit, finished = ending.top[g], ending.eos[g], ending.at_limit[g], group.finished
        ends = [j for j in range(k) if tops[j] != float("-inf") and (eos[j] or at_limit)]
        for j in ends:
            row = g * k + j
            tokens = history[row, group.begin : history.size(1) - eos[j]].tolist()
            attention = None
            if attn_history is not None:
                attention = attn_history[row, group.begin :, : group.src_length].cpu()
            score = tops[j] / length_penalty(len(tokens) + 1, alpha)
            finished.append(Hypothesis(tokens, tops[j], score, attention))
        if ends:
            finished.sort(key=lambda h: -h.score)
        full = len(finished) >= enough and (not bounded or finished[enough - 1].score >= ending.bound[g])
        if at_limit or full or ending.bound[g] == float("-inf"):
            done.append(g)
    return done


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
        log_probs = _forbid_specials(log_probs)
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
