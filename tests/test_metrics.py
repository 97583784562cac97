"""Metrics between two image batches: MSE, PSNR, LPIPS (per image)."""

from __future__ import annotations

import math

import pytest
import torch

from pti_core import losses
from pti_core.errors import ImageError, MissingFileError
from pti_core.metrics import lpips_distance, mse, psnr


def _batch(seed: int, size: int = 32) -> torch.Tensor:
    return torch.rand(3, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_mse_and_psnr_per_image():
    a = torch.zeros(2, 3, 4, 4)
    b = torch.stack([torch.zeros(3, 4, 4), torch.full((3, 4, 4), 0.5)])
    assert mse(a, b).tolist() == [0.0, 0.25]
    assert psnr(a, b)[1].item() == pytest.approx(10 * math.log10(4 / 0.25))
    assert psnr(a, b)[0].item() > 100  # identical: capped, finite


def test_lpips_distance_per_image_and_ordering():
    a = _batch(0)
    noise = torch.randn(a.shape, generator=torch.Generator().manual_seed(1))
    near = (a + 0.05 * noise).clamp(-1, 1)
    far = (a + 0.5 * noise).clamp(-1, 1)
    d_near = lpips_distance(a, near, net="stlpips-alex")
    d_far = lpips_distance(a, far, net="stlpips-alex")
    assert d_near.shape == (3,)
    assert torch.all(d_near < d_far)
    assert lpips_distance(a, a, net="stlpips-alex").abs().max() < 1e-7
    # the metric is the loss model's distance, without gradients
    with torch.no_grad():
        assert torch.allclose(d_far, losses.perceptual_model("stlpips-alex")(a, far))
    assert not d_far.requires_grad
    # image 1 alone gives the same value as inside the batch
    assert lpips_distance(a[1:2], far[1:2], net="stlpips-alex").item() == pytest.approx(d_far[1].item(), rel=1e-5)


def test_lpips_distance_max_size_downsamples():
    a, b = _batch(2, size=64), _batch(3, size=64)
    small_a = torch.nn.functional.interpolate(a, size=(32, 32), mode="area")
    small_b = torch.nn.functional.interpolate(b, size=(32, 32), mode="area")
    assert torch.allclose(lpips_distance(a, b, net="random-alex", max_size=32),
                          lpips_distance(small_a, small_b, net="random-alex"), atol=1e-6)


def test_errors():
    with pytest.raises(ImageError, match="same shape"):
        lpips_distance(torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 16, 16), net="random-alex")
    with pytest.raises(ImageError):
        mse(torch.full((1, 3, 4, 4), 3.0), torch.zeros(1, 3, 4, 4))  # out of [-1, 1]


def test_standard_lpips_needs_cached_backbone(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(losses, "_CACHE", {})
    with pytest.raises(MissingFileError, match="alexnet-owt-7be5be79.pth"):
        lpips_distance(torch.zeros(1, 3, 32, 32), torch.zeros(1, 3, 32, 32))
