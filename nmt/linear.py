"""fp32 matrix products on CPU made without autograd: MKL (PyTorch's default) or oneDNN, whichever the CPU runs fast.

PyTorch sends an fp32 ``F.linear`` on CPU to MKL's sgemm, and MKL takes a slower code path on AMD
CPUs: on the 2-core AMD EPYC VM (Zen 5) it ran 137-197 GFLOP/s where oneDNN, which PyTorch ships
too, ran 302-433 at decoding's shapes ((64 … 2048) rows × (256 … 2048) × (1024 … 6000)), same
fp32 arithmetic. bf16 products go to oneDNN anyway (autocast). oneDNN's op has no backward, so it
serves products that autograd does not record: decoding's (``linear``, ``lstm_cell``), and those
inside training's hand-written forward and backward passes (``mm``: ``nmt.recurrence``,
``nmt.loss``). Wherever autograd records, ``F.linear`` runs as before.

``NMT_FP32_MATMUL`` chooses: ``auto`` (the default: oneDNN on AMD CPUs, MKL elsewhere, where it was
measured fast), ``onednn`` or ``mkl``.

bf16 decoding on CPU (``bf16_products``) multiplies by copies of the weights packed once in oneDNN's
own blocked layout. Under plain autocast oneDNN re-lays the (cached) bf16 weight out at every call,
which is much of a decoder step's small product: on the Intel Xeon VM with AMX, 2 threads, 64 rows
× 256 × 6,000 with bias (the output layer) took 238 µs from the plain weight and 127 µs from the
packed one, 64 × 512 × 1,024 (the LSTM cell's input product) 90 and 51 µs, with the same result to
the bit; greedy decoding 1.06x, beam 5 1.08x, the same translations (benchmarks/README.md, "Levers").
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import os

import torch
import torch.nn.functional as F
from torch import nn

from nmt.activations import lstm_pointwise
from nmt.errors import NmtError
from nmt.hardware import onednn_bf16
from nmt.quantize import int8_linear, int8_weight, product_matrices

ENV = "NMT_FP32_MATMUL"


def _cpu_vendor() -> str:
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as handle:
            for line in handle:
                if line.startswith("vendor_id"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


@functools.cache
def onednn_fp32() -> bool:
    """Whether fp32 inference products go to oneDNN (``NMT_FP32_MATMUL``, else by CPU vendor)."""
    choice = os.environ.get(ENV, "auto").strip().lower() or "auto"
    if choice not in ("auto", "onednn", "mkl"):
        raise NmtError(f"{ENV} must be auto, onednn or mkl, not {choice!r}")
    available = torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")
    if choice == "onednn" and not available:
        raise NmtError(f"{ENV}=onednn, but this PyTorch build has no oneDNN linear")
    if choice == "auto":
        return available and _cpu_vendor() == "AuthenticAMD"
    return choice == "onednn"


def onednn_takes(x: torch.Tensor) -> bool:
    """Whether fp32 work on x goes to oneDNN here: x is fp32 on the CPU and ``onednn_fp32()``."""
    return x.device.type == "cpu" and x.dtype == torch.float32 and onednn_fp32()


def _onednn(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """True where this product goes to oneDNN: no gradients, fp32 on the CPU, autocast off, and a
    weight matrix laid out whole, row after row or column after column. A view of some of a
    matrix's columns (W_c's blocks, ``Decoder.combine_columns``) oneDNN multiplies by with its
    reference kernel only: 64 × 512 by 512 × 256 took 125 ms, 1,000x its 0.11 ms for the same
    columns copied and MKL's 0.10 ms for the view (the Zen 4 VM), and fp32 decoding of the Luong
    model ran 7x slower than bf16 (benchmarks/README.md, "Levers"). Such a view goes to MKL."""
    return (not torch.is_grad_enabled() and weight.dtype == torch.float32 and not torch.is_autocast_enabled("cpu")
            and (weight.is_contiguous() or weight.t().is_contiguous()) and onednn_takes(x))


_PACKED: contextvars.ContextVar[dict[int, tuple[torch.Tensor, torch.Tensor]] | None] = contextvars.ContextVar(
    "nmt_bf16_packed", default=None)


@contextlib.contextmanager
def bf16_products(model: nn.Module):
    """Within, under bf16 autocast: ``linear``'s and ``lstm_cell``'s products with ``model``'s weight
    matrices use bf16 copies packed for oneDNN on entry (see the module docstring), the same products
    to the bit as autocast's. Made afresh on every entry (a few ms for the default model), so a model
    that trains between decodings is never multiplied by stale copies. A no-op where oneDNN has no
    bf16 kernels or the model is not on the CPU."""
    params = product_matrices(model)
    if not params or params[0].device.type != "cpu" or not onednn_bf16():
        yield
        return
    packed = {id(p): (p, torch.ops.mkldnn._reorder_linear_weight(p.detach().to(torch.bfloat16))) for p in params}
    token = _PACKED.set(packed)
    try:
        yield
    finally:
        _PACKED.reset(token)


def _bf16_packed(weight: torch.Tensor) -> torch.Tensor | None:
    """weight's packed bf16 copy where a product with it runs from one: inside ``bf16_products``,
    under CPU autocast to bf16, without gradients (the packed product has no backward)."""
    packed = _PACKED.get()
    if (packed is None or torch.is_grad_enabled() or not torch.is_autocast_enabled("cpu")
            or torch.get_autocast_dtype("cpu") != torch.bfloat16):
        return None
    found = packed.get(id(weight))
    return found[1] if found is not None and found[0] is weight else None


def _packed_linear(x: torch.Tensor, packed: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """F.linear under bf16 autocast, from a packed weight: bf16 (…, out)."""
    bias = None if bias is None else bias.to(torch.bfloat16)
    return torch.ops.mkldnn._linear_pointwise(x.to(torch.bfloat16), packed, bias, "none", [], "")


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
           bound: float | None = None) -> torch.Tensor:
    """``F.linear(x, weight, bias)``: x (…, in), weight (out, in) → (…, out). In int8 inside
    ``nmt.quantize.int8_products``, where ``bound`` (|x| ≤ bound, known) makes quantizing x cheaper;
    from a packed copy of the weight inside ``bf16_products``."""
    if not torch.is_grad_enabled() and (packed := int8_weight(weight)) is not None:
        return int8_linear(x, packed, bias, bound=bound)
    if (packed := _bf16_packed(weight)) is not None:
        return _packed_linear(x, packed, bias)
    if _onednn(x, weight):
        return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")
    return F.linear(x, weight, bias)


def mm(a: torch.Tensor, b: torch.Tensor, add: torch.Tensor | None = None) -> torch.Tensor:
    """``torch.addmm(add, a, b)``: a (N, K) @ b (K, M) + add, a bias (M,) or a tensor (N, M); for
    products made without autograd (the hand-written forwards and backwards of ``nmt.recurrence``
    and ``nmt.loss``). Through oneDNN where fp32 goes there and a's rows are contiguous: a weight
    gradient's product (a = Xᵀ, a sum over the rows of X) ran 0.65-0.87x as fast in oneDNN as in
    MKL on the Zen 4 VM, the rest 1.1-1.55x; a fp32 training step 1.04-1.06x (benchmarks/README.md,
    "Levers"). The encoder's per-direction ``torch.bmm`` stay: one oneDNN call per direction was no faster."""
    if a.stride(-1) == 1 and _onednn(a, b):
        if add is None or add.dim() == 1:
            return torch.ops.mkldnn._linear_pointwise(a, b.t(), add, "none", [], "")
        return torch.ops.mkldnn._linear_pointwise.binary(a, add, b.t(), None, "add")
    return a @ b if add is None else torch.addmm(add, a, b)


