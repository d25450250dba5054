"""Attention over the encoder outputs: additive (Bahdanau) and multiplicative (Luong "general").

    additive        score(q, h_j) = v · tanh(W_q q + b + W_k h_j)    Bahdanau et al. 2015's score
    multiplicative  score(q, h_j) = q · (W_k h_j)                    Luong et al. 2015, "general"
    both            α_j = softmax_j(score(q, h_j))   (padding positions get α_j = 0)
                    context = Σ_j α_j h_j

q is the decoder's query: its state s_t, after the step's recurrence, as in Luong et al.'s global
attention (Bahdanau et al.'s RNNsearch queries with s_{t-1} and feeds the context into the
recurrence; README, "The model"). h_j is the encoder output at source position j: the projected
keys W_k h_j are made from h_j, and the context is a mix of the ``values`` the caller hands in,
the h_j themselves in training (when decoding, W_c,ctx h_j: ``nmt.model.Seq2Seq.encode``).

The modules hold only parameters. The projected keys ``W_k h`` are computed once per sentence by
``project_keys`` and handed back by the caller at every step, so neither module has hidden state.
The additive score costs a tanh over (T, S, attn_dim) per sentence and step; the multiplicative one
a single batched matmul — the reason Luong attention decodes faster.

Attention runs in fp32 even under bf16 autocast (keys are projected once and kept in fp32; the
caller hands the values in fp32 when decoding). The additive score: a bf16 tanh is several times
slower on CPUs, and that tanh is most of the attention's cost. The batched matmuls (score and
context): their shapes change with every batch's source length and every finished sentence, and
oneDNN builds (JIT-compiles) a new bf16 primitive for each new shape — 1,487 of them, 0.6 s of a
6.8 s bf16 greedy pass over the Bible test split — while fp32 batched matmuls need no such set-up
and ran faster at these shapes anyway.
"""

from __future__ import annotations

import torch
from torch import nn

from nmt.activations import tanh_
from nmt.linear import linear


def _at_least_fp32(t: torch.Tensor) -> torch.Tensor:
    return t.to(torch.promote_types(t.dtype, torch.float32))


def _attend(scores: torch.Tensor, values: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """scores (B, T, S), values (B, S, key_dim), mask (B, S) → context (B, T, key_dim), weights (B, T, S).
    In fp32 even under autocast (see the module docstring)."""
    scores = scores.masked_fill(~mask.unsqueeze(1), float("-inf"))  # padding never attended
    weights = torch.softmax(_at_least_fp32(scores), dim=-1)  # (B, T, S), rows sum to 1
    with torch.autocast(scores.device.type, enabled=False):
        context = torch.bmm(weights, _at_least_fp32(values))  # (B, T, key_dim)
    return context, weights


# The additive score's tanh buffer (rows, T, S, A) is built for a few sentences at a time, at most
# SCORE_CHUNK elements (2 MiB in fp32): it stays in cache, and no fresh multi-megabyte buffer is
# page-faulted in at every step. One beam-5 step over 64 sentences of 109 pieces: 24 ms in one
# piece (36 MiB), 4 ms in chunks.
SCORE_CHUNK = 1 << 19


class AdditiveAttention(nn.Module):
    def __init__(self, query_dim: int, key_dim: int, attn_dim: int):
        super().__init__()
        self.key_proj = nn.Linear(key_dim, attn_dim, bias=False)  # W_k
        self.query_proj = nn.Linear(query_dim, attn_dim, bias=True)  # W_q (+ bias)
        self.v = nn.Linear(attn_dim, 1, bias=False)  # v

    def project_keys(self, keys: torch.Tensor) -> torch.Tensor:
        """(B, S, key_dim) → (B, S, attn_dim): W_k h_j for every source position, once a sentence (fp32)."""
        return _at_least_fp32(linear(keys, self.key_proj.weight))

    def forward(
        self, query: torch.Tensor, proj_keys: torch.Tensor, values: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Attend from every query to the source.

        query:     (B, T, query_dim)   T decoder positions (T = 1 for one step)
        proj_keys: (B, S, attn_dim)    from ``project_keys``
        values:    (B, S, E)           encoder outputs h_j (E = key_dim); decoding: W_c,ctx h_j (E = D)
        mask:      (B, S) bool         True at real tokens
        returns    context Σ_j α_tj values_j (B, T, E), weights (B, T, S)
        """
        q = _at_least_fp32(linear(query, self.query_proj.weight, self.query_proj.bias))  # W_q q + b: (B, T, A)
        with torch.autocast(query.device.type, enabled=False):  # fp32: see the module docstring
            keys, v = proj_keys.to(q.dtype), self.v.weight.to(q.dtype).squeeze(0)  # W_k h_j (B, S, A); v (A,)
            # score[b, t, j] = v · tanh(q[b, t] + keys[b, j]): the sum broadcast to (rows, T, S, A), tanh'd
            # in place, then dotted with v → (rows, T, S); a few sentences (rows) at a time (SCORE_CHUNK)
            rows = max(1, SCORE_CHUNK // (q.size(1) * keys.size(1) * keys.size(2)))
            scores = [tanh_(q[i : i + rows].unsqueeze(2) + keys[i : i + rows].unsqueeze(1)) @ v
                      for i in range(0, q.size(0), rows)]
        # α = softmax_j(score) with padding masked; context = Σ_j α_j h_j
        return _attend(scores[0] if len(scores) == 1 else torch.cat(scores), values, mask)


class MultiplicativeAttention(nn.Module):
    def __init__(self, query_dim: int, key_dim: int):
        super().__init__()
        self.key_proj = nn.Linear(key_dim, query_dim, bias=False)  # W_k

    def project_keys(self, keys: torch.Tensor) -> torch.Tensor:
        """(B, S, key_dim) → (B, S, query_dim): W_k h_j for every source position, once a sentence (fp32)."""
        return _at_least_fp32(linear(keys, self.key_proj.weight))

    def forward(
        self, query: torch.Tensor, proj_keys: torch.Tensor, values: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """As ``AdditiveAttention.forward``, with proj_keys (B, S, query_dim)."""
        with torch.autocast(query.device.type, enabled=False):  # fp32: see the module docstring
            q = _at_least_fp32(query)
            scores = torch.bmm(q, proj_keys.to(q.dtype).transpose(1, 2))  # (B, T, S): q · W_k h_j
        return _attend(scores, values, mask)
