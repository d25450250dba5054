"""Batches respect the token budget, cover every sentence once, and shift targets correctly."""

import numpy as np

from nmt.batching import Sequences, make_batch, token_batches
from nmt.tokenizer import BOS, EOS, PAD


def test_token_batches_cover_everything_within_budget():
    rng = np.random.default_rng(0)
    src = rng.integers(1, 40, size=500)
    tgt = rng.integers(1, 40, size=500)
    batches = token_batches(src, tgt, max_tokens=300, rng=np.random.default_rng(1))
    seen = np.sort(np.concatenate(batches))
    assert (seen == np.arange(500)).all()
    for batch in batches:
        width = max(src[batch].max(), tgt[batch].max() + 1)
        assert width * len(batch) <= 300 or len(batch) == 1
    # Length bucketing: padding stays small compared with random batching.
    pad = sum(max(tgt[b].max() + 1, src[b].max()) * len(b) for b in batches)
    assert pad < 1.35 * np.maximum(src, tgt + 1).sum()


def test_batches_are_seeded():
    lengths = np.arange(1, 200) % 17 + 1
    a = token_batches(lengths, lengths, 100, np.random.default_rng(3))
    b = token_batches(lengths, lengths, 100, np.random.default_rng(3))
    assert all((x == y).all() for x, y in zip(a, b))


def test_make_batch_shifts_targets():
    src = Sequences.from_lists([[5, 6, EOS], [7, EOS]])
    tgt = Sequences.from_lists([[8, 9], [10, 11, 12]])
    batch = make_batch(src, np.array([0, 1]), tgt)
    assert batch.src.tolist() == [[5, 6, EOS], [7, EOS, PAD]]
    assert batch.tgt_in.tolist() == [[BOS, 8, 9, PAD], [BOS, 10, 11, 12]]
    assert batch.tgt_out.tolist() == [[8, 9, EOS, PAD], [10, 11, 12, EOS]]
    assert batch.n_tgt_tokens == 7  # </s> counted



def test_an_epoch_rest_with_no_pair_left_has_no_batches_and_no_warning(recwarn):
    """A resume under a lower train.max_train_len can leave an epoch's rest empty: numpy warned of
    the mean of an empty slice (twice) on the way to no batches."""
    from nmt.trainset import epoch_batches

    lengths = (np.array([3, 40, 5]), np.array([4, 6, 30]))
    assert epoch_batches(lengths, [1, 2], 0, seed=1, max_tokens=100, max_train_len=10) == []
    assert [b.tolist() for b in epoch_batches(lengths, None, 0, seed=1, max_tokens=100, max_train_len=10)] == [[0]]
    assert not recwarn.list
