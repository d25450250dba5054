"""The LSTM fast path (nmt.recurrence) against the plain autograd path and finite differences."""

import pytest
import torch

from conftest import small_model, tiny_loss_curve
from nmt.recurrence import _AttentionDecoder, _BiLSTM

SRC = torch.tensor([[5, 6, 7, 8, 3, 0], [9, 4, 3, 0, 0, 0], [4, 5, 6, 7, 8, 3], [4, 3, 0, 0, 0, 0]])
LENGTHS = torch.tensor([5, 3, 6, 2])  # unsorted on purpose: the fast path sorts and unsorts
TGT_IN = torch.tensor([[2, 4, 5, 6, 7], [2, 7, 8, 0, 0], [2, 9, 9, 9, 4], [2, 5, 0, 0, 0]])


def _graph(tensor: torch.Tensor) -> set[str]:
    """Names of the autograd nodes behind ``tensor``: which path really ran. The node objects are
    kept in ``seen``, not only their ids: a freed object's id can be handed to the next node, which
    then looks visited (under torch 2.11 the walk by id alone missed the encoder's nodes)."""
    seen, todo = {}, [tensor.grad_fn]
    while todo:
        node = todo.pop()
        if node is not None and id(node) not in seen:
            seen[id(node)] = node
            todo.extend(next_node for next_node, _ in node.next_functions)
    return {node.name() for node in seen.values()}


