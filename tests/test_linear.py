"""Products through oneDNN (nmt.linear), fp32 and bf16 from packed weights, compute what PyTorch's default path does."""

import os
import platform
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import nmt.linear
from conftest import saved_tiny_model, small_model
from nmt.beam import beam_search
from nmt.errors import NmtError
from nmt.hardware import onednn_bf16
from nmt.linear import _packed_linear as packed_linear
from nmt.linear import bf16_products, linear, lstm_cell, mm, onednn_fp32
from nmt.loss import linear_cross_entropy
from nmt.search import greedy, max_lengths
from nmt.translate import Translator

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


@needs_onednn
@pytest.mark.parametrize("attention", ["bahdanau", "luong"])
def test_decoding_never_gives_onednn_a_weight_it_multiplies_by_its_slow_reference_kernel(backend, monkeypatch,
                                                                                           attention):
    """oneDNN multiplies by a view of some of a matrix's columns (W_c's blocks) with its reference
    kernel, 1,000x slower: fp32 decoding on AMD CPUs ran 7x slower than bf16. Such a view goes to
    MKL; every weight oneDNN gets is laid out whole (in one order or the other)."""
    backend("onednn")
    model = small_model(attention=attention, vocab=11, seed=4, layers=2)
    src, lengths = torch.tensor([[5, 6, 7, 3], [8, 9, 3, 0]]), torch.tensor([4, 3])
    given, chosen = [], nmt.linear._onednn
    monkeypatch.setattr(nmt.linear, "_onednn", lambda x, w: chosen(x, w) and not given.append(w))
    greedy(model, src, lengths, max_lengths(lengths, 2.0, 3))
    assert given  # products went to oneDNN
    assert all(w.is_contiguous() or w.t().is_contiguous() for w in given)
    columns = model.decoder.combine.weight[:, :4]
    torch.testing.assert_close(linear(torch.ones(2, 4), columns), torch.ones(2, 4) @ columns.t())


_DECODE_AND_TRAIN = """
import sys
sys.path.insert(0, sys.argv[1])
import torch
from conftest import small_model
from nmt.beam import beam_search
from nmt.search import greedy, max_lengths
from test_linear import _fp32_training_step
src, lengths = torch.tensor([[5, 6, 7, 8, 3], [8, 9, 3, 0, 0]]), torch.tensor([5, 3])
for attention in ("bahdanau", "luong"):
    model = small_model(attention=attention, vocab=11, seed=4, layers=2)
    greedy(model, src, lengths, max_lengths(lengths, 2.0, 3))
    beam_search(model, src, lengths, max_lengths(lengths, 2.0, 3), 3, 0.6)
    _fp32_training_step(model.train(), fused=True)
"""


@needs_onednn
@pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64"), reason="oneDNN's x86 kernels")
def test_fp32_decoding_and_training_run_no_product_on_onednns_reference_kernel():
    """oneDNN logs the kernel of every product it runs (ONEDNN_VERBOSE=1). Its reference kernel,
    the last resort for a layout it has no fast kernel for, multiplied by W_c's column views
    1,000x slower than by the columns copied, and no test noticed: results are the same. The same
    for training's hand-written fp32 passes."""
    env = {**os.environ, "ONEDNN_VERBOSE": "1", nmt.linear.ENV: "onednn"}
    run = subprocess.run([sys.executable, "-c", _DECODE_AND_TRAIN, str(Path(__file__).parent)], env=env,
                         capture_output=True, text=True, check=True)
    ran = [line for line in run.stdout.splitlines() if ",exec," in line and ",cpu," in line]
    assert ran  # the products went to oneDNN, and it logged them
    assert not [line for line in ran if re.search(r",ref[:_,]", line)]


@needs_onednn
def test_products_without_autograd_equal_pytorchs(backend):
    """mm, which training's hand-written passes use, in every form: a bias, a tensor added,
    nothing added, operands laid out as the passes hold them (weights and inputs transposed)."""
    backend("onednn")
    g = torch.Generator().manual_seed(1)
    a, w, bias, base = (torch.randn(*shape, generator=g) for shape in ((6, 9), (5, 9), (5,), (6, 5)))
    with torch.no_grad():
        torch.testing.assert_close(mm(a, w.t()), a @ w.t())
        torch.testing.assert_close(mm(a, w.t(), bias), torch.addmm(bias, a, w.t()))
        torch.testing.assert_close(mm(a, w.t(), base), torch.addmm(base, a, w.t()))
        torch.testing.assert_close(mm(a.t().contiguous().t(), w.t().contiguous()), a @ w.t())


