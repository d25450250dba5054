"""The functional test: a tiny attention model learns to reverse sequences."""

import numpy as np
import pytest
import torch

from nmt.batching import Sequences, make_batch, token_batches
from nmt.config import ModelConfig
from nmt.model import build_model
from nmt.quantize import int8_products
from nmt.search import greedy, max_lengths
from nmt.train import batch_loss

WORDS = range(4, 14)  # ten symbols after the four special ids


def _reverse_task(n: int, seed: int):
    rng = np.random.default_rng(seed)
    src, tgt = [], []
    for _ in range(n):
        seq = rng.choice(list(WORDS), size=int(rng.integers(3, 9))).tolist()
        src.append(seq + [3])  # source ends in </s>
        tgt.append(seq[::-1])
    return Sequences.from_lists(src), Sequences.from_lists(tgt)


@pytest.mark.parametrize("attention", ["bahdanau", "luong"])
def test_tiny_model_learns_to_reverse_sequences(attention):
    torch.manual_seed(0)
    torch.set_num_threads(2)
    config = ModelConfig(emb_dim=32, enc_hidden=32, dec_hidden=32, attention=attention, attn_dim=32, dropout=0.0)
    model = build_model(config, 14, 14)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    train_src, train_tgt = _reverse_task(3000, seed=1)
    for epoch in range(6):
        batches = token_batches(train_src.lengths, train_tgt.lengths, 640, np.random.default_rng(epoch))
        for index in batches:
            batch = make_batch(train_src, index, train_tgt)
            loss, n = batch_loss(model, batch, 0.0)
            optimizer.zero_grad()
            (loss / n).backward()
            optimizer.step()

    model.eval()
    test_src, test_tgt = _reverse_task(200, seed=99)
    batch = make_batch(test_src, np.arange(200))
    found = greedy(model, batch.src, batch.src_lengths, max_lengths(batch.src_lengths, 2.0, 2))
    exact = np.mean([h.tokens == test_tgt.get(i).tolist() for i, h in enumerate(found)])
    assert exact >= 0.95, f"only {exact:.0%} of test sequences reversed exactly"
    with torch.autocast("cpu", dtype=torch.bfloat16):  # decode.precision: bf16 keeps what was learnt
        found = greedy(model, batch.src, batch.src_lengths, max_lengths(batch.src_lengths, 2.0, 2))
    exact = np.mean([h.tokens == test_tgt.get(i).tolist() for i, h in enumerate(found)])
    assert exact >= 0.95, f"bf16 decoding: only {exact:.0%} of test sequences reversed exactly"
    with int8_products(model):  # decode.precision: int8 keeps it too
        found = greedy(model, batch.src, batch.src_lengths, max_lengths(batch.src_lengths, 2.0, 2))
    exact = np.mean([h.tokens == test_tgt.get(i).tolist() for i, h in enumerate(found)])
    assert exact >= 0.95, f"int8 decoding: only {exact:.0%} of test sequences reversed exactly"
