"""Regression distillation of a pretrained generator into a small StyleGAN2 of our own implementation.

The student's mapping network takes the teacher's z; for every batch of z the student's image is
regressed onto the teacher's with a pixel loss (L1 and/or L2) plus a perceptual loss (ST-LPIPS
AlexNet, read from the ``stlpips-pytorch`` wheel's weights with ``torch.load(weights_only=True)``).
No discriminator. Measured choices (2-core shared CPU, 64 px student, held-out z):

* learning rate 1e-2 (Adam, betas 0.9/0.99): held-out MSE after 100 steps of batch 8 was 0.170,
  vs 0.191 at 5e-3 and 0.239 at 2e-3 (the teacher's mean image scores 0.178);
* pixel L2 (weight 10) dominates, ST-LPIPS (weight 1) sharpens: ST-LPIPS on 64 px images alone is
  easily gamed (a noisy texture reached 0.09 against a face with MSE 0.2), and with L1 + ST-LPIPS
  a run stalled at L1 0.38 with colourful noise images after 150 steps;
* the mapping network's lr multiplier 1.0 rather than StyleGAN's 0.01 (held-out L1 after 60 steps
  0.390 vs 0.414): in regression w must separate different z from the start.

ST-LPIPS (``pti_core.losses``, "stlpips-alex") rather than LPIPS with a random backbone: it is a
real trained metric, read offline from the stlpips-pytorch wheel, and its shift tolerance suits a
student whose convolutions cannot copy the teacher's transposed-convolution artefacts pixel for pixel.

z is fed to the teacher after the same second-moment normalisation the StyleGAN mapping applies
(``z * sqrt(dim) / |z|``), so the student sees exactly the information the teacher uses; in R^100
this changes the teacher's sample distribution negligibly.

Training is resumable: every ``checkpoint_every`` steps the student, its EMA, the Adam state and
the step are written to one safetensors file (``checkpoint.safetensors``, atomically), the
config beside it as ``distill_config.json``. Batches are drawn from a generator seeded by
``(seed, step)``, so a resumed run sees the same z as an uninterrupted one. Only ``steps`` may
change on resume (the learning-rate decay follows it).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
from torch import nn

from .errors import CheckpointError, ConfigError, MissingFileError
from .fileio import atomic_write
from .progress import check_stop, report

CHECKPOINT_NAME = "checkpoint.safetensors"
CONFIG_NAME = "distill_config.json"
HELD_OUT_SEED = 987_654_321  # z for fidelity evaluation come from this seed; training z never do


def load_stlpips() -> nn.Module:
    """Returns the trained ST-LPIPS AlexNet distance (``pti_core.losses``, weights from stlpips-pytorch)."""
    from .losses import perceptual_model

    return perceptual_model("stlpips-alex")


# --------------------------------------------------------------------------------------------
# Configuration and results
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class DistillConfig:
    """Hyperparameters of one distillation run (written as JSON beside its checkpoints).

    Attributes:
        teacher: which teacher to distil; only ``"dcgan-faces"`` (gan-face-generate) exists.
        steps: total optimisation steps (a resumed run continues up to this count).
        batch_size: z per step.
        learning_rate, betas: Adam.
        lr_decay_fraction: the last fraction of ``steps`` over which the learning rate falls
            linearly (cosine-free) to a tenth of ``learning_rate``.
        l1_weight, l2_weight: pixel losses on [-1, 1] images.
        perceptual_weight: weight of the ST-LPIPS AlexNet distance (0 disables it).
        ema_half_life: EMA half-life of the student's weights, in steps (ramped up early on).
        checkpoint_every: steps between checkpoints (and the last step).
        seed: seeds the student's initialisation and the z stream.
        w_dim, mapping_layers, channel_base, channel_max, architecture: the student StyleGAN2.
        mapping_lr_multiplier: the mapping network's equalised-lr multiplier (see module docstring).
    """

    teacher: str = "dcgan-faces"
    steps: int = 3000
    batch_size: int = 8
    learning_rate: float = 1e-2
    betas: tuple[float, float] = (0.9, 0.99)
    l1_weight: float = 0.0
    l2_weight: float = 10.0
    perceptual_weight: float = 1.0
    lr_decay_fraction: float = 0.25
    ema_half_life: float = 200.0
    checkpoint_every: int = 50
    seed: int = 0
    w_dim: int = 128
    mapping_layers: int = 4
    channel_base: int = 2048
    channel_max: int = 128
    architecture: str = "skip"
    mapping_lr_multiplier: float = 1.0

    def __post_init__(self):
        if self.teacher not in TEACHERS:
            raise ConfigError(f"unknown teacher {self.teacher!r}; known: {', '.join(TEACHERS)}")
        for name in ("steps", "batch_size", "checkpoint_every", "w_dim", "mapping_layers",
                     "channel_base", "channel_max"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"DistillConfig.{name} must be >= 1, got {getattr(self, name)}")
        if not 0 <= self.lr_decay_fraction <= 1:
            raise ConfigError(f"DistillConfig.lr_decay_fraction must be in [0, 1], got {self.lr_decay_fraction}")
        if self.l1_weight < 0 or self.l2_weight < 0 or self.perceptual_weight < 0:
            raise ConfigError("DistillConfig loss weights must be >= 0")
        if self.l1_weight + self.l2_weight + self.perceptual_weight == 0:
            raise ConfigError("DistillConfig needs at least one loss weight > 0")
        object.__setattr__(self, "betas", tuple(float(b) for b in self.betas))

    def to_json(self) -> str:
        """Returns the config as a JSON object string."""
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "DistillConfig":
        """Returns the config encoded by ``to_json``; unknown fields are an error."""
        data = json.loads(text)
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ConfigError(f"unknown DistillConfig fields {unknown}; the file was written by another version")
        return cls(**data)


TEACHERS = ("dcgan-faces",)


@dataclass
class DistillResult:
    """Outcome of ``distill``: the EMA student (eval mode), the raw one, losses and where it was saved."""

    generator: nn.Module
    student: nn.Module
    steps_run: int
    step: int
    losses: list[float] = field(default_factory=list)
    checkpoint: Path | None = None
    config: DistillConfig | None = None


def load_teacher(name: str) -> nn.Module:
    """Returns the frozen teacher generator named in a ``DistillConfig`` (``[N, z_dim] -> [N, 3, R, R]``)."""
    if name == "dcgan-faces":
        from .teachers import load_dcgan_teacher
        return load_dcgan_teacher()
    raise ConfigError(f"unknown teacher {name!r}; known: {', '.join(TEACHERS)}")


def student_init_kwargs(config: DistillConfig, *, z_dim: int, resolution: int) -> dict[str, Any]:
    """Returns NVIDIA-style ``init_kwargs`` of the student StyleGAN2 for ``config``."""
    return dict(z_dim=z_dim, c_dim=0, w_dim=config.w_dim, img_resolution=resolution, img_channels=3,
                mapping_kwargs={"num_layers": config.mapping_layers,
                                "lr_multiplier": config.mapping_lr_multiplier},
                synthesis_kwargs={"channel_base": config.channel_base, "channel_max": config.channel_max,
                                  "architecture": config.architecture})


def build_student(config: DistillConfig, *, z_dim: int, resolution: int) -> nn.Module:
    """Returns a new student StyleGAN2 initialised from ``config.seed``."""
    from .generators.stylegan2 import Generator

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        return Generator(**student_init_kwargs(config, z_dim=z_dim, resolution=resolution))


def normalize_z(z: torch.Tensor) -> torch.Tensor:
    """Returns ``z * sqrt(dim) / |z|`` row-wise (what StyleGAN's mapping does to its input)."""
    return z * z.square().mean(dim=1, keepdim=True).add(1e-8).rsqrt()


def teacher_images(teacher: nn.Module, z: torch.Tensor) -> torch.Tensor:
    """Returns the teacher's images ``[N, 3, R, R]`` for z ``[N, z_dim]`` (normalised as the student sees it)."""
    with torch.no_grad():
        return teacher(normalize_z(z))


def learning_rate_at(config: DistillConfig, step: int) -> float:
    """Returns the learning rate of ``step``: constant, then linear decay to 0.1x over the last fraction."""
    decay_start = config.steps * (1.0 - config.lr_decay_fraction)
    if step < decay_start or config.lr_decay_fraction == 0:
        return config.learning_rate
    t = (step - decay_start) / max(1.0, config.steps - decay_start)
    return config.learning_rate * (1.0 - 0.9 * min(1.0, t))


def training_z(config: DistillConfig, step: int, z_dim: int) -> torch.Tensor:
    """Returns the z batch ``[batch_size, z_dim]`` of ``step`` (a pure function of seed and step)."""
    generator = torch.Generator().manual_seed(config.seed * 1_000_003 + step + 1)
    return torch.randn(config.batch_size, z_dim, generator=generator)


def held_out_z(n: int, z_dim: int, *, seed: int = HELD_OUT_SEED) -> torch.Tensor:
    """Returns ``n`` evaluation z ``[n, z_dim]`` from a seed no training batch uses."""
    return torch.randn(n, z_dim, generator=torch.Generator().manual_seed(seed))


# --------------------------------------------------------------------------------------------
# Checkpoints (safetensors only)
# --------------------------------------------------------------------------------------------

def _atomic_save(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str]) -> None:
    from safetensors.torch import save_file

    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=metadata), overwrite=True)


