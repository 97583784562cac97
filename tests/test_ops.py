"""The fused bias + leaky ReLU + gain + clamp (``ops.bias_act`` while autograd records) against the plain ops."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from pti_core.generators import ops


def _plain(x, b, *, gain, clamp):
    y = F.leaky_relu(x if b is None else x + b.reshape(1, -1, 1, 1), 0.2) * gain
    return y if clamp is None else y.clamp(-clamp, clamp)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
@pytest.mark.parametrize("with_bias", [True, False])
@pytest.mark.parametrize("clamp", [None, 256.0, 0.5])
def test_fused_bias_act_equals_the_plain_ops(dtype, with_bias, clamp):
    generator = torch.Generator().manual_seed(0)
    x = (torch.randn(2, 5, 6, 7, generator=generator) * 3).to(dtype).requires_grad_(True)
    b = torch.randn(5, generator=generator).to(dtype).requires_grad_(True) if with_bias else None
    fused = ops.bias_act(x, b, act="lrelu", gain=1.4, clamp=clamp)
    assert fused.grad_fn is not None and "BiasLeakyReLU" in type(fused.grad_fn).__name__
    inputs = [x] if b is None else [x, b]
    plain_inputs = [t.detach().clone().requires_grad_(True) for t in inputs]
    plain = _plain(plain_inputs[0], plain_inputs[1] if with_bias else None, gain=1.4, clamp=clamp)
    assert torch.equal(fused, plain)  # the same operations in the same order: identical values
    grad = torch.randn(fused.shape, generator=generator).to(dtype)
    fused_grads = torch.autograd.grad(fused, inputs, grad)
    for got, want in zip(fused_grads, torch.autograd.grad(plain, plain_inputs, grad)):
        tolerance = 0.05 * float(want.abs().max()) if dtype == torch.bfloat16 else 1e-6 * float(want.abs().max())
        assert float((got - want).abs().max()) <= tolerance
    if clamp == 0.5:  # clamped entries pass no gradient
        clamped = fused.detach().abs() >= 0.5
        assert clamped.any() and bool((fused_grads[0][clamped] == 0).all())


def test_fused_bias_act_gradcheck_and_no_grad_path():
    x = torch.randn(1, 3, 4, 4, dtype=torch.float64, requires_grad=True)
    b = torch.randn(3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, b: ops.bias_act(x, b, act="lrelu", gain=1.4, clamp=0.9), (x, b))
    with torch.no_grad():
        y = ops.bias_act(x, b, act="lrelu", gain=1.4, clamp=0.9)
    assert y.grad_fn is None and torch.equal(y, _plain(x.detach(), b.detach(), gain=1.4, clamp=0.9))
