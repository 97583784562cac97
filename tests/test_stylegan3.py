"""StyleGAN3 (T and R): parity with NVIDIA's official code on ../shared/golden (float32, atol 1e-4),
the filtered leaky ReLU's fast path against its reference, input transforms, StyleSpace."""

from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors.torch import load_file

from helpers import golden_dir
from pti_core.errors import CheckpointError, LatentError
from pti_core.generators import build_generator
from pti_core.generators.filtered_lrelu import design_lowpass_filter, filtered_lrelu
from pti_core.generators.stylegan3 import Generator, input_transform, make_transform

ATOL = 1e-4
SETS = ["sg3t_tiny", "sg3r_tiny"]



def _load(name: str):
    folder = golden_dir(name)
    config = json.loads((folder / "config.json").read_text())
    G = Generator(**config["init_kwargs"]).eval()
    G.load_state_dict(load_file(folder / "weights.safetensors"), strict=True)
    return G, load_file(folder / "cases.safetensors"), config


def _close(actual: torch.Tensor, expected: torch.Tensor, what: str, atol: float = ATOL) -> None:
    assert actual.shape == expected.shape, (what, actual.shape, expected.shape)
    diff = (actual - expected).abs().max().item()
    assert diff <= atol, f"{what}: max |diff| {diff:.3g} > {atol}"


@pytest.mark.parametrize("name", SETS)
def test_construction_matches_official_geometry_and_filters(name):
    """A freshly built generator has NVIDIA's names, shapes, paddings and designed filters."""
    folder = golden_dir(name)
    config = json.loads((folder / "config.json").read_text())
    weights = load_file(folder / "weights.safetensors")
    G = Generator(**config["init_kwargs"])
    assert G.num_ws == config["num_ws"] and G.synthesis.layer_names == config["layer_names"]
    state = G.state_dict()
    assert sorted(state) == sorted(weights)
    for key, value in weights.items():
        assert state[key].shape == value.shape, key
        if key.endswith("_filter"):  # designed at construction, not learned
            _close(state[key], value, key, atol=1e-7)
    for spec, (layer_name, layer) in zip(config["layers"][1:], G.synthesis.layers()):
        assert layer_name == spec["name"]
        assert layer.padding == spec["padding"], layer_name
        assert (layer.up_factor, layer.down_factor, layer.down_radial) == \
            (spec["up_factor"], spec["down_factor"], spec["down_radial"]), layer_name


@pytest.mark.parametrize("name", SETS)
def test_mapping_and_truncation(name):
    G, cases, _ = _load(name)
    with torch.no_grad():
        _close(G.mapping(cases["z"]), cases["ws"], "ws")
        _close(G.mapping(cases["z"], None, truncation_psi=0.7), cases["ws_psi07"], "ws_psi07")


@pytest.mark.parametrize("name", SETS)
@pytest.mark.parametrize("impl", ["fast", "ref"])
def test_images_and_every_intermediate(name, impl):
    G, cases, _ = _load(name)
    with torch.no_grad():
        img, inter = G.synthesis(cases["ws"], noise_mode="const", impl=impl, return_intermediates=True)
        _close(img, cases["img_const"], "img_const")
        _close(G.synthesis(cases["ws"], noise_mode="none", impl=impl), cases["img_none"], "img_none")
        _close(G.synthesis(cases["ws_psi07"], impl=impl), cases["img_psi07_const"], "img_psi07_const")
    keys = [k for k in cases if k.startswith("inter.")]
    assert len(keys) == G.synthesis.num_layers + 2  # input + every layer
    for key in keys:
        _close(inter[key[len("inter."):]][:1], cases[key], key)


@pytest.mark.parametrize("name", SETS)
def test_transformed_input_without_touching_the_buffer(name):
    G, cases, _ = _load(name)
    matrix = input_transform((0.1, -0.05), 10.0)
    _close(matrix, cases["transform"], "input_transform", atol=1e-7)
    inverse = torch.linalg.inv(make_transform((0.1, -0.05), 10.0)).float()
    _close(inverse, cases["transform"], "inverse", atol=1e-7)
    with torch.no_grad():
        img = G.synthesis(cases["ws"], transform=matrix)
        _close(img, cases["img_transformed"], "img_transformed")
        assert torch.equal(G.synthesis.input.transform, torch.eye(3))  # keyword did not mutate G
        batched = G.synthesis(cases["ws"], transform=matrix.expand(4, 3, 3))
        assert torch.equal(batched, img)
        G.synthesis.input.transform.copy_(cases["transform"])  # NVIDIA's way gives the same image
        _close(G.synthesis(cases["ws"]), cases["img_transformed"], "buffer transform")
    assert (cases["img_transformed"] - cases["img_const"]).abs().max() > 1e-2  # the case is not trivial


