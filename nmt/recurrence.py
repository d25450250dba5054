"""LSTM recurrences with a hand-written backward pass: the training fast path.

Why: autograd through an LSTM on CPU records every op of every time step, and its backward then
computes each weight gradient one step at a time (a thin matmul plus a weight-sized add, per step
and per weight). Worse, ``nn.LSTM`` on packed input and ``torch.lstm_cell`` ignore bf16 autocast,
so the recurrences — about two thirds of a step's FLOPs — ran in fp32. Here the forward keeps what
the backward needs; the backward runs the recurrence in reverse with one small matmul per step and
layer, and every weight gradient is ONE matmul over all steps (Σ_t δz_tᵀ x_t = δZᵀ X). Matmuls run
in the compute dtype (bf16 under autocast), gates, cell states and their gradients in fp32.
Same maths as the plain path (tested against it, and against finite differences in fp64).

Two recurrences: the bidirectional encoder layer (``bilstm``: both directions advance together,
so one batched matmul and one set of pointwise ops per step serve both), and the decoder with
attention and input feeding (``attention_decoder``: all T steps of ``Decoder.step_embedded``).

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

from nmt.activations import lstm_pointwise, tanh_
from nmt.attention import AdditiveAttention, MultiplicativeAttention
from nmt.dropout import dropout, keep_mask
from nmt.linear import mm


def compute_dtype(reference: torch.Tensor) -> torch.dtype:
    """The dtype matmuls run in: autocast's where it is on (bf16), else the parameters'."""
    device = reference.device.type
    return torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else reference.dtype


def accumulate_dtype(dtype: torch.dtype) -> torch.dtype:
    """Gates, cell states and gradients: fp32 for bf16 / fp16 matmuls, else the matmuls' own dtype."""
    return torch.promote_types(dtype, torch.float32)


_SIGMOID_BACKWARD = torch.ops.aten.sigmoid_backward.grad_input  # δ ⊙ s(1 - s), written in place
_TANH_BACKWARD = torch.ops.aten.tanh_backward.grad_input  # δ ⊙ (1 - t²)


def _cell_backward(dh, dc, acts, tanh_c, c_prev, d_z) -> torch.Tensor:
    """δh, δc (…, H) at one step → δz written into d_z (…, 4H); returns δc_{t-1} (…, H)."""
    hid = c_prev.size(-1)
    i, f, g, o = acts.chunk(4, dim=-1)
    dc = dc + torch.ops.aten.tanh_backward(dh * o, tanh_c)
    torch.mul(dc, g, out=d_z[..., :hid])
    torch.mul(dc, c_prev, out=d_z[..., hid : 2 * hid])
    torch.mul(dc, i, out=d_z[..., 2 * hid : 3 * hid])
    torch.mul(dh, tanh_c, out=d_z[..., 3 * hid :])
    for gate, fn in ((slice(0, 2 * hid), _SIGMOID_BACKWARD), (slice(2 * hid, 3 * hid), _TANH_BACKWARD),
                     (slice(3 * hid, 4 * hid), _SIGMOID_BACKWARD)):
        fn(d_z[..., gate], acts[..., gate], grad_input=d_z[..., gate])
    return dc * f


