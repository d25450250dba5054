"""What the decoder reads and what it carries from step to step, as small dataclasses whose rows
can be selected, repeated, narrowed and overwritten: the searches (``nmt.search``, ``nmt.beam``)
move sentences and hypotheses in and out of a batch with these methods.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Memory:
    """What the decoder reads from the encoder: one row per sentence (rows can be selected).

    Beam search does not repeat it per hypothesis: the decoder state holds k rows per sentence
    (its k hypotheses, adjacent), and they attend to their sentence's row as k queries.

    When decoding (``combined``), the values are not h_j but W_c's context columns applied to
    them, once per sentence: W_c [c_t; s_t] = Σ_j α_tj (W_c,ctx h_j) + W_c,state s_t, the same
    maths regrouped. A step then reads D numbers per source position instead of 2H, and its
    product with W_c shrinks to the state's columns (``Decoder._attend``)."""

    values: torch.Tensor  # (B, S, 2H) encoder outputs; (B, S, D) W_c,ctx h_j when ``combined``
    keys: torch.Tensor | None  # (B, S, A) projected once per sentence; None without attention
    mask: torch.Tensor  # (B, S) bool, True at real tokens
    combined: bool = False

    def select(self, index: torch.Tensor) -> "Memory":
        keys = None if self.keys is None else self.keys.index_select(0, index)
        return Memory(self.values.index_select(0, index), keys, self.mask.index_select(0, index), self.combined)

    @property
    def width(self) -> int:
        """S, the source positions held (the longest sentence's; shorter ones are masked after theirs)."""
        return self.mask.size(1)

    def narrowed(self, width: int) -> "Memory":
        """The first ``width`` positions (views): enough for rows whose sentences are no longer."""
        keys = None if self.keys is None else self.keys[:, :width]
        return Memory(self.values[:, :width], keys, self.mask[:, :width], self.combined)

    def widened(self, width: int) -> "Memory":
        """The same rows over ``width`` ≥ S positions: the new ones zero and masked."""
        pad = lambda t: torch.nn.functional.pad(t, (0, 0, 0, width - self.width))  # noqa: E731
        keys = None if self.keys is None else pad(self.keys)
        return Memory(pad(self.values), keys, torch.nn.functional.pad(self.mask, (0, width - self.width)),
                      self.combined)

    def put(self, rows: torch.Tensor, other: "Memory") -> "Memory":
        """This memory with ``rows`` overwritten by other's rows: written in place, or, where other
        is wider, into a widened copy; returned either way."""
        memory = self if other.width <= self.width else self.widened(other.width)
        s = other.width
        for mine, theirs in ((memory.values, other.values), (memory.keys, other.keys)):
            if mine is not None:
                mine[:, :s].index_copy_(0, rows, theirs)
                mine[:, s:].index_fill_(0, rows, 0.0)
        memory.mask[:, :s].index_copy_(0, rows, other.mask)
        memory.mask[:, s:].index_fill_(0, rows, False)
        return memory


@dataclass
class DecoderState:
    """Recurrent state between decoder steps: R = k·B rows, hypotheses of a sentence adjacent."""

    hidden: torch.Tensor  # (L, R, D)
    cell: torch.Tensor | None  # (L, R, D), LSTM only
    feed: torch.Tensor | None  # (R, D) previous attentional vector ã_{t-1}, with input feeding

    def select(self, index: torch.Tensor) -> "DecoderState":
        pick = lambda t, dim: None if t is None else t.index_select(dim, index)  # noqa: E731
        return DecoderState(pick(self.hidden, 1), pick(self.cell, 1), pick(self.feed, 0))

    def put(self, rows: torch.Tensor, other: "DecoderState") -> None:
        """Overwrite ``rows`` with other's rows, in place, in this state's dtypes: under bf16
        autocast a start state can be fp32 where the steps' are bf16 (a GRU encoder's, which
        autocast leaves in fp32), and the first step would round it to bf16 anyway."""
        for mine, theirs, dim in ((self.hidden, other.hidden, 1), (self.cell, other.cell, 1),
                                  (self.feed, other.feed, 0)):
            if mine is not None:
                mine.index_copy_(dim, rows, theirs.to(mine.dtype))

    def repeat(self, k: int) -> "DecoderState":
        index = torch.arange(self.hidden.size(1), device=self.hidden.device).repeat_interleave(k)
        return self.select(index)

    def rnn_state(self):
        return self.hidden if self.cell is None else (self.hidden, self.cell)
