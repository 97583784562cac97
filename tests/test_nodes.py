"""Node classes of the models / latents / pti families, run without ComfyUI on a tiny generator.

ComfyUI runs nodes under ``torch.inference_mode()``; the tests call them the same way.
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from helpers import REPO, tiny_generator

OUR_IDS = {"PTI_LoadStyleGAN", "PTI_SaveStyleGAN", "PTI_Generate", "PTI_RenderLatent",
           "PTI_SaveLatent", "PTI_LoadLatent", "PTI_Invert", "PTI_PivotalTune"}
FAST_INVERT = dict(space="w", steps=4, learning_rate=0.01, seed=0, perceptual="random-alex")
FAST_TUNE = dict(steps=4, learning_rate=3e-3, lpips_threshold=0.0, locality="off", mode="per-image", seed=0,
                 perceptual="random-alex")


@pytest.fixture()
def nodes(pack):
    return pack.NODE_CLASS_MAPPINGS


@pytest.fixture()
def models_dir(tmp_path, monkeypatch):
    from pti_core import save_generator
    folder = tmp_path / "models"
    (folder / "stylegan").mkdir(parents=True)
    save_generator(tiny_generator(1), folder / "stylegan" / "tiny.safetensors")
    monkeypatch.setenv("PTI_MODELS_DIR", str(folder))
    monkeypatch.setenv("PTI_INPUT_DIR", str(tmp_path / "input"))
    monkeypatch.setenv("PTI_OUTPUT_DIR", str(tmp_path / "output"))
    return folder


def run(nodes, node_id, *args, **kwargs):
    """Calls a node like ComfyUI does: a fresh instance, its FUNCTION, under inference mode."""
    cls = nodes[node_id]
    with torch.inference_mode():
        return getattr(cls(), cls.FUNCTION)(*args, **kwargs)


def state(G) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in G.state_dict().items()}


def assert_same_state(G, before):
    after = G.state_dict()
    assert after.keys() == before.keys()
    assert all(torch.equal(after[k], before[k]) for k in before)


def assert_comfy_image(x, shape):
    assert tuple(x.shape) == shape and x.dtype == torch.float32 and x.is_contiguous() and x.device.type == "cpu"
    assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0


# ----------------------------------------------------------------------------- conventions

def test_node_conventions(nodes, pack):
    assert OUR_IDS <= set(nodes)
    for node_id in OUR_IDS:
        cls = nodes[node_id]
        assert cls.CATEGORY == "PTI" and len(cls.DESCRIPTION) > 40, node_id
        assert callable(getattr(cls, cls.FUNCTION))
        assert len(cls.OUTPUT_TOOLTIPS) == len(cls.RETURN_TYPES), node_id
        assert node_id in pack.NODE_DISPLAY_NAME_MAPPINGS
        aliases = cls.SEARCH_ALIASES  # the words a user types in the node search (ComfyUI 0.33)
        assert len(aliases) >= 4 and all(a == a.lower() and a.strip() for a in aliases), node_id
        assert len(set(aliases)) == len(aliases), node_id
        spec = cls.INPUT_TYPES()
        for section in spec.values():
            for name, value in section.items():
                assert value[1].get("tooltip"), (node_id, name)


def test_pack_import_is_light():
    code = ("import sys; sys.path.insert(0, 'tests'); from helpers import load_pack; "
            "pre = set(sys.modules); load_pack(); "
            "heavy = {'lpips', 'kornia', 'safetensors', 'dlib', 'pti_core.inversion', 'comfyui_pti.pti_core.inversion'}; "
            "print(sorted(heavy & (set(sys.modules) - pre)))")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


# ----------------------------------------------------------------------------- models

def test_load_generate_render_save(nodes, models_dir):
    assert "tiny.safetensors" in nodes["PTI_LoadStyleGAN"].INPUT_TYPES()["required"]["model_name"][0]
    (G,) = run(nodes, "PTI_LoadStyleGAN", "tiny.safetensors")
    assert not any(p.is_inference() for p in G.parameters())  # usable by the optimisation nodes
    reference = tiny_generator(1)
    images, latent = run(nodes, "PTI_Generate", G, 7, 3, 0.7, "const")
    assert_comfy_image(images, (3, 16, 16, 3))
    assert latent["space"] == "w" and latent["ws"].shape == (3, G.num_ws, 16) and latent["ws"].device.type == "cpu"
    z = torch.randn(3, 16, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        expected = reference.mapping(z, None, truncation_psi=0.7)
        expected_images = reference.synthesis(expected, noise_mode="const")
    assert torch.allclose(latent["ws"], expected, atol=1e-6)  # the file holds the same generator
    assert torch.allclose(images, (expected_images.permute(0, 2, 3, 1).clamp(-1, 1) + 1) / 2, atol=1e-5)
    again, _ = run(nodes, "PTI_Generate", G, 7, 3, 0.7, "const")
    other, _ = run(nodes, "PTI_Generate", G, 8, 3, 0.7, "const")
    assert torch.equal(images, again) and not torch.equal(images, other)
    (rendered,) = run(nodes, "PTI_RenderLatent", G, latent, "const")
    assert torch.equal(rendered, images)
    with torch.no_grad():
        for name, param in G.named_parameters():
            if name.endswith("noise_strength"):
                param.fill_(0.5)  # a random tiny generator starts with noise switched off
    noisy_a = run(nodes, "PTI_Generate", G, 7, 3, 0.7, "random")[0]
    noisy_b = run(nodes, "PTI_Generate", G, 7, 3, 0.7, "random")[0]
    assert torch.equal(noisy_a, noisy_b) and not torch.equal(noisy_a, images)  # seeded noise
    G.load_state_dict(state(reference))

    # save: a new file each time, loadable, the same weights
    first = run(nodes, "PTI_SaveStyleGAN", G, "PTI/copy")["ui"]["text"][0]
    second = run(nodes, "PTI_SaveStyleGAN", G, "PTI/copy")["ui"]["text"][0]
    assert (first, second) == ("PTI/copy_00001_.safetensors", "PTI/copy_00002_.safetensors")
    (loaded,) = run(nodes, "PTI_LoadStyleGAN", "PTI/copy_00001_.safetensors")
    assert_same_state(loaded, state(G))
    with pytest.raises(ValueError, match="outside"):
        run(nodes, "PTI_SaveStyleGAN", G, "../escape")


def test_load_stylegan_errors_and_is_changed(nodes, models_dir):
    cls = nodes["PTI_LoadStyleGAN"]
    with pytest.raises(ValueError) as info:
        run(nodes, "PTI_LoadStyleGAN", "missing.pkl")
    message = str(info.value)
    assert "missing.pkl" in message and "models/stylegan" in message and "\n" not in message
    (models_dir / "stylegan" / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError) as info:
        run(nodes, "PTI_LoadStyleGAN", "junk.pt")
    assert "junk.pt" in str(info.value) and "\n" not in str(info.value)
    path = models_dir / "stylegan" / "tiny.safetensors"
    before = cls.IS_CHANGED("tiny.safetensors")
    assert before == cls.IS_CHANGED("tiny.safetensors")
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    assert cls.IS_CHANGED("tiny.safetensors") != before


def test_latent_from_another_model_is_refused(nodes):
    G = tiny_generator(0)
    wide = {"ws": torch.zeros(1, G.num_ws, 8), "space": "w"}
    with pytest.raises(ValueError, match="different model.*w_dim=8.*w_dim=16"):
        run(nodes, "PTI_RenderLatent", G, wide, "const")
    short = {"ws": torch.zeros(1, G.num_ws - 1, 16), "space": "w"}
    with pytest.raises(ValueError, match="num_ws"):
        run(nodes, "PTI_RenderLatent", G, short, "const")


# ----------------------------------------------------------------------------- latents

def test_latent_round_trip_and_nvidia_npz(nodes, models_dir, tmp_path):
    ws = torch.randn(2, 6, 16)
    result = run(nodes, "PTI_SaveLatent", {"ws": ws, "space": "w+"}, "pivots/me")
    name = result["ui"]["text"][0]
    assert name == "pivots/me_00001_.safetensors"
    inputs = tmp_path / "input"
    inputs.mkdir()
    (inputs / "me.safetensors").write_bytes((tmp_path / "output" / name).read_bytes())
    np.savez(inputs / "projected_w.npz", w=ws[:1].numpy())  # NVIDIA projector: w [1, num_ws, w_dim]
    np.save(inputs / "plain.npy", ws[0].numpy())             # a single [num_ws, w_dim]
    np.save(inputs / "evil.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    files = nodes["PTI_LoadLatent"].INPUT_TYPES()["required"]["latent_file"][0]
    assert {"me.safetensors", "projected_w.npz", "plain.npy", "evil.npy"} <= set(files)
    (latent,) = run(nodes, "PTI_LoadLatent", "me.safetensors")
    assert latent["space"] == "w+" and torch.equal(latent["ws"], ws)  # bit-exact
    (npz,) = run(nodes, "PTI_LoadLatent", "projected_w.npz")
    assert npz["space"] == "w+" and torch.equal(npz["ws"], ws[:1])
    (npy,) = run(nodes, "PTI_LoadLatent", "plain.npy")
    assert torch.equal(npy["ws"], ws[:1])
    np.savez(inputs / "w_space.npz", w=ws[:1, :1].expand(1, 6, 16).numpy())
    assert run(nodes, "PTI_LoadLatent", "w_space.npz")[0]["space"] == "w"
    with pytest.raises(ValueError, match="pickle"):
        run(nodes, "PTI_LoadLatent", "evil.npy")
    with pytest.raises(ValueError, match="not found"):
        run(nodes, "PTI_LoadLatent", "../output/" + name)
    assert nodes["PTI_LoadLatent"].VALIDATE_INPUTS("nope.npz") != True  # noqa: E712


# ----------------------------------------------------------------------------- PTI

def test_invert_then_pivotal_tune(nodes):
    G = tiny_generator(2)
    before = state(G)
    with torch.inference_mode():  # a generator made under inference mode, as ComfyUI's loaders do
        G_inference = tiny_generator(2)
    target, _ = run(nodes, "PTI_Generate", tiny_generator(5), 11, 1, 1.0, "const")

    latent, reconstruction = run(nodes, "PTI_Invert", G_inference, target, **FAST_INVERT)
    assert latent["space"] == "w" and latent["ws"].shape == (1, G.num_ws, 16)
    assert torch.equal(latent["ws"], latent["ws"][:, :1].expand_as(latent["ws"]))
    assert_comfy_image(reconstruction, (1, 16, 16, 3))
    latent_again, _ = run(nodes, "PTI_Invert", G, target, **FAST_INVERT)
    assert torch.equal(latent["ws"], latent_again["ws"])  # deterministic
    wplus, _ = run(nodes, "PTI_Invert", G, target, **{**FAST_INVERT, "space": "w+"})
    assert wplus["space"] == "w+"

    tuned, tuned_image = run(nodes, "PTI_PivotalTune", G_inference, target, latent, **FAST_TUNE)
    assert tuned is not G_inference and not tuned.training
    assert_comfy_image(tuned_image, (1, 16, 16, 3))
    error_before = float((reconstruction - target).pow(2).mean())
    error_after = float((tuned_image - target).pow(2).mean())
    assert error_after < 0.9 * error_before  # tuning moved the generator towards the photo
    tuned_again, _ = run(nodes, "PTI_PivotalTune", G, target, latent, **FAST_TUNE)
    assert_same_state(tuned_again, state(tuned))  # deterministic
    assert_same_state(G, before)                  # the input generator is untouched
    (edited,) = run(nodes, "PTI_RenderLatent", tuned, latent, "const")
    assert torch.equal(edited, tuned_image)


def test_pivotal_tune_batches(nodes):
    G = tiny_generator(2)
    targets = torch.cat([run(nodes, "PTI_Generate", tiny_generator(5), seed, 1, 1.0, "const")[0]
                         for seed in (1, 2)])
    latent = {"ws": G.mapping.w_avg.detach().expand(2, G.num_ws, 16).clone(), "space": "w"}
    with pytest.raises(ValueError, match="per-image.*shared"):
        run(nodes, "PTI_PivotalTune", G, targets, latent, **FAST_TUNE)
    with pytest.raises(ValueError, match="2 pivots for 1 images"):
        run(nodes, "PTI_PivotalTune", G, targets[:1], latent, **FAST_TUNE)
    tuned, images = run(nodes, "PTI_PivotalTune", G, targets, latent, **{**FAST_TUNE, "mode": "shared",
                                                                         "locality": "on"})
    assert images.shape == (2, 16, 16, 3)
    assert float((images[0] - images[1]).abs().max()) == 0  # same pivot, one shared generator


def test_bad_images_get_one_line_errors(nodes):
    G = tiny_generator(2)
    for bad in (torch.zeros(0, 16, 16, 3), torch.zeros(16, 16, 3), torch.zeros(1, 16, 16, 2)):
        with pytest.raises(ValueError) as info:
            run(nodes, "PTI_Invert", G, bad, **FAST_INVERT)
        assert "\n" not in str(info.value) and str(info.value).startswith("images: ")
    target = torch.rand(2, 16, 16, 3)
    with pytest.raises(ValueError, match="init_latent is from a different model"):
        run(nodes, "PTI_Invert", G, target, **FAST_INVERT, init_latent={"ws": torch.zeros(1, G.num_ws, 8), "space": "w"})
    with pytest.raises(ValueError, match="3 latents for 2 images"):
        run(nodes, "PTI_Invert", G, target, **FAST_INVERT,
            init_latent={"ws": torch.zeros(3, G.num_ws, 16), "space": "w"})


def test_progress_previews_and_cancel(nodes, monkeypatch, pack):
    common = sys.modules[pack.__name__ + ".nodes._common"]
    G = tiny_generator(2)
    before = state(G)
    target, _ = run(nodes, "PTI_Generate", tiny_generator(5), 11, 1, 1.0, "const")
    calls = []
    monkeypatch.setattr(common, "make_progress",
                        lambda total: lambda step, total_, phase, preview=None: calls.append((step, preview)))
    run(nodes, "PTI_Invert", G, target, **{**FAST_INVERT, "steps": 10})
    assert [step for step, _ in calls][-1] == 10
    previews = [p for _, p in calls if p is not None]
    assert previews and previews[0].shape == (1, 3, 16, 16)

    class Interrupted(Exception):
        pass

    checks = []

    def stop():
        checks.append(1)
        if len(checks) > 3:
            raise Interrupted()  # what ComfyUI's throw_exception_if_processing_interrupted does
        return False

    monkeypatch.setattr(common, "should_stop", stop)
    latent = {"ws": G.mapping.w_avg.detach().expand(1, G.num_ws, 16).clone(), "space": "w"}
    with pytest.raises(Interrupted):
        run(nodes, "PTI_PivotalTune", G, target, latent, **{**FAST_TUNE, "steps": 100})
    assert len(checks) == 4  # checked every step, stopped at once
    assert_same_state(G, before)


@pytest.mark.parametrize("native", [True, False])
def test_precision_widget_reaches_the_loops(nodes, monkeypatch, pack, native):
    """"auto" runs bf16 where the device has native kernels, else fp32; "fp32" (the default, and what a
    workflow saved before the widget existed gets) is the paper's arithmetic."""
    from importlib import import_module
    core = sys.modules[pack.__name__ + ".nodes._common"].core()  # the pack's own pti_core
    inversion, tune, presets = (import_module(f"{core.__name__}.{name}") for name in ("inversion", "tune", "presets"))
    monkeypatch.setattr(presets, "native_bf16", lambda device: native)
    seen = []
    real_invert, real_tune = inversion.invert, tune.pivotal_tune
    monkeypatch.setattr(inversion, "invert", lambda *a, config, **k: seen.append(config.precision)
                        or real_invert(*a, config=config, **k))
    monkeypatch.setattr(tune, "pivotal_tune", lambda *a, config, **k: seen.append(config.precision)
                        or real_tune(*a, config=config, **k))
    G = tiny_generator(2)
    target, _ = run(nodes, "PTI_Generate", tiny_generator(5), 11, 1, 1.0, "const")
    latent, _ = run(nodes, "PTI_Invert", G, target, **FAST_INVERT)  # no precision: a workflow saved before it
    run(nodes, "PTI_PivotalTune", G, target, latent, **FAST_TUNE)
    latent, _ = run(nodes, "PTI_Invert", G, target, **FAST_INVERT, precision="auto")
    tuned, image = run(nodes, "PTI_PivotalTune", G, target, latent, **FAST_TUNE, precision="auto")
    expected = "bf16" if native else "fp32"
    assert seen == ["fp32", "fp32", expected, expected]
    assert torch.isfinite(image).all()
    with pytest.raises(ValueError, match="precision must be one of fp32, auto"):
        run(nodes, "PTI_Invert", G, target, **FAST_INVERT, precision="fp16")
    # the widgets are optional and last, in the order they were added: saved workflows load
    for node_id, optional in (("PTI_Invert", ["init_latent", "precision", "l2_weight"]), ("PTI_PivotalTune", ["precision", "l2_weight"])):
        inputs = nodes[node_id].INPUT_TYPES()
        assert list(inputs["optional"]) == optional and not set(optional) & set(inputs["required"])


