"""Perceptual losses: parity with the lpips / stlpips packages, offline errors, noise regulariser."""

from __future__ import annotations

import sys
import types
import warnings

import pytest
import torch

from pti_core import losses
from pti_core.errors import ConfigError, MissingFileError
from pti_core.losses import LPIPSModel, noise_regularization, perceptual_model


def _images(seed: int, size: int = 48, batch: int = 2) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand([batch, 3, size, size], generator=g) * 2 - 1


@pytest.mark.parametrize("trunk", ["alex", "vgg"])
def test_lpips_formula_equals_lpips_package(trunk, monkeypatch):
    """Our trunk + heads with the lpips package's (random) trunk weights gives lpips' distance."""
    import lpips

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.manual_seed(0)
        reference = lpips.LPIPS(net=trunk, pnet_rand=True, verbose=False).eval()
    monkeypatch.setattr(losses, "_CACHE", {})
    ours = perceptual_model(f"random-{trunk}")
    ours.trunk.load_state_dict(reference.net.state_dict(), strict=True)  # same names, same layout
    a, b = _images(0), _images(1)
    with torch.no_grad():
        assert torch.allclose(ours(a, b), reference(a, b).flatten(), rtol=1e-5, atol=1e-7)


def test_random_trunks_are_seeded_and_features_only():
    from pti_core.losses import _build

    first, second = _build("random-vgg"), _build("random-vgg")
    assert all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), second.state_dict().values()))
    # VGG16 features only (14.7 M parameters), no 124 M-parameter classifier
    assert sum(p.numel() for p in first.trunk.parameters()) == 14_714_688


def test_stlpips_alex_equals_stlpips_package(monkeypatch):
    # stlpips_pytorch imports IPython and torchsummary at module level without using them here.
    fake_ipython = types.ModuleType("IPython")
    fake_ipython.embed = lambda *args, **kwargs: None
    fake_summary = types.ModuleType("torchsummary")
    fake_summary.summary = None
    monkeypatch.setitem(sys.modules, "IPython", fake_ipython)
    monkeypatch.setitem(sys.modules, "torchsummary", fake_summary)
    from stlpips_pytorch import stlpips

    reference = stlpips.LPIPS(net="alex", variant="shift_tolerant", verbose=False).eval()
    a, b = _images(2), _images(3)
    with torch.no_grad():
        expected = reference(a, b).flatten()
        actual = perceptual_model("stlpips-alex")(a, b)
    assert torch.allclose(actual, expected, rtol=1e-4, atol=1e-7)
    assert expected.min() > 0.01  # a real, non-trivial distance


def test_distance_properties_and_gradient():
    model = perceptual_model("stlpips-alex")
    a = _images(4, size=32)
    b = a + 0.05 * torch.randn(a.shape, generator=torch.Generator().manual_seed(5))
    c = a + 0.3 * torch.randn(a.shape, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        assert model(a, a).abs().max() < 1e-7
        assert torch.all(model(a, b) < model(a, c))
        assert torch.allclose(model(a, c), model(c, a), rtol=1e-5)
        # precomputed target features give the same distance
        assert torch.allclose(model.distance_to_features(b, model.features(a)), model(b, a))
    x = b.clone().requires_grad_(True)
    model(x, a).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.parameters())


def test_resizing_policy():
    model = perceptual_model("random-alex")
    big = _images(6, size=64, batch=1)
    small = torch.nn.functional.interpolate(big, size=(32, 32), mode="area")
    with torch.no_grad():
        # max_size area-downsamples before the trunk: same features as downsampling first
        assert torch.allclose(model(big, big.flip(3), max_size=32), model(small, small.flip(3)), atol=1e-6)
        tiny = _images(7, size=8, batch=1)  # below AlexNet's minimum: upsampled, still works
        assert model(tiny, -tiny).item() > 0


def test_models_are_cached_per_kind_and_device():
    assert perceptual_model("random-alex") is perceptual_model("random-alex", "cpu")
    assert perceptual_model("random-alex") is not perceptual_model("stlpips-alex")
    with pytest.raises(ConfigError, match="unknown perceptual backbone"):
        perceptual_model("lpips-squeeze")


