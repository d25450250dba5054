"""Token-budget batches, length buckets, padding.

Tokenised text is held as one flat int32 array plus offsets, so building a batch is a few numpy
slices and never touches Python lists of lists on the training hot path.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from nmt.tokenizer import BOS, EOS, PAD


@dataclass(frozen=True)
class Sequences:
    """Variable-length id sequences: ``ids[offsets[i]:offsets[i + 1]]`` is sequence i."""

    ids: np.ndarray  # (total,) int32
    offsets: np.ndarray  # (n + 1,) int64

    @classmethod
    def from_lists(cls, seqs: list[list[int]]) -> "Sequences":
        lengths = np.fromiter((len(s) for s in seqs), dtype=np.int64, count=len(seqs))
        offsets = np.zeros(len(seqs) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        flat = np.fromiter((t for s in seqs for t in s), dtype=np.int32, count=int(offsets[-1]))
        return cls(flat, offsets)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def get(self, i: int) -> np.ndarray:
        return self.ids[self.offsets[i] : self.offsets[i + 1]]

    def padded(self, index: np.ndarray, prefix: int | None = None, suffix: int | None = None) -> np.ndarray:
        """(len(index), max_len + extras) int64 array of the chosen sequences, right-padded with PAD."""
        extra = (prefix is not None) + (suffix is not None)
        lengths = self.lengths[index]
        out = np.full((len(index), int(lengths.max(initial=0)) + extra), PAD, dtype=np.int64)
        start = 1 if prefix is not None else 0
        for row, (i, n) in enumerate(zip(index, lengths)):
            out[row, start : start + n] = self.get(i)
            if suffix is not None:
                out[row, start + n] = suffix
        if prefix is not None:
            out[:, 0] = prefix
        return out


@dataclass
class Batch:
    src: torch.Tensor  # (B, S) source ids ending in </s>, PAD after
    src_lengths: torch.Tensor  # (B,) int64, on CPU (pack_padded_sequence wants them there)
    tgt_in: torch.Tensor | None = None  # (B, T) <s> y1 … yn, PAD after
    tgt_out: torch.Tensor | None = None  # (B, T) y1 … yn </s>, PAD after
    index: np.ndarray | None = None  # positions of these sentences in the corpus

    @property
    def n_tgt_tokens(self) -> int:
        return int((self.tgt_out != PAD).sum()) if self.tgt_out is not None else 0

    def to(self, device: torch.device) -> "Batch":
        move = lambda t: None if t is None else t.to(device, non_blocking=True)  # noqa: E731
        return Batch(move(self.src), self.src_lengths, move(self.tgt_in), move(self.tgt_out), self.index)


def make_batch(src: Sequences, index: np.ndarray, tgt: Sequences | None = None) -> Batch:
    """Pad the chosen sentences into tensors; targets get <s>-shifted inputs and </s>-closed outputs."""
    src_ids = torch.from_numpy(src.padded(index))
    lengths = torch.from_numpy(src.lengths[index].astype(np.int64))
    if tgt is None:
        return Batch(src_ids, lengths, index=index)
    tgt_in = tgt.padded(index, prefix=BOS)
    tgt_out = tgt.padded(index, suffix=EOS)
    # tgt_in is <s> y PAD…; tgt_out is y </s> PAD…: same width, so shift by construction.
    return Batch(src_ids, lengths, torch.from_numpy(tgt_in), torch.from_numpy(tgt_out), index)


def token_batches(
    src_lengths: np.ndarray,
    tgt_lengths: np.ndarray,
    max_tokens: int,
    rng: np.random.Generator | None = None,
    bucket_batches: int = 100,
) -> list[np.ndarray]:
    """Group sentence indices into batches of at most ``max_tokens`` padded tokens.

    Sentences are sorted by length inside pools of about ``bucket_batches`` batches, so a batch
    holds sentences of similar length (little padding) while the order still varies per epoch.
    With ``rng`` None the order is deterministic (sorted by length; used for decoding).
    """
    n = len(src_lengths)
    width = np.maximum(src_lengths, tgt_lengths + 1)  # +1: </s> or <s>
    order = rng.permutation(n) if rng is not None else np.arange(n)
    pool = max(1, int(bucket_batches * max_tokens / max(1.0, float(width.mean()))))
    batches: list[np.ndarray] = []
    for start in range(0, n, pool if rng is not None else n):
        chunk = order[start : start + pool] if rng is not None else order
        chunk = chunk[np.argsort(width[chunk], kind="stable")]
        current: list[int] = []
        longest = 0
        for i in chunk:
            w = int(width[i])
            if current and max(longest, w) * (len(current) + 1) > max_tokens:
                batches.append(np.array(current, dtype=np.int64))
                current, longest = [], 0
            current.append(int(i))
            longest = max(longest, w)
        if current:
            batches.append(np.array(current, dtype=np.int64))
    if rng is not None:
        batches = [batches[i] for i in rng.permutation(len(batches))]
    return batches


def sentence_batches(lengths: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """Decoding batches of up to ``batch_size`` sentences of similar length (sorted, then chunked)."""
    order = np.argsort(lengths, kind="stable")
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def reversed_within(lengths: torch.Tensor, steps: int) -> torch.Tensor:
    """(S·B,): for row (k, b) of a time-major (S, B, ·) batch, flattened, the row sentence b's
    backward direction reads at step k: position L_b-1-k while k < L_b (its tokens in reverse),
    k after (padding). Its own inverse: also the step that read a position."""
    k = torch.arange(steps).unsqueeze(1)
    return (torch.where(k < lengths, lengths - 1 - k, k) * lengths.numel() + torch.arange(lengths.numel())).view(-1)


def rows_reordered(x: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """x (S, B, F) with its S·B rows in the order ``rows`` gives (one memory copy per row)."""
    return x.reshape(-1, x.size(-1)).index_select(0, rows).view(x.shape)
