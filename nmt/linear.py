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
"""

from __future__ import annotations

import functools
import os

import torch
import torch.nn.functional as F

from nmt.activations import lstm_pointwise
from nmt.errors import NmtError
from nmt.quantize import int8_linear, int8_weight

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
    """True where this product goes to oneDNN: no gradients, fp32 on the CPU, autocast off."""
    return (not torch.is_grad_enabled() and weight.dtype == torch.float32 and not torch.is_autocast_enabled("cpu")
            and onednn_takes(x))


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
           bound: float | None = None) -> torch.Tensor:
    """``F.linear(x, weight, bias)``: x (…, in), weight (out, in) → (…, out). In int8 inside
    ``nmt.quantize.int8_products``, where ``bound`` (|x| ≤ bound, known) makes quantizing x cheaper."""
    if not torch.is_grad_enabled() and (packed := int8_weight(weight)) is not None:
        return int8_linear(x, packed, bias, bound=bound)
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
    Under bf16 autocast ``torch.lstm_cell`` stays: this cell in oneDNN fp32 there was 0.91-0.95x.
    Inside ``nmt.quantize.int8_products`` the two products run in int8."""
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
