"""LSTM recurrences with a hand-written backward pass: the training fast path.

Why: autograd through an LSTM on CPU records every op of every time step, and its backward then
computes each weight gradient one step at a time (a thin matmul plus a weight-sized add, per step
and per weight). Worse, ``nn.LSTM`` on packed input and ``torch.lstm_cell`` ignore bf16 autocast,
so the recurrences — about two thirds of a step's FLOPs — ran in fp32. Here the forward keeps what
the backward needs; the backward runs the recurrence in reverse with one small matmul per step and
layer, and every weight gradient is ONE matmul over all steps (Σ_t δz_tᵀ x_t = δZᵀ X). Matmuls run
in the compute dtype (bf16 under autocast), gates, cell states and their gradients in fp32.
Same maths as the plain path (tested against it, and against finite differences in fp64).

LSTM cell, PyTorch's gate order i, f, g, o; N rows, H units:
    z_t = W_x x_t + W_h h_{t-1} + b                                   (N, 4H)
    i, f, o = σ(z_i), σ(z_f), σ(z_o);   g = tanh(z_g)
    c_t = f ⊙ c_{t-1} + i ⊙ g;          h_t = o ⊙ tanh(c_t)
backward, from δh_t (output + later steps) and δc_t (later steps):
    δo = δh ⊙ tanh c_t;   δc = δc_t + δh ⊙ o ⊙ (1 - tanh² c_t)
    δz = [δc ⊙ g ⊙ i(1-i),  δc ⊙ c_{t-1} ⊙ f(1-f),  δc ⊙ i ⊙ (1-g²),  δo ⊙ o(1-o)]
    δc_{t-1} = δc ⊙ f;    δh_{t-1} = δz W_h;    δx_t = δz W_x
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from nmt.attention import AdditiveAttention, MultiplicativeAttention
from nmt.dropout import dropout, keep_mask


def compute_dtype(reference: torch.Tensor) -> torch.dtype:
    """The dtype matmuls run in: autocast's where it is on (bf16), else the parameters'."""
    device = reference.device.type
    return torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else reference.dtype


def accumulate_dtype(dtype: torch.dtype) -> torch.dtype:
    """Gates, cell states and gradients: fp32 for bf16 / fp16 matmuls, else the matmuls' own dtype."""
    return torch.promote_types(dtype, torch.float32)


def _cell(z: torch.Tensor, c_prev: torch.Tensor, acts: torch.Tensor):
    """Gate pre-activations z (N, 4H) fp32 → h, c (N, H) fp32; the activations go into ``acts``."""
    hid = c_prev.size(1)
    torch.sigmoid(z, out=acts)
    torch.tanh(z[:, 2 * hid : 3 * hid], out=acts[:, 2 * hid : 3 * hid])
    i, f, g, o = acts.chunk(4, dim=1)
    c = torch.addcmul(f * c_prev, i, g)
    tanh_c = torch.tanh(c)
    return o * tanh_c, c, tanh_c


def _cell_backward(dh, dc, acts, tanh_c, c_prev):
    """δh, δc (N, H) fp32 at one step → δz (N, 4H), δc_{t-1} (N, H) (see the module docstring)."""
    i, f, g, o = acts.chunk(4, dim=1)
    dc = torch.addcmul(dc, dh * o, 1 - tanh_c * tanh_c)
    d_acts = torch.cat([dc * g, dc * c_prev, dc * i, dh * tanh_c], dim=1)  # ∂/∂(i, f, g, o)
    slope = acts * (1 - acts)  # σ' for i, f, o ...
    hid = c_prev.size(1)
    slope[:, 2 * hid : 3 * hid] = 1 - g * g  # ... and tanh' for g
    return d_acts.mul_(slope), dc * f


