"""Loading every supported generator file, golden parity through the loaders, and bit-exact round trips."""

from __future__ import annotations

import argparse
import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from _checkpoint_writers import write_nvidia_pickle, write_torch_save
from helpers import golden_dir, realworld, tiny_generator
from pti_core.errors import CheckpointError, ConfigError, OutputExistsError
from pti_core.generators.checkpoints import (CheckpointInfo, inspect_checkpoint, load_generator, read_checkpoint,
                                             save_generator)

ATOL = 1e-4


def _close(actual: torch.Tensor, expected: torch.Tensor, what: str) -> None:
    assert actual.shape == expected.shape, (what, actual.shape, expected.shape)
    diff = (actual - expected).abs().max().item()
    assert diff <= ATOL, f"{what}: max |diff| {diff:.3g} > {ATOL}"


def _assert_same_weights(state_dict: dict, reference: dict) -> None:
    assert set(state_dict) == set(reference), set(state_dict) ^ set(reference)
    for name, tensor in reference.items():
        assert torch.equal(state_dict[name].to(tensor.dtype), tensor), name


def _check_nvidia_cases(G, cases) -> dict:
    """Checks mapping, truncation and images against NVIDIA's cases; returns the img_const intermediates."""
    with torch.no_grad():
        _close(G.mapping(cases["z"], None), cases["ws"], "ws")
        _close(G.mapping(cases["z"], None, truncation_psi=0.7), cases["ws_psi07"], "ws_psi07")
        _close(G.mapping(cases["z"], None, truncation_psi=0.7, truncation_cutoff=4), cases["ws_psi07_cut4"],
               "ws_psi07_cut4")
        img, inter = G.synthesis(cases["ws"], noise_mode="const", return_intermediates=True)
        _close(img, cases["img_const"], "img_const")
        _close(G.synthesis(cases["ws"], noise_mode="none"), cases["img_none"], "img_none")
        _close(G.synthesis(cases["ws_psi07"], noise_mode="const"), cases["img_psi07_const"], "img_psi07_const")
    return inter


# ---------------------------------------------------------------------------------------------
# Golden files through the loaders

@pytest.mark.parametrize("name,file,fmt", [("sg2ada_small", "standin.pkl", "nvidia-pkl"),
                                           ("pti_tuned_tiny", "model_tuned.pt", "pti-pt")])
def test_nvidia_standins_load_and_match_golden_cases(name, file, fmt):
    folder = golden_dir(name)
    config = json.loads((folder / "config.json").read_text())
    checkpoint = read_checkpoint(folder / file)
    assert checkpoint.format == fmt and checkpoint.architecture == "stylegan2"
    assert checkpoint.init_kwargs == config["init_kwargs"]
    _assert_same_weights(checkpoint.state_dict, load_file(folder / "weights.safetensors"))
    G = load_generator(folder / file)
    assert not G.training and G.num_ws == config["num_ws"]
    cases = load_file(folder / "cases.safetensors")
    inter = _check_nvidia_cases(G, cases)
    for key, expected in cases.items():
        if key.startswith("inter."):  # per-block intermediates (sg2ada_small stores them)
            _, block, part = key.split(".")
            _close(inter[block][0 if part == "x" else 1][:1], expected, key)


