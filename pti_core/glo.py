"""Latent-optimised distillation (GLO-style) of a teacher generator into a StyleGAN2 student.

Plain regression distillation (:mod:`pti_core.distill`) asks the student's mapping network to
reproduce the teacher's z -> image function exactly; where it cannot, the squared error pulls the
student towards the conditional mean, and the shipped 64 px model of the first releases drew
nearly the same blurry average face for every z. Here every training image gets its own free
latent ``w_i`` (Bojanowski et al., "Optimizing the Latent Space of Generative Networks", 2018),
optimised together with the synthesis network, so the synthesis network learns to draw each
teacher image sharply. The mapping network is trained alongside to predict ``w_i`` from the
teacher's ``z_i`` (regression in W, a 4-layer MLP, cheap), and a tether pulls each ``w_i`` gently
towards that prediction so the latents stay a smooth function of z. Sampling the finished student
is the ordinary ``G.synthesis(G.mapping(z))``; because the pairing with the teacher's z is kept,
per-sample fidelity against the teacher's image of the same z can be measured too.

Other choices, all measured on the 2-core CPU this was developed on (bench/RESULTS.md):

* the run starts from a generator file (by default the first release of the shipped model),
  whose synthesis weights and whose ``mapping(z_i)`` give the initial latents;
* the latents see Gaussian noise (``latent_noise`` x their per-dimension spread) in training, so
  the synthesis network is smooth around each code and codes the mapping predicts land on faces;
* loss: pixel L2 + ST-LPIPS (AlexNet, as :mod:`pti_core.distill`) + L1 of the Laplacian (the
  high-frequency detail that L2 and ST-LPIPS both let go blurry).

The run is resumable like :func:`pti_core.distill.distill`: the student, its EMA, the latents and
both optimisers' states go into one safetensors checkpoint, atomically, every ``checkpoint_every``
steps; batches are a pure function of ``(seed, step)``.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .errors import CheckpointError, ConfigError, MissingFileError
from .fileio import atomic_write
from .metrics import laplacian
from .progress import check_stop, report

CHECKPOINT_NAME = "glo_checkpoint.safetensors"
CONFIG_NAME = "glo_config.json"
TRAINING_Z_SEED = 20_261_208  # the dataset's z; held-out evaluation z come from distill.HELD_OUT_SEED


@dataclass(frozen=True)
class GLOConfig:
    """Hyperparameters of one latent-optimised distillation run (JSON beside its checkpoint).

    Attributes:
        teacher: which teacher (see :data:`pti_core.distill.TEACHERS`).
        init: generator file whose weights start the student ("" = the shipped model's file;
            "scratch" = a new seeded student of ``DistillConfig()``'s architecture).
        dataset_size: number of teacher images (each with its own latent).
        steps, batch_size: optimisation steps and images per step.
        learning_rate: Adam lr of the synthesis network; ``mapping_learning_rate`` of the mapping.
        latent_learning_rate: SparseAdam lr of the per-image latents.
        latent_noise: std of the noise added to latents in training, in units of their spread.
        tether_weight: pull of each latent towards the mapping's prediction (in units of the spread).
        l2_weight, perceptual_weight, laplacian_weight: loss weights (see module docstring).
        lr_decay_fraction: last fraction of the steps over which all lrs fall linearly to a tenth.
        ema_half_life: EMA half-life of the student's weights, in steps.
        checkpoint_every: steps between checkpoints.
        seed: seeds the batch order and the latent noise.
    """

    teacher: str = "dcgan-faces"
    init: str = ""
    dataset_size: int = 4096
    steps: int = 8000
    batch_size: int = 16
    learning_rate: float = 2e-3
    mapping_learning_rate: float = 1e-3
    latent_learning_rate: float = 3e-2
    latent_noise: float = 0.05
    tether_weight: float = 0.1
    l2_weight: float = 10.0
    perceptual_weight: float = 1.0
    laplacian_weight: float = 2.0
    lr_decay_fraction: float = 0.25
    ema_half_life: float = 300.0
    checkpoint_every: int = 100
    seed: int = 0

    def __post_init__(self):
        for name in ("dataset_size", "steps", "batch_size", "checkpoint_every"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"GLOConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.batch_size > self.dataset_size:
            raise ConfigError("GLOConfig.batch_size must not exceed dataset_size")
        for name in ("learning_rate", "mapping_learning_rate", "latent_learning_rate", "latent_noise",
                     "tether_weight", "l2_weight", "perceptual_weight", "laplacian_weight"):
            if not float(getattr(self, name)) >= 0:
                raise ConfigError(f"GLOConfig.{name} must be >= 0, got {getattr(self, name)}")
        if not 0 <= self.lr_decay_fraction <= 1:
            raise ConfigError(f"GLOConfig.lr_decay_fraction must be in [0, 1], got {self.lr_decay_fraction}")

    def to_json(self) -> str:
        """Returns the config as a JSON object string."""
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "GLOConfig":
        """Returns the config encoded by ``to_json``; unknown fields are a ConfigError."""
        data = json.loads(text)
        unknown = sorted(set(data) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ConfigError(f"unknown GLOConfig fields {unknown}; the file was written by another version")
        return cls(**data)


def dataset_z(config: GLOConfig, z_dim: int) -> torch.Tensor:
    """Returns the dataset's z ``[dataset_size, z_dim]`` (disjoint from every held-out seed)."""
    return torch.randn(config.dataset_size, z_dim, generator=torch.Generator().manual_seed(TRAINING_Z_SEED))


def batch_indices(config: GLOConfig, step: int) -> torch.Tensor:
    """Returns the dataset indices of ``step``: epochs are seeded permutations (a pure function of step)."""
    per_epoch = config.dataset_size // config.batch_size
    epoch, offset = divmod(step, per_epoch)
    order = torch.randperm(config.dataset_size, generator=torch.Generator().manual_seed(config.seed * 7919 + epoch))
    return order[offset * config.batch_size:(offset + 1) * config.batch_size]


def glo_loss(images: torch.Tensor, target: torch.Tensor, *, config: GLOConfig,
             perceptual: nn.Module | None) -> tuple[torch.Tensor, dict[str, float]]:
    """Returns (scalar loss, its parts) for student images vs teacher images ``[N, 3, R, R]``."""
    parts = {"l2": (images - target).square().mean()}
    if config.laplacian_weight:  # L1 of the Laplacian at full, half and quarter size (fine and coarse detail)
        total, a, b = 0.0, images, target
        for _ in range(3):
            total = total + (laplacian(a) - laplacian(b)).abs().mean()
            a, b = F.avg_pool2d(a, 2), F.avg_pool2d(b, 2)
        parts["laplacian"] = total / 3
    if config.perceptual_weight and perceptual is not None:
        parts["stlpips"] = perceptual(images, target).mean()
    weights = {"l2": config.l2_weight, "laplacian": config.laplacian_weight, "stlpips": config.perceptual_weight}
    loss = sum(weights[k] * v for k, v in parts.items())
    return loss, {k: float(v.detach()) for k, v in parts.items()}


def _lr_scale(config: GLOConfig, step: int) -> float:
    decay_start = config.steps * (1.0 - config.lr_decay_fraction)
    if config.lr_decay_fraction == 0 or step < decay_start:
        return 1.0
    return 1.0 - 0.9 * min(1.0, (step - decay_start) / max(1.0, config.steps - decay_start))


def _load_init(config: GLOConfig, *, z_dim: int, resolution: int) -> nn.Module:
    from .generators.checkpoints import load_generator
    from .distill import DEFAULT_MODEL_PATH, DistillConfig, build_student

    if config.init == "scratch":  # a fresh student of DistillConfig()'s architecture, seeded
        return build_student(DistillConfig(seed=config.seed), z_dim=z_dim, resolution=resolution)
    if config.init and Path(config.init).is_dir():  # another GLO run: its raw student (latents: see train_glo)
        return load_glo_student(config.init, which="state.student")[0].float()

    path = Path(config.init) if config.init else DEFAULT_MODEL_PATH
    if not path.is_file():
        raise MissingFileError(f"{path} (GLOConfig.init) does not exist; pass an existing generator file")
    return load_generator(path).float()


class _State(nn.Module):
    """Everything a GLO run trains, as one module: the student and the per-image latents."""

    def __init__(self, student: nn.Module, latents: torch.Tensor):
        super().__init__()
        self.student = student
        self.latents = nn.Embedding(latents.shape[0], latents.shape[1], sparse=True)
        with torch.no_grad():
            self.latents.weight.copy_(latents)


def _optimizers(state: _State, config: GLOConfig) -> list[torch.optim.Optimizer]:
    student = state.student
    return [torch.optim.Adam(student.synthesis.parameters(), lr=config.learning_rate, betas=(0.9, 0.99)),
            torch.optim.Adam(student.mapping.parameters(), lr=config.mapping_learning_rate, betas=(0.9, 0.99)),
            torch.optim.SparseAdam(state.latents.parameters(), lr=config.latent_learning_rate, betas=(0.9, 0.99))]


def _save(path: Path, *, state: _State, ema: nn.Module, optimizers: list[torch.optim.Optimizer], step: int,
          config: GLOConfig, elapsed_s: float) -> None:
    from safetensors.torch import save_file

    tensors = {f"state.{k}": v for k, v in state.state_dict().items()}
    tensors.update({f"ema.{k}": v for k, v in ema.state_dict().items()})
    for index, optimizer in enumerate(optimizers):
        for param_index, entry in optimizer.state_dict()["state"].items():
            for key, value in entry.items():
                tensors[f"opt{index}.{param_index}.{key}"] = torch.as_tensor(value).reshape(-1) \
                    if key == "step" else value
    tensors["step"] = torch.tensor([step], dtype=torch.int64)
    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    metadata = {"format": "pti-glo-checkpoint/1", "config": config.to_json(),
                "init_kwargs": json.dumps(state.student.init_kwargs), "elapsed_s": f"{elapsed_s:.1f}"}
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=metadata), overwrite=True)


