"""The model: attention is a distribution over real tokens, and one decoder step is shared."""

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import nmt.state
import nmt.stretches
from conftest import small_model
from nmt.hardware import onednn_bf16
from nmt.attention import AdditiveAttention, MultiplicativeAttention
from nmt.search import sequence_log_prob


@pytest.mark.parametrize("kind", ["additive", "multiplicative"])
def test_attention_weights_sum_to_one_and_ignore_padding(kind):
    torch.manual_seed(0)
    if kind == "additive":
        attention = AdditiveAttention(query_dim=6, key_dim=8, attn_dim=5)
    else:
        attention = MultiplicativeAttention(query_dim=6, key_dim=8)
    values = torch.randn(3, 7, 8)
    mask = torch.tensor([[1] * 7, [1] * 4 + [0] * 3, [1] * 1 + [0] * 6], dtype=torch.bool)
    query = torch.randn(3, 2, 6)
    context, weights = attention(query, attention.project_keys(values), values, mask)
    assert weights.shape == (3, 2, 7) and context.shape == (3, 2, 8)
    torch.testing.assert_close(weights.sum(-1), torch.ones(3, 2))
    assert (weights[~mask.unsqueeze(1).expand_as(weights)] == 0).all()
    # Changing what sits under the padding changes nothing.
    noisy = values.clone()
    noisy[~mask] = 100.0
    context2, _ = attention(query, attention.project_keys(noisy), noisy, mask)
    torch.testing.assert_close(context, context2)


@pytest.mark.parametrize("kind", ["additive", "multiplicative"])
def test_attention_runs_in_fp32_under_bf16_autocast(kind):
    """Under bf16 autocast (bf16 decoding) the attention's scores, softmax and context stay fp32:
    the same weights and context as without autocast, from the same fp32 keys and values."""
    torch.manual_seed(0)
    attention = AdditiveAttention(6, 8, 5) if kind == "additive" else MultiplicativeAttention(6, 8)
    values, query = torch.randn(3, 7, 8), torch.randn(3, 1, 6)
    mask = torch.tensor([[1] * 7, [1] * 4 + [0] * 3, [1] * 2 + [0] * 5], dtype=torch.bool)
    keys = attention.project_keys(values)
    with torch.no_grad():
        want = attention(query, keys, values, mask)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert attention.project_keys(values).dtype == torch.float32  # kept fp32, projected once
            got = attention(query, keys, values, mask)
    # Only the additive query projection W_q q is a matmul autocast runs in bf16.
    tolerance = 2e-2 if kind == "additive" else 1e-6
    for g, w in zip(got, want):
        assert g.dtype == torch.float32
        torch.testing.assert_close(g, w, atol=tolerance, rtol=0)


