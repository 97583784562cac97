"""Latent-optimised (GLO) distillation: loss falls, latents move, resume equals not stopping, the mapping refit."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from safetensors import safe_open

from pti_core import distill as D
from pti_core import glo
from pti_core.errors import ConfigError, MissingFileError

from test_distill import TINY, _tiny_teacher

GLO_TINY = dict(dataset_size=16, batch_size=4, perceptual_weight=0.0, checkpoint_every=5, learning_rate=5e-3,
                latent_learning_rate=0.05)


def _init(seed: int = 3):
    config = D.DistillConfig(**{k: v for k, v in TINY.items() if k in ("w_dim", "mapping_layers", "channel_base",
                                                                       "channel_max")}, seed=seed)
    return D.build_student(config, z_dim=8, resolution=64)


def test_loss_falls_latents_move_and_the_init_is_not_modified(tmp_path):
    teacher, init = _tiny_teacher(), _init()
    before = {k: v.clone() for k, v in init.state_dict().items()}
    config = glo.GLOConfig(steps=40, **GLO_TINY)
    result = glo.train_glo(config, tmp_path / "run", teacher=teacher, init=init)
    assert result.step == 40 and result.steps_run == 40
    assert all(torch.equal(before[k], v) for k, v in init.state_dict().items())
    z, latents = glo.run_dataset(tmp_path / "run")
    with torch.no_grad():
        start = init.mapping(z)[:, 0]
        target = D.teacher_images(teacher, z)
        error_start = (init.synthesis(start[:, None].expand(-1, init.num_ws, -1)) - target).square().mean()
        G = result.student
        error_end = (G.synthesis(latents[:, None].expand(-1, G.num_ws, -1)) - target).square().mean()
    assert float((latents - start).abs().mean()) > 1e-3  # the codes were optimised
    assert error_end < 0.7 * error_start, (float(error_start), float(error_end))


def test_resume_equals_uninterrupted_run_and_guards(tmp_path):
    teacher = _tiny_teacher(1)
    config = glo.GLOConfig(steps=8, **GLO_TINY)
    straight = glo.train_glo(config, tmp_path / "a", teacher=teacher, init=_init())
    first = glo.train_glo(config, tmp_path / "b", teacher=teacher, init=_init(), max_steps_this_run=3)
    assert first.step == 3
    resumed = glo.train_glo(config, tmp_path / "b", teacher=teacher, init=_init(), resume=True)
    assert resumed.step == 8 and resumed.steps_run == 5
    for (name, a), (_, b) in zip(straight.student.state_dict().items(), resumed.student.state_dict().items()):
        assert torch.equal(a, b), name
    assert torch.equal(glo.run_dataset(tmp_path / "a")[1], glo.run_dataset(tmp_path / "b")[1])
    with pytest.raises(ConfigError, match="--resume"):
        glo.train_glo(config, tmp_path / "a", teacher=teacher, init=_init())
    with pytest.raises(ConfigError, match="differs"):
        glo.train_glo(dataclasses.replace(config, latent_noise=0.2), tmp_path / "a", teacher=teacher, init=_init(),
                      resume=True)
    with pytest.raises(MissingFileError, match="resume"):
        glo.train_glo(config, tmp_path / "c", teacher=teacher, init=_init(), resume=True)
    with safe_open(str(tmp_path / "a" / glo.CHECKPOINT_NAME), framework="pt") as handle:
        assert handle.metadata()["format"] == "pti-glo-checkpoint/1"
        assert glo.GLOConfig.from_json(handle.metadata()["config"]) == config


def test_a_run_continues_from_another_runs_student_and_latents(tmp_path):
    teacher = _tiny_teacher(2)
    glo.train_glo(glo.GLOConfig(steps=5, **GLO_TINY), tmp_path / "a", teacher=teacher, init=_init())
    second = glo.GLOConfig(steps=1, init=str(tmp_path / "a"), **{**GLO_TINY, "latent_learning_rate": 1e-9})
    glo.train_glo(second, tmp_path / "b", teacher=teacher)
    a, b = glo.run_dataset(tmp_path / "a")[1], glo.run_dataset(tmp_path / "b")[1]
    assert torch.allclose(a, b, atol=1e-6) and not torch.allclose(a, glo.run_dataset(tmp_path / "a")[1] * 0)
    with pytest.raises(ConfigError, match="same dataset_size"):
        glo.train_glo(dataclasses.replace(second, dataset_size=8), tmp_path / "c", teacher=teacher)


def test_config_round_trip_and_validation():
    config = glo.GLOConfig(steps=7)
    assert glo.GLOConfig.from_json(config.to_json()) == config
    with pytest.raises(ConfigError, match="unknown GLOConfig fields"):
        glo.GLOConfig.from_json(json.dumps({"stepz": 3}))
    with pytest.raises(ConfigError, match="batch_size"):
        glo.GLOConfig(dataset_size=4, batch_size=8)
    with pytest.raises(ConfigError, match="latent_noise"):
        glo.GLOConfig(latent_noise=-1)


def test_batches_are_epochs_of_a_seeded_permutation():
    config = glo.GLOConfig(dataset_size=12, batch_size=4)
    epoch = torch.cat([glo.batch_indices(config, step) for step in range(3)])
    assert sorted(epoch.tolist()) == list(range(12))  # every image once per epoch
    assert torch.equal(glo.batch_indices(config, 1), glo.batch_indices(config, 1))
    assert not torch.equal(torch.cat([glo.batch_indices(config, s) for s in range(3, 6)]), epoch)


def test_sliced_wasserstein_sees_a_shift_and_fit_mapping_matches_the_codes():
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(512, 8, generator=generator)
    assert float(glo.sliced_wasserstein(x, x)) == 0.0
    assert float(glo.sliced_wasserstein(x, x + 1.0, generator=generator)) == pytest.approx(1.0, rel=0.3)
    G = _init()
    z = torch.randn(256, 8, generator=generator)
    latents = 3.0 + 0.5 * torch.randn(256, 16, generator=generator)  # codes far from the mapping's outputs
    with torch.no_grad():
        before = float(glo.sliced_wasserstein(G.mapping(z)[:, 0], latents))
    glo.fit_mapping(G, z, latents, steps=300, lr=3e-3, batch_size=128)
    with torch.no_grad():
        after = float(glo.sliced_wasserstein(G.mapping(torch.randn(256, 8, generator=generator))[:, 0], latents))
    assert after < 0.1 * before, (before, after)
    assert not any(p.requires_grad for p in G.mapping.parameters())