def _restore(path: Path, *, state: _State, ema: nn.Module,
             optimizers: list[torch.optim.Optimizer]) -> tuple[int, float]:
    from .distill import read_checkpoint

    metadata, tensors = read_checkpoint(path, "pti-glo-checkpoint/1", "GLO distillation")
    for prefix, module in (("state.", state), ("ema.", ema)):
        try:
            module.load_state_dict({k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)})
        except RuntimeError as error:
            raise CheckpointError(f"{path} does not fit this run: {str(error).splitlines()[0]}") from None
    for index, optimizer in enumerate(optimizers):
        state_dict = optimizer.state_dict()
        restored: dict[int, dict] = {}
        prefix = f"opt{index}."
        for key, value in tensors.items():
            if key.startswith(prefix):
                param_index, name = key[len(prefix):].split(".", 1)
                if name == "step":  # SparseAdam counts in a Python int (saved as int64), Adam in a float tensor
                    value = int(value.reshape(())) if value.dtype == torch.int64 else value.reshape(())
                restored.setdefault(int(param_index), {})[name] = value
        state_dict["state"] = restored
        optimizer.load_state_dict(state_dict)
    return int(tensors["step"][0]), float(metadata.get("elapsed_s", "0"))


def train_glo(config: GLOConfig, out_dir: str | Path, *, resume: bool = False, teacher: nn.Module | None = None,
              init: nn.Module | None = None, perceptual: nn.Module | None = None,
              max_steps_this_run: int | None = None, log: Callable[[str], None] | None = None,
              progress=None, should_stop=None):
    """Trains (or resumes) a latent-optimised distillation; returns a :class:`pti_core.distill.DistillResult`.

    Args:
        config: hyperparameters; with ``resume`` it must equal the saved one except ``steps``.
        out_dir: folder of ``glo_checkpoint.safetensors`` and ``glo_config.json``.
        teacher, init, perceptual: override the teacher, the starting generator and the perceptual
            distance (tests pass small ones).
        max_steps_this_run: stop (after checkpointing) once this many steps ran in this call.
        log: called with a line of text at every checkpoint.
    """
    from .distill import DistillResult, load_stlpips, load_teacher, normalize_z, teacher_images, update_ema

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ckpt_path, config_path = out / CHECKPOINT_NAME, out / CONFIG_NAME
    if resume:
        if not ckpt_path.is_file():
            raise MissingFileError(f"no {CHECKPOINT_NAME} in {out} to resume from; run without --resume first")
        saved = GLOConfig.from_json(config_path.read_text()) if config_path.is_file() else None
        if saved is not None and dataclasses.replace(saved, steps=config.steps) != config:
            raise ConfigError(f"{config_path} differs from the given config (other than steps); resume with the same settings")
    elif ckpt_path.exists():
        raise ConfigError(f"{ckpt_path} exists; pass --resume to continue it or choose another --out")
    teacher = teacher if teacher is not None else load_teacher(config.teacher)
    if perceptual is None and config.perceptual_weight:
        perceptual = load_stlpips()
    if init is None:
        with torch.no_grad():
            resolution = int(teacher(torch.zeros(1, teacher.z_dim)).shape[-1])
        init = _load_init(config, z_dim=teacher.z_dim, resolution=resolution)
    student = copy.deepcopy(init)
    student = student.float().train().requires_grad_(True)
    z_all = dataset_z(config, teacher.z_dim)  # [N, z_dim]
    with torch.no_grad():
        images_all = torch.cat([teacher_images(teacher, chunk) for chunk in z_all.split(256)])  # [N, 3, R, R]
        latents = torch.cat([student.mapping(chunk)[:, 0] for chunk in z_all.split(512)])  # [N, w_dim]
        if config.init and Path(config.init).is_dir():  # continue another run's latents (same dataset)
            latents = _run_latents(Path(config.init), expected=latents.shape)
    state = _State(student, latents)
    ema = copy.deepcopy(student).eval().requires_grad_(False)
    optimizers = _optimizers(state, config)
    base_lrs = [group["lr"] for optimizer in optimizers for group in optimizer.param_groups]
    step, elapsed = 0, 0.0
    if resume:
        step, elapsed = _restore(ckpt_path, state=state, ema=ema, optimizers=optimizers)
    atomic_write(config_path, lambda tmp: Path(tmp).write_text(config.to_json()), overwrite=True)
    spread = latents.std(dim=0).mean().clamp_min(1e-6)  # one scale for noise and tether, from the start

    noise_generator = torch.Generator().manual_seed(config.seed * 104_729)
    for _ in range(step):  # a resumed run continues the same noise stream as an uninterrupted one
        torch.randn((config.batch_size, latents.shape[1]), generator=noise_generator)
    start_step, started, recent = step, time.perf_counter(), []
    while step < config.steps:
        if max_steps_this_run is not None and step - start_step >= max_steps_this_run:
            break
        check_stop(should_stop, phase="glo", step=step)
        scale = _lr_scale(config, step)
        for optimizer, lr in zip((g for o in optimizers for g in o.param_groups), base_lrs):
            optimizer["lr"] = lr * scale
        index = batch_indices(config, step)
        w = state.latents(index)  # [B, w_dim]
        noisy = w + config.latent_noise * spread * torch.randn(w.shape, generator=noise_generator)
        images = student.synthesis(noisy[:, None].expand(-1, student.num_ws, -1), noise_mode="const")
        loss, parts = glo_loss(images, images_all[index], config=config, perceptual=perceptual)
        predicted = student.mapping(normalize_z(z_all[index]))[:, 0]  # [B, w_dim]
        mapping_error = (predicted - w.detach()).square().mean() / spread.square()
        tether = (w - predicted.detach()).square().mean() / spread.square()
        total = loss + mapping_error + config.tether_weight * tether
        for optimizer in optimizers:
            optimizer.zero_grad(set_to_none=True)
        total.backward()
        for optimizer in optimizers:
            optimizer.step()
        step += 1
        update_ema(ema, student, 0.5 ** (1.0 / max(1.0, min(config.ema_half_life, step / 2))))
        parts["mapping"] = float(mapping_error.detach())
        recent.append(parts)
        report(progress, step, config.steps, "glo", None)
        if step % config.checkpoint_every == 0 or step == config.steps:
            now = elapsed + time.perf_counter() - started
            _save(ckpt_path, state=state, ema=ema, optimizers=optimizers, step=step, config=config, elapsed_s=now)
            if log is not None:
                means = {k: sum(p[k] for p in recent) / len(recent) for k in recent[0]}
                log(f"step {step}/{config.steps} " + " ".join(f"{k} {v:.4f}" for k, v in means.items())
                    + f" elapsed {now:.0f}s")
            recent = []
    if step > start_step and step % config.checkpoint_every and step != config.steps:
        _save(ckpt_path, state=state, ema=ema, optimizers=optimizers, step=step, config=config,
              elapsed_s=elapsed + time.perf_counter() - started)
    return DistillResult(generator=ema, student=student.eval(), steps_run=step - start_step, step=step,
                         checkpoint=ckpt_path)


