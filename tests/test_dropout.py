"""The fast dropout keeps the nn.Dropout contract."""

import pytest
import torch

from nmt.dropout import Dropout, dropout, keep_mask


@pytest.mark.parametrize("p", [0.1, 0.3, 0.5])
def test_keep_rate_and_expectation_match_p(p):
    torch.manual_seed(0)
    x = torch.ones(1000, 1001)  # odd size: the last 64-bit draw is used in part
    y = dropout(x, p, training=True)
    kept = (y != 0).float().mean().item()
    assert abs(kept - (1 - p)) < 0.003  # 1 M elements: the standard error is below 0.0005
    assert torch.allclose(y[y != 0], torch.full_like(y[y != 0], 1 / (1 - p)))
    assert abs(y.mean().item() - 1.0) < 0.01


@pytest.mark.parametrize("p", [1e-6, 7e-6])
def test_a_tiny_p_keeps_every_element(p):
    """round((1 - p) * 2^16) is 2^16 below p = 2^-17: compared in int16 that wrapped, and training
    mode zeroed every feature, silently (the config accepts any p in [0, 1))."""
    x = torch.ones(1000)
    assert torch.allclose(dropout(x, p, training=True), x / (1 - p))


def test_masks_are_uncorrelated_between_neighbours_and_calls():
    torch.manual_seed(1)
    a = keep_mask(torch.Size([400_000]), 0.5, torch.device("cpu")).float()
    b = keep_mask(torch.Size([400_000]), 0.5, torch.device("cpu")).float()
    corr = lambda u, v: torch.corrcoef(torch.stack([u, v]))[0, 1].abs().item()  # noqa: E731
    assert corr(a[:-1], a[1:]) < 0.01  # adjacent words of one 64-bit draw
    assert corr(a[:-4], a[4:]) < 0.01  # the same word position in consecutive draws
    assert corr(a, b) < 0.01


def test_gradient_is_the_scaled_mask_and_eval_is_identity():
    torch.manual_seed(2)
    x = torch.randn(64, 33, requires_grad=True)
    y = dropout(x, 0.25, training=True)
    y.sum().backward()
    assert torch.equal(x.grad, (y != 0).float() / 0.75)
    layer = Dropout(0.25).eval()
    assert layer(x) is x
    assert dropout(x, 0.0, training=True) is x


def test_same_seed_same_mask():
    torch.manual_seed(3)
    a = dropout(torch.ones(100, 100), 0.3, True)
    torch.manual_seed(3)
    b = dropout(torch.ones(100, 100), 0.3, True)
    assert torch.equal(a, b)