def save_checkpoint(path: Path, *, student: nn.Module, ema: nn.Module, optimizer: torch.optim.Optimizer,
                    step: int, config: DistillConfig, elapsed_s: float) -> None:
    """Writes student, EMA, Adam state and step to one safetensors file (atomically)."""
    tensors: dict[str, torch.Tensor] = {}
    for key, value in student.state_dict().items():
        tensors[f"student.{key}"] = value
    for key, value in ema.state_dict().items():
        tensors[f"ema.{key}"] = value
    names = [name for name, _ in student.named_parameters()]
    opt_state = optimizer.state_dict()["state"]
    for idx, name in enumerate(names):
        for key, value in opt_state.get(idx, {}).items():
            tensors[f"adam.{name}.{key}"] = torch.as_tensor(value, dtype=torch.float32).reshape(-1) \
                if key == "step" else value
    tensors["step"] = torch.tensor([step], dtype=torch.int64)
    metadata = {"format": "pti-distill-checkpoint/1", "config": config.to_json(),
                "init_kwargs": json.dumps(student.init_kwargs), "architecture": "stylegan2",
                "elapsed_s": f"{elapsed_s:.1f}"}
    _atomic_save(tensors, path, metadata)


def read_checkpoint(path: Path, expected_format: str, what: str) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    """Returns ``(metadata, tensors)`` of a training checkpoint, or raises CheckpointError for another format."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata() or {}
        if metadata.get("format") != expected_format:
            raise CheckpointError(f"{path} is not a {what} checkpoint; pass the run's output folder")
        tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    return metadata, tensors


def load_checkpoint(path: Path, *, student: nn.Module, ema: nn.Module,
                    optimizer: torch.optim.Optimizer) -> tuple[int, float]:
    """Restores ``student``, ``ema`` and ``optimizer`` from ``path``; returns ``(step, elapsed_s)``."""
    metadata, tensors = read_checkpoint(path, "pti-distill-checkpoint/1", "distillation")
    for prefix, module in (("student.", student), ("ema.", ema)):
        state = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
        try:
            module.load_state_dict(state, strict=True)
        except RuntimeError as error:
            raise CheckpointError(f"{path} does not fit this student: {str(error).splitlines()[0]}; "
                                  "resume with the run's own distill_config.json") from None
    names = [name for name, _ in student.named_parameters()]
    params = [p for _, p in student.named_parameters()]
    opt_state = {}
    for idx, name in enumerate(names):
        entry = {}
        for key in ("step", "exp_avg", "exp_avg_sq"):
            value = tensors.get(f"adam.{name}.{key}")
            if value is not None:
                entry[key] = value.reshape(()) if key == "step" else value
        if entry:
            opt_state[idx] = entry
    state_dict = optimizer.state_dict()
    state_dict["state"] = opt_state
    optimizer.load_state_dict(state_dict)
    del params
    return int(tensors["step"][0]), float(metadata.get("elapsed_s", "0"))


# --------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------

def distillation_loss(student_images: torch.Tensor, target: torch.Tensor, *, config: DistillConfig,
                      perceptual: nn.Module | None) -> tuple[torch.Tensor, dict[str, float]]:
    """Returns (scalar loss, its parts) for student vs teacher images ``[N, 3, R, R]``."""
    diff = student_images - target
    parts: dict[str, torch.Tensor] = {}
    if config.l1_weight:
        parts["l1"] = diff.abs().mean()
    if config.l2_weight:
        parts["l2"] = diff.square().mean()
    if config.perceptual_weight and perceptual is not None:
        parts["stlpips"] = perceptual(student_images, target).mean()
    weights = {"l1": config.l1_weight, "l2": config.l2_weight, "stlpips": config.perceptual_weight}
    loss = sum(weights[k] * v for k, v in parts.items())
    return loss, {k: float(v.detach()) for k, v in parts.items()}


@torch.no_grad()
def update_ema(ema: nn.Module, student: nn.Module, beta: float) -> None:
    for p_ema, p in zip(ema.parameters(), student.parameters()):
        p_ema.lerp_(p.detach(), 1.0 - beta)
    for b_ema, b in zip(ema.buffers(), student.buffers()):
        b_ema.copy_(b)


@torch.no_grad()
def estimate_w_avg(G: nn.Module, *, samples: int = 10_000, seed: int = 0) -> torch.Tensor:
    """Returns the mean of ``G.mapping`` over ``samples`` z (``[w_dim]``) and stores it in ``G.mapping.w_avg``."""
    z = torch.randn(samples, G.z_dim, generator=torch.Generator().manual_seed(seed))
    w_avg = torch.cat([G.mapping(chunk)[:, 0] for chunk in z.split(1000)]).mean(0)
    G.mapping.w_avg.copy_(w_avg)
    return w_avg


def distill(config: DistillConfig, out_dir: str | Path, *, resume: bool = False,
            teacher: nn.Module | None = None, perceptual: nn.Module | None = None,
            max_steps_this_run: int | None = None, log: Callable[[str], None] | None = None,
            progress=None, should_stop=None) -> DistillResult:
    """Trains (or resumes training) a student StyleGAN2 to reproduce ``config.teacher``; returns it.

    Args:
        config: hyperparameters; with ``resume`` it must equal the run's saved config.
        out_dir: folder for ``checkpoint.safetensors`` and ``distill_config.json``.
        resume: continue from ``out_dir``'s checkpoint (an error if there is none).
        teacher, perceptual: override the teacher / perceptual modules (tests pass small ones).
        max_steps_this_run: stop (after checkpointing) once this many steps ran in this call.
        log: called with one line of text every ``checkpoint_every`` steps.
        progress, should_stop: the pack's progress hooks (``pti_core.progress``).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ckpt_path = out / CHECKPOINT_NAME
    config_path = out / CONFIG_NAME
    if resume:
        if not ckpt_path.is_file():
            raise MissingFileError(f"no {CHECKPOINT_NAME} in {out} to resume from; run without --resume first")
        saved = DistillConfig.from_json(config_path.read_text()) if config_path.is_file() else None
        if saved is not None and dataclasses.replace(saved, steps=config.steps) != config:
            raise ConfigError(f"{config_path} differs from the given config (other than steps); "
                              "resume with the same settings")
    elif ckpt_path.exists():
        raise ConfigError(f"{ckpt_path} exists; pass --resume to continue it or choose another --out")
    teacher = teacher if teacher is not None else load_teacher(config.teacher)
    if perceptual is None and config.perceptual_weight:
        perceptual = load_stlpips()
    z_dim = teacher.z_dim
    with torch.no_grad():
        resolution = teacher(torch.zeros(1, z_dim)).shape[-1]
    student = build_student(config, z_dim=z_dim, resolution=resolution).train()
    ema = copy.deepcopy(student).eval().requires_grad_(False)
    optimizer = torch.optim.Adam(student.parameters(), lr=config.learning_rate, betas=config.betas)
    step, elapsed = 0, 0.0
    if resume:
        step, elapsed = load_checkpoint(ckpt_path, student=student, ema=ema, optimizer=optimizer)
    atomic_write(config_path, lambda tmp: Path(tmp).write_text(config.to_json()), overwrite=True)

    losses: list[float] = []
    start_step, started = step, time.perf_counter()
    while step < config.steps:
        if max_steps_this_run is not None and step - start_step >= max_steps_this_run:
            break
        check_stop(should_stop, phase="distill", step=step)
        for group in optimizer.param_groups:
            group["lr"] = learning_rate_at(config, step)
        z = training_z(config, step, z_dim)
        target = teacher_images(teacher, z)
        images = student.synthesis(student.mapping(z), noise_mode="const")
        loss, parts = distillation_loss(images, target, config=config, perceptual=perceptual)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        step += 1
        beta = 0.5 ** (1.0 / max(1.0, min(config.ema_half_life, step / 2)))
        update_ema(ema, student, beta)
        losses.append(float(loss.detach()))
        report(progress, step, config.steps, "distill", None)
        if step % config.checkpoint_every == 0 or step == config.steps:
            now = elapsed + time.perf_counter() - started
            save_checkpoint(ckpt_path, student=student, ema=ema, optimizer=optimizer, step=step,
                            config=config, elapsed_s=now)
            if log is not None:
                recent = losses[-config.checkpoint_every:]
                log(f"step {step}/{config.steps} loss {sum(recent) / len(recent):.4f} "
                    + " ".join(f"{k} {v:.4f}" for k, v in parts.items()) + f" elapsed {now:.0f}s")
    if step > start_step and step % config.checkpoint_every and step != config.steps:
        save_checkpoint(ckpt_path, student=student, ema=ema, optimizer=optimizer, step=step, config=config,
                        elapsed_s=elapsed + time.perf_counter() - started)
    return DistillResult(generator=ema, student=student.eval(), steps_run=step - start_step, step=step,
                         losses=losses, checkpoint=ckpt_path, config=config)