def test_full_generator_call_and_rebuild_from_init_kwargs():
    G, cases, _ = _load("sg3t_tiny")
    with torch.no_grad():
        _close(G(cases["z"], None, truncation_psi=0.7), cases["img_psi07_const"], "G()")
    json.dumps(G.init_kwargs)
    H = build_generator("stylegan3", json.loads(json.dumps(G.init_kwargs))).eval()
    H.load_state_dict(G.state_dict(), strict=True)
    with torch.no_grad():
        assert torch.equal(H.synthesis(cases["ws"]), G.synthesis(cases["ws"]))
    assert G.architecture_name == "stylegan3" and G.synthesis.noise_buffers() == {}


@pytest.mark.parametrize("name", SETS)
def test_stylespace_round_trip_is_exact_and_edits_change_the_image(name):
    G, cases, _ = _load(name)
    ws = cases["ws"][:2]
    layers = G.synthesis.style_layers()
    assert [index for _, index, _ in layers] == list(range(1, G.num_ws))
    with torch.no_grad():
        styles = G.synthesis.compute_styles(ws)
        assert list(styles) == G.synthesis.layer_names
        base = G.synthesis(ws)
        assert torch.equal(G.synthesis(ws, styles=styles), base)
        edited = dict(styles)
        name5, _, _ = layers[5]
        edited[name5] = styles[name5].clone()
        edited[name5][:, 0] += 5.0
        changed = G.synthesis(ws, styles=edited)
    assert (changed - base).abs().max() > 1e-3
    with pytest.raises(LatentError):
        G.synthesis(ws, styles={"b4.conv1": styles[name5]})


def test_noise_arguments_are_ignored_and_batches_are_independent():
    G, cases, _ = _load("sg3t_tiny")
    ws = cases["ws"]
    with torch.no_grad():
        ref = G.synthesis(ws)
        assert torch.equal(G.synthesis(ws, noise_mode="random", generator=torch.Generator().manual_seed(1),
                                       fused_modconv=False, force_fp32=False), ref)
        singles = torch.cat([G.synthesis(ws[i:i + 1]) for i in range(4)])
    _close(singles, ref, "batch vs single", atol=1e-6)
    with pytest.raises(LatentError):
        G.synthesis(ws[:, :5])


def test_magnitude_ema_only_updates_when_asked():
    G, cases, _ = _load("sg3r_tiny")
    before = {name: layer.magnitude_ema.clone() for name, layer in G.synthesis.layers()}
    with torch.no_grad():
        G.synthesis(cases["ws"])
        G(cases["z"])
    assert all(torch.equal(layer.magnitude_ema, before[name]) for name, layer in G.synthesis.layers())
    with torch.no_grad():
        G.synthesis(cases["ws"], update_emas=True)
    assert not torch.equal(G.synthesis.L3_36_8.magnitude_ema, before["L3_36_8"])


def test_transform_is_differentiable_for_alignment_search():
    G, cases, _ = _load("sg3t_tiny")
    translate = torch.tensor([0.05, 0.0], requires_grad=True)
    angle = torch.tensor(3.0, requires_grad=True)
    img = G.synthesis(cases["ws"][:1], transform=input_transform(translate, angle))
    img.square().mean().backward()
    assert translate.grad is not None and angle.grad is not None
    assert torch.isfinite(translate.grad).all() and translate.grad.abs().sum() > 0 and angle.grad.abs() > 0
    # Finite difference along x agrees with the gradient.
    with torch.no_grad():
        eps = 1e-2
        plus, minus = (G.synthesis(cases["ws"][:1], transform=input_transform((0.05 + d, 0.0), 3.0))
                       .square().mean() for d in (eps, -eps))
    numeric = (plus - minus) / (2 * eps)
    assert math.isclose(numeric.item(), translate.grad[0].item(), rel_tol=0.05, abs_tol=1e-6)