def test_l2_weight_widget_reaches_the_tuning_config(nodes, pack, monkeypatch):
    from importlib import import_module
    core = sys.modules[pack.__name__ + ".nodes._common"].core()  # the pack's own pti_core
    tune = import_module(f"{core.__name__}.tune")

    seen, real_tune = [], tune.pivotal_tune
    monkeypatch.setattr(tune, "pivotal_tune", lambda *a, config, **k: seen.append(config.l2_weight)
                        or real_tune(*a, config=config, **k))
    G = tiny_generator(2)
    target, _ = run(nodes, "PTI_Generate", tiny_generator(5), 11, 1, 1.0, "const")
    latent, _ = run(nodes, "PTI_Invert", G, target, **FAST_INVERT)
    run(nodes, "PTI_PivotalTune", G, target, latent, **FAST_TUNE)  # saved before the widget: the paper's 1
    run(nodes, "PTI_PivotalTune", G, target, latent, **FAST_TUNE, l2_weight=100.0)
    assert seen == [1.0, 100.0]


def test_missing_model_files_are_explained_before_the_run(nodes, models_dir):
    """VALIDATE_INPUTS replaces ComfyUI's bare "Value not in list": the folder searched and where to get it."""
    load = nodes["PTI_LoadStyleGAN"]
    assert load.VALIDATE_INPUTS("tiny.safetensors") is True
    message = load.VALIDATE_INPUTS("ffhq.pkl")
    assert "models/stylegan" in message and "nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/ffhq.pkl" in message
    assert "models/stylegan" in load.VALIDATE_INPUTS("mine.pkl")
    clip = nodes["PTI_LoadCLIP"]
    (choices,) = clip.INPUT_TYPES()["required"]["clip_name"][:1]
    assert len(choices) == 1 and choices[0].startswith("no CLIP file installed")  # no empty choice
    message = clip.VALIDATE_INPUTS(choices[0])
    assert message.startswith("no CLIP file is installed") and "models/clip_vision" in message
