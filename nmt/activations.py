"""tanh as 2σ(2x) − 1: the same function, computed through torch's sigmoid.

Why: on CPU, torch's fp32 tanh (a 1-ULP vectorised kernel whose time depends on the values) ran
5–10× slower than its sigmoid on the 2-core AMD EPYC (Zen 5) VM: 1,648 against 90 µs for a
(40, 75, 256) tensor of N(0, 4) values, the shape of a training step's additive attention score.
Four passes through sigmoid took 152 µs. The result differs from torch.tanh by at most 1.8e-7
(absolute, checked over [-20, 20]), against 3e-8 for torch.tanh itself: far below what bf16 or
fp32 training can see. Used where a tanh is a hot spot: the additive attention score, the LSTM
cell's element-wise part (``lstm_pointwise``: the training fast path, and fp32 decoding through
oneDNN), and ã_t (the output layer's input, in training and decoding).
"""

from __future__ import annotations

import torch


def tanh_(x: torch.Tensor) -> torch.Tensor:
    """tanh(x) = 2σ(2x) − 1, in place: x is overwritten and returned. Where autograd records x (the
    plain training path) it is torch.tanh(x), out of place. bf16 / fp16 input is computed in fp32
    and rounded once: 2σ − 1 in bf16 would lose the precision of values near 0."""
    if x.requires_grad and torch.is_grad_enabled():
        return torch.tanh(x)
    if x.dtype != torch.promote_types(x.dtype, torch.float32):
        return x.copy_(tanh_(x.float()))
    return _tanh_into(x, x)


def _tanh_into(x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """tanh(x) = 2σ(2x) − 1 written into ``out`` (x itself, or a buffer of its shape) and returned."""
    return torch.sigmoid(torch.mul(x, 2, out=out), out=out).mul_(2).sub_(1)


def lstm_pointwise(z, c_prev, acts, c_out, tanh_out, h_out) -> None:
    """The LSTM cell after its products, N rows (any leading dims), PyTorch's gate order i, f, g, o:
    gate pre-activations z (…, 4H) and c_{t-1} → acts (…, 4H) = (i, f, g, o), c_t, tanh(c_t) and
    h_t (…, H), each written into the tensor given. z is overwritten."""
    hid = c_prev.size(-1)
    z[..., 2 * hid : 3 * hid].mul_(2)  # tanh z_g = 2σ(2 z_g) − 1 (as tanh_): one sigmoid for all gates
    torch.sigmoid(z, out=acts)
    i, f, g, o = acts.chunk(4, dim=-1)
    g.mul_(2).sub_(1)
    torch.mul(f, c_prev, out=c_out).addcmul_(i, g)
    _tanh_into(c_out, tanh_out)
    torch.mul(o, tanh_out, out=h_out)
