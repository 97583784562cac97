"""Regression distillation: loss falls, checkpoints are safetensors, resuming equals not stopping."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from safetensors import safe_open

from pti_core import distill as D
from pti_core.errors import ConfigError, MissingFileError
from pti_core.teachers import DCGANGenerator

TINY = dict(w_dim=16, mapping_layers=2, channel_base=256, channel_max=16, batch_size=4,
            perceptual_weight=0.0, l1_weight=1.0, checkpoint_every=5, learning_rate=5e-3)


def _tiny_teacher(seed: int = 0) -> DCGANGenerator:
    torch.manual_seed(seed)
    teacher = DCGANGenerator(nz=8, ngf=4)
    with torch.no_grad():  # give BatchNorm non-trivial statistics
        for module in teacher.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_var.uniform_(0.5, 2.0)
                module.running_mean.normal_(0, 0.1)
    return teacher.requires_grad_(False)


def test_loss_falls_and_ema_student_approaches_teacher(tmp_path):
    teacher = _tiny_teacher()
    config = D.DistillConfig(steps=60, ema_half_life=5, **TINY)
    result = D.distill(config, tmp_path / "run", teacher=teacher)
    assert result.step == 60 and result.steps_run == 60
    first, last = sum(result.losses[:5]) / 5, sum(result.losses[-5:]) / 5
    assert last < 0.6 * first, (first, last)
    # The EMA generator, evaluated on held-out z, is closer to the teacher than a fresh student.
    z = D.held_out_z(8, 8)
    target = D.teacher_images(teacher, z)
    fresh = D.build_student(config, z_dim=8, resolution=64)
    with torch.no_grad():
        err_trained = (result.generator(z, noise_mode="const") - target).abs().mean()
        err_fresh = (fresh(z, noise_mode="const") - target).abs().mean()
    assert err_trained < 0.7 * err_fresh, (float(err_trained), float(err_fresh))


def test_resume_equals_uninterrupted_run(tmp_path):
    teacher = _tiny_teacher(1)
    config = D.DistillConfig(steps=8, **TINY)
    straight = D.distill(config, tmp_path / "a", teacher=teacher)
    first = D.distill(config, tmp_path / "b", teacher=teacher, max_steps_this_run=3)
    assert first.step == 3
    resumed = D.distill(config, tmp_path / "b", teacher=teacher, resume=True)
    assert resumed.step == 8 and resumed.steps_run == 5
    for (name, a), (_, b) in zip(straight.student.state_dict().items(), resumed.student.state_dict().items()):
        assert torch.equal(a, b), name
    for (name, a), (_, b) in zip(straight.generator.state_dict().items(), resumed.generator.state_dict().items()):
        assert torch.equal(a, b), name


def test_checkpoint_is_safetensors_with_config(tmp_path):
    teacher = _tiny_teacher()
    config = D.DistillConfig(steps=5, **TINY)
    D.distill(config, tmp_path, teacher=teacher)
    with safe_open(str(tmp_path / D.CHECKPOINT_NAME), framework="pt") as handle:
        metadata = handle.metadata()
        keys = set(handle.keys())
    assert metadata["format"] == "pti-distill-checkpoint/1"
    assert D.DistillConfig.from_json(metadata["config"]) == config
    assert D.DistillConfig.from_json((tmp_path / D.CONFIG_NAME).read_text()) == config
    assert "step" in keys and any(k.startswith("adam.") and k.endswith("exp_avg_sq") for k in keys)
    assert any(k.startswith("ema.synthesis.") for k in keys)
    G, loaded_config, step = D.load_student(tmp_path)
    assert step == 5 and loaded_config == config and G.z_dim == 8


def test_config_round_trip_and_validation(tmp_path):
    config = D.DistillConfig(steps=7, betas=[0.5, 0.9])
    assert config.betas == (0.5, 0.9)
    assert D.DistillConfig.from_json(config.to_json()) == config
    assert set(json.loads(config.to_json())) == {f.name for f in dataclasses.fields(D.DistillConfig)}
    with pytest.raises(ConfigError, match="unknown DistillConfig fields"):
        D.DistillConfig.from_json(json.dumps({"stepz": 3}))
    with pytest.raises(ConfigError, match="teacher"):
        D.DistillConfig(teacher="biggan")
    with pytest.raises(ConfigError, match="loss weight"):
        D.DistillConfig(l1_weight=0, l2_weight=0, perceptual_weight=0)
    decaying = D.DistillConfig(steps=100, lr_decay_fraction=0.5, learning_rate=2e-3)
    assert D.learning_rate_at(decaying, 10) == D.learning_rate_at(decaying, 50) == 2e-3
    assert D.learning_rate_at(decaying, 75) == pytest.approx(1.1e-3)
    assert D.learning_rate_at(decaying, 100) == pytest.approx(2e-4)


def test_resume_guards(tmp_path):
    teacher = _tiny_teacher()
    config = D.DistillConfig(steps=5, **TINY)
    with pytest.raises(MissingFileError, match="resume"):
        D.distill(config, tmp_path, teacher=teacher, resume=True)
    D.distill(config, tmp_path, teacher=teacher)
    with pytest.raises(ConfigError, match="--resume"):
        D.distill(config, tmp_path, teacher=teacher)
    with pytest.raises(ConfigError, match="differs"):
        D.distill(dataclasses.replace(config, learning_rate=1e-4), tmp_path, teacher=teacher, resume=True)
    more = D.distill(dataclasses.replace(config, steps=7), tmp_path, teacher=teacher, resume=True)
    assert more.step == 7  # only the step count may change on resume


def test_training_z_is_a_function_of_seed_and_step():
    config = D.DistillConfig(batch_size=3)
    assert torch.equal(D.training_z(config, 4, 10), D.training_z(config, 4, 10))
    assert not torch.equal(D.training_z(config, 4, 10), D.training_z(config, 5, 10))
    assert not torch.equal(D.training_z(config, 0, 10)[:1], D.held_out_z(1, 10))
    z = torch.randn(5, 100)
    assert torch.allclose(D.normalize_z(z).square().mean(1), torch.ones(5), atol=1e-5)


def test_cli_trains_exports_and_reports_fidelity(tmp_path, capsys):
    from pti_core.__main__ import main
    from pti_core.generators.stylegan2 import Generator

    out = tmp_path / "run"
    args = ["distill", "--out", str(out), "--steps", "2", "--batch-size", "2", "--w-dim", "16",
            "--mapping-layers", "2", "--channel-base", "256", "--channel-max", "16", "--checkpoint-every", "1"]
    assert main(args) == 0
    assert main(args + ["--resume", "--steps", "3", "--fidelity", "4",
                        "--export", str(tmp_path / "g.safetensors"), "--side-by-side", str(tmp_path / "s.png")]) == 0
    text = capsys.readouterr().out
    report = json.loads([line for line in text.splitlines() if line.startswith("{")][-1])
    assert report["step"] == 3 and report["n"] == 4 and report["stlpips"] > 0 and report["mse"] > 0
    assert (tmp_path / "s.png").is_file()
    with safe_open(str(tmp_path / "g.safetensors"), framework="pt") as handle:
        metadata = handle.metadata()
        state = {k: handle.get_tensor(k) for k in handle.keys()}
    assert metadata["architecture"] == "stylegan2"
    G = Generator(**json.loads(metadata["init_kwargs"]))
    G.load_state_dict(state, strict=True)
    assert G.z_dim == 100 and G.img_resolution == 64
    assert main(args + ["--resume", "--export", str(tmp_path / "g.safetensors")]) == 2  # never overwrites
