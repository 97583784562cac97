"""Direction nodes through their classes (no ComfyUI needed): load, discover, from latents, apply, sweep."""

from __future__ import annotations

import importlib
import os

import numpy as np
import pytest
import torch

from helpers import realworld, tiny_generator

APPLY_WIDGETS = ["generator", "latent", "direction", "strength", "layers", "layer_start", "layer_end", "mode",
                 "sweep", "strength_from", "strength_to", "frames"]
APPLY_OPTIONAL = ["direction_2", "strength_2", "direction_3", "strength_3", "condition"]


@pytest.fixture(scope="module")
def nodes(pack):
    return pack.NODE_CLASS_MAPPINGS


@pytest.fixture(scope="module")
def core(pack):
    return importlib.import_module(f"{pack.__name__}.pti_core")   # the pack's own copy, as the nodes use it


@pytest.fixture(scope="module")
def G():
    return tiny_generator(0, resolution=16, w_dim=16).requires_grad_(False)      # num_ws 6


@pytest.fixture(scope="module")
def latent(G):
    with torch.no_grad():
        ws = G.mapping(torch.randn(1, 16, generator=torch.Generator().manual_seed(3)), None)
    return {"ws": ws, "space": "w"}


@pytest.fixture()
def models_dir(tmp_path, monkeypatch):
    folder = tmp_path / "stylegan_directions"
    folder.mkdir()
    monkeypatch.setenv("PTI_MODELS_DIR", str(tmp_path))
    return folder


def _render(core, G, ws):
    with torch.no_grad():
        return core.imageio.nchw_to_comfy(G.synthesis(ws, noise_mode="const"))


def test_node_contracts(nodes):
    ids = ["PTI_LoadDirection", "PTI_ApplyDirection", "PTI_DiscoverDirections", "PTI_DirectionFromLatents"]
    for node_id in ids:
        cls = nodes[node_id]
        assert cls.CATEGORY == "PTI" and cls.DESCRIPTION
        assert len(cls.OUTPUT_TOOLTIPS) == len(cls.RETURN_TYPES) == len(cls.RETURN_NAMES)
        inputs = cls.INPUT_TYPES()
        for group in inputs.values():
            for name, spec in group.items():
                assert spec[1].get("tooltip"), f"{node_id}.{name} has no tooltip"
    apply_inputs = nodes["PTI_ApplyDirection"].INPUT_TYPES()
    assert list(apply_inputs["required"]) == APPLY_WIDGETS       # saved workflows are positional
    assert list(apply_inputs["optional"]) == APPLY_OPTIONAL
    assert nodes["PTI_ApplyDirection"].RETURN_TYPES == ("IMAGE", "STYLEGAN_LATENT")