def load_student(out_dir: str | Path, *, which: str = "ema") -> tuple[nn.Module, DistillConfig, int]:
    """Returns ``(generator, config, step)`` from a distillation folder; ``which`` is "ema" or "student"."""
    from safetensors import safe_open
    from .generators.stylegan2 import Generator

    out = Path(out_dir)
    path = out / CHECKPOINT_NAME
    if not path.is_file():
        raise MissingFileError(f"no {CHECKPOINT_NAME} in {out}; run `python -m pti_core distill --out {out}` first")
    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata() or {}
        prefix = f"{which}."
        state = {k[len(prefix):]: handle.get_tensor(k) for k in handle.keys() if k.startswith(prefix)}
        step = int(handle.get_tensor("step")[0])
    G = Generator(**json.loads(metadata["init_kwargs"]))
    G.load_state_dict(state, strict=True)
    return G.eval().requires_grad_(False), DistillConfig.from_json(metadata["config"]), step


# --------------------------------------------------------------------------------------------
# Evaluation and export
# --------------------------------------------------------------------------------------------

@torch.no_grad()
def fidelity(student: nn.Module, teacher: nn.Module, *, n: int = 256, seed: int = HELD_OUT_SEED,
             perceptual: nn.Module | None = None, batch: int = 32) -> dict[str, float]:
    """Returns mean ST-LPIPS and MSE (on [-1, 1] images) of student vs teacher on ``n`` held-out z."""
    perceptual = perceptual if perceptual is not None else load_stlpips()
    z = held_out_z(n, teacher.z_dim, seed=seed)
    dists, errors = [], []
    for chunk in z.split(batch):
        target = teacher_images(teacher, chunk)
        images = student.synthesis(student.mapping(chunk), noise_mode="const")
        dists.append(perceptual(images, target))
        errors.append((images - target).square().mean(dim=(1, 2, 3)))
    return {"stlpips": float(torch.cat(dists).mean()), "mse": float(torch.cat(errors).mean()), "n": n}