@pytest.mark.parametrize("up,down,padding,radial,flip", [
    (2, 2, [9, 8, 9, 8], False, False),
    (4, 2, [-6, -9, -6, -9], False, False),
    (2, 2, [-11, -12, -11, -12], True, False),
    (2, 2, [11, 10, 11, 10], True, True),
    (2, 1, [5, 4, 3, 6], False, True),
    (1, 2, [0, 1, 2, 0], False, False),
    (3, 3, [1, 30, 4, 2], False, False),
])
def test_filtered_lrelu_fast_path_equals_reference(up, down, padding, radial, flip):
    gen = torch.Generator().manual_seed(up * 10 + down)
    x = torch.randn(2, 3, 24, 23, generator=gen, requires_grad=True)
    b = torch.randn(3, generator=gen)
    fu = design_lowpass_filter(numtaps=6 * up, cutoff=2.0, width=4.0, fs=16.0 * up) if up > 1 else None
    fd = design_lowpass_filter(numtaps=6 * down, cutoff=3.0, width=5.0, fs=16.0 * up, radial=radial) \
        if down > 1 else None
    kwargs = dict(up=up, down=down, padding=padding, gain=math.sqrt(2), slope=0.2, clamp=2.0,
                  flip_filter=flip)
    fast = filtered_lrelu(x, fu, fd, b, impl="fast", **kwargs)
    ref = filtered_lrelu(x, fu, fd, b, impl="ref", **kwargs)
    _close(fast, ref, "forward", atol=1e-5)
    assert ref.abs().max() > 0.1
    with torch.no_grad():  # the no-grad fast path works in place on its own buffers only
        before = x.clone()
        _close(filtered_lrelu(x, fu, fd, b, impl="fast", **kwargs), ref, "no-grad forward", atol=1e-5)
        assert torch.equal(x, before)
    (grad_fast,) = torch.autograd.grad(fast.sin().sum(), x)
    (grad_ref,) = torch.autograd.grad(ref.sin().sum(), x)
    _close(grad_fast, grad_ref, "gradient", atol=1e-5)


def test_filtered_lrelu_without_filters_is_bias_clamp_and_leaves_its_input_alone():
    x = torch.randn(1, 2, 5, 5) * 10
    before = x.clone()
    b = torch.tensor([1.0, -1.0])
    with torch.no_grad():
        y = filtered_lrelu(x, None, None, b, gain=1.0, slope=1.0, clamp=3.0)
    assert torch.equal(x, before)
    assert torch.equal(y, (x + b.reshape(1, 2, 1, 1)).clamp(-3, 3))


def test_any_resolution_and_the_1024_layout():
    G = Generator(z_dim=8, c_dim=0, w_dim=8, img_resolution=64, img_channels=3, channel_base=256,
                  channel_max=4, num_layers=6, num_critical=2, margin_size=4).eval()
    with torch.no_grad():
        assert G(torch.randn(2, 8)).shape == (2, 3, 64, 64)
    # NVIDIA's FFHQ 1024 config R (stylegan3-r-ffhq-1024x1024): layout and filter shapes.
    big = Generator(z_dim=512, c_dim=0, w_dim=512, img_resolution=1024, img_channels=3,
                    mapping_kwargs={"num_layers": 2}, channel_base=65536, channel_max=1024,
                    conv_kernel=1, use_radial_filters=True, magnitude_ema_beta=0.999, num_fp16_res=4,
                    conv_clamp=256)
    assert big.num_ws == 16
    names = big.synthesis.layer_names
    assert (names[0], names[7], names[10], names[13], names[14]) == \
        ("L0_36_1024", "L7_276_645", "L10_1044_161", "L13_1024_64", "L14_1024_3")
    assert big.synthesis.L10_1044_161.down_filter.shape == (12, 12)  # radial
    assert big.synthesis.L13_1024_64.down_filter.shape == (12,)  # critically sampled: separable
    # The StyleGAN3 paper's parameter counts: R 15.1M, T 22.3M.
    assert round(sum(p.numel() for p in big.parameters()) / 1e5) == 151
    del big
    t_config = Generator(z_dim=512, c_dim=0, w_dim=512, img_resolution=1024, img_channels=3,
                         mapping_kwargs={"num_layers": 2}, channel_base=32768, channel_max=512)
    assert t_config.synthesis.layer_names[10] == "L10_1044_81"
    assert round(sum(p.numel() for p in t_config.parameters()) / 1e5) == 223


def test_docstring_examples():
    import doctest

    from pti_core.generators import filtered_lrelu as filtered_lrelu_module
    from pti_core.generators import stylegan3

    for module in (stylegan3, filtered_lrelu_module):
        result = doctest.testmod(module)
        assert result.attempted > 0 and result.failed == 0, (module.__name__, result)


def test_unknown_constructor_argument_is_a_checkpoint_error():
    with pytest.raises(CheckpointError):
        Generator(z_dim=8, w_dim=8, img_resolution=16, architecture="skip")