# -- encoder: one bidirectional layer, both directions in lockstep --------------------------------
class _BiLSTM(torch.autograd.Function):
    """One bidirectional LSTM layer over a padded, time-major batch x (S, B, I).

    At step k the forward direction reads position k and the backward direction position S-1-k,
    as one (2, B, ·) batch: one batched matmul and one set of pointwise ops per step for both.
    A sentence's state changes only where ``active`` (S, 2, B, 1) is set — its real positions, in
    step order — so the forward direction keeps its final state past the last token and the
    backward one stays at zero until it reaches the last token: packed-sequence semantics, exactly.
    Returns the outputs (S, 2, B, H) in step order (zero at padding) and the final h, c (2, B, H)."""

    @staticmethod
    def forward(ctx, x, active, w_ih, w_hh, bias, dtype: torch.dtype):
        steps, batch, hid = x.size(0), x.size(1), w_hh.size(2)
        acc = accumulate_dtype(dtype)
        xc, w_ih_c, w_hh_t = x.to(dtype).contiguous(), w_ih.to(dtype), w_hh.to(dtype).transpose(1, 2)  # (2, H, 4H)
        gx = mm(xc.view(steps * batch, -1), w_ih_c.view(8 * hid, -1).t(), bias.to(dtype).view(-1))
        gx = gx.view(steps, batch, 2, 4 * hid)  # W_x x_t + b of both directions, every position at once
        gates_x = torch.stack([gx[:, :, 0], gx[:, :, 1].flip(0)], dim=1)  # (S, 2, B, 4H), step order
        states = xc.new_zeros(steps + 1, 2, batch, hid)  # h before step k at slot k
        cells = x.new_zeros(steps + 1, 2, batch, hid, dtype=acc)  # c before step k at slot k
        acts = x.new_empty(steps, 2, batch, 4 * hid, dtype=acc)
        tanh_cs, h_new = torch.empty_like(cells[1:]), xc.new_empty(steps, 2, batch, hid)
        c_new = torch.empty_like(cells[0])
        for k in range(steps):
            z = torch.baddbmm(gates_x[k], states[k], w_hh_t).to(acc)  # (2, B, 4H)
            lstm_pointwise(z, cells[k], acts[k], c_new, tanh_cs[k], h_new[k])
            torch.where(active[k], c_new, cells[k], out=cells[k + 1])
            torch.where(active[k], h_new[k], states[k], out=states[k + 1])
        ctx.save_for_backward(xc, active, w_ih_c, w_hh_t, states, cells, acts, tanh_cs)
        ctx.dtypes = (x.dtype, w_ih.dtype)
        return h_new * active, states[steps].to(acc), cells[steps].clone()

    @staticmethod
    def backward(ctx, d_out, d_h_n, d_c_n):
        xc, active, w_ih_c, w_hh_t, states, cells, acts, tanh_cs = ctx.saved_tensors
        acc, steps = acts.dtype, acts.size(0)
        dh, dc = d_h_n.to(acc, copy=True), d_c_n.to(acc, copy=True)  # δ of the state after step k
        d_z, d_out, w_hh_c = torch.empty_like(acts), d_out.to(acc), w_hh_t.transpose(1, 2)
        for k in range(steps - 1, -1, -1):
            m = active[k]  # state_{k+1} = where(m, h_new, state_k); out_k = m ⊙ h_new
            dc_prev = _cell_backward((dh + d_out[k]) * m, dc * m, acts[k], tanh_cs[k], cells[k], d_z[k])
            dh = torch.where(m, torch.bmm(d_z[k].to(w_hh_c.dtype), w_hh_c), dh)  # (2, B, H)
            dc = torch.where(m, dc_prev, dc)
        # Back to the layout of the input projection, then every weight gradient in one matmul.
        d_gx = torch.stack([d_z[:, 0], d_z[:, 1].flip(0)], dim=2)  # (S, B, 2, 4H)
        d_bias = d_gx.sum((0, 1)).view(2, -1)
        d_gx = d_gx.view(-1, d_gx.size(2) * d_gx.size(3)).to(xc.dtype)  # (S·B, 8H)
        x_flat = xc.view(d_gx.size(0), -1)
        d_x = mm(d_gx, w_ih_c.view(d_gx.size(1), -1)).view_as(xc)
        d_w_ih = mm(d_gx.t(), x_flat).view_as(w_ih_c)
        by_direction = lambda t: t.transpose(0, 1).reshape(2, -1, t.size(-1))  # noqa: E731  (2, S·B, ·)
        d_w_hh = torch.bmm(by_direction(d_z.to(xc.dtype)).transpose(1, 2), by_direction(states[:steps]))
        x_dtype, w_dtype = ctx.dtypes
        return d_x.to(x_dtype), None, d_w_ih.to(w_dtype), d_w_hh.to(w_dtype), d_bias.to(w_dtype), None