def export_generator(G: nn.Module, path: str | Path, *, extra_metadata: Mapping[str, str] | None = None) -> Path:
    """Writes ``G`` as the pack's generator safetensors (``save_generator``) with extra metadata."""
    from .generators.checkpoints import save_generator

    return save_generator(G, Path(path), metadata=dict(extra_metadata or {}))


# --------------------------------------------------------------------------------------------
# The shipped model and its companions
# --------------------------------------------------------------------------------------------

DATA_DIR = Path(__file__).resolve().parent / "data"
DEFAULT_MODEL_NAME = "dcgan_faces_sg2_64"
DEFAULT_MODEL_PATH = DATA_DIR / "stylegan" / f"{DEFAULT_MODEL_NAME}.safetensors"
DIRECTION_NAMES = ("yaw", "mouth_open", "sefa", "ganspace")
TEMPLATE_METADATA_KEY = "face_template"


@dataclass(frozen=True)
class ModelAssets:
    """A generator file and its companions: alignment template and direction files (by name).

    Companions: ``<stem>.template.json`` beside the model; ``<stem>.<direction>.safetensors`` beside it
    or in the sibling folder ``stylegan_directions/`` (ComfyUI's layout; how the shipped model is stored).
    """

    generator_path: Path
    template: Any  # pti_core.align.FaceTemplate
    direction_paths: dict[str, Path]

    @property
    def directions(self) -> dict[str, Any]:
        """Returns ``{name: pti_core.directions.Direction}`` (loaded on access)."""
        from .directions import load_direction

        return {name: load_direction(path) for name, path in self.direction_paths.items()}


