"""The fused, chunked output-layer loss against the plain logits → F.cross_entropy path."""

import pytest
import torch
import torch.nn.functional as F

from nmt.loss import linear_cross_entropy


def _inputs(n=37, d=8, v=23, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(n, d, generator=g, dtype=dtype, requires_grad=True)
    weight = torch.randn(v, d, generator=g, dtype=dtype, requires_grad=True)
    bias = torch.randn(v, generator=g, dtype=dtype, requires_grad=True)
    target = torch.randint(0, v, (n,), generator=g)
    return hidden, weight, bias, target


def _grads(loss, *tensors):
    return torch.autograd.grad(loss, tensors)


@pytest.mark.parametrize("smoothing", [0.0, 0.1, 0.3])
@pytest.mark.parametrize("chunk", [1, 5, 37, 1000])
def test_loss_and_gradients_equal_cross_entropy_of_the_logits(smoothing, chunk):
    hidden, weight, bias, target = _inputs()
    plain = F.cross_entropy(F.linear(hidden, weight, bias), target, label_smoothing=smoothing, reduction="sum")
    fused = linear_cross_entropy(hidden, weight, bias, target, smoothing, chunk=chunk)
    torch.testing.assert_close(fused.double(), plain, rtol=1e-6, atol=1e-6)
    # Scaled like the trainer's loss / n_tokens, so the backward's scaling is exercised too.
    for a, b in zip(_grads(fused / 7, hidden, weight, bias), _grads(plain / 7, hidden, weight, bias)):
        torch.testing.assert_close(a.double(), b, rtol=1e-5, atol=1e-6)


def test_without_bias_and_with_a_weight_shared_by_an_embedding():
    hidden, weight, _, target = _inputs(seed=1)
    embedded = lambda: weight[target].pow(2).sum()  # noqa: E731  the tied embedding's own use of the weight
    plain = F.cross_entropy(hidden @ weight.t(), target, reduction="sum") + embedded()
    fused = linear_cross_entropy(hidden, weight, None, target, chunk=4) + embedded()
    for a, b in zip(_grads(fused, hidden, weight), _grads(plain, hidden, weight)):
        torch.testing.assert_close(a.double(), b, rtol=1e-5, atol=1e-6)


def test_without_gradients_only_the_loss_is_computed():
    hidden, weight, bias, target = _inputs(seed=2)
    with torch.no_grad():
        plain = F.cross_entropy(F.linear(hidden, weight, bias), target, label_smoothing=0.1, reduction="sum")
        fused = linear_cross_entropy(hidden, weight, bias, target, 0.1, chunk=8)
    assert not fused.requires_grad
    torch.testing.assert_close(fused.double(), plain, rtol=1e-6, atol=1e-6)


def test_bf16_activations_stay_close_to_fp32():
    hidden, weight, bias, target = _inputs(n=200, d=32, v=300, seed=3, dtype=torch.float32)
    plain = F.cross_entropy(F.linear(hidden, weight, bias), target, label_smoothing=0.1, reduction="sum")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        h16 = hidden.to(torch.bfloat16)
        fused = linear_cross_entropy(h16, weight, bias, target, 0.1, chunk=64)
    assert fused.dtype == torch.float32
    torch.testing.assert_close(fused, plain, rtol=2e-2, atol=0.0)
    (gw_fused,) = _grads(fused, weight)
    (gw_plain,) = _grads(plain, weight)
    assert gw_fused.dtype == torch.float32
    cos = F.cosine_similarity(gw_fused.flatten(), gw_plain.flatten(), dim=0)
    assert cos > 0.999


@pytest.mark.parametrize("grad", [True, False])
def test_every_chunk_has_the_same_shape_the_last_one_too(monkeypatch, grad):
    """oneDNN builds a kernel per new product shape (15-26 ms each on an AMX Xeon); a last chunk of
    n mod chunk rows would be a new shape at nearly every step. The loss and gradients stay exact
    (the test above, n = 37 with chunks of 5)."""
    import nmt.loss

    rows = []
    real = nmt.loss.linear
    monkeypatch.setattr(nmt.loss, "linear", lambda h, w, b: rows.append(h.size(0)) or real(h, w, b))
    hidden, weight, bias, target = _inputs(n=37)
    with torch.set_grad_enabled(grad):
        linear_cross_entropy(hidden, weight, bias, target, 0.1, chunk=8)
    assert rows == [8] * 5  # 37 rows: 0-8, 8-16, 16-24, 24-32, 29-37 (rows 29-31 counted once)