def test_rosinality_checkpoint_reproduces_every_golden_case():
    folder = golden_dir("rosinality_small")
    cases = load_file(folder / "cases.safetensors")
    checkpoint = read_checkpoint(folder / "rosinality.pt")
    assert checkpoint.format == "rosinality-pt" and checkpoint.architecture == "stylegan2"
    # the reduced channel table 4:32, 8:32, 16:32, 32:16 is expressible by channel_base/channel_max
    assert checkpoint.init_kwargs["synthesis_kwargs"]["channel_base"] == 512
    assert checkpoint.init_kwargs["synthesis_kwargs"]["channel_max"] == 32
    G = load_generator(folder / "rosinality.pt")
    n = G.num_ws
    with torch.no_grad():
        ws = G.mapping(cases["z"])
        _close(ws[:, 0], cases["w"], "w")
        _close(ws, cases["ws"], "ws")
        _close(G.mapping.w_avg[None], cases["latent_avg"], "latent_avg")
        img, inter = G.synthesis(ws, noise_mode="const", return_intermediates=True)
        _close(img, cases["img_const"], "img_const")
        _close(G.synthesis(ws, noise_mode="none"), cases["img_zero_noise"], "img_zero_noise")
        ws_trunc = G.mapping(cases["z"], truncation_psi=0.7)
        _close(ws_trunc, cases["ws_trunc"], "ws_trunc")
        _close(G.synthesis(ws_trunc), cases["img_trunc"], "img_trunc")
        _close(G.synthesis(cases["w_given"][:, None].repeat(1, n, 1)), cases["img_w_given"], "img_w_given")
        _close(G.synthesis(cases["wplus_given"]), cases["img_wplus_given"], "img_wplus_given")
    _close(inter["b4"][0][:1], cases["inter.conv1"], "inter.conv1")
    _close(inter["b4"][1][:1], cases["inter.to_rgb1"], "inter.to_rgb1")
    for k, res in enumerate(G.synthesis.block_resolutions[1:]):
        _close(inter[f"b{res}"][0][:1], cases[f"inter.convs.{2 * k + 1}"], f"inter.convs.{2 * k + 1}")
        _close(inter[f"b{res}"][1][:1], cases[f"inter.to_rgbs.{k}"], f"inter.to_rgbs.{k}")


def test_rosinality_training_checkpoint_with_args_and_optimisers(tmp_path):
    """A train.py checkpoint (g, d, g_ema, optimisers, argparse args) loads g_ema; weights_only refuses it."""
    folder = golden_dir("rosinality_small")
    cases = load_file(folder / "cases.safetensors")
    g_ema = load_file(folder / "weights.safetensors")
    g = {k: v + 1.0 for k, v in g_ema.items()}  # a different 'g' must not be picked
    d = {"convs.0.0.weight": torch.randn(8, 3, 1, 1)}
    param = torch.nn.Parameter(torch.randn(4))
    optimiser = torch.optim.Adam([param], lr=0.002, betas=(0.0, 0.99))
    param.sum().backward()
    optimiser.step()
    args = argparse.Namespace(size=32, channel_multiplier=1, iter=800000, path="lmdb", augment=False)
    path = tmp_path / "100000.pt"
    torch.save({"g": g, "d": d, "g_ema": g_ema, "g_optim": optimiser.state_dict(),
                "d_optim": optimiser.state_dict(), "args": args, "ada_aug_p": 0.0}, path)
    with pytest.raises(Exception):
        torch.load(path, weights_only=True)  # why the pack needs its own reader
    G = load_generator(path)
    with torch.no_grad():
        _close(G.synthesis(cases["wplus_given"]), cases["img_wplus_given"], "img_wplus_given")
        _close(G.mapping(cases["z"]), cases["ws"], "ws")


def test_legacy_torch_save_format_loads(tmp_path):
    """Pre-1.6 torch.save streams (how older rosinality files were written) are parsed by our own reader."""
    folder = golden_dir("rosinality_small")
    cases = load_file(folder / "cases.safetensors")
    path = tmp_path / "550000.pt"
    torch.save({"g_ema": load_file(folder / "weights.safetensors"), "latent_avg": cases["latent_avg"][0]}, path,
               _use_new_zipfile_serialization=False)
    checkpoint = read_checkpoint(path)
    assert checkpoint.format == "rosinality-pt"
    G = load_generator(path)
    with torch.no_grad():
        _close(G.synthesis(G.mapping(cases["z"], truncation_psi=0.7)), cases["img_trunc"], "img_trunc")


