"""int8 decoding on CPU: the matrix products of a search in 8-bit integers.

Dynamic quantization, symmetric, scales chosen per row of the input and per output of the weight:

    x_r ≈ s_r · q_r,      s_r = max_j |x_rj| / L          one scale per input row (token)
    W_o ≈ t_o · Q_o,      t_o = max_j |W_oj| / L          one scale per output unit, once
    (x Wᵀ + b)_ro ≈ s_r t_o (q Qᵀ)_ro + b_o               q Qᵀ summed exactly in int32
    L = 127 (8 bits), or 63 where this CPU's 8-bit products would not be exact (below)

Why: at decoding's shapes ((1 … 320) rows × 256 … 768 in × 256 … 8,000 out) this ran 1.5–3.3x
faster than the faster fp32 product (oneDNN or MKL), quantization and rescaling included, on the
2-core AMD EPYC (Zen 4, avx512_vnni) VM (benchmarks/micro_int8.py,
benchmarks/results/2026-12-04-amd-epyc-zen4-2c-micro-int8.md). Each product's relative error is
about 0.7 % (rounding to 255 levels), so translations can differ from fp32's: on the Bible test
split 70 % (greedy) and 58 % (beam 5) of a trained model's lines were identical, at the same BLEU
(7.75 → 7.77, 8.60 → 8.54; …-int8-quality.md).

Per-row input scales, not one per tensor: a row is quantized from its own values only, and integer
sums do not depend on their order, so a sentence's products are the same in any batch. Inputs
known to lie in [-1, 1] need no scale of their own (an LSTM's h, a tanh's output, weighted means of
them): they are quantized at the fixed scale 1 / L (``quantize_bounded``), three element-wise
passes instead of seven.

Exact sums need a CPU that multiplies 8-bit values natively (VNNI, AMX). Without it oneDNN, which
runs ``torch._int_mm``, adds u8 · s8 products in pairs into saturating 16-bit integers (AVX2's
vpmaddubsw): with values up to ±127 nearly every sum of a product was off (the Zen 4 VM held to
AVX2 by ``ONEDNN_MAX_CPU_ISA=AVX2``; relative error 1.3–2.5 % instead of 0.7 %), with values up to
±63 none was. So ``int8_levels`` probes the products once per process: values run to ±127 where
those are exact, else to ±63 (7 bits, about twice the rounding error), else int8 is refused.

Inside ``int8_products(model)``, ``nmt.linear``'s ``linear`` and ``lstm_cell`` run in int8 for the
model's weight matrices (the decoder's products, the output layer's), and an LSTM encoder runs
through ``int8_bilstm``. The attention's batched matmuls and softmax, the LSTM gates, GRU and
plain-RNN recurrences and the log-probabilities stay fp32.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import logging
from dataclasses import dataclass

import torch
from torch import nn

from nmt.activations import lstm_pointwise
from nmt.batching import reversed_within, rows_reordered
from nmt.errors import NmtError

log = logging.getLogger(__name__)
LEVELS = (127, 63)  # the largest |value| of the int8 forms, in order of preference (see the docstring)


def _exact_products(levels: int) -> bool:
    """Whether torch._int_mm sums products of values in [-levels, levels] exactly, here: extreme and
    random operands, at a few shapes (oneDNN picks its kernel by shape)."""
    g = torch.Generator().manual_seed(0)

    def operands(n: int, m: int) -> list[torch.Tensor]:
        return [torch.full((n, m), levels, dtype=torch.int8), torch.full((n, m), -levels, dtype=torch.int8),
                torch.randint(-levels, levels + 1, (n, m), generator=g, dtype=torch.int8)]

    for rows, inner, cols in ((1, 64, 8), (8, 256, 64), (64, 512, 256)):
        for a in operands(rows, inner):
            for b in operands(inner, cols):
                try:
                    got = torch._int_mm(a, b)  # a private op: a PyTorch build may lack it or its CPU kernel
                except (AttributeError, RuntimeError, NotImplementedError):
                    return False
                if not torch.equal(got.long(), a.long() @ b.long()):
                    return False
    return True


@functools.cache
def int8_levels() -> int | None:
    """The largest |value| whose int8 products are exact on this CPU (127 or 63), None if neither
    (or if this PyTorch build has no CPU ``torch._int_mm``)."""
    for levels in LEVELS:
        if _exact_products(levels):
            if levels != LEVELS[0]:
                log.info("int8 decoding: 8-bit products are exact only up to ±%d on this CPU (no VNNI)", levels)
            return levels
    return None


@dataclass(frozen=True)
class Int8Weight:
    """A weight matrix (out, in) as int8 values and one fp32 scale per output row; inputs multiplied
    with it are quantized to the same ``levels``."""

    values_t: torch.Tensor  # (in, out) int8: the transpose of the quantized (out, in) matrix
    scale: torch.Tensor  # (out,) fp32
    levels: int  # values lie in [-levels, levels]

    @classmethod
    def of(cls, weight: torch.Tensor, levels: int | None = None) -> "Int8Weight":
        """``levels`` None: ``int8_levels()``, this CPU's exact range."""
        levels = int8_levels_on(weight.device) if levels is None else levels
        values, scale = quantize_rows(weight.detach().float(), levels)  # a row per output unit
        return cls(values.t(), scale.squeeze(1), levels)