def _run_latents(folder: Path, *, expected: torch.Size) -> torch.Tensor:
    from safetensors import safe_open

    with safe_open(str(folder / CHECKPOINT_NAME), framework="pt") as handle:
        latents = handle.get_tensor("state.latents.weight")
    if latents.shape != expected:
        raise ConfigError(f"{folder} has latents {list(latents.shape)}, this run needs {list(expected)}; "
                          "continue with the same dataset_size")
    return latents


def run_dataset(out_dir: str | Path) -> tuple[torch.Tensor, torch.Tensor]:
    """Returns ``(z [N, z_dim], latents [N, w_dim])`` of a GLO run: the dataset's z and the learned codes."""
    from safetensors import safe_open

    path = Path(out_dir) / CHECKPOINT_NAME
    if not path.is_file():
        raise MissingFileError(f"no {CHECKPOINT_NAME} in {out_dir}; run the GLO distillation first")
    with safe_open(str(path), framework="pt") as handle:
        config = GLOConfig.from_json((handle.metadata() or {})["config"])
        latents = handle.get_tensor("state.latents.weight")
        z_dim = json.loads(handle.metadata()["init_kwargs"])["z_dim"]
    return dataset_z(config, z_dim), latents


def load_glo_student(out_dir: str | Path, *, which: str = "ema") -> tuple[nn.Module, GLOConfig, int]:
    """Returns ``(generator, config, step)`` of a GLO run folder; ``which``: "ema" or "state.student"."""
    from safetensors import safe_open
    from .generators.stylegan2 import Generator

    path = Path(out_dir) / CHECKPOINT_NAME
    if not path.is_file():
        raise MissingFileError(f"no {CHECKPOINT_NAME} in {out_dir}; run the GLO distillation first")
    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata() or {}
        prefix = which + "."
        state = {k[len(prefix):]: handle.get_tensor(k) for k in handle.keys() if k.startswith(prefix)}
        step = int(handle.get_tensor("step")[0])
    G = Generator(**json.loads(metadata["init_kwargs"]))
    G.load_state_dict(state, strict=True)
    return G.eval().requires_grad_(False), GLOConfig.from_json(metadata["config"]), step