def test_bare_rosinality_safetensors_derives_its_layout():
    folder = golden_dir("rosinality_small")
    cases = load_file(folder / "cases.safetensors")
    checkpoint = read_checkpoint(folder / "weights.safetensors")
    assert checkpoint.format == "rosinality-safetensors"
    G = load_generator(folder / "weights.safetensors")
    with torch.no_grad():
        _close(G.synthesis(G.mapping(cases["z"])), cases["img_const"], "img_const")
        # no latent_avg in a bare state dict: w_avg is the mean W of many z, close to rosinality's
        assert (G.mapping.w_avg - cases["latent_avg"][0]).abs().max() < 0.05


def test_stylegan3_standin_pickle_loads_as_stylegan3():
    folder = golden_dir("sg3t_tiny")
    config = json.loads((folder / "config.json").read_text())
    weights = load_file(folder / "weights.safetensors")
    checkpoint = read_checkpoint(folder / "standin.pkl")
    assert checkpoint.format == "nvidia-pkl" and checkpoint.architecture == "stylegan3"
    assert checkpoint.init_kwargs == config["init_kwargs"]
    _assert_same_weights(checkpoint.state_dict, weights)
    G = load_generator(folder / "standin.pkl")
    assert G.architecture_name == "stylegan3" and G.num_ws == config["num_ws"]
    cases = load_file(folder / "cases.safetensors")
    with torch.no_grad():
        _close(G.mapping(cases["z"]), cases["ws"], "ws")
        _close(G.synthesis(cases["ws"]), cases["img_const"], "img_const")


@pytest.mark.parametrize("name", ["age.pt", "ffhq_pca.pt", "e4e_pose_18x512.pt"])
def test_real_torch_save_files_from_the_wild_read_like_weights_only_torch_load(name):
    """PTI's published direction files (saved from CUDA by torch 1.x) read identically by our zip reader."""
    from pti_core.generators.unpickler import load_torch_file

    path = realworld("pti_directions", name)
    ours = load_torch_file(str(path))
    reference = torch.load(path, weights_only=True, map_location="cpu")
    if isinstance(reference, dict):
        assert set(ours) == set(reference)
        pairs = [(ours[k], reference[k]) for k in reference]
    else:
        pairs = [(ours, reference)]
    for a, b in pairs:
        assert a.device.type == "cpu" and a.dtype == b.dtype and torch.equal(a, b)
    with pytest.raises(CheckpointError, match="not a generator|does not know") as error:
        read_checkpoint(path)
    assert str(path) in str(error.value)


# ---------------------------------------------------------------------------------------------
# Files written here: old-torch pickles, PTI-style torch.save, bare state dicts