def int8_levels_on(device: torch.device) -> int:
    """``int8_levels()`` for decoding on ``device``; an ``NmtError`` where int8 decoding cannot run."""
    if device.type != "cpu":
        raise NmtError("int8 decoding runs on the CPU only; use fp32 or bf16 on a GPU")
    levels = int8_levels()
    if levels is None:
        raise NmtError("int8 decoding needs exact 8-bit matrix products, which this CPU and PyTorch build "
                       "do not give; use fp32 or bf16")
    return levels


def quantize_rows(x: torch.Tensor, levels: int) -> tuple[torch.Tensor, torch.Tensor]:
    """x (N, in) fp32 → int8 values (N, in) in [-levels, levels] and scales (N, 1): x ≈ scale ·
    values, row by row."""
    scale = x.abs().amax(dim=1, keepdim=True).div_(levels).clamp_(min=torch.finfo(torch.float32).tiny)
    return torch.div(x, scale).round_().to(torch.int8), scale


def quantize_bounded(x: torch.Tensor, bound: float, levels: int) -> torch.Tensor:
    """x with |x| ≤ bound → int8 values in [-levels, levels], x ≈ (bound / levels) · values (any
    value beyond the bound is clamped to it)."""
    return torch.mul(x, levels / bound).round_().clamp_(-levels, levels).to(torch.int8)


def int8_linear(x: torch.Tensor, weight: Int8Weight, bias: torch.Tensor | None = None,
                out: torch.Tensor | None = None, bound: float | None = None) -> torch.Tensor:
    """≈ F.linear(x, W, bias) from W's int8 form: x (…, in) fp32 → (…, out) fp32. ``out``: an int32
    buffer of x's rows × W's outputs to work in (the result is its memory, as fp32). ``bound``: a
    known bound of |x| (an LSTM's h, a tanh), quantized at the fixed scale bound / levels instead of
    each row's own: 3 element-wise passes instead of 7 (values beyond it would be clamped)."""
    rows = x.reshape(-1, x.size(-1)).float()
    if bound is None:  # each row its own scale
        values, row_scale = quantize_rows(rows, weight.levels)
        fixed = 1.0
    else:  # one scale for all rows, folded into the weight's below
        values, row_scale = quantize_bounded(rows, bound, weight.levels), None
        fixed = bound / weight.levels
    sums = torch._int_mm(values, weight.values_t, out=out)  # (N, out) int32, exact integer sums
    # Everything in place, even the conversion to fp32 (same size, same positions): a fresh (N, out)
    # buffer costs more than the matmul (a page fault per 4 KB: 3 ms against 0.2 for 2,240 × 1,024).
    result = sums.view(torch.float32).copy_(sums)
    if row_scale is not None:
        result.mul_(row_scale)
    if bias is None:
        result.mul_(weight.scale * fixed)
    else:
        torch.addcmul(bias, result, weight.scale, value=fixed, out=result)
    return result.view(*x.shape[:-1], result.size(-1))


_WEIGHTS: contextvars.ContextVar[dict[int, tuple[torch.Tensor, Int8Weight]] | None] = contextvars.ContextVar(
    "nmt_int8_weights", default=None
)


def int8_weight(weight: torch.Tensor) -> Int8Weight | None:
    """The int8 form of ``weight`` inside ``int8_products`` (None elsewhere, and for other tensors)."""
    weights = _WEIGHTS.get()
    if weights is None:
        return None
    found = weights.get(id(weight))
    return found[1] if found is not None and found[0] is weight else None


def _held(weight: torch.Tensor) -> Int8Weight:
    found = int8_weight(weight)
    if found is None:
        raise RuntimeError("int8_bilstm runs inside int8_products of the model that holds the LSTM")
    return found


def product_matrices(model: nn.Module) -> list[torch.Tensor]:
    """The weight matrices ``model``'s products multiply by: its 2-D parameters but the embedding
    tables, which are looked up (a tied output layer's table counts: it is the generator's weight),
    and the views of them that a module multiplies by (its ``product_views()``: W_c's two column
    blocks, ``nmt.model.Decoder.combine_columns``)."""
    matrices = [p for module in model.modules() if not isinstance(module, nn.Embedding)
                for p in module.parameters(recurse=False) if p.dim() == 2]
    return matrices + [v for module in model.modules() if hasattr(module, "product_views")
                       for v in module.product_views()]