def sliced_wasserstein(a: torch.Tensor, b: torch.Tensor, *, projections: int = 128,
                       generator: torch.Generator | None = None) -> torch.Tensor:
    """Returns the squared sliced Wasserstein-2 distance between point sets ``a`` ``[N, D]`` and ``b`` ``[N, D]``.

    Examples:
        >>> x = torch.randn(256, 8, generator=torch.Generator().manual_seed(0))
        >>> float(sliced_wasserstein(x, x)) == 0.0
        True
    """
    directions = torch.randn(a.shape[1], projections, generator=generator, dtype=a.dtype)
    directions = directions / directions.norm(dim=0, keepdim=True)
    pa, _ = (a @ directions).sort(dim=0)
    pb, _ = (b @ directions).sort(dim=0)
    return (pa - pb).square().mean()


def fit_mapping(G: nn.Module, z: torch.Tensor, latents: torch.Tensor, *, steps: int = 2000, lr: float = 1e-3,
                distribution_weight: float = 1.0, batch_size: int = 512, seed: int = 0,
                log: Callable[[str], None] | None = None) -> nn.Module:
    """Returns ``G`` with its mapping network refitted to the run's latents (in place; the synthesis is untouched).

    Two terms, both cheap (the mapping is a small MLP): regression of ``mapping(z_i)`` onto ``w_i`` (keeps the
    teacher's pairing), and the sliced Wasserstein distance between ``mapping`` of fresh z and the latents (the
    samples' distribution matches the codes the synthesis network learned to draw, instead of shrinking to
    their conditional mean where the regression cannot follow).
    """
    generator = torch.Generator().manual_seed(seed)
    mapping = G.mapping.train().requires_grad_(True)
    optimizer = torch.optim.Adam(mapping.parameters(), lr=lr, betas=(0.9, 0.99))
    spread = latents.std(dim=0).mean()
    for step in range(steps):
        index = torch.randint(0, len(z), (batch_size,), generator=generator)
        predicted = mapping(z[index])[:, 0]
        loss = (predicted - latents[index]).square().mean() / spread.square()
        if distribution_weight:
            fresh = mapping(torch.randn(batch_size, z.shape[1], generator=generator))[:, 0]
            other = latents[torch.randint(0, len(latents), (batch_size,), generator=generator)]
            loss = loss + distribution_weight * sliced_wasserstein(fresh, other, generator=generator) / spread.square()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if log is not None and (step + 1) % 500 == 0:
            log(f"mapping fit {step + 1}/{steps} loss {float(loss):.4f}")
    mapping.eval().requires_grad_(False)
    return G
