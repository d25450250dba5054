"""Decoding's encoder, stretch by stretch: an RNN over a batch of sentences of different lengths
as dense kernel calls over the stretches of time between their lengths (``by_length``), instead of
one call on a packed sequence. Used by ``Encoder.forward`` in eval mode without gradients, where
it pays (``by_length_pays``).
"""

from __future__ import annotations

import torch
from torch import nn

from nmt.batching import reversed_within, rows_reordered
from nmt.hardware import onednn_bf16
from nmt.linear import onednn_takes


def by_length_pays(x: torch.Tensor) -> bool:
    """Under autocast (bf16 decoding): where the dense kernel runs in bf16 — on a CPU only where
    oneDNN has bf16 kernels; without them it fails, and the packed kernel (fp32) is what works.
    In fp32: where ``nmt.linear`` sends fp32 products to oneDNN (AMD CPUs)."""
    if torch.is_autocast_enabled(x.device.type):
        return x.device.type != "cpu" or onednn_bf16()
    return onednn_takes(x)


def by_length(rnn: nn.RNNBase, x: torch.Tensor, lengths: torch.Tensor):
    """``rnn`` on packed x (B, S, E), as dense calls: one per layer, direction and stretch of time
    between consecutive sentence lengths.

    With l_1 < l_2 < … the batch's distinct lengths, a direction runs over time steps [0, l_1),
    then [l_1, l_2), …, each stretch over the sentences not yet ended, from the state the one
    before ended in; the backward direction reads every sentence reversed within its length. No
    padding is read, so the dense (oneDNN) kernel computes exactly the packed maths, and it follows
    bf16 autocast; the packed kernel ignores it and steps through the batch sizes in fp32.
    Encoding the Bible test split in batches of 64 in bf16 took 0.85 s (a fresh process, Intel
    Xeon with AMX) against 1.16 s when each group of equal-length sentences ran its whole
    recurrence alone, a few rows at a time (benchmarks/README.md, "Levers"). Used for bf16
    decoding, and for fp32 decoding where oneDNN does the fp32 products (AMD). Returns the outputs
    (B, S, dirs·H), zero at padding, and the final state(s) (layers·dirs, B, H), as ``rnn`` does in
    eval mode (no dropout between layers)."""
    lstm, size, steps = rnn.mode == "LSTM", rnn.hidden_size, x.size(1)
    kernel = {"LSTM": torch._VF.lstm, "GRU": torch._VF.gru, "RNN_TANH": torch._VF.rnn_tanh,
              "RNN_RELU": torch._VF.rnn_relu}[rnn.mode]  # what nn.LSTM/GRU/RNN call
    names = ("weight_ih", "weight_hh") + (("bias_ih", "bias_hh") if rnn.bias else ())
    lengths = lengths.cpu()
    order = torch.argsort(lengths, descending=True, stable=True)  # the sentences still running: a prefix
    lengths = lengths[order]
    ends = torch.unique(lengths).tolist()  # ascending
    running = [int((lengths >= end).sum()) for end in ends]  # sentences in the stretch up to each end
    stretches = list(zip(ends, running, running[1:] + [0]))  # (end, sentences running, those running on)
    reverse = reversed_within(lengths, steps).to(x.device)
    layer_in, finals = x.index_select(0, order.to(x.device)).transpose(0, 1), []  # (S, B, E), time-major
    for layer in range(rnn.num_layers):
        outs = []
        for direction in ("", "_reverse")[: 1 + rnn.bidirectional]:
            weights = [getattr(rnn, f"{name}_l{layer}{direction}") for name in names]
            seq = rows_reordered(layer_in, reverse) if direction else layer_in
            state, out, final, start = (x.new_zeros(1, x.size(0), size),) * (1 + lstm), None, None, 0
            for end, n, on in stretches:
                hx = tuple(h[:, :n] for h in state)
                stretch, *state = kernel(seq[start:end, :n], hx if lstm else hx[0], weights, rnn.bias, 1, 0.0,
                                         False, False, False)
                if out is None:
                    out = stretch.new_zeros(steps, x.size(0), size)
                    final = [h.new_empty(1, x.size(0), size) for h in state]
                out[start:end, :n] = stretch
                for kept, h in zip(final, state):  # the sentences ending here: rows on … n - 1
                    kept[:, on:n] = h[:, on:n]
                start = end
            outs.append(rows_reordered(out, reverse) if direction else out)
            finals.append(final)
        layer_in = torch.cat(outs, dim=-1)
    back = torch.argsort(order).to(x.device)  # undoes the sort
    states = [torch.cat(kind).index_select(1, back) for kind in zip(*finals)]
    return layer_in.transpose(0, 1).index_select(0, back), tuple(states) if lstm else states[0]
