"""The named settings (``pti_core.presets``): the paper's are the config defaults; the fast ones reach
the paper's final reconstruction in a fraction of the steps (steps, not seconds: timings live in bench/)."""

from __future__ import annotations

import doctest

import pytest
import torch
from helpers import realworld, tiny_generator

from pti_core import presets
from pti_core.errors import ConfigError
from pti_core.imageio import load_image, prepare_target
from pti_core.inversion import InversionConfig, invert
from pti_core.metrics import mse
from pti_core.tune import TuningConfig, pivotal_tune


def test_paper_preset_is_the_config_defaults():
    inversion, tuning = presets.preset("paper")
    assert inversion == InversionConfig() and tuning == TuningConfig()
    assert (inversion.steps, inversion.lr, tuning.steps, tuning.lr, tuning.precision) == (450, 0.01, 350, 3e-4, "fp32")


def test_fast_preset_settings_and_precision_follow_the_hardware(monkeypatch):
    monkeypatch.setattr(presets, "native_bf16", lambda device: True)
    inversion, tuning = presets.preset("fast")
    assert (inversion.steps, inversion.precision) == (presets.FAST_INVERSION_STEPS, "bf16")
    assert (tuning.steps, tuning.lr, tuning.precision) == (350, presets.FAST_TUNING_LR, "bf16")
    assert (inversion.lr, tuning.lpips_threshold, tuning.perceptual) == (0.01, 0.06, "lpips-alex")  # same losses
    monkeypatch.setattr(presets, "native_bf16", lambda device: False)  # emulated bf16 would be slower
    inversion, tuning = presets.preset("fast")
    assert inversion.precision == tuning.precision == "fp32"


def test_overrides_go_to_the_configs_that_have_the_field():
    inversion, tuning = presets.preset("paper", perceptual="stlpips-alex", optimize_noise=False, mode="shared")
    assert inversion.perceptual == tuning.perceptual == "stlpips-alex"
    assert inversion.optimize_noise is False and tuning.mode == "shared"
    with pytest.raises(ConfigError, match="unknown config field"):
        presets.preset("paper", learning_rate=1.0)
    with pytest.raises(ConfigError, match="preset must be one of"):
        presets.preset("quick")


def test_native_bf16_answers_for_the_cpu():
    assert isinstance(presets.native_bf16("cpu"), bool)
    assert presets.native_bf16("meta") is False


def test_docstring_example():
    result = doctest.testmod(presets)
    assert result.attempted > 0 and result.failed == 0


@pytest.mark.slow
def test_fast_tuning_reaches_the_paper_tunings_final_quality_in_a_third_of_the_steps():
    """Same pivot, same losses (fp32 on both sides, so only the schedule differs)."""
    G = tiny_generator(0, resolution=32, w_dim=32)
    target = prepare_target(load_image(realworld("photos", "astronaut.png")), G.img_resolution)
    pivot = invert(G, target, config=InversionConfig(steps=40, perceptual="random-alex", preview_every=0,
                                                     w_avg_samples=200)).ws
    paper_steps = 150
    common = dict(perceptual="random-alex", lpips_threshold=0.0, preview_every=1, precision="fp32")
    paper_inv, paper_tune = presets.preset("paper", **common)
    fast_inv, fast_tune = presets.preset("fast", **common)
    assert fast_inv.steps < paper_inv.steps / 4

    def tune(config, steps):
        curve = []
        pivotal_tune(G, target, pivot, config=TuningConfig(**{**config.to_dict(), "steps": steps}),
                     progress=lambda step, total, phase, preview: curve.append(float(mse(preview, target)[0])))
        return curve

    paper_final = tune(paper_tune, paper_steps)[-1]
    fast_curve = tune(fast_tune, paper_steps // 3)
    assert min(fast_curve) <= paper_final, (min(fast_curve), paper_final)
    with torch.no_grad():
        start = float(mse(G.synthesis(pivot).clamp(-1, 1), target)[0])
    assert paper_final < 0.9 * start  # the paper's run itself improved on the pivot (the bar is not trivial)