def lstm_cell(x: torch.Tensor, h: torch.Tensor, c: torch.Tensor, w_ih: torch.Tensor, w_hh: torch.Tensor,
              b_ih: torch.Tensor, b_hh: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``torch.lstm_cell(x, (h, c), w_ih, w_hh, b_ih, b_hh)``: x (N, I), h and c (N, H) → h_t, c_t.

    Through oneDNN: z = W_ih x + b_ih + W_hh h + b_hh as two products (the second adds the first),
    then the gates (``nmt.activations.lstm_pointwise``).
    Under bf16 autocast ``torch.lstm_cell`` stays: this cell in oneDNN fp32 there was 0.91-0.95x;
    inside ``bf16_products`` its steps are taken here, the products from packed weights.
    Inside ``nmt.quantize.int8_products`` the two products run in int8."""
    if (packed_ih := _bf16_packed(w_ih)) is not None and (packed_hh := _bf16_packed(w_hh)) is not None:
        return _bf16_lstm_cell(x, h, c, packed_ih, packed_hh, b_ih, b_hh)
    if not torch.is_grad_enabled() and int8_weight(w_ih) is not None:
        z = linear(x, w_ih, b_ih).add_(linear(h, w_hh, b_hh, bound=1.0))  # (N, 4H); |h| ≤ 1
    elif not _onednn(x, w_ih):
        return torch.lstm_cell(x, (h, c), w_ih, w_hh, b_ih, b_hh)
    else:
        z = torch.ops.mkldnn._linear_pointwise(x, w_ih, b_ih, "none", [], "")
        z = torch.ops.mkldnn._linear_pointwise.binary(h, z, w_hh, b_hh, "add")  # (N, 4H)
    acts = torch.empty_like(z)
    c_t, tanh_c, h_t = torch.empty_like(c), torch.empty_like(c), torch.empty_like(c)
    lstm_pointwise(z, c, acts, c_t, tanh_c, h_t)
    return h_t, c_t


def _bf16_lstm_cell(x, h, c, packed_ih, packed_hh, b_ih, b_hh) -> tuple[torch.Tensor, torch.Tensor]:
    """``torch.lstm_cell`` under bf16 autocast, step for step as PyTorch's CPU cell takes them (every
    tensor in bf16, each operation rounded to it), so the same to the bit; its products from packed
    weights."""
    gates = _packed_linear(h, packed_hh, b_hh).add_(_packed_linear(x, packed_ih, b_ih))
    i, f, g, o = gates.unsafe_chunk(4, 1)
    i, f, g, o = i.sigmoid_(), f.sigmoid_(), g.tanh_(), o.sigmoid_()
    c_t = (f * c.to(torch.bfloat16)).add_(i * g)
    return o * c_t.tanh(), c_t
