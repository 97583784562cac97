"""The loops' automatic choices (``pti_core._runtime``): which modulated-conv path and which memory
layout the generator runs with, and that the loops really use them (values, not timings: those are
in bench/)."""

from __future__ import annotations

import json

import pytest
import torch
from helpers import golden_dir, tiny_generator

from pti_core import _runtime as rt
from pti_core.generators import build_generator
from pti_core.inversion import InversionConfig, invert, w_statistics
from pti_core.tune import TuningConfig, pivotal_tune, tunable_parameters

CPU, CUDA = torch.device("cpu"), torch.device("cuda")


def test_fused_modconv_auto_choice():
    assert rt.use_fused_modconv(None, CUDA) and rt.use_fused_modconv(None, CUDA, train_weights=True, batch=4)
    assert not rt.use_fused_modconv(None, CPU)  # inversion: no weight gradient
    assert rt.use_fused_modconv(None, CPU, train_weights=True, batch=1)  # tuning one image
    assert not rt.use_fused_modconv(None, CPU, train_weights=True, batch=2)
    assert rt.use_fused_modconv(True, CPU) and not rt.use_fused_modconv(False, CUDA)


def test_generator_layout_choice():
    G = tiny_generator(0)
    assert rt.generator_channels_last_from(None, G) == rt.GENERATOR_CHANNELS_LAST_FROM  # auto on CPU
    assert rt.generator_channels_last_from(True, G) == rt.GENERATOR_CHANNELS_LAST_FROM
    assert rt.generator_channels_last_from(False, G) is None
    assert rt.generator_channels_last_from(None, G.to("meta")) is None  # auto elsewhere: NCHW (unmeasured)
    config = json.loads((golden_dir("sg3t_tiny") / "config.json").read_text())
    sg3 = build_generator("stylegan3", config["init_kwargs"])
    assert rt.generator_channels_last_from(True, sg3) is None  # StyleGAN3 has no such option


def _nhwc_blocks(G, calls: list) -> list:
    """Records, per synthesis call, the resolutions whose block output is NHWC."""
    handles = []
    for res, block in G.synthesis.blocks():
        def hook(module, args, output, res=res):
            x = output[0]
            if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
                calls.append(res)
        handles.append(block.register_forward_hook(hook))
    return handles


@pytest.mark.parametrize("loop", ["invert", "tune"])
def test_loops_run_the_generator_nhwc_from_the_chosen_size_with_the_same_result(monkeypatch, loop):
    monkeypatch.setattr(rt, "GENERATOR_CHANNELS_LAST_FROM", 16)  # a tiny model's 16 and 32 px blocks
    G = tiny_generator(1, resolution=32)
    target = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    results = {}
    for layout in (None, False):
        calls: list = []
        handles = _nhwc_blocks(G, calls)
        try:
            if loop == "invert":
                config = InversionConfig(steps=6, perceptual="random-alex", preview_every=0, w_avg_samples=64,
                                         channels_last=layout)
                results[layout] = invert(G, target, config=config).ws
            else:
                config = TuningConfig(steps=6, perceptual="random-alex", preview_every=0, lpips_threshold=0.0,
                                      lr=1e-3, channels_last=layout)
                tuned = pivotal_tune(G, target, G.mapping.w_avg.reshape(1, 1, -1), config=config).generator
                results[layout] = torch.cat([p.detach().flatten() for _, p in tunable_parameters(tuned)])
        finally:
            for handle in handles:
                handle.remove()
        if layout is None:
            assert calls and set(calls) == {16, 32}, calls  # the blocks from 16 px up, every step
        else:
            assert calls == []
    auto, plain = results[None], results[False]
    assert float((auto - plain).abs().max()) <= 1e-3 * float(plain.abs().max())


def test_inversion_freezes_the_generator_only_while_it_runs():
    """The projector never needs weight gradients: the loop runs with the weights frozen (no autograd graph
    through them) and hands the flags back as they were, also when cancelled."""
    from pti_core.errors import Cancelled

    G = tiny_generator(3)
    G.synthesis.b4.conv1.weight.requires_grad_(False)  # a mix of flags, as a caller may have set
    flags = {name: p.requires_grad for name, p in G.named_parameters()}
    seen = []

    def progress(step, total, phase, preview):
        seen.append(any(p.requires_grad for p in G.parameters()))

    config = InversionConfig(steps=3, perceptual="random-alex", preview_every=0, w_avg_samples=64)
    target = torch.zeros(1, 3, 16, 16)
    invert(G, target, config=config, progress=progress)
    assert seen == [False, False, False]
    assert {name: p.requires_grad for name, p in G.named_parameters()} == flags
    with pytest.raises(Cancelled):
        invert(G, target, config=config, should_stop=lambda: len(seen) >= 4, progress=progress)
    assert {name: p.requires_grad for name, p in G.named_parameters()} == flags


