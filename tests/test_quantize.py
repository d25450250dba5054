"""int8 decoding (nmt.quantize): exact integer algebra, per-row scales, the packed LSTM, errors."""

import os
import platform
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from conftest import small_model
from nmt.errors import NmtError
from nmt.linear import linear
from nmt.quantize import LEVELS, Int8Weight, int8_bilstm, int8_levels, int8_linear, int8_products


def _integer_rows(rows: int, cols: int, seed: int, levels: int) -> torch.Tensor:
    """Integers in [-levels, levels], each row holding +levels: int8 values with a scale of exactly 1."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(-levels, levels + 1, (rows, cols), generator=g).float()
    x[:, 0] = float(levels)
    return x


def test_int8_product_is_exact_where_values_are_representable():
    levels = int8_levels()  # 127 where the CPU multiplies 8-bit values natively (VNNI), else 63
    assert levels in LEVELS
    x, w = _integer_rows(5, 33, 0, levels), _integer_rows(7, 33, 1, levels)
    bias = torch.arange(7.0)
    assert torch.equal(int8_linear(x, Int8Weight.of(w), bias), F.linear(x, w, bias))


_WITHOUT_VNNI = """
import torch, torch.nn.functional as F
from nmt.quantize import Int8Weight, int8_levels, int8_linear
assert int8_levels() == 63, int8_levels()
g = torch.Generator().manual_seed(0)
x = torch.randint(-63, 64, (9, 300), generator=g).float()
w = torch.randint(-63, 64, (70, 300), generator=g).float()
x[:, 0], w[:, 0] = 63.0, 63.0
assert torch.equal(int8_linear(x, Int8Weight.of(w)), F.linear(x, w))  # exact at ±63
a, b = torch.full((8, 256), 127, dtype=torch.int8), torch.full((256, 64), 127, dtype=torch.int8)
assert not torch.equal(torch._int_mm(a, b).long(), a.long() @ b.long())  # what ±127 would give
x, w = torch.randn(64, 256, generator=g), torch.randn(1000, 256, generator=g) * 0.1
reference = F.linear(x, w)
error = float((int8_linear(x, Int8Weight.of(w)) - reference).norm() / reference.norm())
assert 0 < error < 0.03, error
print("ok")
"""


@pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64"), reason="oneDNN's x86 ISA switch")
def test_without_vnni_values_shrink_until_the_products_are_exact():
    """oneDNN held to AVX2 (no 8-bit dot products) sums 8-bit products in saturating 16-bit pairs:
    values of ±127 come out wrong, so int8 decoding keeps its values to ±63, where they are exact."""
    env = {**os.environ, "ONEDNN_MAX_CPU_ISA": "AVX2"}
    done = subprocess.run([sys.executable, "-c", _WITHOUT_VNNI], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]


@pytest.mark.parametrize("bound", [None, 1.0])
def test_int8_product_is_close_to_fp32(bound):
    g = torch.Generator().manual_seed(2)
    x, w, bias = torch.randn(64, 256, generator=g), torch.randn(1000, 256, generator=g) * 0.1, torch.randn(1000)
    if bound is not None:  # inputs known to lie in [-1, 1] (an LSTM's h, a tanh): one fixed scale
        x = torch.tanh(x)
    reference = F.linear(x, w, bias)
    error = (int8_linear(x, Int8Weight.of(w), bias, bound=bound) - reference).norm() / reference.norm()
    assert 0 < error < 0.02  # 255 levels per row and per output: about 1 % (±63 without VNNI: 1.7 %)


def test_a_bounded_input_is_clamped_to_its_bound():
    w = Int8Weight.of(torch.randn(8, 4))
    x = torch.tensor([[1.0, -1.0, 1.0, 0.0]])
    assert torch.equal(int8_linear(x * 3, w, bound=1.0), int8_linear(x, w, bound=1.0))


def test_a_row_gives_the_same_result_alone_as_in_any_batch():
    g = torch.Generator().manual_seed(3)
    x, weight = torch.randn(40, 48, generator=g) * torch.rand(40, 1, generator=g) * 10, Int8Weight.of(torch.randn(30, 48))
    together = int8_linear(x, weight)
    for i in (0, 17, 39):
        assert torch.equal(int8_linear(x[i : i + 1], weight), together[i : i + 1])
    assert torch.equal(int8_linear(x.view(5, 8, 48), weight).view(40, 30), together)  # any leading dims


@pytest.mark.parametrize("layers", [1, 2])
def test_int8_encoder_follows_the_packed_lstm(layers):
    model = small_model(layers=layers, seed=5)
    rnn = model.encoder.rnn
    g = torch.Generator().manual_seed(6)
    lengths = torch.tensor([5, 2, 7, 1, 7])
    x = torch.randn(5, 7, rnn.input_size, generator=g)
    with torch.no_grad():
        packed, (h_ref, c_ref) = rnn(pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False))
        reference, _ = pad_packed_sequence(packed, batch_first=True, total_length=7)
        with int8_products(model):
            out, (h, c) = int8_bilstm(rnn, x, lengths)
    assert out.shape == reference.shape and h.shape == h_ref.shape and c.shape == c_ref.shape
    for i, n in enumerate(lengths.tolist()):
        assert not out[i, n:].any()  # zero on padding
    hid = rnn.hidden_size
    top_h = h[-2:]  # the top layer's finals are its outputs at each sentence's own ends: packed semantics
    assert torch.equal(top_h[0], out[torch.arange(5), lengths - 1, :hid])
    assert torch.equal(top_h[1], out[:, 0, hid:])
    for got, want in ((out, reference), (h, h_ref), (c, c_ref)):
        assert (got - want).abs().max() < 0.03  # values of order 0.1–1, products 1 % off
    with torch.no_grad(), int8_products(model):  # padding never reaches a sentence's states
        for i, n in enumerate(lengths.tolist()):
            alone, (h_alone, c_alone) = int8_bilstm(rnn, x[i : i + 1, :n], lengths[i : i + 1])
            torch.testing.assert_close(alone[0], out[i, :n], rtol=0, atol=1e-6)
            torch.testing.assert_close(h_alone[:, 0], h[:, i], rtol=0, atol=1e-6)
            torch.testing.assert_close(c_alone[:, 0], c[:, i], rtol=0, atol=1e-6)


def test_int8_step_is_close_to_fp32_and_leaves_nothing_behind():
    model = small_model(seed=7)
    src = torch.tensor([[4, 5, 6, 3], [6, 5, 3, 0]])
    lengths = torch.tensor([4, 3])
    with torch.no_grad():
        memory, state = model.encode(src, lengths)
        reference, _, _ = model.decode_step(torch.tensor([1, 1]), state, memory)
        with int8_products(model):
            memory, state = model.encode(src, lengths)
            quantized, _, _ = model.decode_step(torch.tensor([1, 1]), state, memory)
        memory, state = model.encode(src, lengths)
        again, _, _ = model.decode_step(torch.tensor([1, 1]), state, memory)
    assert torch.equal(again, reference)  # nothing left behind after the context
    assert not torch.equal(quantized, reference)
    assert (quantized.exp() - reference.exp()).abs().max() < 0.02  # probabilities


def test_training_inside_the_context_stays_fp32():
    model = small_model(seed=8)
    x, w = torch.randn(3, 16), model.generator.weight
    with int8_products(model):
        assert torch.equal(linear(x, w), F.linear(x, w))  # gradients wanted: the plain product


def test_int8_refuses_other_devices():
    model = small_model(seed=9).to("meta")
    with pytest.raises(NmtError, match="int8 decoding runs on the CPU only"):
        with int8_products(model):
            pass


@pytest.mark.parametrize("broken", ["inexact", "missing"])
def test_int8_is_refused_where_no_range_gives_exact_products(monkeypatch, broken):
    """Products wrong at every range, or no CPU torch._int_mm in this PyTorch build: one line."""
    import nmt.quantize

    if broken == "inexact":
        monkeypatch.setattr(nmt.quantize, "_exact_products", lambda levels: False)
    else:
        monkeypatch.delattr(torch, "_int_mm")
    int8_levels.cache_clear()
    try:
        with pytest.raises(NmtError, match="int8 decoding needs exact 8-bit matrix products"):
            with int8_products(small_model(seed=10)):
                pass
    finally:
        monkeypatch.undo()
        int8_levels.cache_clear()
    assert int8_levels() in LEVELS


def test_training_whose_validation_cannot_decode_in_int8_is_refused_before_the_first_step(monkeypatch, tiny_run,
                                                                                       tmp_path):
    """Validation decodes with decode.precision: int8 where it cannot run failed at the first
    validation (train.valid_every steps in, 500 by default), with every step before it lost."""
    import nmt.quantize
    from conftest import tiny_config
    from nmt.train import Trainer

    monkeypatch.setattr(nmt.quantize, "_exact_products", lambda levels: False)
    int8_levels.cache_clear()
    try:
        with pytest.raises(NmtError, match="decode.precision is int8, which validation decodes with: int8 decoding "
                                           "needs exact 8-bit matrix products"):
            Trainer(tiny_config(tmp_path, "decode.precision=int8"), tiny_run.data, tiny_run.tokenizer, tmp_path / "run")
    finally:
        monkeypatch.undo()
        int8_levels.cache_clear()
    assert not (tmp_path / "run").exists()


def test_int8_products_quantize_the_column_blocks_decoding_multiplies_by():
    """W_c's two column blocks (``Decoder.combine_columns``), views of one weight, are quantized on
    entry like the weight matrices, and found again at every step (the same view objects)."""
    from nmt.quantize import int8_weight

    model = small_model(attention="luong")
    context, state = model.decoder.combine_columns()
    with int8_products(model):
        assert int8_weight(context) is not None and int8_weight(state) is not None
        assert model.decoder.combine_columns() == (context, state)
    model.to(torch.float64)  # a new storage: new views, so no stale form is ever found
    assert model.decoder.combine_columns()[0] is not context