def _fp32_training_step(model, fused: bool):
    """Loss and every gradient of one teacher-forced step in fp32 (the trainer's loss)."""
    src = torch.tensor([[5, 6, 7, 8, 3, 0], [9, 4, 3, 0, 0, 0], [4, 5, 6, 7, 8, 3]])
    lengths, tgt_in = torch.tensor([5, 3, 6]), torch.tensor([[2, 4, 5, 6, 7], [2, 7, 8, 0, 0], [2, 9, 9, 9, 4]])
    tgt_out = torch.tensor([[4, 5, 6, 7, 3], [7, 8, 3, 0, 0], [9, 9, 9, 4, 3]])
    model.zero_grad()
    hidden = model.features(src, lengths, tgt_in, fused=fused)
    real = tgt_out != 0
    loss = linear_cross_entropy(hidden[real], model.generator.weight, model.generator.bias, tgt_out[real], 0.1)
    loss.backward()
    return loss.detach(), {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


@needs_onednn
@pytest.mark.parametrize("attention", ["bahdanau", "luong"])
def test_fp32_training_through_onednn_equals_the_plain_autograd_path(backend, monkeypatch, attention):
    """The fast path's and the fused loss's products run through oneDNN (counted) and give the
    loss and gradients of autograd through PyTorch's own products."""
    model = small_model(attention=attention, vocab=11, seed=5, layers=2).train()
    backend("mkl")
    plain_loss, plain = _fp32_training_step(model, fused=False)
    backend("onednn")
    taken = []
    chosen = nmt.linear._onednn
    monkeypatch.setattr(nmt.linear, "_onednn", lambda x, w: taken.append(chosen(x, w)) or taken[-1])
    loss, fast = _fp32_training_step(model, fused=True)
    assert sum(taken) > 20  # the products really went to oneDNN (every step of every recurrence)
    torch.testing.assert_close(loss, plain_loss, rtol=1e-5, atol=1e-5)
    assert fast.keys() == plain.keys()
    for name, grad in plain.items():
        torch.testing.assert_close(fast[name], grad, rtol=1e-4, atol=1e-5, msg=name)


@needs_onednn
def test_the_fused_loss_through_onednn_equals_cross_entropy(backend):
    backend("onednn")
    g = torch.Generator().manual_seed(3)
    hidden, weight, bias = (torch.randn(*shape, generator=g, requires_grad=True) for shape in ((37, 8), (23, 8), (23,)))
    target = torch.randint(0, 23, (37,), generator=g)
    plain = F.cross_entropy(F.linear(hidden, weight, bias), target, label_smoothing=0.1, reduction="sum")
    fused = linear_cross_entropy(hidden, weight, bias, target, 0.1, chunk=5)
    torch.testing.assert_close(fused, plain, rtol=1e-5, atol=1e-5)
    params = (hidden, weight, bias)
    for a, b in zip(torch.autograd.grad(fused, params), torch.autograd.grad(plain, params)):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_choice(backend, monkeypatch):
    backend("mkl")
    assert not onednn_fp32()
    backend("auto")
    monkeypatch.setattr(nmt.linear, "_cpu_vendor", lambda: "GenuineIntel")
    assert not onednn_fp32()  # MKL is fast on Intel CPUs
    backend("fast")
    with pytest.raises(NmtError, match="NMT_FP32_MATMUL must be auto, onednn or mkl"):
        onednn_fp32()


needs_onednn_bf16 = pytest.mark.skipif(not onednn_bf16(),
                                       reason="this CPU's oneDNN has no bf16 kernels (they need AVX-512)")


@needs_onednn_bf16
@pytest.mark.parametrize("attention", ["bahdanau", "luong"])
def test_bf16_decoding_from_packed_weights_is_autocasts_to_the_bit(monkeypatch, tmp_path, attention):
    """Inside ``bf16_products`` every decoder product (and the LSTM cell) runs from weights packed
    once: greedy and beam translations and their log-probabilities are plain autocast's exactly,
    and ``Translator`` takes that path for bf16."""
    model = small_model(attention=attention, layers=2, vocab=11)
    src = torch.tensor([[5, 6, 7, 8, 3], [9, 4, 3, 0, 0], [6, 5, 4, 4, 3]])
    lengths = torch.tensor([5, 3, 5])
    limits = max_lengths(lengths, 2.0, 3)
    calls, plain = [], []
    monkeypatch.setattr(nmt.linear, "_packed_linear", lambda *a: calls.append(1) or packed_linear(*a))
    monkeypatch.setattr(F, "linear", lambda *a, linear=F.linear: plain.append(1) or linear(*a))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        want = [greedy(model, src, lengths, limits)] + beam_search(model, src, lengths, limits, beam=3)
        assert not calls and plain
        plain.clear()
        with bf16_products(model):
            got = [greedy(model, src, lengths, limits)] + beam_search(model, src, lengths, limits, beam=3)
    assert calls and not plain  # every product packed, W_c's column blocks (Decoder.combine_columns) too
    for got_hyps, want_hyps in zip(got, want, strict=True):
        assert [(h.tokens, h.log_prob) for h in got_hyps] == [(h.tokens, h.log_prob) for h in want_hyps]

    config, tokenizer, model, _ = saved_tiny_model(tmp_path)
    calls.clear()
    Translator(model, tokenizer, config).translate(["Y dijo Dios: Sea la luz."], beam=2, precision="bf16")
    assert calls