def test_styles_stay_float32_under_autocast():
    """The affine layers (w -> styles) run in the weights' precision under a bf16 autocast, with
    the same values and gradients as without autocast: the convolutions are what autocast speeds up."""
    G = tiny_generator(2)
    ws = torch.randn(1, G.num_ws, G.w_dim, generator=torch.Generator().manual_seed(1))
    results = []
    for precision in ("fp32", "bf16"):
        G.zero_grad(set_to_none=True)
        with rt.autocast(CPU, precision):
            styles = G.synthesis.compute_styles(ws)
        assert all(s.dtype == torch.float32 for s in styles.values()), precision
        sum(s.square().sum() for s in styles.values()).backward()
        affine = G.synthesis.b4.conv1.affine
        results.append((styles, affine.weight.grad.clone(), affine.bias.grad.clone()))
    (s32, gw32, gb32), (s16, gw16, gb16) = results
    assert s32.keys() == s16.keys()
    assert all(torch.equal(s32[k], s16[k]) for k in s32)
    assert torch.equal(gw32, gw16) and torch.equal(gb32, gb16)


def _cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.nn.functional.cosine_similarity(a.flatten(), b.flatten(), dim=0))


def test_fp16_tuning_scales_the_loss_so_small_gradients_survive():
    """A loss this small has gradients below float16's range: unscaled, an fp16 tuning step moves no
    weight. Adam's update does not depend on the loss scale, so with loss scaling fp16 must move the
    weights as float32 does (the case of a pixel MSE averaged over a 1024 px image)."""
    G = tiny_generator(0)
    target = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(3)) * 2 - 1
    ws = G.mapping.w_avg[None, None].repeat(1, G.num_ws, 1)
    original = dict(tunable_parameters(G))
    moves = {}
    for precision in ("fp32", "fp16"):
        config = TuningConfig(steps=3, lr=1e-3, l2_weight=1e-7, lpips_weight=0.0, perceptual="random-alex",
                              lpips_threshold=0.0, preview_every=0, precision=precision)
        result = pivotal_tune(G, target, ws, config=config)
        tuned = dict(tunable_parameters(result.generator))
        moves[precision] = torch.cat([(tuned[n] - original[n]).detach().flatten() for n in original])
        assert result.steps_run == [3], precision
    assert moves["fp16"].norm() > 0.5 * moves["fp32"].norm() > 0
    assert _cosine(moves["fp16"], moves["fp32"]) > 0.99


def test_fp16_inversion_scales_the_loss_so_small_gradients_survive(monkeypatch):
    """As above for the projector: with its perceptual distance scaled down by 1e-5 the unscaled fp16
    gradient of w is zero; with loss scaling fp16 moves w as float32 does."""
    from pti_core.losses import LPIPSModel

    distance = LPIPSModel.distance_to_features
    monkeypatch.setattr(LPIPSModel, "distance_to_features", lambda self, *a, **k: distance(self, *a, **k) * 1e-5)
    G = tiny_generator(0)
    target = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(3)) * 2 - 1
    moves = {}
    for precision in ("fp32", "fp16"):
        config = InversionConfig(steps=4, perceptual="random-vgg", precision=precision, preview_every=0,
                                 w_avg_samples=100, initial_noise_factor=0.0)
        w_avg, _ = w_statistics(G, samples=config.w_avg_samples, seed=config.w_avg_seed)
        moves[precision] = invert(G, target, config=config).ws[0, 0] - w_avg
    assert moves["fp16"].norm() > 0.5 * moves["fp32"].norm() > 0
    assert _cosine(moves["fp16"], moves["fp32"]) > 0.99


def test_scaled_step_skips_an_overflowing_step_and_lowers_the_scale():
    param = torch.nn.Parameter(torch.ones(3))
    optimizer = rt.adam([param], lr=0.1)
    scaler = rt.loss_scaler(CPU, "fp16")
    assert scaler.is_enabled() and not rt.loss_scaler(CPU, "bf16").is_enabled()
    start = scaler.get_scale()

    def backward(scaler, slope):
        optimizer.zero_grad(set_to_none=True)
        scaler.scale((param * torch.tensor(slope)).sum()).backward()

    backward(scaler, [1.0, float("inf"), 1.0])
    assert rt.scaled_step(scaler, optimizer) is False
    assert torch.equal(param.detach(), torch.ones(3)) and scaler.get_scale() == start / 2
    backward(scaler, [1.0, -1.0, 0.0])
    assert rt.scaled_step(scaler, optimizer) is True and scaler.get_scale() == start / 2
    value = param.detach().clone()
    assert value[0] < 1 < value[1] and value[2] == 1
    disabled = rt.loss_scaler(CPU, "fp32")
    backward(disabled, [1.0, 1.0, 1.0])
    assert rt.scaled_step(disabled, optimizer) is True and not torch.equal(param.detach(), value)
