"""Token cross-entropy of the output layer, fused with it and computed in row chunks.

For N target tokens with attentional vectors h (N, D), output weights W (V, D) and bias b:

    z = h Wᵀ + b                                        logits  (N, V)
    loss_i = (1 - ε) (lse(z_i) - z_i,y) + ε (lse(z_i) - mean_v z_i,v)   label-smoothed NLL
    ∂loss_i/∂z_i = softmax(z_i) - (1 - ε) onehot(y_i) - ε / V

Why fused: the plain path (``F.cross_entropy`` on the full logits) makes five or six passes over an
(N, V) tensor — the fp32 cast of bf16 logits, log-softmax, the zero-filled NLL gradient, the
log-softmax backward, the cast back — which on CPU cost as much as all the matmuls of the output
layer. Here each chunk of rows is projected, turned into its loss *and* its gradient while it is
still in cache, and dropped; the backward only scales the stored gradients. Peak memory falls from
several (N, V) tensors to one (chunk, V). Same loss and gradients as ``F.cross_entropy(...,
label_smoothing=ε, reduction="sum")`` (tested); matmuls run in the activations' dtype (bf16
under autocast), softmax and sums in fp32.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

CHUNK_ROWS = 256  # rows per chunk: (256, V) fp32 stays in L2/L3 for vocabularies of a few thousand


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, bias, target, smoothing: float, chunk: int):
        grad_hidden = torch.empty_like(hidden)
        grad_weight = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device)
        grad_bias = torch.zeros(weight.size(0), dtype=torch.float32, device=weight.device) if bias is not None else None
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        w, b = _in_dtype(weight, bias, hidden.dtype)
        for start in range(0, hidden.size(0), chunk):
            h, y = hidden[start : start + chunk], target[start : start + chunk]
            logits = F.linear(h, w, b).float()  # (n, V)
            loss, probs = _chunk_loss(logits, y, smoothing, need_probs=True)
            total += loss
            # probs now holds ∂loss/∂z for this chunk (see the module docstring).
            grad = probs.to(h.dtype)
            grad_hidden[start : start + chunk] = grad @ w  # (n, D)
            grad_weight.add_(grad.t() @ h)  # (V, D), accumulated in fp32
            if grad_bias is not None:
                grad_bias += probs.sum(0)
        ctx.save_for_backward(grad_hidden, grad_weight, grad_bias)
        ctx.has_bias = bias is not None
        ctx.weight_dtype = weight.dtype
        return total

    @staticmethod
    def backward(ctx, grad_total):
        grad_hidden, grad_weight, grad_bias = ctx.saved_tensors
        scale = grad_total.float()
        return (
            grad_hidden * scale.to(grad_hidden.dtype),
            (grad_weight * scale).to(ctx.weight_dtype),
            (grad_bias * scale).to(ctx.weight_dtype) if ctx.has_bias else None,
            None,
            None,
            None,
        )


def _in_dtype(weight, bias, dtype):
    """The output layer's parameters in the activations' dtype (bf16 under autocast), cast once."""
    return weight.to(dtype), None if bias is None else bias.to(dtype)


def _chunk_loss(logits: torch.Tensor, target: torch.Tensor, smoothing: float, need_probs: bool):
    """Summed smoothed NLL of one chunk of fp32 logits (n, V); with ``need_probs`` the logits are
    overwritten in place by ∂loss/∂logits and returned too."""
    lse = torch.logsumexp(logits, dim=-1)  # (n,)
    nll = lse - logits.gather(1, target.unsqueeze(1)).squeeze(1)
    loss = nll if smoothing == 0.0 else (1.0 - smoothing) * nll + smoothing * (lse - logits.mean(-1))
    if not need_probs:
        return loss.sum(), None
    probs = logits.sub_(lse.unsqueeze(1)).exp_()  # softmax, in place
    if smoothing:
        probs.sub_(smoothing / logits.size(1))
    rows = torch.arange(target.size(0), device=target.device)
    probs[rows, target] -= 1.0 - smoothing
    return loss.sum(), probs


def linear_cross_entropy(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    target: torch.Tensor,
    smoothing: float = 0.0,
    chunk: int = CHUNK_ROWS,
) -> torch.Tensor:
    """Summed label-smoothed cross-entropy of ``F.linear(hidden, weight, bias)`` against target.

    hidden (N, D), weight (V, D), bias (V,) or None, target (N,) — padding already removed.
    Returns a scalar (fp32) that can be backpropagated to hidden, weight and bias.
    """
    needs_grad = torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (hidden, weight, bias)
    )
    if needs_grad:
        return _LinearCrossEntropy.apply(hidden, weight, bias, target, float(smoothing), chunk)
    total = torch.zeros((), dtype=torch.float32, device=hidden.device)
    w, b = _in_dtype(weight, bias, hidden.dtype)
    for start in range(0, hidden.size(0), chunk):
        logits = F.linear(hidden[start : start + chunk], w, b).float()
        total += _chunk_loss(logits, target[start : start + chunk], smoothing, need_probs=False)[0]
    return total