def face_template_for(path: str | Path):
    """Returns the alignment template stored with a generator file, or the FFHQ one when it has none.

    Looks for ``face_template`` in the safetensors metadata, then ``<stem>.template.json`` beside it.
    """
    from .align import FFHQ_TEMPLATE, FaceTemplate

    path = Path(path)
    if path.suffix == ".safetensors" and path.is_file():
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as handle:
            text = (handle.metadata() or {}).get(TEMPLATE_METADATA_KEY)
        if text:
            return FaceTemplate.from_dict(json.loads(text))
    side = path.with_name(path.stem + ".template.json")
    if side.is_file():
        data = json.loads(side.read_text())
        return FaceTemplate.from_dict(data.get("template", data))
    return FFHQ_TEMPLATE


def model_assets(path: str | Path | None = None) -> ModelAssets:
    """Returns the companions of a generator file (default: the embedded distilled face model).

    Raises:
        MissingFileError: the generator file does not exist.
    """
    path = Path(path) if path is not None else DEFAULT_MODEL_PATH
    if not path.is_file():
        raise MissingFileError(f"{path} does not exist; the embedded model ships inside the pack "
                               "(reinstall it) or pass an existing generator file")
    found = {}
    for name in DIRECTION_NAMES:
        for folder in (path.parent, path.parent.parent / "stylegan_directions"):
            candidate = folder / f"{path.stem}.{name}.safetensors"
            if candidate.is_file():
                found[name] = candidate
                break
    return ModelAssets(generator_path=path, template=face_template_for(path), direction_paths=found)
