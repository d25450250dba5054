"""The best token of each row, and each sentence's k best extensions, exactly and fast on a CPU.

Selecting runs in two stages over blocks of ``BLOCK`` vocabulary positions: every block's maximum
(one vectorised pass), the best blocks, then the best tokens inside them. The k best of a set lie
in the k blocks with the best maxima (a block holding one of them has a maximum at least as good,
and at most k blocks can), so the result is exact. Why: CPU topk and max with indices go row by
row (~2.5 ms for 320 × 6000 log-probabilities, more than the output layer's matmul); a max
without indices is vectorised and about 15x faster. The searches (``nmt.search``) read ``BLOCK``
and ``BLOCK_ROWS`` from this module when they run, so a test can change them.
"""

from __future__ import annotations

import torch

BLOCK = 64


def _block_max(x: torch.Tensor, block: int) -> torch.Tensor:
    """x (R, V) → (R, ceil(V / block)): the maximum of every block of ``block`` positions."""
    rows, vocab = x.shape
    whole = vocab // block
    out = x[:, : whole * block].view(rows, whole, block).amax(dim=-1)
    if whole * block < vocab:
        out = torch.cat([out, x[:, whole * block :].amax(dim=-1, keepdim=True)], dim=1)
    return out


def _gather_blocks(x: torch.Tensor, rows: torch.Tensor, blocks: torch.Tensor, block: int):
    """The values (…, block) and token ids (…, block) of block ``blocks`` of row ``rows`` of x (R, V);
    rows and blocks share one shape (…). Past the vocabulary's end (the last block's tail) the value
    is -inf and the id the last token's, so an id taken from there is still a valid token."""
    ids = blocks.unsqueeze(-1) * block + torch.arange(block, device=x.device)  # (…, block)
    past_end = ids >= x.size(1)
    ids = ids.clamp_(max=x.size(1) - 1)
    return x[rows.unsqueeze(-1), ids].masked_fill_(past_end, float("-inf")), ids


# The two stages cost ~50 µs however few the rows, torch's max with indices ~3 µs a row of 6,000
# (the Zen 4 VM): below BLOCK_ROWS rows, where the two met, the plain max is faster, and the same.
BLOCK_ROWS = 40


def best_tokens(log_probs: torch.Tensor, block: int = BLOCK,
                block_rows: int = BLOCK_ROWS) -> tuple[torch.Tensor, torch.Tensor]:
    """Row-wise max and argmax of log_probs (R, V): values (R,), token ids (R,); through blocks from
    ``block_rows`` rows on."""
    if log_probs.size(0) < block_rows:
        values, ids = log_probs.max(dim=-1)
        return values, ids
    maxima = _block_max(log_probs, block)  # (R, n_blocks)
    rows = torch.arange(log_probs.size(0), device=log_probs.device)
    values, ids = _gather_blocks(log_probs, rows, maxima.argmax(dim=-1), block)  # (R, block)
    best, at = values.max(dim=-1)
    return best, ids.gather(1, at.unsqueeze(1)).squeeze(1)


def best_candidates(scores: torch.Tensor, log_probs: torch.Tensor, block: int = BLOCK):
    """Each sentence's k best extensions of its k hypotheses.

    scores (n, k) cumulative log-probabilities, log_probs (n·k, V) next-token log-probabilities,
    the k rows of a sentence adjacent → top (n, k) best candidate scores, descending; origin (n, k)
    the hypothesis (0 … k-1) each extends; token (n, k) the token it adds."""
    n, k = scores.shape
    maxima = _block_max(log_probs, block).view(n, k, -1)  # (n, k, n_blocks)
    n_blocks = maxima.size(-1)
    _, pick = (scores.unsqueeze(-1) + maxima).view(n, -1).topk(k, dim=-1)  # (n, k) (hypothesis, block) pairs
    hyp, blocks = pick // n_blocks, pick % n_blocks
    rows = hyp + torch.arange(n, device=scores.device).unsqueeze(1) * k
    values, ids = _gather_blocks(log_probs, rows, blocks, block)  # (n, k, block)
    values += scores.gather(1, hyp).unsqueeze(-1)
    top, flat = values.view(n, -1).topk(k, dim=-1)  # (n, k) of the k · block candidates
    return top, hyp.gather(1, flat // block), ids.view(n, -1).gather(1, flat)