@pytest.mark.parametrize("chunk", [1, 80, 1 << 19])  # 1, 2 (then 1) or all 3 sentences at a time
def test_additive_attention_in_chunks_is_the_formula(monkeypatch, chunk):
    """score(q, k_j) = v · tanh(W_q q + b + W_k k_j) however many sentences' buffers are built at once:
    the same scores, context and gradients as the formula written out in one piece."""
    import nmt.attention

    monkeypatch.setattr(nmt.attention, "SCORE_CHUNK", chunk)
    torch.manual_seed(0)
    attention = AdditiveAttention(query_dim=6, key_dim=8, attn_dim=5)
    values = torch.randn(3, 4, 8, requires_grad=True)
    mask = torch.tensor([[1] * 4, [1] * 3 + [0], [1] * 2 + [0] * 2], dtype=torch.bool)
    query = torch.randn(3, 2, 6, requires_grad=True)
    context, weights = attention(query, attention.project_keys(values), values, mask)
    q = attention.query_proj(query).unsqueeze(2)  # (B, T, 1, A)
    k = attention.key_proj(values).unsqueeze(1)  # (B, 1, S, A)
    scores = (torch.tanh(q + k) * attention.v.weight.view(-1)).sum(-1).masked_fill(~mask.unsqueeze(1), float("-inf"))
    expected = torch.softmax(scores, dim=-1)
    torch.testing.assert_close(weights, expected)
    torch.testing.assert_close(context, expected @ values)
    grads = torch.autograd.grad(context.sum(), [query, values, attention.v.weight])
    expected_grads = torch.autograd.grad((expected @ values).sum(), [query, values, attention.v.weight])
    for got, want in zip(grads, expected_grads):
        torch.testing.assert_close(got, want)


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
@pytest.mark.parametrize(
    "attention,feeding", [("bahdanau", True), ("bahdanau", False), ("luong", True), ("luong", False), ("none", False)]
)
def test_teacher_forcing_equals_step_by_step_decoding(cell, attention, feeding):
    """forward() (fused or looped) and decode_step() compute the same log p(T | S)."""
    model = small_model(cell, attention, feeding, vocab=11, layers=2)
    src = torch.tensor([[5, 6, 7, 8, 3], [9, 4, 3, 0, 0]])
    lengths = torch.tensor([5, 3])
    tgt_in = torch.tensor([[2, 4, 5, 6], [2, 7, 8, 0]])
    with torch.no_grad():
        logits = torch.log_softmax(model(src, lengths, tgt_in), dim=-1)
        memory, state = model.encode(src, lengths)
        for t in range(tgt_in.size(1)):
            log_probs, state, _ = model.decode_step(tgt_in[:, t], state, memory)
            torch.testing.assert_close(log_probs, logits[:, t], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("attention", ["bahdanau", "luong"])
@pytest.mark.parametrize("feeding", [True, False])
def test_decoding_memory_holds_the_context_columns_applied_and_gives_the_same_steps(attention, feeding):
    """Decoding's memory holds W_c's context columns applied to the encoder outputs (D wide, not
    2H), and its steps give the log-probabilities and weights of steps from the plain memory."""
    model = small_model("lstm", attention, feeding, vocab=11, layers=2)
    src = torch.tensor([[5, 6, 7, 8, 3], [9, 4, 3, 0, 0]])
    lengths = torch.tensor([5, 3])
    plain = model.encode(src, lengths)  # gradients on: the training path, encoder outputs as values
    with torch.no_grad():
        plain = (nmt.state.Memory(*(t.detach() for t in (plain[0].values, plain[0].keys, plain[0].mask))),
                 nmt.state.DecoderState(*(None if t is None else t.detach() for t in vars(plain[1]).values())))
        combined = model.encode(src, lengths)
        assert combined[0].combined and not plain[0].combined
        assert combined[0].values.shape == (2, 5, model.config.dec_hidden)
        assert plain[0].values.shape == (2, 5, 2 * model.config.enc_hidden)
        (memory_a, state_a), (memory_b, state_b) = plain, combined
        for prev in torch.tensor([[2, 2], [4, 7], [5, 8]]):
            lp_a, state_a, w_a = model.decode_step(prev, state_a, memory_a)
            lp_b, state_b, w_b = model.decode_step(prev, state_b, memory_b)
            torch.testing.assert_close(lp_b, lp_a, atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(w_b, w_a, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_encoding_by_length_equals_the_packed_encoder(cell):
    """``by_length`` (one dense call per sentence length) gives the packed-sequence encoder's
    outputs and final states, and zeros at padding."""
    from nmt.stretches import by_length

    model = small_model(cell, layers=2, vocab=11)
    src = torch.tensor([[5, 6, 7, 8, 3], [9, 4, 3, 0, 0], [4, 4, 3, 0, 0], [7, 3, 0, 0, 0], [6, 5, 4, 4, 3]])
    lengths = torch.tensor([5, 3, 3, 2, 5])
    x = model.encoder.embed(src).detach()
    packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
    want_out, want_state = model.encoder.rnn(packed)
    want_out = pad_packed_sequence(want_out, batch_first=True, total_length=src.size(1))[0]
    with torch.no_grad():
        got_out, got_state = by_length(model.encoder.rnn, x, lengths)
    torch.testing.assert_close(got_out, want_out.detach(), atol=1e-6, rtol=1e-5)
    states = (lambda s: s if isinstance(s, tuple) else (s,))  # noqa: E731
    for got, want in zip(states(got_state), states(want_state), strict=True):
        torch.testing.assert_close(got, want.detach(), atol=1e-6, rtol=1e-5)
    assert (got_out[3, 2:] == 0).all() and (got_out[1, 3:] == 0).all()


@pytest.mark.parametrize("onednn_has_bf16", [True, False])
def test_bf16_decoding_encodes_in_bf16_where_onednn_can(monkeypatch, onednn_has_bf16):
    """Under autocast without gradients the encoder follows autocast where oneDNN has bf16
    kernels (the packed kernel ignores it) and stays within bf16 rounding of the fp32 encoder;
    on CPUs without them (AVX2) the dense kernel fails, and the encoder runs packed (fp32 out)."""
    if onednn_has_bf16 and not onednn_bf16():
        pytest.skip("this CPU's oneDNN has no bf16 kernels (they need AVX-512)")
    monkeypatch.setattr(nmt.stretches, "onednn_bf16", lambda: onednn_has_bf16)
    model = small_model(layers=2, vocab=11)
    src = torch.tensor([[5, 6, 7, 8, 3], [9, 4, 3, 0, 0]])
    lengths = torch.tensor([5, 3])
    with torch.no_grad():
        fp32 = model.encoder(src, lengths)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            mixed = model.encoder(src, lengths)
    assert fp32[0].dtype == torch.float32
    assert mixed[0].dtype == (torch.bfloat16 if onednn_has_bf16 else torch.float32)
    for got, want in zip(mixed, fp32):
        torch.testing.assert_close(got.float(), want, atol=3e-2, rtol=0)


def test_padding_in_a_batch_does_not_change_a_sentence():
    model = small_model(vocab=11)
    alone = torch.tensor([[5, 6, 3]])
    padded = torch.tensor([[5, 6, 3, 0, 0], [4, 5, 6, 7, 3]])
    lp_alone = sequence_log_prob(model, alone, torch.tensor([3]), [4, 5], True)
    with torch.no_grad():
        logits = torch.log_softmax(model(padded, torch.tensor([3, 5]), torch.tensor([[2, 4, 5], [2, 4, 5]])), -1)
    lp_batch = float(logits[0, torch.arange(3), torch.tensor([4, 5, 3])].sum())
    assert lp_alone == pytest.approx(lp_batch, abs=1e-5)


def test_tied_embeddings_share_one_tensor():
    model = small_model()
    assert model.generator.weight.data_ptr() == model.decoder.embed.weight.data_ptr()


def test_luong_scores_are_query_dot_projected_keys():
    torch.manual_seed(1)
    attention = MultiplicativeAttention(query_dim=4, key_dim=6)
    values, query = torch.randn(2, 5, 6), torch.randn(2, 1, 4)
    mask = torch.ones(2, 5, dtype=torch.bool)
    _, weights = attention(query, attention.project_keys(values), values, mask)
    scores = torch.einsum("btd,dk,bsk->bts", query, attention.key_proj.weight, values)  # q · W_k h_j
    torch.testing.assert_close(weights, torch.softmax(scores, dim=-1))
