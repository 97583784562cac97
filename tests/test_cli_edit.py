"""``python -m pti_core edit``: the main job's files, exit codes and the embedded demo."""

from __future__ import annotations

import json

import torch
from safetensors.torch import load_file

from helpers import tiny_generator
from pti_core.__main__ import main
from pti_core.generators.checkpoints import load_generator, save_generator
from pti_core.imageio import load_image, save_image
from pti_core.presets import native_bf16, native_precision



FAST = ["--inversion-steps", "4", "--tuning-steps", "6", "--perceptual", "random-alex", "--quiet"]


def test_edit_with_model_image_and_direction(tmp_path, capsys):
    G = tiny_generator(0)
    model = save_generator(G, tmp_path / "g.safetensors")
    photo = tmp_path / "photo.png"
    save_image(torch.rand(1, 3, 40, 30) * 2 - 1, photo)  # non-square, other size
    direction = tmp_path / "smile.pt"
    torch.save(torch.nn.functional.normalize(torch.randn(1, G.w_dim), dim=1), direction)
    out = tmp_path / "out"
    code = main(["edit", "--model", str(model), "--image", str(photo), "--direction", str(direction),
                 "--strength", "2", "--out", str(out), *FAST])
    assert code == 0
    names = {p.name for p in out.iterdir()}
    assert {"input.png", "inversion.png", "pti.png", "tuned_generator.safetensors", "pivot.safetensors",
            "metrics.json", "config.json", "edit_smile_+2.png", "edit_smile_+2_inversion.png"} <= names
    assert load_image(out / "input.png").shape == (1, 3, 16, 16)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["lpips_net"] == "random-alex"
    assert metrics["pti"]["mse"] < metrics["inversion"]["mse"]
    assert metrics["tuning_steps_run"] == 6
    config = json.loads((out / "config.json").read_text())
    assert config["inversion"]["steps"] == 4 and config["tuning"]["steps"] == 6 and not config["demo"]
    # the tuned generator file and the pivot reproduce pti.png
    tuned = load_generator(out / "tuned_generator.safetensors")
    ws = load_file(out / "pivot.safetensors")["ws"]
    assert ws.shape == (1, G.num_ws, G.w_dim)
    with torch.no_grad():
        image = tuned.synthesis(ws).clamp(-1, 1)
    assert (image - load_image(out / "pti.png")).abs().max() <= 2 / 255 + 1e-6
    # the input generator file is untouched and differs from the tuned one
    original = load_generator(model)
    assert any(not torch.equal(a, b) for a, b in zip(original.state_dict().values(), tuned.state_dict().values()))

    # a second run into the same folder needs --force
    code = main(["edit", "--model", str(model), "--image", str(photo), "--out", str(out), *FAST])
    assert code == 2 and "--force" in capsys.readouterr().err


def test_embedded_demo_runs_and_says_it_is_a_demo(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["edit", "--out", str(out), *FAST]) == 0
    err = capsys.readouterr().err
    assert "ffhq.pkl" in err and "astronaut" in err
    assert load_image(out / "pti.png").shape == (1, 3, 64, 64)
    # the shipped model: the astronaut is aligned with its own face framing, edits use its learned yaw at the
    # built-in model's default strengths
    assert {"edit_yaw_-1.png", "edit_yaw_+1.png"} <= {p.name for p in out.iterdir()}
    config = json.loads((out / "config.json").read_text())
    assert config["demo"] is True and config["align"] is True
    assert config["tuning"]["l2_weight"] == 100.0 and config["tuning"]["locality"]["alpha"] == 8.0
    assert config["inversion"]["l2_weight"] == 10.0
    metrics = json.loads((out / "metrics.json").read_text())
    for stage in ("inversion", "pti"):  # never a perceptual figure alone
        assert {"mse", "psnr", "lpips", "identity_distance", "detail_error"} <= set(metrics[stage])
    assert metrics["pti"]["identity_distance"] >= 0 and metrics["pti"]["detail_error"] >= 0


def test_user_errors_exit_2(tmp_path, capsys):
    assert main(["edit", "--model", str(tmp_path / "missing.pkl"), "--out", str(tmp_path / "o"), *FAST]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "missing.pkl" in err and len(err.strip().splitlines()) == 1
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    model = save_generator(tiny_generator(1), tmp_path / "g.safetensors")
    assert main(["edit", "--model", str(model), "--image", str(empty), "--out", str(tmp_path / "o2"), *FAST]) == 2
    assert "empty.png" in capsys.readouterr().err


def test_defaults_point_at_the_shipped_model_and_builtin_is_deterministic():
    from pti_core import defaults, distill

    assert defaults.DEFAULT_GENERATOR_FILE == distill.DEFAULT_MODEL_PATH
    a, b = defaults.builtin_generator(), defaults.builtin_generator()
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert a.img_resolution == 64
    photo = defaults.default_photo()
    assert photo.shape == (1, 3, 512, 512) and photo.min() >= -1 and photo.max() <= 1


def test_precision_and_compile_notes(tmp_path, capsys):
    """A precision without native kernels here, or --compile off CUDA, runs but says so in one line."""
    model = save_generator(tiny_generator(0), tmp_path / "g.safetensors")
    photo = tmp_path / "photo.png"
    save_image(torch.rand(1, 3, 16, 16) * 2 - 1, photo)
    out = tmp_path / "out"
    assert main(["edit", "--model", str(model), "--image", str(photo), "--out", str(out), "--precision", "fp16",
                 "--compile", *FAST]) == 0
    err = capsys.readouterr().err
    assert "--compile applies on CUDA only" in err
    assert ("fp16 autocast has no native kernels" in err) == (not native_precision("cpu", "fp16"))
    config = json.loads((out / "config.json").read_text())
    assert config["inversion"]["precision"] == config["tuning"]["precision"] == "fp16"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["pti"]["mse"] < metrics["inversion"]["mse"]
    assert main(["edit", "--model", str(model), "--image", str(photo), "--out", str(tmp_path / "o2"), *FAST]) == 0
    err = capsys.readouterr().err  # fp32, no --compile: no note
    assert "native kernels" not in err and "--compile" not in err


def test_native_precision():
    assert native_precision("cpu", "fp32") and native_precision("cuda", "fp32")
    assert native_precision("cpu", "bf16") == native_bf16("cpu")
    assert native_precision("cuda", "fp16") and not native_precision("mps", "fp16")


def test_naming_the_built_in_models_file_gets_its_settings(tmp_path):
    """The same model gets the same defaults whether it is named or not (not the paper's 1024 px settings)."""
    from helpers import realworld
    from pti_core.defaults import DEFAULT_GENERATOR_FILE

    out = tmp_path / "named"
    args = ["edit", "--model", str(DEFAULT_GENERATOR_FILE), "--image", str(realworld("photos", "astronaut.png")),
            "--align", "--out", str(out), *FAST]
    assert main(args) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["tuning"]["l2_weight"] == 100.0 and config["tuning"]["lr"] == 5e-3 and not config["demo"]
    assert config["inversion"]["l2_weight"] == 10.0 and config["inversion"]["lr"] == 0.05