def _features_and_grads(model, fused: bool):
    model.zero_grad()
    out = model.features(SRC, LENGTHS, TGT_IN, fused=fused)
    _features_and_grads.graph = _graph(out)
    weights = torch.randn(out.shape, generator=torch.Generator().manual_seed(3), dtype=out.dtype)
    (out * weights).sum().backward()
    return out.detach(), {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("attention", ["bahdanau", "luong"])
@pytest.mark.parametrize("layers", [1, 2, 3])
def test_fast_path_gives_the_plain_paths_outputs_and_every_gradient(attention, layers):
    """Same weights, same maths: in fp64 the two paths agree to rounding, for every parameter."""
    model = small_model("lstm", attention, True, vocab=11, layers=layers).double().train()
    plain, plain_grads = _features_and_grads(model, fused=False)
    fused, fused_grads = _features_and_grads(model, fused=True)
    assert {"_BiLSTMBackward", "_AttentionDecoderBackward"} <= _features_and_grads.graph
    torch.testing.assert_close(fused, plain, rtol=1e-10, atol=1e-12)
    assert fused_grads.keys() == plain_grads.keys()
    for name, grad in plain_grads.items():
        torch.testing.assert_close(fused_grads[name], grad, rtol=1e-9, atol=1e-12, msg=name)
    assert all(grad.abs().sum() > 0 for grad in fused_grads.values())  # every weight really learns


@pytest.mark.parametrize("cell,feeding", [("gru", True), ("lstm", False)])
def test_models_the_fast_path_does_not_cover_fall_back_to_the_plain_one(cell, feeding):
    model = small_model(cell, "bahdanau", feeding, vocab=11, layers=2).double().train()
    plain, plain_grads = _features_and_grads(model, fused=False)
    fused, fused_grads = _features_and_grads(model, fused=True)
    torch.testing.assert_close(fused, plain, rtol=1e-10, atol=1e-12)
    for name, grad in plain_grads.items():
        torch.testing.assert_close(fused_grads[name], grad, rtol=1e-9, atol=1e-12, msg=name)


def test_bidirectional_layer_backward_matches_finite_differences():
    """Ragged lengths: each direction's state must start, stop and carry exactly at a sentence's
    own first and last token, in the gradient too."""
    g = torch.Generator().manual_seed(0)
    steps, lengths = 4, torch.tensor([4, 2, 3])
    real = torch.arange(steps).unsqueeze(1) < lengths.unsqueeze(0)  # (S, B)
    active = torch.stack([real, real.flip(0)], dim=1).unsqueeze(-1)  # step order, as bilstm builds it
    x = torch.randn(steps, 3, 4, generator=g, dtype=torch.float64, requires_grad=True)
    w_ih, w_hh, bias = (torch.randn(*shape, generator=g, dtype=torch.float64, requires_grad=True)
                        for shape in ((2, 12, 4), (2, 12, 3), (2, 12)))

    def layer(x, w_ih, w_hh, bias):
        return _BiLSTM.apply(x, active, w_ih, w_hh, bias, torch.float64)

    assert torch.autograd.gradcheck(layer, (x, w_ih, w_hh, bias), fast_mode=True)


@pytest.mark.parametrize("attention", ["bahdanau", "luong"])
def test_decoder_backward_matches_finite_differences_with_dropout_between_layers(attention):
    g = torch.Generator().manual_seed(1)
    steps, batch, dim, src_len, key_dim, layers = 3, 2, 3, 4, 5, 2
    attn_dim = 4 if attention == "bahdanau" else dim
    rand = lambda *shape: torch.randn(*shape, generator=g, dtype=torch.float64, requires_grad=True)  # noqa: E731
    gates_x, h0, c0 = rand(steps, batch, 4 * dim), rand(layers, batch, dim), rand(layers, batch, dim)
    keys, values = rand(batch, src_len, attn_dim), rand(batch, src_len, key_dim)
    mask = torch.tensor([[True] * 4, [True, True, False, False]])
    drop = (torch.rand(layers - 1, steps, batch, dim, generator=g) > 0.3).double() / 0.7  # a fixed mask
    w_c = rand(dim, key_dim + dim)
    query = (rand(attn_dim, dim), rand(attn_dim), rand(1, attn_dim)) if attention == "bahdanau" else (None,) * 3
    weights, biases = [rand(4 * dim, 2 * dim) for _ in range(layers)], [rand(4 * dim) for _ in range(layers - 1)]
    inputs = (gates_x, h0, c0, keys, values, w_c, *[q for q in query if q is not None], *weights, *biases)

    def decoder(gates_x, h0, c0, keys, values, w_c, *rest):
        q = rest[:3] if attention == "bahdanau" else (None,) * 3
        params = rest[3:] if attention == "bahdanau" else rest
        return _AttentionDecoder.apply(torch.float64, layers, gates_x, h0, c0, keys, values, mask, drop, w_c,
                                       *q, *params)

    assert torch.autograd.gradcheck(decoder, inputs, fast_mode=True)


def test_fast_path_trains_like_the_plain_path(tmp_path):
    """Without dropout the two paths are the same optimisation: fp32 training losses of the tiny
    config agree to float rounding at every logged step."""
    curves = {fused: tiny_loss_curve(tmp_path / fused, f"train.fused_rnn={fused}", "train.precision=fp32",
                                     "model.dropout=0.0", "train.max_steps=40")
              for fused in ("true", "false")}
    assert len(curves["true"]) == 2 and curves["true"][-1] < curves["true"][0]
    for a, b in zip(curves["true"], curves["false"]):
        assert a == pytest.approx(b, rel=1e-4), curves


def test_bf16_fast_path_gradient_stays_close_to_fp64():
    """bf16 matmuls in the recurrences, states and gradients in fp32: the gradient of a batch
    stays as close to the exact one as the plain bf16 path's (measured on the default model at
    step 600: relative error 1.1-2.3 %, plain path 1.8-6.8 %)."""
    model = small_model("lstm", "bahdanau", True, vocab=11, layers=2).train()
    exact = small_model("lstm", "bahdanau", True, vocab=11, layers=2).double().train()

    def flat_grad(m, fused, bf16):
        m.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = m.features(SRC, LENGTHS, TGT_IN, fused=fused)
        weights = torch.randn(out.shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
        (out.double() * weights).sum().backward()
        return torch.cat([p.grad.flatten().double() for p in m.parameters() if p.grad is not None])

    reference = flat_grad(exact, False, False)
    errors = {fused: ((flat_grad(model, fused, True) - reference).norm() / reference.norm()).item()
              for fused in (False, True)}
    assert errors[True] < 0.03, errors
    assert errors[True] <= 1.5 * errors[False], errors
