"""Inversion (the PTI projector): schedule, convergence, W/W+, batching, hooks, determinism."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from helpers import tiny_generator, state_copy
from pti_core.errors import Cancelled, ConfigError, ImageError, LatentError
from pti_core.inversion import Inversion, InversionConfig, invert, learning_rate, w_statistics




FAST = dict(perceptual="random-alex", w_avg_samples=64, preview_every=0)





def _target(G, seed: int, batch: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        ws = G.mapping(torch.randn([batch, G.z_dim], generator=g))
        return G.synthesis(ws, noise_mode="const").clamp(-1, 1), ws


def test_learning_rate_schedule():
    config = InversionConfig()
    steps = 100
    lrs = [learning_rate(step, steps, config) for step in range(steps)]
    assert lrs[0] == 0.0
    assert lrs[2] == pytest.approx(0.01 * 2 / 5)  # linear ramp-up over 5 %
    assert lrs[5] == pytest.approx(0.01) and lrs[50] == pytest.approx(0.01)
    t = 90 / steps  # cosine ramp-down over the last 25 %
    assert lrs[90] == pytest.approx(0.01 * (0.5 - 0.5 * math.cos(min(1.0, (1 - t) / 0.25) * math.pi)))
    assert lrs[99] < 1e-4


def test_w_statistics_follow_reference_sampling():
    G = tiny_generator(0)
    w_avg, w_std = w_statistics(G, samples=50, seed=123)
    z = torch.from_numpy(np.random.RandomState(123).randn(50, G.z_dim)).float()
    with torch.no_grad():
        w = G.mapping(z)[:, 0]
    assert torch.allclose(w_avg, w.mean(0), atol=1e-6)
    assert w_std == pytest.approx(float(((w - w.mean(0)) ** 2).sum() / 50) ** 0.5, rel=1e-5)


@pytest.mark.parametrize("space", ["w", "w+"])
def test_inversion_reduces_loss_and_leaves_G_untouched(space):
    G = tiny_generator(1)
    before = state_copy(G)
    target, _ = _target(G, 7)
    result = invert(G, target, config=InversionConfig(space=space, steps=60, **FAST))
    assert isinstance(result, Inversion)
    assert result.ws.shape == (1, G.num_ws, G.w_dim) and result.ws.dtype == torch.float32
    assert result.image.shape == target.shape
    assert result.losses[-1] < 0.5 * result.losses[0]
    rows_equal = torch.equal(result.ws, result.ws[:, :1].expand_as(result.ws))
    assert rows_equal == (space == "w")
    # G bit-exactly unchanged, including its noise buffers, and no gradients left on it
    after = G.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(p.grad is None for p in G.parameters())
    # the returned image is the generator's own render of the pivot
    with torch.no_grad():
        assert torch.allclose(result.image, G.synthesis(result.ws).clamp(-1, 1), atol=1e-6)


def test_any_num_ws():
    G = tiny_generator(2, resolution=8)  # num_ws 4, not 18
    result = invert(G, torch.zeros(1, 3, 8, 8), config=InversionConfig(steps=3, **FAST))
    assert result.ws.shape == (1, 4, G.w_dim)


def test_deterministic_for_seed():
    G = tiny_generator(3)
    target, _ = _target(G, 8)
    config = InversionConfig(steps=15, **FAST)
    first = invert(G, target, config=config)
    second = invert(G, target, config=config)
    assert torch.equal(first.ws, second.ws)
    other = invert(G, target, config=InversionConfig(steps=15, seed=1, **FAST))
    assert not torch.equal(first.ws, other.ws)


def test_batch_of_targets_inverts_each():
    G = tiny_generator(4)
    targets, _ = _target(G, 9, batch=2)
    result = invert(G, targets, config=InversionConfig(steps=40, **FAST))
    assert result.ws.shape == (2, G.num_ws, G.w_dim)
    errors = ((result.image - targets) ** 2).mean(dim=[1, 2, 3])
    swapped = ((result.image - targets.flip(0)) ** 2).mean(dim=[1, 2, 3])
    assert torch.all(errors < swapped)  # each pivot matches its own target


def test_init_ws_is_the_start_point():
    G = tiny_generator(5)
    target, true_ws = _target(G, 10)
    # one step at learning rate 0 (the ramp-up starts at 0): the result is the start latent
    result = invert(G, target, init_ws=true_ws, config=InversionConfig(steps=1, **FAST))
    assert torch.allclose(result.ws, true_ws, atol=1e-6)
    plus = invert(G, target, init_ws=true_ws[:, :1], config=InversionConfig(space="w+", steps=1, **FAST))
    assert torch.allclose(plus.ws, true_ws, atol=1e-6)
    with pytest.raises(LatentError, match="init_ws"):
        invert(G, target, init_ws=torch.zeros(1, G.num_ws + 1, G.w_dim), config=InversionConfig(steps=1, **FAST))


def test_progress_previews_and_cancel():
    G = tiny_generator(6)
    before = state_copy(G)
    target, _ = _target(G, 11)
    calls = []
    invert(G, target, config=InversionConfig(steps=10, perceptual="random-alex", w_avg_samples=64,
                                              preview_every=4),
           progress=lambda step, total, phase, preview: calls.append((step, total, phase, preview)))
    assert [c[0] for c in calls] == list(range(1, 11)) and {c[1] for c in calls} == {10}
    assert {c[2] for c in calls} == {"invert"}
    with_preview = [c[0] for c in calls if c[3] is not None]
    assert with_preview == [4, 8, 10]
    assert calls[3][3].shape == (1, 3, 16, 16) and calls[3][3].abs().max() <= 1

    seen = []
    with pytest.raises(Cancelled):
        invert(G, target, config=InversionConfig(steps=50, **FAST),
               progress=lambda step, *rest: seen.append(step), should_stop=lambda: len(seen) >= 3)
    assert seen == [1, 2, 3]  # stopped before the fourth step
    after = G.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_clear_errors():
    G = tiny_generator(0)
    with pytest.raises(ImageError):
        invert(G, torch.zeros(0, 3, 16, 16), config=InversionConfig(steps=1, **FAST))
    with pytest.raises(ImageError):
        invert(G, "not an image at all", config=InversionConfig(steps=1, **FAST))
    with pytest.raises(ConfigError, match="space"):
        InversionConfig(space="z")
    with pytest.raises(ConfigError, match="steps"):
        InversionConfig(steps=0)
    with pytest.raises(ConfigError, match="perceptual"):
        InversionConfig(perceptual="vgg")


def test_config_json_round_trip():
    import json

    config = InversionConfig(space="w+", steps=12, betas=(0.8, 0.9))
    data = json.loads(json.dumps(config.to_dict()))
    assert InversionConfig.from_dict(data) == config
    assert InversionConfig().to_dict()["w_avg_samples"] == 600  # PTI's reference setting


def test_pixel_l2_term_fits_the_colours_the_perceptual_distance_leaves():
    """InversionConfig.l2_weight adds a pixel MSE to the perceptual distance: the pivot gets closer in pixels."""
    from helpers import tiny_generator
    from pti_core.inversion import InversionConfig, invert

    G = tiny_generator(4)
    with torch.no_grad():
        target = G.synthesis(G.mapping(torch.randn(1, 16, generator=torch.Generator().manual_seed(9))),
                             noise_mode="const").clamp(-1, 1)
    base = dict(steps=100, lr=0.1, perceptual="random-alex", preview_every=0, w_avg_samples=200)
    plain = invert(G, target, config=InversionConfig(**base))
    pixel = invert(G, target, config=InversionConfig(**base, l2_weight=1000.0))  # pixels dominate
    mse = lambda image: float((image - target).square().mean())  # noqa: E731
    assert mse(pixel.image) < 0.7 * mse(plain.image), (mse(plain.image), mse(pixel.image))
    with pytest.raises(Exception, match="l2_weight"):
        InversionConfig(l2_weight=-1.0)
