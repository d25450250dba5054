"""Dropout with a cheaper random mask: 16 random bits per element, from 64-bit draws.

``F.dropout`` on CPU draws one Bernoulli sample per element (about 20 ms for the 1.5 M elements
of one encoder output here, several such tensors per training step). Here one 64-bit random
integer yields four 16-bit uniform words, and an element is kept when its word falls below
round((1 - p) * 2^16): the keep probability is exact to 1/65536, about 8x faster to draw.
Same contract as ``nn.Dropout``: kept elements scaled by 1 / (1 - p), identity in eval mode.
"""

from __future__ import annotations

import torch
from torch import nn

WORDS = 1 << 16  # distinct values of one 16-bit word


def keep_mask(shape: torch.Size, keep: float, device: torch.device) -> torch.Tensor:
    """Bool tensor of ``shape``, each element True with probability ``keep`` (to 1/65536)."""
    threshold = round(keep * WORDS)
    if threshold >= WORDS:  # p below 2^-17: every word keeps (the int16 comparison would wrap to none)
        return torch.ones(shape, dtype=torch.bool, device=device)
    n = shape.numel()
    draws = torch.empty((n + 3) // 4, dtype=torch.int64, device=device).random_(-(2**63), None)
    words = draws.view(torch.int16)[:n].view(shape)  # uniform over [-32768, 32767]
    return words < threshold - WORDS // 2


def dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    if not training or p == 0.0:
        return x
    scale = keep_mask(x.shape, 1.0 - p, x.device).to(x.dtype).mul_(1.0 / (1.0 - p))
    return x * scale


class Dropout(nn.Module):
    """Drop-in for ``nn.Dropout`` (no parameters, so checkpoints are unaffected)."""

    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return dropout(x, self.p, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}"
