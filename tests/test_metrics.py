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


def test_detail_error_sees_blur_and_speckle_that_stlpips_misses():
    from pti_core.metrics import detail_error, laplacian_energy

    generator = torch.Generator().manual_seed(0)
    target = (torch.rand(1, 3, 64, 64, generator=generator) * 2 - 1)
    target = torch.nn.functional.avg_pool2d(target, 3, 1, 1)  # some texture, some structure
    blurred = torch.nn.functional.avg_pool2d(target, 5, 1, 2)
    speckled = (target + 0.3 * torch.randn(target.shape, generator=generator)).clamp(-1, 1)
    assert float(detail_error(target, target)) == 0.0
    assert float(detail_error(blurred, target)) > 0.5
    assert float(detail_error(speckled, target)) > 1.0
    assert float(detail_error(0.5 * target + 0.5 * blurred, target)) < float(detail_error(blurred, target))
    assert float(laplacian_energy(blurred)) < float(laplacian_energy(target)) < float(laplacian_energy(speckled))


def test_frechet_distance_properties():
    from pti_core.metrics import frechet_distance

    generator = torch.Generator().manual_seed(0)
    a = torch.randn(400, 6, generator=generator)
    b = torch.randn(400, 6, generator=generator)
    near = float(frechet_distance(a, b))
    assert near < 0.5  # two samples of one Gaussian: only the sampling error
    assert float(frechet_distance(a, 2 * b)) > near + 3  # variances differ: tr(S_a + S_b - 2 sqrt(S_a S_b)) ~ 6
    assert float(frechet_distance(a, b + 2)) == pytest.approx(near + 24, rel=0.1)  # |mu_a - mu_b|^2 = 6 * 4
    with pytest.raises(ImageError):
        frechet_distance(a, torch.randn(10, 5))