@pytest.mark.parametrize("old_torch", [True, False])
@pytest.mark.parametrize("snapshot", [True, False])
def test_nvidia_pickle_written_by_old_and_new_torch(tmp_path, old_torch, snapshot):
    """Snapshots and bare networks, with torch 1.7-1.9's fewer nn.Module keys, EasyDict kwargs, numpy values."""
    G = tiny_generator(3)
    path = tmp_path / "network-snapshot-000100.pkl"
    write_nvidia_pickle(G, path, old_torch=old_torch, snapshot=snapshot)
    checkpoint = read_checkpoint(path)
    assert checkpoint.format == "nvidia-pkl"
    assert checkpoint.init_kwargs == G.init_kwargs
    _assert_same_weights(checkpoint.state_dict, G.state_dict())
    loaded = load_generator(path)
    z = torch.randn(2, G.z_dim, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(loaded(z, noise_mode="const"), G(z, noise_mode="const"))


def test_numpy_1x_module_names_in_pickles(tmp_path):
    """NVIDIA's released pickles were written with numpy 1.x: ``numpy.core.multiarray.*`` globals."""
    G = tiny_generator(7)
    path = tmp_path / "numpy1.pkl"
    write_nvidia_pickle(G, path, old_torch=True, protocol=2)  # text GLOBAL opcodes: names can be rewritten
    data = path.read_bytes()
    assert b"numpy._core.multiarray\nscalar" in data and b"numpy._core.multiarray\n_reconstruct" in data
    path.write_bytes(data.replace(b"numpy._core.multiarray\n", b"numpy.core.multiarray\n"))
    checkpoint = read_checkpoint(path)
    _assert_same_weights(checkpoint.state_dict, G.state_dict())


def test_pti_style_torch_save_of_persistent_generator(tmp_path):
    from _checkpoint_writers import nvidia_init_kwargs, record

    G = tiny_generator(4, architecture="resnet")
    path = tmp_path / "model_run_image.pt"
    write_torch_save(lambda: record(G, init_kwargs=nvidia_init_kwargs(G)), path)
    checkpoint = read_checkpoint(path)
    assert checkpoint.format == "pti-pt"
    _assert_same_weights(checkpoint.state_dict, G.state_dict())


def test_bare_state_dict_needs_config_and_accepts_dict_or_json(tmp_path):
    folder = golden_dir("sg2ada_small")
    weights = folder / "weights.safetensors"
    with pytest.raises(CheckpointError, match="config"):
        read_checkpoint(weights)
    config = json.loads((folder / "config.json").read_text())
    from_dict = read_checkpoint(weights, config=config["init_kwargs"])
    from_file = read_checkpoint(weights, config=folder / "config.json")  # {"init_kwargs": ...} files work too
    assert from_dict.format == "safetensors-state-dict" and from_dict.init_kwargs == from_file.init_kwargs
    G = load_generator(weights, config=str(folder / "config.json"))
    cases = load_file(folder / "cases.safetensors")
    with torch.no_grad():
        _close(G.synthesis(cases["ws"][:1]), cases["img_const"][:1], "img_const")
    # a torch.save of the same state dict needs the same config
    pt = tmp_path / "state.pt"
    torch.save(load_file(weights), pt)
    assert read_checkpoint(pt, config=config["init_kwargs"]).format == "torch-state-dict"


def test_wrong_config_is_a_clear_error_naming_the_file():
    folder = golden_dir("sg2ada_small")
    config = json.loads((folder / "config.json").read_text())["init_kwargs"]
    config = {**config, "synthesis_kwargs": {**config["synthesis_kwargs"], "channel_max": 64}}
    with pytest.raises(CheckpointError) as error:
        load_generator(folder / "weights.safetensors", config=config)
    message = str(error.value)
    assert str(folder / "weights.safetensors") in message and "wrong shape" in message and "\n" not in message
    huge = {**config, "img_resolution": 1 << 16,  # crafted sizes: refused on the meta device, nothing allocated
            "synthesis_kwargs": {**config["synthesis_kwargs"], "channel_base": 1 << 30, "channel_max": 4096}}
    with pytest.raises(CheckpointError, match="do not fit"):
        load_generator(folder / "weights.safetensors", config=huge)
    with pytest.raises(CheckpointError, match="bogus"):
        load_generator(folder / "weights.safetensors", config={**config, "bogus": 1})


# ---------------------------------------------------------------------------------------------
# Saving: bit-exact round trips, metadata, overwrite rules

def _assert_bit_exact(G, loaded) -> None:
    _assert_same_weights(loaded.state_dict(), G.state_dict())
    assert loaded.init_kwargs == G.init_kwargs and type(loaded) is type(G)
    with torch.no_grad():
        ws = G.mapping(torch.randn(1, G.z_dim, generator=torch.Generator().manual_seed(1)))
        assert torch.equal(loaded.mapping(torch.randn(1, G.z_dim, generator=torch.Generator().manual_seed(1))), ws)
        assert torch.equal(loaded.synthesis(ws, noise_mode="const"), G.synthesis(ws, noise_mode="const"))


@pytest.mark.parametrize("source", ["tiny", "sg2ada_small", "rosinality_small", "sg3t_tiny"])
def test_save_then_load_is_bit_exact(tmp_path, source):
    if source == "tiny":
        G = tiny_generator(5, architecture="orig")
    else:
        folder = golden_dir(source)
        G = load_generator(folder / ("rosinality.pt" if source == "rosinality_small" else "standin.pkl"))
    out = save_generator(G, tmp_path / "g.safetensors", metadata={"note": "test", "steps": 3})
    assert out == tmp_path / "g.safetensors"
    assert [p.name for p in tmp_path.iterdir()] == ["g.safetensors"]  # no temporary files left
    with safe_open(str(out), framework="pt") as handle:
        metadata = handle.metadata()
    assert metadata["format"] == "pti_core.generator" and metadata["architecture"] == G.architecture_name
    assert json.loads(metadata["init_kwargs"]) == G.init_kwargs
    assert metadata["note"] == "test" and metadata["steps"] == "3" and metadata["pti_core_version"]
    assert read_checkpoint(out).format == "pti-safetensors"
    _assert_bit_exact(G, load_generator(out))


def test_save_refuses_to_overwrite_unless_forced(tmp_path):
    G = tiny_generator(6)
    path = tmp_path / "g.safetensors"
    path.write_bytes(b"keep me")
    with pytest.raises(OutputExistsError, match="already exists"):
        save_generator(G, path)
    assert path.read_bytes() == b"keep me"
    save_generator(G, path, force=True)
    _assert_bit_exact(G, load_generator(path))
    with pytest.raises(ConfigError, match="reserved"):
        save_generator(G, tmp_path / "other.safetensors", metadata={"architecture": "x"})
    with pytest.raises(ConfigError):
        save_generator(torch.nn.Linear(2, 2), tmp_path / "linear.safetensors")


def test_load_generator_device_and_eval_mode():
    G = load_generator(golden_dir("pti_tuned_tiny") / "model_tuned.pt", device="cpu")
    assert not G.training and next(G.parameters()).device.type == "cpu"


def test_loading_and_saving_under_inference_mode_gives_trainable_generators(tmp_path):
    """ComfyUI runs nodes under torch.inference_mode(); a loaded generator must still be tunable."""
    import copy

    with torch.inference_mode():
        G = load_generator(golden_dir("pti_tuned_tiny") / "model_tuned.pt")
        save_generator(G, tmp_path / "g.safetensors")
    assert not any(p.is_inference() for p in G.parameters())
    tuned = copy.deepcopy(G).requires_grad_(True)
    ws = tuned.mapping(torch.randn(1, tuned.z_dim))
    tuned.synthesis(ws).square().mean().backward()
    assert tuned.synthesis.b32.conv1.weight.grad.abs().sum() > 0
    _assert_bit_exact(G, load_generator(tmp_path / "g.safetensors"))


def test_inspect_checkpoint_fields(tmp_path):
    folder = golden_dir("sg2ada_small")
    info = inspect_checkpoint(folder / "standin.pkl")
    assert isinstance(info, CheckpointInfo)
    G = load_generator(folder / "standin.pkl")
    assert (info.format, info.architecture, info.resolution, info.num_ws, info.w_dim, info.z_dim, info.c_dim) == \
        ("nvidia-pkl", "stylegan2", 64, 10, 64, 64, 0)
    assert info.params == sum(p.numel() for p in G.parameters())
    import hashlib

    assert info.sha256 == hashlib.sha256((folder / "standin.pkl").read_bytes()).hexdigest()
    with pytest.raises(Exception):
        info.format = "x"  # frozen
    assert json.loads(json.dumps(info.to_dict()))["num_ws"] == 10
    # a bare state dict: inspect takes the same config
    bare = tmp_path / "bare.safetensors"
    save_file(G.state_dict(), bare)
    assert inspect_checkpoint(bare, config=G.init_kwargs).format == "safetensors-state-dict"
