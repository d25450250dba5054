"""tanh through sigmoid (nmt.activations.tanh_) is tanh: values, in place, bf16 and gradients."""

import torch

from nmt.activations import tanh_


def test_equals_tanh_to_float_rounding_over_the_whole_range():
    x = torch.linspace(-20, 20, 400_001)
    exact = torch.tanh(x.double())
    y = tanh_(x.clone())
    assert (y.double() - exact).abs().max() < 2.5e-7  # torch.tanh's own error here: 3e-8
    assert torch.equal(y.abs() <= 1, torch.ones_like(y, dtype=torch.bool))
    assert torch.equal(torch.sign(y), torch.sign(x))  # odd, and 0 at 0


def test_overwrites_its_input_and_only_the_view_it_is_given():
    z = torch.randn(3, 8)
    before = z.clone()
    gate = z[:, 2:4]  # a strided view, as the LSTM cell's g gate
    out = tanh_(gate)
    assert out.data_ptr() == gate.data_ptr()
    torch.testing.assert_close(z[:, 2:4], torch.tanh(before[:, 2:4]), atol=2.5e-7, rtol=0)
    assert torch.equal(z[:, :2], before[:, :2]) and torch.equal(z[:, 4:], before[:, 4:])


def test_bf16_keeps_the_precision_of_small_values():
    """2σ − 1 computed in bf16 would round tanh(0.002) to 0: it is computed in fp32 and rounded once."""
    x = torch.tensor([0.002, -0.01, 0.3, -2.0, 7.0]).bfloat16()
    y = tanh_(x.clone())
    assert y.dtype == torch.bfloat16
    torch.testing.assert_close(y, torch.tanh(x.float()).bfloat16(), atol=0, rtol=2**-8)


def test_where_autograd_records_the_input_it_gives_tanh_and_its_gradient():
    x = torch.randn(50, dtype=torch.float64, requires_grad=True)
    y = tanh_(x)
    assert y.data_ptr() != x.data_ptr()
    y.sum().backward()
    torch.testing.assert_close(y.detach(), torch.tanh(x.detach()))
    torch.testing.assert_close(x.grad, 1 - torch.tanh(x.detach()) ** 2)