# -- encoder: one direction of one layer over a packed batch ------------------------------------
class _PackedLSTM(torch.autograd.Function):
    """Packed rows (time-major, longest sentence first, as PackedSequence.data): at step t the
    first ``batch_sizes[t]`` sentences are active. Runs t = 0 … S-1, or S-1 … 0 with ``reverse``;
    a sentence starts from a zero state at its first step and keeps its state after its last."""

    @staticmethod
    def forward(ctx, data, w_ih, w_hh, bias, batch_sizes: list[int], reverse: bool, dtype: torch.dtype):
        n_rows, hid, n_sent = data.size(0), w_hh.size(1), batch_sizes[0]
        x, w_ih_c, w_hh_t = data.to(dtype), w_ih.to(dtype), w_hh.to(dtype).t()
        gates_x = torch.addmm(bias.to(dtype), x, w_ih_c.t())  # (N, 4H): W_x x_t + b, every step at once
        out = x.new_empty(n_rows, hid)  # h_t, compute dtype: the next layer's input
        acc = accumulate_dtype(dtype)
        h_prev, acts = x.new_empty(n_rows, hid), data.new_empty(n_rows, 4 * hid, dtype=acc)
        c_prev, tanh_cs = torch.empty_like(acts[:, :hid]), torch.empty_like(acts[:, :hid])
        h, c = x.new_zeros(n_sent, hid), acts.new_zeros(n_sent, hid)  # state of every sentence
        for rows, n in _steps(batch_sizes, reverse):
            h_prev[rows], c_prev[rows] = h[:n], c[:n]
            z = torch.addmm(gates_x[rows], h[:n], w_hh_t).to(acc)
            h_new, c[:n], tanh_cs[rows] = _cell(z, c_prev[rows], acts[rows])
            out[rows] = h_new
            h[:n] = out[rows]
        ctx.save_for_backward(x, w_ih_c, w_hh_t, h_prev, acts, c_prev, tanh_cs)
        ctx.batch_sizes, ctx.reverse, ctx.dtypes = batch_sizes, reverse, (data.dtype, w_ih.dtype)
        return out, h.to(acc), c

    @staticmethod
    def backward(ctx, d_out, d_h_n, d_c_n):
        x, w_ih_c, w_hh_t, h_prev, acts, c_prev, tanh_cs = ctx.saved_tensors
        acc = acts.dtype
        dh, dc = d_h_n.to(acc, copy=True), d_c_n.to(acc, copy=True)  # carried back, per sentence
        d_z = torch.empty_like(acts)
        w_hh_c = w_hh_t.t()
        for rows, n in reversed(list(_steps(ctx.batch_sizes, ctx.reverse))):
            d_z[rows], dc[:n] = _cell_backward(d_out[rows].to(acc) + dh[:n], dc[:n], acts[rows],
                                               tanh_cs[rows], c_prev[rows])
            dh[:n] = d_z[rows].to(w_hh_c.dtype) @ w_hh_c  # δh_{t-1} of the same sentences
        d_bias = d_z.sum(0)
        d_z = d_z.to(x.dtype)
        data_dtype, weight_dtype = ctx.dtypes
        return ((d_z @ w_ih_c).to(data_dtype), (d_z.t() @ x).to(weight_dtype), (d_z.t() @ h_prev).to(weight_dtype),
                d_bias.to(weight_dtype), None, None, None)


def _steps(batch_sizes: list[int], reverse: bool):
    """(rows of step t in the packed data, active sentences) in processing order."""
    starts, total = [], 0
    for n in batch_sizes:
        starts.append(total)
        total += n
    order = range(len(batch_sizes) - 1, -1, -1) if reverse else range(len(batch_sizes))
    return [(slice(starts[t], starts[t] + batch_sizes[t]), batch_sizes[t]) for t in order]