@pytest.mark.parametrize("kind, name", [("lpips-alex", "alexnet-owt-7be5be79.pth"),
                                        ("lpips-vgg", "vgg16-397923af.pth")])
def test_missing_backbone_names_file_folder_url_before_lpips_runs(kind, name, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(losses, "_CACHE", {})
    import lpips

    def no_download(*args, **kwargs):
        raise AssertionError("nothing may be downloaded when the backbone is missing")

    monkeypatch.setattr(lpips, "LPIPS", no_download)
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_download)
    monkeypatch.setattr(torch.hub, "download_url_to_file", no_download)
    with pytest.raises(MissingFileError) as info:
        perceptual_model(kind)
    message = str(info.value)
    assert name in message and str(tmp_path / "hub" / "checkpoints") in message
    assert f"https://download.pytorch.org/models/{name}" in message
    assert "\n" not in message


def test_backbone_loaded_from_torchvision_cache(tmp_path, monkeypatch):
    # a file in torchvision's AlexNet layout (features.{0,3,6,8,10}.*) with known values
    import torchvision

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(losses, "_CACHE", {})
    torch.manual_seed(11)
    state = torchvision.models.alexnet(weights=None).state_dict()
    folder = tmp_path / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    torch.save(state, folder / "alexnet-owt-7be5be79.pth")
    model = perceptual_model("lpips-alex")
    trunk = model.trunk
    assert torch.equal(getattr(trunk.slice1, "0").weight, state["features.0.weight"])
    assert torch.equal(getattr(trunk.slice3, "6").weight, state["features.6.weight"])
    assert torch.equal(getattr(trunk.slice5, "10").bias, state["features.10.bias"])
    # the trained LPIPS heads come from the lpips package
    import lpips
    import os

    heads = torch.load(os.path.join(os.path.dirname(lpips.__file__), "weights/v0.1/alex.pth"),
                       map_location="cpu", weights_only=True)
    assert torch.equal(model.lins[2].weight, heads["lin2.model.1.weight"])


def test_noise_regularization_values():
    ones = torch.ones(16, 16)
    # levels 16 and 8, two unit terms each
    assert noise_regularization([ones]).item() == pytest.approx(4.0)
    white = torch.randn(1, 1, 64, 64, generator=torch.Generator().manual_seed(0))
    stripes = torch.tensor([1.0, -1.0]).repeat(32).reshape(1, 1, 1, 64).expand(1, 1, 64, 64)
    assert noise_regularization([white]) < 0.01 < noise_regularization([stripes])
    batch = torch.cat([white, stripes])
    assert noise_regularization([batch]) == pytest.approx(
        (noise_regularization([white]) + noise_regularization([stripes])).item(), rel=1e-5)


def test_lpips_model_is_frozen():
    model = perceptual_model("random-alex")
    assert isinstance(model, LPIPSModel)
    assert not model.training
    assert not any(p.requires_grad for p in model.parameters())


def test_noise_regularization_stacked_equals_the_per_map_pyramid():
    """Stacking maps of one size (own or pooled) changes nothing: value and gradients as map by map."""
    def per_map(noises):
        total = 0.0
        for noise in noises:
            n = noise.reshape(-1, 1, *noise.shape[-2:])
            while True:
                total = total + ((n * torch.roll(n, 1, dims=3)).mean(dim=[1, 2, 3]).square()
                                 + (n * torch.roll(n, 1, dims=2)).mean(dim=[1, 2, 3]).square()).sum()
                if n.shape[-1] <= 8:
                    break
                n = torch.nn.functional.avg_pool2d(n, 2)
        return total

    generator = torch.Generator().manual_seed(0)
    for sizes in ([4, 8, 8, 16, 16, 32, 32, 64, 64], [64, 16], [32, 6, 12], [4]):
        noises = [(torch.randn(2, 1, s, s, generator=generator, dtype=torch.float64)
                   + torch.randn(2, 1, 1, s, generator=generator, dtype=torch.float64)).requires_grad_(True)
                  for s in sizes]
        got, want = noise_regularization(noises), per_map(noises)
        assert want.item() > 0.01 and abs((got - want).item()) <= 1e-12 * want.item()
        for a, b in zip(torch.autograd.grad(got, noises), torch.autograd.grad(want, noises)):
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-14)