def bilstm(rnn: nn.LSTM, x: torch.Tensor, lengths: torch.Tensor, training: bool):
    """``rnn(pack_padded_sequence(x, lengths))`` for a bidirectional batch-first nn.LSTM, with its
    own weights: x (B, S, E) → outputs (B, S, 2H) (zeros on padding), (h_n, c_n) each (2L, B, H)."""
    steps, dtype = x.size(1), compute_dtype(rnn.weight_ih_l0)
    real = torch.arange(steps, device=x.device).unsqueeze(1) < lengths.to(x.device).unsqueeze(0)  # (S, B)
    active = torch.stack([real, real.flip(0)], dim=1).unsqueeze(-1)  # (S, 2, B, 1), step order
    data, finals_h, finals_c = x.transpose(0, 1), [], []  # (S, B, E)
    with torch.autocast(x.device.type, enabled=False):
        for layer in range(rnn.num_layers):
            if layer > 0:
                data = dropout(data, rnn.dropout, training)
            w = {name: [getattr(rnn, f"{name}_l{layer}{suffix}") for suffix in ("", "_reverse")]
                 for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")}
            bias = torch.stack(w["bias_ih"]) + torch.stack(w["bias_hh"])
            out, h_n, c_n = _BiLSTM.apply(data, active, torch.stack(w["weight_ih"]), torch.stack(w["weight_hh"]),
                                          bias, dtype)
            data = torch.cat([out[:, 0], out[:, 1].flip(0)], dim=-1)  # (S, B, 2H), time order
            finals_h.append(h_n)
            finals_c.append(c_n)
    return data.transpose(0, 1), (torch.cat(finals_h), torch.cat(finals_c))


# -- decoder: teacher-forced LSTM layers with attention and input feeding ------------------------
class _AttentionDecoder(torch.autograd.Function):
    """All T steps of the input-feeding decoder (``Decoder.step_embedded`` T times), one call.

    Layer 0's input is [E y_{t-1} ; ã_{t-1}]: its embedding part ``gates_x`` (T, B, 4D) is computed
    for every step before the call; ``weights[l]`` is [W_x | W_h] of layer l, applied to
    [ã_{t-1} or drop(h^{l-1}_t) ; h^l_{t-1}]. Attention (additive: ``query`` = (W_q, b_q, v); or
    multiplicative: ``query`` = None) reads keys (B, S, A) and values (B, S, K), then
    ã_t = tanh(W_c [c_t ; h_t]). Returns ã (T, B, D) in the compute dtype.

    Notation: an LSTM's state is h here, as in the cell above, so h^l_t is the decoder's layer l
    and h_t its top layer: the s_t of ``nmt.model`` and the README. The encoder's outputs stay
    h_j (the values; keys W_k h_j). e_tj is the score of source position j at step t (v · u_tj,
    u_tj = tanh(W_q h_t + b_q + W_k h_j), additive; h_t · W_k h_j, multiplicative), α_t its softmax,
    and δx the loss's gradient with respect to x.
    """

    @staticmethod
    def forward(ctx, dtype, n_layers, gates_x, h0, c0, keys, values, mask, drop, w_c, w_q, b_q, v, *layer_params):
        steps, batch, dim, key_dim = gates_x.size(0), gates_x.size(1), h0.size(2), values.size(2)
        acc = accumulate_dtype(dtype)
        ctx.dtypes = (gates_x.dtype, h0.dtype, c0.dtype, keys.dtype, values.dtype, w_c.dtype)  # of the gradients
        weights = [w.to(dtype).t() for w in layer_params[:n_layers]]  # (2D, 4D) each
        biases = [b.to(dtype) for b in layer_params[n_layers:]]  # layers 1 … L-1
        new = lambda *shape, dt=acc: gates_x.new_empty(*shape, dtype=dt)  # noqa: E731
        # contiguous once: the encoder's outputs are a (B, S, K) view of time-major memory, and every
        # step's bmm with them (forward, and backward's δα) would otherwise copy them first
        values, w_c_t = values.to(dtype).contiguous(), w_c.to(dtype).t()
        additive = w_q is not None
        if additive:  # the additive score in fp32: tanh of bf16 runs several times slower on CPU
            keys, w_q_t, b_q_c, v_a = keys.to(acc), w_q.to(dtype).t(), b_q.to(dtype), v.to(acc).view(-1)
            queries = new(steps, batch, w_q.size(0))  # W_q h_t + b_q: u_tj is recomputed from it in backward
        else:
            keys = keys.to(dtype)
        # inputs[l, t] = [ã_{t-1} or drop(h^{l-1}_t) ; h^l_{t-1}], layer l's matmul input at step t.
        # Step t writes h^l_t straight into slot t + 1 (and c^l_t into cells[l, t + 1]): no state copies.
        inputs, cells = new(n_layers, steps + 1, batch, 2 * dim, dt=dtype), new(n_layers, steps + 1, batch, dim)
        acts, tanh_cs = new(n_layers, steps, batch, 4 * dim), new(n_layers, steps, batch, dim)
        concat = new(steps, batch, key_dim + dim, dt=dtype)  # [c_t ; h_t], W_c's input
        alphas, outputs = new(steps, batch, keys.size(1)), new(steps, batch, dim)
        inputs[:, 0, :, dim:], cells[:, 0], inputs[0, 0, :, :dim] = h0, c0, 0.0  # no ã before step 0
        padding = ~mask
        for t in range(steps):
            for layer in range(n_layers):
                base = gates_x[t] if layer == 0 else biases[layer - 1]
                z = mm(inputs[layer, t], weights[layer], base).to(acc)
                h_t = inputs[layer, t + 1, :, dim:]
                lstm_pointwise(z, cells[layer, t], acts[layer, t], cells[layer, t + 1], tanh_cs[layer, t], h_t)
                if layer + 1 < n_layers:
                    torch.mul(h_t, drop[layer, t], out=inputs[layer + 1, t, :, :dim])
            top = inputs[-1, t + 1, :, dim:]  # (B, D)
            if additive:
                queries[t] = mm(top, w_q_t, b_q_c)  # (B, A)
                scores = _additive_hidden(keys, queries[t]) @ v_a  # (B, S): v · u_tj
            else:
                scores = _scores(top, keys).to(acc)  # (B, S): h_t · W_k h_j
            alphas[t] = torch.softmax(scores.masked_fill_(padding, float("-inf")), dim=-1)
            concat[t, :, :key_dim] = torch.bmm(alphas[t].to(dtype).unsqueeze(1), values).squeeze(1)  # c_t
            concat[t, :, key_dim:] = top
            tanh_(outputs[t].copy_(mm(concat[t], w_c_t)))  # ã_t, in place in its (acc-dtype) slot
            inputs[0, t + 1, :, :dim] = outputs[t]  # input feeding
        saved = [inputs, cells, acts, tanh_cs, concat, alphas, outputs, keys, values, w_c_t, drop, *weights]
        saved += [queries, w_q_t, v_a] if additive else []
        ctx.save_for_backward(*saved)
        ctx.n_layers, ctx.additive = n_layers, additive
        return outputs.to(dtype)

    @staticmethod
    def backward(ctx, d_outputs):
        n_layers, additive = ctx.n_layers, ctx.additive
        inputs, cells, acts, tanh_cs, concat, alphas, outputs, keys, values, w_c_t, drop, *rest = ctx.saved_tensors
        weights, extra = rest[:n_layers], rest[n_layers:]
        if additive:
            queries, w_q_t, v_a = extra
        (steps, batch, dim), key_dim = outputs.shape, values.size(2)
        dtype, acc = values.dtype, outputs.dtype
        new = lambda *shape: outputs.new_empty(*shape)  # noqa: E731
        dh, dc, d_feed = outputs.new_zeros(n_layers, batch, dim), outputs.new_zeros(n_layers, batch, dim), 0.0
        d_z, d_pre = torch.empty_like(acts), new(steps, batch, dim)  # d_pre: ∂/∂(W_c [c_t ; h_t])
        d_ctx, d_scores = new(steps, batch, key_dim), torch.empty_like(alphas)
        if additive:
            d_keys, d_q, d_v = torch.zeros_like(keys), torch.empty_like(queries), v_a.new_zeros(1, v_a.size(0))
        w_c_c, w_back = w_c_t.t(), [w.t() for w in weights]
        for t in range(steps - 1, -1, -1):
            _TANH_BACKWARD(d_outputs[t].to(acc) + d_feed, outputs[t], grad_input=d_pre[t])
            d_concat = mm(d_pre[t].to(dtype), w_c_c).to(acc)  # (B, K + D)
            d_ctx[t], d_top = d_concat[:, :key_dim], d_concat[:, key_dim:]
            d_alpha = _scores(d_ctx[t].to(dtype), values).to(acc)  # (B, S): δc_t · h_j
            d_scores[t] = torch.ops.aten._softmax_backward_data(d_alpha, alphas[t], -1, acc)
            if additive:  # scores = v · u, u = tanh(keys + q): the gradient at tanh's input, (B, S, A)
                u = _additive_hidden(keys, queries[t])
                d_v.addmm_(d_scores[t].view(1, -1), u.view(-1, u.size(2)))  # δv = Σ δe_tj u_tj
                d_in = torch.ops.aten.tanh_backward(d_scores[t].unsqueeze(2) * v_a, u)
                d_keys += d_in
                d_q[t] = d_in.sum(1)
                d_top += mm(d_q[t].to(dtype), w_q_t.t()).to(acc)
            else:
                d_top += torch.bmm(d_scores[t].to(dtype).unsqueeze(1), keys).squeeze(1).to(acc)
            dh[-1] += d_top
            for layer in range(n_layers - 1, -1, -1):
                dc[layer] = _cell_backward(dh[layer], dc[layer], acts[layer, t], tanh_cs[layer, t], cells[layer, t],
                                           d_z[layer, t])
                d_inp = mm(d_z[layer, t].to(dtype), w_back[layer]).to(acc)  # (B, 2D)
                dh[layer] = d_inp[:, dim:]
                if layer > 0:
                    dh[layer - 1].addcmul_(d_inp[:, :dim], drop[layer - 1, t])
                else:
                    d_feed = d_inp[:, :dim]
        grads = _deferred_grads(inputs[:, :steps], concat, alphas, d_z, d_pre, d_ctx)
        if additive:
            top = concat[:, :, key_dim:]
            grads.update(d_keys=d_keys, d_v=d_v, d_b_q=d_q.sum((0, 1)), d_w_q=mm(_flat(d_q.to(dtype)).t(), _flat(top)))
        else:  # scores = h_t · keys: δkeys = Σ_t δe_tᵀ h_t, batched over sentences
            top = concat[:, :, key_dim:].transpose(0, 1)  # (B, T, D)
            grads["d_keys"] = torch.bmm(d_scores.permute(1, 2, 0).to(dtype), top)
        gx_dtype, h0_dtype, c0_dtype, keys_dtype, values_dtype, w_dtype = ctx.dtypes
        cast = lambda name, dt: None if grads.get(name) is None else grads[name].to(dt)  # noqa: E731
        return (None, None, d_z[0].to(gx_dtype), dh.to(h0_dtype), dc.to(c0_dtype), cast("d_keys", keys_dtype),
                cast("d_values", values_dtype), None, None, cast("d_w_c", w_dtype), cast("d_w_q", w_dtype),
                cast("d_b_q", w_dtype), cast("d_v", w_dtype), *[w.to(w_dtype) for w in grads["d_weights"]],
                *[b.to(w_dtype) for b in grads["d_biases"]])


def _scores(query: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """query (B, K), keys (B, S, K) → (B, S): query_b · keys_bj. On CPU in fp32 as (1, K) @ (K, S)
    per sentence: PyTorch's bmm ran the same product as keys @ query, (S, K) @ (K, 1), 8-11x slower
    there (452-940 against 56-85 µs for 85 sentences × 38 positions × 256-512, Zen 4 VM); a fp32
    training step 1.05x (default) and 1.09x (Luong). In bf16 a step was 0.91-0.94x as fast with
    that form, so bf16 (and other devices) keep keys @ query (benchmarks/README.md, "Levers")."""
    if keys.dtype == torch.float32 and keys.device.type == "cpu":
        return torch.bmm(query.unsqueeze(1), keys.transpose(1, 2)).squeeze(1)
    return torch.bmm(keys, query.unsqueeze(2)).squeeze(2)


def _flat(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(-1, t.size(-1))  # (T, B, X) → (T·B, X)


def _deferred_grads(inputs, concat, alphas, d_z, d_pre, d_ctx) -> dict:
    """The gradients left for after the loop: each weight's, summed over all steps, as one matmul."""
    dtype = concat.dtype
    dz_c = d_z.to(dtype)
    return {
        "d_weights": [mm(_flat(dz_c[layer]).t(), _flat(inputs[layer])) for layer in range(d_z.size(0))],  # (4D, 2D)
        "d_biases": [d_z[layer].sum((0, 1)) for layer in range(1, d_z.size(0))],
        "d_w_c": mm(_flat(d_pre.to(dtype)).t(), _flat(concat)),  # (D, K + D)
        # δvalues = Σ_t α_tᵀ δc_t, batched over sentences: (B, S, T) @ (B, T, K)
        "d_values": torch.bmm(alphas.permute(1, 2, 0).to(dtype), d_ctx.to(dtype).transpose(0, 1)),
    }


def _additive_hidden(keys: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
    """u_j = tanh(W_k h_j + W_q s + b_q) for one step: keys (B, S, A), query (B, A) → (B, S, A)."""
    return tanh_(torch.add(keys, query.unsqueeze(1)))


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