@contextlib.contextmanager
def int8_products(model: nn.Module):
    """Within: ``nmt.linear``'s products with ``model``'s weight matrices run in int8.

    The int8 forms are made on entry from the weights as they are then (a few milliseconds for
    the default model), so a model that trains on between decodings is always quantized afresh.
    Embedding tables are looked up, never multiplied, so only a tied output layer's copy of one is
    quantized (it is the generator's weight too)."""
    levels = int8_levels_on(next((p.device for p in model.parameters() if p.device.type != "cpu"), torch.device("cpu")))
    matrices = {id(p): (p, Int8Weight.of(p, levels)) for p in product_matrices(model)}
    token = _WEIGHTS.set(matrices)
    try:
        yield
    finally:
        _WEIGHTS.reset(token)


def int8_bilstm(rnn: nn.LSTM, x: torch.Tensor, lengths: torch.Tensor):
    """``rnn(pack_padded_sequence(x, lengths))`` for a bidirectional batch-first nn.LSTM, inside
    ``int8_products``: x (B, S, E) → outputs (B, S, 2H) (zeros on padding), (h_n, c_n) (2L, B, H).

    The two directions step together, each over its sentence's real tokens first: the backward
    direction reads every sentence reversed within its length (``reversed_within``), so step k
    reads position k forward and L-1-k backward, and past a sentence's last token only padding
    follows, whose states nothing reads: no masks inside the loop. Packed-sequence semantics, as
    ``nmt.recurrence.bilstm`` (which trains): the final states are those after step L-1.
    Per layer, W_x x_t + b for every step of a direction is one large int8 product; then per step
    h is quantized at the fixed scale 1 / levels (|h| ≤ 1: h = o ⊙ tanh c), one int8 W_h h product
    per direction, one rescaling, and the gates in fp32.
    The large buffers are made once and serve every layer: each fresh one costs a page fault per
    4 KB, and a batch longer than any before (decoding sorts by length) gets fresh ones."""
    steps, batch, hid = x.size(1), x.size(0), rnn.hidden_size
    lengths = lengths.cpu()
    reverse = reversed_within(lengths, steps)  # (S·B,)
    inputs = [x.transpose(0, 1).float()]  # (S, B, E): time order, the forward direction's steps
    inputs.append(rows_reordered(inputs[0], reverse))  # the backward direction's steps
    sums_x = torch.empty(2, steps * batch, 4 * hid, dtype=torch.int32)
    states = inputs[0].new_zeros(steps + 1, 2, batch, hid)  # h before step k at slot k
    cells = inputs[0].new_zeros(steps + 1, 2, batch, hid)  # c before step k at slot k
    last = (lengths, slice(None), torch.arange(batch))  # slot L of each sentence: after step L-1
    finals_h, finals_c = [], []
    for layer in range(rnn.num_layers):
        w = {name: [getattr(rnn, f"{name}_l{layer}{suffix}") for suffix in ("", "_reverse")]
             for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")}
        gates_x = [int8_linear(inputs[d], _held(w["weight_ih"][d]), w["bias_ih"][d] + w["bias_hh"][d], sums_x[d])
                   for d in range(2)]  # (S, B, 4H) each, step order
        _int8_steps(states, cells, gates_x, [_held(t) for t in w["weight_hh"]])
        ahead, behind = states[1:, 0], states[1:, 1]  # (S, B, H): each direction's outputs, its step order
        inputs = [torch.cat([ahead, rows_reordered(behind, reverse)], dim=-1)]  # (S, B, 2H)
        if layer + 1 < rnn.num_layers:
            inputs.append(torch.cat([rows_reordered(ahead, reverse), behind], dim=-1))
        finals_h.append(states[last].transpose(0, 1))
        finals_c.append(cells[last].transpose(0, 1))
    real = (torch.arange(steps).unsqueeze(1) < lengths).unsqueeze(-1)  # (S, B, 1)
    return inputs[0].mul_(real).transpose(0, 1), (torch.cat(finals_h), torch.cat(finals_c))


def _int8_steps(states: torch.Tensor, cells: torch.Tensor, gates_x: list[torch.Tensor], w_hh: list[Int8Weight]):
    """The recurrence of one layer, both directions: states, cells (S+1, 2, B, H) with slot 0 the
    start (zeros), filled in step by step; gates_x (S, B, 4H) per direction."""
    levels = w_hh[0].levels
    hh_scale = torch.stack([w_hh[0].scale, w_hh[1].scale]).div_(levels).unsqueeze(1)  # (2, 1, 4H)
    tanh_c = torch.empty_like(states[0])  # (2, B, H)
    sums = torch.empty(2, *gates_x[0].shape[1:], dtype=torch.int32)  # (2, B, 4H)
    z, acts = torch.empty_like(sums, dtype=torch.float32), torch.empty_like(sums, dtype=torch.float32)
    for k in range(len(gates_x[0])):
        values = quantize_bounded(states[k], 1.0, levels)  # |h| ≤ 1
        for d in range(2):
            torch._int_mm(values[d], w_hh[d].values_t, out=sums[d])
        z.copy_(sums)
        for d in range(2):
            torch.addcmul(gates_x[d][k], z[d], hh_scale[d], out=z[d])  # W_x x + b + W_h h
        lstm_pointwise(z, cells[k], acts, cells[k + 1], tanh_c, states[k + 1])