def test_sweep_of_8_strengths_is_one_image_batch(nodes, core, G, latent):
    direction, = nodes["PTI_DiscoverDirections"]().execute(G, "sefa", "all", 0, 1000, 0)
    images, edited = nodes["PTI_ApplyDirection"]().execute(
        G, latent, direction, 1.0, "all", 0, -1, "add", True, -3.0, 3.0, 8)
    assert images.shape == (8, 16, 16, 3) and images.dtype == torch.float32 and images.is_contiguous()
    assert images.device.type == "cpu" and float(images.min()) >= 0 and float(images.max()) <= 1
    assert edited["ws"].shape == (8, G.num_ws, G.w_dim)
    strengths = np.linspace(-3, 3, 8)
    v = direction.vectors[0, 0]
    for i in (0, 3, 7):
        expected = latent["ws"][0] + float(strengths[i]) * v
        torch.testing.assert_close(edited["ws"][i], expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(images, _render(core, G, edited["ws"]), atol=1e-6, rtol=0)
    changes = (images[1:] - images[:-1]).abs().flatten(1).mean(1)
    assert bool((changes > 0).all()), "every frame differs from the previous one"


def test_apply_custom_layers_and_three_directions(nodes, core, G, latent):
    rng = torch.Generator().manual_seed(5)
    d1, d2, d3, cond = (core.directions.Direction(torch.randn(1, 1, 16, generator=rng), name=n)
                        for n in ("a", "b", "c", "cond"))
    images, edited = nodes["PTI_ApplyDirection"]().execute(
        G, latent, d1, 2.0, "custom", 1, 4, "add", False, -3.0, 3.0, 8,
        direction_2=d2, strength_2=-1.0, direction_3=d3, strength_3=0.5)
    ws, out = latent["ws"], edited["ws"]
    assert images.shape == (1, 16, 16, 3) and edited["space"] == "w+"
    assert torch.equal(out[:, :1], ws[:, :1]) and torch.equal(out[:, 4:], ws[:, 4:])
    expected = ws[:, 1:4] + 2.0 * d1.vectors[0] - 1.0 * d2.vectors[0] + 0.5 * d3.vectors[0]
    torch.testing.assert_close(out[:, 1:4], expected, atol=1e-5, rtol=0)
    _, conditioned = nodes["PTI_ApplyDirection"]().execute(
        G, latent, d1, 2.0, "all", 0, -1, "add", False, -3.0, 3.0, 8, condition=cond)
    delta = (conditioned["ws"] - ws)[0, 0]
    assert abs(float(delta @ cond.vectors[0, 0])) < 1e-4 and conditioned["space"] == "w"


def test_discover_ganspace_preset_becomes_default_layers(nodes, G, latent):
    direction, = nodes["PTI_DiscoverDirections"]().execute(G, "ganspace", "fine", 1, 500, 0)
    assert direction.vectors.shape == (1, 1, 16) and direction.std is not None and direction.layers == (3, 6)
    _, edited = nodes["PTI_ApplyDirection"]().execute(G, latent, direction, 2.0, "direction default", 0, -1,
                                                      "set", False, -3.0, 3.0, 8)
    ws, out = latent["ws"], edited["ws"]
    assert torch.equal(out[:, :3], ws[:, :3]) and not torch.equal(out[:, 3:], ws[:, 3:])
    coordinate = (out[0, 3:] - direction.mean) @ direction.vectors[0, 0] / direction.std[0]
    torch.testing.assert_close(coordinate, torch.full((3,), 2.0), atol=1e-4, rtol=0)


def test_component_set_needs_a_component(nodes, models_dir, G, latent):
    torch.save({"comp": torch.eye(16)[:4, None], "std": torch.ones(4), "mean": torch.zeros(1, 16)},
               models_dir / "my_pca.pt")
    whole, = nodes["PTI_LoadDirection"]().execute("my_pca.pt", -1)
    assert whole.num_components == 4
    with pytest.raises(ValueError, match="pick one"):
        nodes["PTI_ApplyDirection"]().execute(G, latent, whole, 1.0, "all", 0, -1, "add", False, -3.0, 3.0, 8)
    one, = nodes["PTI_LoadDirection"]().execute("my_pca.pt", 2)
    assert torch.equal(one.vectors[0, 0], torch.eye(16)[2])


def test_load_direction_lists_files_and_explains_missing_ones(nodes, models_dir):
    np.save(models_dir / "mine.npy", np.ones((1, 16)))
    choices = nodes["PTI_LoadDirection"].INPUT_TYPES()["required"]["direction_file"][0]
    assert "mine.npy" in choices and "age.pt" not in choices and "ffhq_pca.pt" not in choices  # only what exists
    # a saved workflow naming a well-known file this ComfyUI lacks: told where to get it before the run
    assert nodes["PTI_LoadDirection"].VALIDATE_INPUTS("mine.npy") is True
    message = nodes["PTI_LoadDirection"].VALIDATE_INPUTS("age.pt")
    assert "models/stylegan_directions" in message and "interfacegan_directions/age.pt" in message
    direction, = nodes["PTI_LoadDirection"]().execute("mine.npy", -1)
    assert direction.vectors.shape == (1, 1, 16) and direction.name == "mine"
    with pytest.raises(ValueError, match=r"not in models/stylegan_directions.*https://raw\.githubusercontent\.com/"
                                         r"danielroich/PTI/main/editings/interfacegan_directions/age\.pt"):
        nodes["PTI_LoadDirection"]().execute("age.pt", -1)


def test_real_direction_of_the_wrong_width_is_a_clear_message(nodes, models_dir, G, latent):
    os.symlink(realworld("pti_directions", "smile.pt"), models_dir / "smile.pt")
    smile, = nodes["PTI_LoadDirection"]().execute("smile.pt", -1)
    assert smile.name == "smile" and smile.vectors.shape == (1, 1, 512)
    with pytest.raises(ValueError, match="width 512 but the model's w_dim is 16"):
        nodes["PTI_ApplyDirection"]().execute(G, latent, smile, 1.0, "all", 0, -1, "add", False, -3.0, 3.0, 8)


def test_direction_from_latents_node(nodes, G):
    with torch.no_grad():
        ws_a = G.mapping(torch.randn(4, 16, generator=torch.Generator().manual_seed(1)), None)
    offset = torch.zeros(16)
    offset[3] = 1.5
    direction, = nodes["PTI_DirectionFromLatents"]().execute({"ws": ws_a, "space": "w"},
                                                              {"ws": ws_a + offset, "space": "w"}, False)
    torch.testing.assert_close(direction.vectors[0, 0], torch.eye(16)[3], atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="same mean"):
        nodes["PTI_DirectionFromLatents"]().execute({"ws": ws_a, "space": "w"}, {"ws": ws_a, "space": "w"}, False)


def test_stylespace_direction_sweeps_through_the_styles(nodes, core, G, latent):
    with torch.no_grad():
        styles = G.synthesis.compute_styles(latent["ws"])
    layer = next(iter(styles))
    offset = torch.zeros(1, styles[layer].shape[1])
    offset[0, :4] = 1.0
    direction = core.directions.Direction(None, space="s", name="s_dir", styles={layer: offset})
    images, edited = nodes["PTI_ApplyDirection"]().execute(
        G, latent, direction, 1.0, "all", 0, -1, "add", True, -2.0, 2.0, 5)
    assert images.shape == (5, 16, 16, 3)
    assert torch.equal(edited["ws"], latent["ws"].repeat(5, 1, 1))           # StyleSpace edits leave ws alone
    torch.testing.assert_close(images[2:3], _render(core, G, latent["ws"]), atol=1e-6, rtol=0)   # strength 0
    assert float((images[0] - images[4]).abs().mean()) > 1e-3
    with pytest.raises(ValueError, match="mode 'set'"):
        nodes["PTI_ApplyDirection"]().execute(G, latent, direction, 1.0, "all", 0, -1, "set", False, -2.0, 2.0, 5)


def test_real_ffhq_direction_applies_to_a_512_wide_model(nodes, core, models_dir):
    G512 = tiny_generator(1, resolution=8, w_dim=512).requires_grad_(False)      # w_dim like FFHQ, num_ws 4
    os.symlink(realworld("pti_directions", "age.pt"), models_dir / "age.pt")
    age, = nodes["PTI_LoadDirection"]().execute("age.pt", -1)
    with torch.no_grad():
        ws = G512.mapping(torch.randn(2, 512, generator=torch.Generator().manual_seed(0)), None)
    images, edited = nodes["PTI_ApplyDirection"]().execute(
        G512, {"ws": ws, "space": "w"}, age, 1.5, "custom", 1, 3, "add", False, -3.0, 3.0, 8)
    assert images.shape == (2, 8, 8, 3)
    torch.testing.assert_close(edited["ws"][:, 1:3], ws[:, 1:3] + 1.5 * age.vectors[0], atol=1e-5, rtol=0)
    assert torch.equal(edited["ws"][:, 0], ws[:, 0]) and torch.equal(edited["ws"][:, 3], ws[:, 3])
