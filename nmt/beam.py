"""Batched beam search: the k best hypotheses of every sentence kept at each step.

Scores, length limits and the way sentences stream through a batch (a finished sentence's place
taken by the next one waiting, the batch compacted once nothing waits) are ``nmt.search``'s, as in
greedy search. A hypothesis's score is its log p divided by the GNMT length penalty.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import torch

from nmt import topk
from nmt.config import StoppingRule, choice_error
from nmt.configcheck import range_error
from nmt.model import Seq2Seq
from nmt.state import DecoderState, Memory
from nmt.search import Encoded, Hypothesis, Taken, Waiting, forbid_specials, length_penalty
from nmt.tokenizer import BOS, EOS


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
      hypothesis's best reachable score is log p / lp(limit + 1), limit its sentence's length
      limit (``limits``, from ``nmt.search.max_lengths``): the length penalty of one cut there,
      which counts the </s> it did not reach. Exact with respect to the beam.
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
        """The batch of sentences ``taken`` from ``Waiting``, each with one live hypothesis."""
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
        """Sentences ``taken`` from ``Waiting`` into free ``places``, as many as were taken."""
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
    # below 0, lp(n) would shrink with n, and the "bound" rule's bound would not be one; far above,
    # lp overflows (decode.alpha's range, nmt.config)
    if error := range_error("alpha", alpha, "decode.alpha"):
        raise ValueError(error)
    enough = nbest if stopping == "bound" else beam
    waiting = Waiting(model, batches)
    first = waiting.take(capacity)
    if first is None:
        return
    batch = _BeamBatch.start(first, beam)
    live = len(batch.groups)
    while live:
        log_probs, state, weights = model.decode_step(batch.prev, batch.state, batch.memory)
        top, origin, token = topk.best_candidates(batch.scores, forbid_specials(log_probs), topk.BLOCK)  # (n, k) each
        is_eos = (token == EOS) & torch.isfinite(top)
        batch.advance(state, origin, token, top.masked_fill(is_eos, float("-inf")),
                      weights if keep_attention else None)
        live_best = batch.scores.max(dim=-1).values  # (n,)
        bound = live_best / length_penalty(batch.limit.to(live_best.device).float() + 1, alpha)  # best reachable
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
