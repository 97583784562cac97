"""Parity of our StyleGAN2 with NVIDIA's official code on ../shared/golden (float32, atol 1e-4)."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from helpers import golden_dir
from pti_core.generators.stylegan2 import Generator

ATOL = 1e-4
SETS = ["sg2ada_tiny", "sg2ada_small", "sg2ada_resnet_tiny", "sg2ada_orig_tiny", "sg2ada_cond_tiny"]


def _load(name: str):
    folder = golden_dir(name)
    config = json.loads((folder / "config.json").read_text())
    G = Generator(**config["init_kwargs"]).eval()
    G.load_state_dict(load_file(folder / "weights.safetensors"), strict=True)
    return G, load_file(folder / "cases.safetensors"), config


def _close(actual: torch.Tensor, expected: torch.Tensor, what: str) -> None:
    assert actual.shape == expected.shape, (what, actual.shape, expected.shape)
    diff = (actual - expected).abs().max().item()
    assert diff <= ATOL, f"{what}: max |diff| {diff:.3g} > {ATOL}"


@pytest.mark.parametrize("name", SETS)
def test_mapping_and_truncation(name):
    G, cases, config = _load(name)
    assert G.num_ws == config["num_ws"]
    c = cases.get("c")
    with torch.no_grad():
        _close(G.mapping(cases["z"], c), cases["ws"], "ws")
        _close(G.mapping(cases["z"], c, truncation_psi=0.7), cases["ws_psi07"], "ws_psi07")
        _close(G.mapping(cases["z"], c, truncation_psi=0.7, truncation_cutoff=4),
               cases["ws_psi07_cut4"], "ws_psi07_cut4")


@pytest.mark.parametrize("name", SETS)
@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("nhwc_from", [None, 4, 16])
def test_images_and_intermediates(name, fused, nhwc_from):
    G, cases, _ = _load(name)
    layout = {"fused_modconv": fused, "channels_last_from": nhwc_from}
    with torch.no_grad():
        img, inter = G.synthesis(cases["ws"], noise_mode="const", return_intermediates=True, **layout)
        _close(img, cases["img_const"], "img_const")
        assert img.is_contiguous()
        _close(G.synthesis(cases["ws"], noise_mode="none", **layout), cases["img_none"], "img_none")
        _close(G.synthesis(cases["ws_psi07"], noise_mode="const", **layout),
               cases["img_psi07_const"], "img_psi07_const")
    if nhwc_from is not None and not fused:  # the layout option really switches the blocks it names
        # (fused with a batch > 1 is a grouped convolution over [1, N*C, H, W]: NCHW again)
        for block, (x, _) in inter.items():
            nhwc = x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
            assert nhwc == (int(block[1:]) >= nhwc_from), block
    keys = [k for k in cases if k.startswith("inter.")]
    assert keys, "golden set has no intermediates"
    for key in keys:
        _, block, part = key.split(".")
        x, running_img = inter[block]
        _close((x if part == "x" else running_img)[:1], cases[key], key)


def test_full_generator_call_equals_mapping_then_synthesis():
    G, cases, _ = _load("sg2ada_tiny")
    with torch.no_grad():
        _close(G(cases["z"], None, truncation_psi=0.7, noise_mode="const"), cases["img_psi07_const"], "G()")


def test_random_noise_is_seeded_and_differs_from_const():
    G, cases, _ = _load("sg2ada_tiny")
    ws = cases["ws"][:1]
    with torch.no_grad():
        a = G.synthesis(ws, noise_mode="random", generator=torch.Generator().manual_seed(1))
        b = G.synthesis(ws, noise_mode="random", generator=torch.Generator().manual_seed(1))
        c = G.synthesis(ws, noise_mode="const")
    assert torch.equal(a, b)
    assert (a - c).abs().max() > 1e-3


def test_wrong_latent_shape_is_a_clear_error():
    from pti_core.errors import LatentError

    G, cases, _ = _load("sg2ada_tiny")
    with pytest.raises(LatentError, match=r"\[N, 8, 32\]"):
        G.synthesis(torch.zeros(1, 18, 512))


def test_stylespace_round_trip_is_exact_and_edits_change_the_image():
    G, cases, _ = _load("sg2ada_small")
    ws = cases["ws"][:2]
    with torch.no_grad():
        styles = G.synthesis.compute_styles(ws)
        assert list(styles) == [name for name, _, _ in G.synthesis.style_layers()]
        assert len(styles) == G.num_ws + len(G.synthesis.block_resolutions) - 1  # convs + torgbs
        reference = G.synthesis(ws)
        assert torch.equal(G.synthesis(ws, styles=styles), reference)
        edited = dict(styles)
        edited["b16.conv0"] = styles["b16.conv0"].clone()
        edited["b16.conv0"][:, 3] += 5.0  # one channel (a uniform scale is cancelled by demodulation)
        assert (G.synthesis(ws, styles=edited) - reference).abs().max() > 1e-3


@pytest.mark.parametrize("name", ["sg2ada_small", "sg2ada_resnet_tiny"])
@pytest.mark.parametrize("fused", [True, False])
def test_nhwc_activations_give_the_same_gradients(name, fused):
    """Gradients for ws and for every synthesis weight agree between NCHW and NHWC blocks.

    In float64: in float32 the layouts differ by rounding (1e-6), enough to flip the sign of a
    pre-activation near zero and so change the leaky ReLU's slope for that entry.
    """
    G, cases, _ = _load(name)
    G = G.double()
    ws = cases["ws"][:2].double().requires_grad_(True)
    params = [p for n, p in G.named_parameters() if n.startswith("synthesis.")]
    weights = torch.randn(2, G.img_channels, G.img_resolution, G.img_resolution,
                          generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    grads = []
    for nhwc_from in (None, 4):
        img = G.synthesis(ws, noise_mode="const", fused_modconv=fused, channels_last_from=nhwc_from)
        grads.append(torch.autograd.grad((img * weights).sum(), [ws, *params]))
    for plain, nhwc in zip(*grads):
        assert float((plain - nhwc).abs().max()) <= 1e-9 * max(1.0, float(plain.abs().max()))