def packed_bilstm(rnn: nn.LSTM, x: torch.Tensor, lengths: torch.Tensor, training: bool):
    """``rnn(pack_padded_sequence(x, lengths))`` for a bidirectional batch-first nn.LSTM, with its
    own weights: x (B, S, E) → outputs (B, S, 2H) (zeros on padding), (h_n, c_n) each (2L, B, H)."""
    packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
    sizes, dtype = packed.batch_sizes.tolist(), compute_dtype(rnn.weight_ih_l0)
    data, finals_h, finals_c = packed.data, [], []
    with torch.autocast(x.device.type, enabled=False):
        for layer in range(rnn.num_layers):
            if layer > 0:
                data = dropout(data, rnn.dropout, training)
            outs = []
            for suffix in ("", "_reverse"):
                w = [getattr(rnn, f"{name}_l{layer}{suffix}") for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
                out, h_n, c_n = _PackedLSTM.apply(data, w[0], w[1], w[2] + w[3], sizes, bool(suffix), dtype)
                outs.append(out)
                finals_h.append(h_n)
                finals_c.append(c_n)
            data = torch.cat(outs, dim=1)
    unsort = packed.unsorted_indices
    out, _ = pad_packed_sequence(PackedSequence(data, packed.batch_sizes, packed.sorted_indices, unsort),
                                 batch_first=True, total_length=x.size(1))
    return out, (torch.stack(finals_h).index_select(1, unsort), torch.stack(finals_c).index_select(1, unsort))


# -- decoder: teacher-forced LSTM layers with attention and input feeding ------------------------
class _AttentionDecoder(torch.autograd.Function):
    """All T steps of the input-feeding decoder (``Decoder.step_embedded`` T times), one call.

    Layer 0's input is [E y_{t-1} ; ã_{t-1}]: its embedding part ``gates_x`` (T, B, 4D) is computed
    for every step before the call; ``weights[l]`` is [W_x | W_h] of layer l, applied to
    [ã_{t-1} or drop(h^{l-1}_t) ; h^l_{t-1}]. Attention (additive: ``query`` = (W_q, b_q, v); or
    multiplicative: ``query`` = None) reads keys (B, S, A) and values (B, S, K), then
    ã_t = tanh(W_c [c_t ; h_t]). Returns ã (T, B, D) in the compute dtype.
    """

    @staticmethod
    def forward(ctx, dtype, n_layers, gates_x, h0, c0, keys, values, mask, drop, w_c, w_q, b_q, v, *layer_params):
        steps, batch, dim = gates_x.size(0), gates_x.size(1), h0.size(2)
        key_dim = values.size(2)
        weights = [w.to(dtype).t() for w in layer_params[:n_layers]]  # (2D, 4D) each
        biases = [b.to(dtype) for b in layer_params[n_layers:]]  # layers 1 … L-1
        keys, values, w_c_t = keys.to(dtype), values.to(dtype), w_c.to(dtype).t()
        additive = w_q is not None
        if additive:
            w_q_t, b_q_c, v_c = w_q.to(dtype).t(), b_q.to(dtype), v.to(dtype).view(-1)
            u_all = keys.new_empty(steps, *keys.shape)  # tanh(W_q h_t + W_k h_j), (T, B, S, A)
        acc = accumulate_dtype(dtype)
        f32 = dict(dtype=acc, device=gates_x.device)
        inputs = gates_x.new_empty(n_layers, steps, batch, 2 * dim, dtype=dtype)  # each layer's matmul input
        acts = torch.empty(n_layers, steps, batch, 4 * dim, **f32)
        c_prev, tanh_cs = torch.empty(n_layers, steps, batch, dim, **f32), torch.empty(n_layers, steps, batch, dim, **f32)
        concat = gates_x.new_empty(steps, batch, key_dim + dim, dtype=dtype)  # [c_t ; h_t]
        alphas, outputs = torch.empty(steps, batch, keys.size(1), **f32), torch.empty(steps, batch, dim, **f32)
        h, c = h0.to(dtype, copy=True), c0.to(acc, copy=True)  # (L, B, D), updated in place
        feed = h.new_zeros(batch, dim)
        scores_mask = ~mask
        for t in range(steps):
            below = feed
            for layer in range(n_layers):
                inp = inputs[layer, t]
                inp[:, :dim], inp[:, dim:] = below, h[layer]
                c_prev[layer, t] = c[layer]
                base = gates_x[t] if layer == 0 else biases[layer - 1]
                z = torch.addmm(base, inp, weights[layer]).to(acc)
                h_new, c[layer], tanh_cs[layer, t] = _cell(z, c_prev[layer, t], acts[layer, t])
                h[layer] = h_new
                below = h[layer] if layer == n_layers - 1 else h[layer] * drop[layer, t]
            top = h[-1]
            if additive:
                q = torch.addmm(b_q_c, top, w_q_t)  # (B, A)
                u = torch.add(keys, q.unsqueeze(1), out=u_all[t]).tanh_()  # (B, S, A)
                scores = (u @ v_c).to(acc)  # (B, S)
            else:
                scores = torch.bmm(keys, top.unsqueeze(2)).squeeze(2).to(acc)  # (B, S): h_t · W_k h_j
            alphas[t] = torch.softmax(scores.masked_fill_(scores_mask, float("-inf")), dim=-1)
            alpha = alphas[t]
            concat[t, :, :key_dim] = torch.bmm(alpha.to(dtype).unsqueeze(1), values).squeeze(1)  # c_t
            concat[t, :, key_dim:] = top
            torch.tanh((concat[t] @ w_c_t).to(acc), out=outputs[t])
            feed = outputs[t].to(dtype)
        saved = [inputs, acts, c_prev, tanh_cs, concat, alphas, outputs, keys, values, w_c_t, drop, *weights]
        saved += [u_all, w_q_t, v_c] if additive else []
        ctx.save_for_backward(*saved)
        ctx.n_layers, ctx.additive = n_layers, additive
        ctx.dtypes = (gates_x.dtype, h0.dtype, c0.dtype, keys.dtype, values.dtype, w_c.dtype)
        return outputs.to(dtype)

    @staticmethod
    def backward(ctx, d_outputs):
        n_layers, additive = ctx.n_layers, ctx.additive
        inputs, acts, c_prev, tanh_cs, concat, alphas, outputs, keys, values, w_c_t, drop, *rest = ctx.saved_tensors
        weights, extra = rest[:n_layers], rest[n_layers:]
        if additive:
            u_all, w_q_t, v_c = extra
        dtype, (steps, batch, dim), key_dim = keys.dtype, outputs.shape, values.size(2)
        f32 = dict(dtype=outputs.dtype, device=outputs.device)
        dh, dc = torch.zeros(n_layers, batch, dim, **f32), torch.zeros(n_layers, batch, dim, **f32)
        d_feed = torch.zeros(batch, dim, **f32)
        d_z = torch.empty_like(acts)
        d_pre = torch.empty(steps, batch, dim, **f32)  # ∂/∂(W_c [c_t ; h_t])
        d_ctx, d_scores = torch.empty(steps, batch, key_dim, **f32), torch.empty_like(alphas)
        if additive:
            d_keys, d_q = torch.zeros(keys.shape, **f32), torch.empty(steps, batch, u_all.size(3), **f32)
        w_c_c, w_back = w_c_t.t(), [w.t() for w in weights]
        for t in range(steps - 1, -1, -1):
            d_pre[t] = (d_outputs[t].to(outputs.dtype) + d_feed) * (1 - outputs[t] * outputs[t])
            d_concat = (d_pre[t].to(dtype) @ w_c_c).to(outputs.dtype)  # (B, K + D)
            d_ctx[t], d_top = d_concat[:, :key_dim], d_concat[:, key_dim:]
            alpha = alphas[t]
            d_alpha = torch.bmm(values, d_ctx[t].to(dtype).unsqueeze(2)).squeeze(2).to(outputs.dtype)  # (B, S)
            d_scores[t] = alpha * (d_alpha - (alpha * d_alpha).sum(-1, keepdim=True))  # softmax backward
            if additive:
                # scores = v · u, u = tanh(keys + q): the gradient at tanh's input, (B, S, A)
                d_in = torch.ops.aten.tanh_backward(d_scores[t].to(dtype).unsqueeze(2) * v_c, u_all[t])
                d_keys += d_in
                d_q[t] = d_in.sum(1)
                d_top = d_top + (d_q[t].to(dtype) @ w_q_t.t()).to(outputs.dtype)
            else:
                d_top = d_top + torch.bmm(d_scores[t].to(dtype).unsqueeze(1), keys).squeeze(1).to(outputs.dtype)
            dh[-1] += d_top
            for layer in range(n_layers - 1, -1, -1):
                d_z[layer, t], dc[layer] = _cell_backward(dh[layer], dc[layer], acts[layer, t], tanh_cs[layer, t],
                                                          c_prev[layer, t])
                d_inp = (d_z[layer, t].to(dtype) @ w_back[layer]).to(outputs.dtype)  # (B, 2D)
                dh[layer] = d_inp[:, dim:]
                if layer > 0:
                    dh[layer - 1] += d_inp[:, :dim] * drop[layer - 1, t]
                else:
                    d_feed = d_inp[:, :dim]
        grads = _deferred_grads(inputs, concat, alphas, d_z, d_pre, d_ctx)
        if additive:
            grads.update(_additive_grads(u_all, d_q, d_scores, concat[:, :, key_dim:]), d_keys=d_keys)
        else:  # scores = h_t · keys: δkeys = Σ_t δe_tᵀ h_t, batched over sentences
            top = concat[:, :, key_dim:].transpose(0, 1)  # (B, T, D)
            grads["d_keys"] = torch.bmm(d_scores.permute(1, 2, 0).to(dtype), top).to(outputs.dtype)
        gx_dtype, h0_dtype, c0_dtype, keys_dtype, values_dtype, w_dtype = ctx.dtypes
        cast = lambda name, dt: None if grads.get(name) is None else grads[name].to(dt)  # noqa: E731
        return (None, None, d_z[0].to(gx_dtype), dh.to(h0_dtype), dc.to(c0_dtype), cast("d_keys", keys_dtype),
                cast("d_values", values_dtype), None, None, cast("d_w_c", w_dtype), cast("d_w_q", w_dtype),
                cast("d_b_q", w_dtype), cast("d_v", w_dtype), *[w.to(w_dtype) for w in grads["d_weights"]],
                *[b.to(w_dtype) for b in grads["d_biases"]])


def _flat(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(-1, t.size(-1))  # (T, B, X) → (T·B, X)


def _deferred_grads(inputs, concat, alphas, d_z, d_pre, d_ctx) -> dict:
    """The gradients left for after the loop: each weight's, summed over all steps, as one matmul."""
    dtype = concat.dtype
    dz_c = d_z.to(dtype)
    return {
        "d_weights": [_flat(dz_c[layer]).t() @ _flat(inputs[layer]) for layer in range(d_z.size(0))],  # (4D, 2D)
        "d_biases": [d_z[layer].sum((0, 1)) for layer in range(1, d_z.size(0))],
        "d_w_c": _flat(d_pre.to(dtype)).t() @ _flat(concat),  # (D, K + D)
        # δvalues = Σ_t α_tᵀ δc_t, batched over sentences: (B, S, T) @ (B, T, K)
        "d_values": torch.bmm(alphas.permute(1, 2, 0).to(dtype), d_ctx.to(dtype).transpose(0, 1)),
    }


def _additive_grads(u_all, d_q, d_scores, top) -> dict:
    """W_q, b_q and v of the additive score, from all steps at once."""
    dtype = u_all.dtype
    return {
        "d_w_q": _flat(d_q.to(dtype)).t() @ _flat(top),  # (A, D)
        "d_b_q": d_q.sum((0, 1)),
        "d_v": d_scores.reshape(1, -1).to(dtype) @ u_all.reshape(-1, u_all.size(-1)),  # (1, A)
    }


def attention_decoder(rnn: nn.LSTM, attention: AdditiveAttention | MultiplicativeAttention, combine: nn.Linear,
                      x: torch.Tensor, h0: torch.Tensor, c0: torch.Tensor, keys: torch.Tensor, values: torch.Tensor,
                      mask: torch.Tensor, training: bool) -> torch.Tensor:
    """Teacher forcing through ``Decoder.step_embedded`` for every position, one fused call:
    x (B, T, E) embedded targets, h0 / c0 (L, B, D), keys (B, S, A), values (B, S, K), mask (B, S)
    → attentional vectors ã (B, T, D). Same parameters as the plain path."""
    layers, dim, emb = rnn.num_layers, rnn.hidden_size, x.size(2)
    dtype = compute_dtype(rnn.weight_ih_l0)
    w_ih0 = rnn.weight_ih_l0
    gates_x = torch.addmm((rnn.bias_ih_l0 + rnn.bias_hh_l0).to(dtype), x.transpose(0, 1).reshape(-1, emb).to(dtype),
                          w_ih0[:, :emb].to(dtype).t()).view(x.size(1), x.size(0), -1)  # (T, B, 4D)
    weights = [torch.cat([w_ih0[:, emb:], rnn.weight_hh_l0], dim=1)]
    weights += [torch.cat([getattr(rnn, f"weight_ih_l{k}"), getattr(rnn, f"weight_hh_l{k}")], dim=1)
                for k in range(1, layers)]
    biases = [getattr(rnn, f"bias_ih_l{k}") + getattr(rnn, f"bias_hh_l{k}") for k in range(1, layers)]
    keep = 1.0 - rnn.dropout
    drop_shape = (layers - 1, x.size(1), x.size(0), dim)
    if training and rnn.dropout > 0 and layers > 1:  # between layers, as the plain path
        drop = keep_mask(torch.Size(drop_shape), keep, x.device).to(x.dtype).mul_(1.0 / keep)
    else:
        drop = x.new_ones(drop_shape)
    query = (attention.query_proj.weight, attention.query_proj.bias, attention.v.weight) \
        if isinstance(attention, AdditiveAttention) else (None, None, None)
    with torch.autocast(x.device.type, enabled=False):
        out = _AttentionDecoder.apply(dtype, layers, gates_x, h0, c0, keys, values, mask, drop, combine.weight,
                                      *query, *weights, *biases)
    return out.transpose(0, 1)  # (B, T, D)
