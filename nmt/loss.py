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
several (N, V) tensors to one (chunk, V). Per chunk: one fused log-softmax (fp32, straight from the
bf16 logits), one exp in place, one column sum (the bias gradient) and one pass writing the gradient
in the activations' dtype. The smoothing term needs no pass of its own:
mean_v log p_v = mean_v z_v - lse, with lse = z_y - log p_y and mean_v z_v = h · mean_v(W_v) + mean(b)
(a matrix-vector product for all rows). Same loss and gradients as
``F.cross_entropy(..., label_smoothing=ε, reduction="sum")`` (tested); matmuls run in the
activations' dtype (bf16 under autocast), softmax and sums in fp32 (or wider).
"""

from __future__ import annotations

import torch

from nmt.linear import linear, mm

CHUNK_ROWS = 256  # rows per chunk on CPU: (256, V) fp32 stays in L2/L3 for vocabularies of a few thousand
# On a GPU a chunk is a handful of kernel launches, not a cache tile: few large chunks, each
# (4096, V) fp32 (98 MB at V = 6000) only while it is in use.
GPU_CHUNK_ROWS = 4096


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, bias, target, smoothing: float, chunk: int):
        grad_hidden = torch.empty_like(hidden)
        grad_weight = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device)
        grad_bias = torch.zeros(weight.size(0), dtype=torch.float32, device=weight.device) if bias is not None else None
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        w, b = _in_dtype(weight, bias, hidden.dtype)
        mean_logit = _mean_logits(hidden, weight, bias) if smoothing else None
        for rows, skip in _chunks(hidden.size(0), chunk):
            h = hidden[rows]
            loss, grad, column_sums = _chunk_loss(linear(h, w, b), target[rows], smoothing,
                                                  None if mean_logit is None else mean_logit[rows], True, skip)
            total += loss
            grad_hidden[rows.start + skip : rows.stop] = mm(grad, w)[skip:]  # (n, D)
            grad_weight.add_(mm(grad.t(), h))  # (V, D), accumulated in fp32; skipped rows' grad is 0
            if grad_bias is not None:
                grad_bias += column_sums
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


def _chunks(n: int, chunk: int):
    """(rows, skip) per chunk of n rows: every chunk ``chunk`` rows long where n allows, the last one
    too: it ends at row n and starts ``skip`` rows early, rows that the chunk before counted.

    Why: oneDNN builds a kernel for every new product shape, and a last chunk of n mod chunk rows
    is a new shape at nearly every training step. With AMX tiles (Intel Xeon) building the
    gradient's (r, V) @ (V, D) kernel took 15-26 ms, against about 0.75 ms to run each of a full
    chunk's three products (ONEDNN_VERBOSE=profile_create on the 2-core AMX VM, benchmarks/README.md)."""
    for start in range(0, n, chunk):
        begin = max(min(start, n - chunk), 0)
        yield slice(begin, min(begin + chunk, n)), start - begin


def _chunk_loss(logits: torch.Tensor, target: torch.Tensor, smoothing: float, mean_logit: torch.Tensor | None,
                need_grad: bool, skip: int = 0):
    """Summed smoothed NLL of one chunk of logits (n, V); with ``need_grad`` also ∂loss/∂logits (n, V)
    in the logits' dtype and its column sums in fp32 (the bias gradient). ``mean_logit`` (n,) is
    mean_v z_v, needed for smoothing (see the module docstring). The first ``skip`` rows count
    nothing: no loss, a zero gradient (``_chunks``)."""
    acc = torch.promote_types(logits.dtype, torch.float32)
    log_probs = torch.log_softmax(logits, dim=-1, dtype=acc)  # one fused pass
    log_p_y = log_probs.gather(1, target.unsqueeze(1)).squeeze(1)  # (n,)
    loss = -log_p_y
    if smoothing:
        lse = logits.gather(1, target.unsqueeze(1)).squeeze(1).to(acc) - log_p_y  # log Σ_v exp z_v
        loss = (1.0 - smoothing) * loss - smoothing * (mean_logit - lse)  # mean_v log p_v = mean z - lse
    if not need_grad:
        return loss[skip:].sum(), None, None
    probs = log_probs.exp_()  # softmax, in place
    rows = torch.arange(target.size(0), device=target.device)
    probs[rows, target] -= 1.0 - smoothing
    uniform = smoothing / logits.size(1)
    probs[:skip] = uniform  # the gradient below is probs - uniform: 0 there, and 0 in the column sums
    column_sums = probs.sum(0) - target.size(0) * uniform
    return loss[skip:].sum(), torch.sub(probs, uniform, out=torch.empty_like(logits)), column_sums  # cast on the way out


def _mean_logits(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """mean_v z_v for every row, without the (N, V) logits: hidden · mean_v(W_v) + mean(b)."""
    acc = torch.promote_types(hidden.dtype, torch.float32)
    mean = hidden.to(acc) @ weight.to(acc).mean(0)
    return mean if bias is None else mean + bias.to(acc).mean()


def linear_cross_entropy(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    target: torch.Tensor,
    smoothing: float = 0.0,
    chunk: int | None = None,
) -> torch.Tensor:
    """Summed label-smoothed cross-entropy of ``F.linear(hidden, weight, bias)`` against target.

    hidden (N, D), weight (V, D), bias (V,) or None, target (N,) — padding already removed;
    ``chunk`` rows at a time (None: ``CHUNK_ROWS`` on CPU, ``GPU_CHUNK_ROWS`` elsewhere).
    Returns a scalar (fp32) that can be backpropagated to hidden, weight and bias.
    """
    if chunk is None:
        chunk = CHUNK_ROWS if hidden.device.type == "cpu" else GPU_CHUNK_ROWS
    needs_grad = torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (hidden, weight, bias)
    )
    if needs_grad:
        return _LinearCrossEntropy.apply(hidden, weight, bias, target, float(smoothing), chunk)
    total = torch.zeros((), dtype=torch.float32, device=hidden.device)
    w, b = _in_dtype(weight, bias, hidden.dtype)
    mean_logit = _mean_logits(hidden, weight, bias) if smoothing else None
    for rows, skip in _chunks(hidden.size(0), chunk):
        mean = None if mean_logit is None else mean_logit[rows]
        total += _chunk_loss(linear(hidden[rows], w, b), target[rows], smoothing, mean, False, skip)[0]
    return total
