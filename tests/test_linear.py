"""fp32 products through oneDNN (nmt.linear) compute what PyTorch's default path does."""

import pytest
import torch

import nmt.linear
from conftest import small_model
from nmt.errors import NmtError
from nmt.linear import linear, lstm_cell, onednn_fp32
from nmt.search import beam_search, greedy, max_lengths

needs_onednn = pytest.mark.skipif(not hasattr(torch.ops.mkldnn, "_linear_pointwise"), reason="no oneDNN linear")


@pytest.fixture
def backend(monkeypatch):
    """Choose the fp32 backend for one test: backend("onednn") / backend("mkl")."""
    def choose(name: str) -> None:
        monkeypatch.setenv(nmt.linear.ENV, name)
        onednn_fp32.cache_clear()

    yield choose
    onednn_fp32.cache_clear()  # the next test sees the environment's own choice again


@needs_onednn
def test_products_and_cell_equal_pytorchs(backend):
    backend("onednn")
    torch.manual_seed(0)
    x, w, b = torch.randn(5, 7, 24), torch.randn(40, 24), torch.randn(40)
    h, c = torch.randn(5, 10), torch.randn(5, 10)
    w_ih, w_hh, b_ih, b_hh = torch.randn(40, 24), torch.randn(40, 10), torch.randn(40), torch.randn(40)
    with torch.no_grad():
        torch.testing.assert_close(linear(x, w, b), torch.nn.functional.linear(x, w, b))
        torch.testing.assert_close(linear(x, w), x @ w.t())
        got = lstm_cell(x[:, 0], h, c, w_ih, w_hh, b_ih, b_hh)
        want = torch.lstm_cell(x[:, 0], (h, c), w_ih, w_hh, b_ih, b_hh)
    for g, want_t in zip(got, want):
        torch.testing.assert_close(g, want_t, atol=1e-5, rtol=1e-5)


@needs_onednn
def test_gradients_keep_the_differentiable_path(backend):
    """oneDNN's op has no backward: with gradients wanted, products stay on F.linear and learn."""
    backend("onednn")
    x, w = torch.randn(3, 4), torch.randn(2, 4, requires_grad=True)
    linear(x, w).sum().backward()
    torch.testing.assert_close(w.grad, x.sum(0).expand(2, 4))


@needs_onednn
@pytest.mark.parametrize("attention", ["bahdanau", "luong"])
def test_translations_do_not_depend_on_the_backend(backend, attention):
    model = small_model(attention=attention, vocab=11, seed=4, layers=2)
    g = torch.Generator().manual_seed(2)
    lengths = torch.tensor([6, 4, 5, 2, 6, 3])
    src = torch.randint(4, 11, (6, 6), generator=g) * (torch.arange(6) < lengths.unsqueeze(1))
    src[torch.arange(6), lengths - 1] = 3  # </s>
    limits = max_lengths(lengths, 2.0, 3)
    found = {}
    for name in ("mkl", "onednn"):
        backend(name)
        hyps = greedy(model, src, lengths, limits) + [b[0] for b in beam_search(model, src, lengths, limits, 3, 0.6)]
        found[name] = hyps
    assert [h.tokens for h in found["onednn"]] == [h.tokens for h in found["mkl"]]
    for got, want in zip(found["onednn"], found["mkl"]):
        assert got.log_prob == pytest.approx(want.log_prob, abs=1e-4)


def test_choice(backend, monkeypatch):
    backend("mkl")
    assert not onednn_fp32()
    backend("auto")
    monkeypatch.setattr(nmt.linear, "_cpu_vendor", lambda: "GenuineIntel")
    assert not onednn_fp32()  # MKL is fast on Intel CPUs
    backend("fast")
    with pytest.raises(NmtError, match="NMT_FP32_MATMUL must be auto, onednn or mkl"):
        onednn_fp32()
