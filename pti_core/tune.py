"""Stage 2 of PTI: fine-tune the generator around the pivot so that ``G'(w_p) = x``.

Adam on the synthesis weights of a deep copy of ``G`` (the mapping network stays frozen; for
StyleGAN3 also the Fourier-feature input ``synthesis.input.*``), loss
``l2_weight * MSE + lpips_weight * LPIPS-alex`` at full resolution with the generator's constant
noise, stopping early once the LPIPS term is at most ``lpips_threshold`` (the reference rule:
checked before each update). Optional locality regularisation (the paper's Sec. 3.3): at
``w_r = w_p + alpha * (w_z - w_p) / ||w_z - w_p||`` with ``w_z = mapping(z, psi)``, keep
``G'(w_r)`` close to ``G(w_r)``.

Modes: ``"per-image"`` tunes one generator per target; ``"shared"`` tunes ONE generator for all
targets. Unlike the reference multi-ID coach (one Adam step per image per epoch), shared mode
takes one batched Adam step per step on the mean loss over all images (same gradient direction
up to Adam's per-step normalisation, B times fewer updates and passes), and stops early when
every image's LPIPS is at most the threshold.

StyleGAN3 with an input transform found by the inversion (``InversionConfig.optimize_transform``):
pass it as ``transform``; each tuned generator stores it in its ``synthesis.input.transform``
buffer, so every later rendering of the pivot (and of its edits) uses it.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from . import _runtime as rt
from .errors import ConfigError, LatentError
from .imageio import check_nchw, prepare_target
from .losses import PERCEPTUAL_KINDS, perceptual_model
from .progress import ProgressFn, StopFn, check_stop, report


@dataclass(frozen=True)
class Locality:
    """Locality regularisation (paper Sec. 3.3; reference ``space_regularizer``).

    Attributes:
        alpha: distance from the pivot of the regularisation latents, per layer row of w.
        psi: truncation of the sampled ``w_z``.
        weight_l2: weight of ``MSE(G(w_r), G'(w_r))``.
        weight_lpips: weight of ``LPIPS(G(w_r), G'(w_r))``.
        interval: apply every this many steps.
        samples: number of ``w_r`` per application.
    """

    alpha: float = 30.0
    psi: float = 0.5
    weight_l2: float = 0.1
    weight_lpips: float = 0.1
    interval: int = 1
    samples: int = 1

    def __post_init__(self):
        rt.check_positive("locality alpha", self.alpha)
        rt.check_positive("locality interval", self.interval)
        rt.check_positive("locality samples", self.samples)
        rt.check_positive("locality weight_l2", self.weight_l2, allow_zero=True)
        rt.check_positive("locality weight_lpips", self.weight_lpips, allow_zero=True)


@dataclass(frozen=True)
class TuningConfig:
    """Hyperparameters of pivotal tuning (defaults: the paper / reference single-ID coach).

    Attributes:
        steps: maximum Adam steps.
        lr: Adam learning rate (default betas).
        l2_weight: weight of the pixel MSE (images in [-1, 1]).
        lpips_weight: weight of the LPIPS term.
        lpips_threshold: stop once the LPIPS term is at most this (checked before each update;
            0 disables early stopping).
        perceptual: backbone of the LPIPS term (see :mod:`pti_core.losses`).
        locality: :class:`Locality` or None (off, the reference default for one image).
        mode: ``"per-image"`` or ``"shared"``.
        noise_mode: noise used while tuning (``"const"``: the generator's stored maps).
        seed: seed of the locality samples.
        preview_every: pass a preview to ``progress`` every this many steps (0 = never).
        precision: ``"fp32"``, ``"bf16"`` or ``"fp16"`` autocast (weights stay float32; fp16 with
            dynamic loss scaling: a step whose scaled gradients overflow is skipped, see ``steps_run``).
        compile: ``torch.compile`` the tuned synthesis network (CUDA only).
        fused_modconv: modulated-conv path; None = auto (fused on CUDA, and on CPU for one image).
        channels_last: NHWC perceptual net, and StyleGAN2 activations from 128 px; None = auto
            (the perceptual net on CUDA or with bf16/fp16, the generator on CPU).
    """

    steps: int = 350
    lr: float = 3e-4
    l2_weight: float = 1.0
    lpips_weight: float = 1.0
    lpips_threshold: float = 0.06
    perceptual: str = "lpips-alex"
    locality: Locality | None = None
    mode: str = "per-image"
    noise_mode: str = "const"
    seed: int = 0
    preview_every: int = 50
    precision: str = "fp32"
    compile: bool = False
    fused_modconv: bool | None = None
    channels_last: bool | None = None

    def __post_init__(self):
        rt.check_positive("steps", self.steps)
        rt.check_positive("lr", self.lr)
        rt.check_positive("l2_weight", self.l2_weight, allow_zero=True)
        rt.check_positive("lpips_weight", self.lpips_weight, allow_zero=True)
        rt.check_positive("lpips_threshold", self.lpips_threshold, allow_zero=True)
        rt.check_positive("preview_every", self.preview_every, allow_zero=True)
        rt.check_choice("perceptual", self.perceptual, PERCEPTUAL_KINDS)
        rt.check_choice("mode", self.mode, ("per-image", "shared"))
        rt.check_choice("noise_mode", self.noise_mode, ("const", "random", "none"))
        rt.check_choice("precision", self.precision, tuple(rt.PRECISIONS))
        if self.locality is not None and not isinstance(self.locality, Locality):
            raise ConfigError("locality must be a Locality(...) or None")

    def to_dict(self) -> dict[str, Any]:
        """Returns the config as a JSON-serialisable dict."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TuningConfig":
        """Returns a config from :meth:`to_dict` output."""
        data = dict(data)
        if data.get("locality") is not None:
            data["locality"] = Locality(**data["locality"])
        return cls(**data)


@dataclass(frozen=True)
class TunedGenerator:
    """Result of :func:`pivotal_tune`.

    Attributes:
        generators: tuned generators (one per target in ``per-image`` mode, one in ``shared``), eval mode.
        ws: the pivots ``[B, num_ws, w_dim]`` they were tuned for (float32, CPU).
        losses: per generator, per step ``{"loss", "l2", "lpips"[, "locality"]}``.
        config: the configuration used.
        steps_run: per generator, the number of updates taken (fewer than ``steps`` on early stop, or
            when fp16 steps were skipped for overflowing gradients).
    """

    generators: list[nn.Module]
    ws: torch.Tensor
    losses: list[list[dict[str, float]]]
    config: TuningConfig
    steps_run: list[int]

    @property
    def generator(self) -> nn.Module:
        """The first (or only) tuned generator."""
        return self.generators[0]

    def generator_for(self, index: int) -> nn.Module:
        """Returns the generator that reproduces target ``index``."""
        return self.generators[0] if len(self.generators) == 1 else self.generators[index]


def tunable_parameters(G: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """Returns ``[(name, parameter)]`` that pivotal tuning updates: synthesis weights only.

    The mapping network is frozen; for StyleGAN3 the Fourier-feature input (``synthesis.input.*``)
    is frozen too (it defines the coordinate frame the transform acts on).
    """
    out = []
    for name, param in G.named_parameters():
        if not name.startswith("synthesis."):
            continue
        if getattr(G, "architecture_name", "") == "stylegan3" and name.startswith("synthesis.input."):
            continue
        out.append((name, param))
    return out


def _check_ws(G: nn.Module, ws: torch.Tensor, batch: int) -> torch.Tensor:
    ws = torch.as_tensor(ws).detach().to(torch.float32)
    if ws.ndim == 2:
        ws = ws.unsqueeze(0)
    if ws.ndim == 3 and ws.shape[1] == 1:
        ws = ws.expand(ws.shape[0], G.num_ws, ws.shape[2])
    if ws.ndim != 3 or ws.shape[1:] != (G.num_ws, G.w_dim):
        raise LatentError(f"pivot ws must be [B, {G.num_ws}, {G.w_dim}] for this generator, got {list(ws.shape)}")
    if ws.shape[0] == 1 and batch > 1:
        ws = ws.expand(batch, -1, -1)
    if ws.shape[0] != batch:
        raise LatentError(f"{ws.shape[0]} pivots for {batch} target images; pass one pivot per image")
    return ws.contiguous()


def locality_latents(G: nn.Module, w_pivot: torch.Tensor, locality: Locality,
                     generator: torch.Generator) -> torch.Tensor:
    """Returns ``w_r = w_p + alpha * (w_z - w_p) / ||w_z - w_p||`` ``[S, num_ws, w_dim]``.

    ``w_z = G.mapping(z, psi)`` for ``S = locality.samples`` random z around one pivot
    ``[1, num_ws, w_dim]``; the norm is taken per layer row, so every row moves by ``alpha``
    (the reference divides by the norm of the whole ``[18, 512]`` tensor instead).
    """
    device = w_pivot.device
    z = torch.randn([locality.samples, G.z_dim], generator=generator, device=device)
    with torch.no_grad():
        w_z = G.mapping(z, None, truncation_psi=locality.psi).to(torch.float32)  # [S, num_ws, w_dim]
        direction = w_z - w_pivot
        direction = direction / direction.norm(dim=2, keepdim=True).clamp_min(1e-8)
    return w_pivot + locality.alpha * direction


def _check_transform(G: nn.Module, transform: torch.Tensor, batch: int, mode: str) -> torch.Tensor:
    """Returns the input transforms as ``[B, 3, 3]`` float32, or raises for a bad shape / model."""
    stored = getattr(getattr(G.synthesis, "input", None), "transform", None)
    if not torch.is_tensor(stored) or stored.shape != (3, 3):
        raise ConfigError("an input transform needs a StyleGAN3 generator (a Fourier-feature input); "
                          "pass transform=None for this model")
    transform = torch.as_tensor(transform).detach().to(torch.float32)
    if transform.ndim == 2:
        transform = transform.unsqueeze(0)
    if transform.ndim != 3 or transform.shape[1:] != (3, 3) or transform.shape[0] not in (1, batch):
        raise ConfigError(f"transform must be [3, 3] or [{batch}, 3, 3], got {list(transform.shape)}")
    transform = transform.expand(batch, 3, 3)
    if mode == "shared" and batch > 1 and not bool((transform == transform[:1]).all()):
        raise ConfigError("shared mode tunes one generator, which holds one input transform, but the images "
                          "have different ones; tune per image or invert without optimize_transform")
    return transform.contiguous()


def _tune_one(G: nn.Module, target: torch.Tensor, ws: torch.Tensor, config: TuningConfig, *,
              progress: ProgressFn | None, should_stop: StopFn | None, label: str,
              transform: torch.Tensor | None = None) -> tuple[nn.Module, list[dict[str, float]], int]:
    device = rt.module_device(G)
    tuned = copy.deepcopy(G).to(device).eval()
    tuned.requires_grad_(False)
    reference_synthesis = G.synthesis
    if transform is not None:  # [3, 3]: the tuned generator renders with it from now on
        tuned.synthesis.input.transform.copy_(transform)
        reference_synthesis = functools.partial(G.synthesis, transform=tuned.synthesis.input.transform)
    params = [p for _, p in tunable_parameters(tuned)]
    for p in params:
        p.requires_grad_(True)
    optimizer = rt.adam(params, lr=config.lr)
    scaler = rt.loss_scaler(device, config.precision)
    perceptual = perceptual_model(config.perceptual, device,
                                  channels_last=rt.use_channels_last(config.channels_last, device, config.precision),
                                  dtype=rt.PRECISIONS[config.precision])
    fused = rt.use_fused_modconv(config.fused_modconv, device, train_weights=True, batch=ws.shape[0])
    nhwc_from = rt.generator_channels_last_from(config.channels_last, G)
    with torch.no_grad():
        target_features = perceptual.features(target)
    synthesis = rt.synthesis_fn(tuned, compile=config.compile)
    generator = torch.Generator(device=device).manual_seed(config.seed)
    locality = config.locality
    losses: list[dict[str, float]] = []
    steps_run = 0
    for step in range(config.steps):
        check_stop(should_stop, phase=f"tuning{label}", step=step)
        with rt.autocast(device, config.precision):
            images = rt.synthesize(synthesis, ws, noise_mode=config.noise_mode, fused_modconv=fused,
                                   channels_last_from=nhwc_from)  # [B, 3, R, R]
            l2 = (images - target).square().mean(dim=[1, 2, 3])  # [B]
            lpips = perceptual.distance_to_features(images, target_features)  # [B]
        record = {"l2": float(l2.detach().mean()), "lpips": float(lpips.detach().mean())}
        if config.lpips_threshold > 0 and float(lpips.detach().max()) <= config.lpips_threshold:
            record["loss"] = float((config.l2_weight * l2 + config.lpips_weight * lpips).detach().mean())
            losses.append(record)
            report(progress, config.steps, config.steps, f"tune{label}", rt.preview(images))
            break
        loss = (config.l2_weight * l2 + config.lpips_weight * lpips).mean()
        if locality is not None and step % locality.interval == 0:
            reg = 0.0
            for index in range(ws.shape[0]):
                w_r = locality_latents(G, ws[index:index + 1], locality, generator)  # [S, num_ws, w_dim]
                with torch.no_grad():
                    reference = rt.synthesize(reference_synthesis, w_r, noise_mode="none")
                    reference_features = perceptual.features(reference)
                with rt.autocast(device, config.precision):
                    moved = rt.synthesize(synthesis, w_r, noise_mode="none", fused_modconv=fused,
                                          channels_last_from=nhwc_from)
                    reg_l2 = (moved - reference).square().mean()
                    reg_lpips = perceptual.distance_to_features(moved, reference_features).mean()
                reg = reg + locality.weight_l2 * reg_l2 + locality.weight_lpips * reg_lpips
            reg = reg / ws.shape[0]
            loss = loss + reg
            record["locality"] = float(reg.detach())
        record["loss"] = float(loss.detach())
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        steps_run += rt.scaled_step(scaler, optimizer)  # False: fp16 gradients overflowed, step skipped
        losses.append(record)
        show = config.preview_every and ((step + 1) % config.preview_every == 0 or step + 1 == config.steps)
        report(progress, step + 1, config.steps, f"tune{label}", rt.preview(images) if show else None)
    for p in params:
        p.grad = None
    tuned.requires_grad_(False)
    return tuned.eval(), losses, steps_run


def pivotal_tune(G: nn.Module, target: Any, ws: torch.Tensor, *, config: TuningConfig | None = None,
                 transform: torch.Tensor | None = None, progress: ProgressFn | None = None,
                 should_stop: StopFn | None = None) -> TunedGenerator:
    """Returns generator(s) fine-tuned so that ``G'(ws) ~ target``; ``G`` itself is never modified.

    Args:
        G: the pretrained generator (left bit-exactly unchanged).
        target: image(s) ``[B, 3, H, W]`` in [-1, 1] (or PIL/array/path), resized to ``G``'s resolution.
        ws: pivots ``[B, num_ws, w_dim]`` (e.g. ``invert(...).ws``); ``[B, 1, w_dim]`` is broadcast.
        config: hyperparameters (default: the paper's).
        transform: StyleGAN3 only: synthesis-input transform(s) ``[3, 3]`` or ``[B, 3, 3]`` the pivots
            were inverted with (``Inversion.transform``); tuning renders with it and each tuned
            generator keeps it in ``synthesis.input.transform`` (shared mode: one for all images).
        progress: ``progress(step, total, "tune" | "tune[i/B]", preview)``.
        should_stop: checked before every step; True raises :class:`pti_core.errors.Cancelled`
            and no generator is returned.

    Returns:
        :class:`TunedGenerator` (``.generator`` is the first or only one).
    """
    config = config or TuningConfig()
    device = rt.module_device(G)
    target = prepare_target(target, G.img_resolution).to(device)
    check_nchw(target, name="target")
    batch = target.shape[0]
    ws = _check_ws(G, ws, batch).to(device)
    if transform is not None:
        transform = _check_transform(G, transform, batch, config.mode).to(device)  # [B, 3, 3]
    generators, losses, steps_run = [], [], []
    with torch.enable_grad():
        if config.mode == "shared" or batch == 1:
            tuned, record, steps = _tune_one(G, target, ws, config, progress=progress,
                                             should_stop=should_stop, label="",
                                             transform=None if transform is None else transform[0])
            generators, losses, steps_run = [tuned], [record], [steps]
        else:
            for index in range(batch):
                tuned, record, steps = _tune_one(G, target[index:index + 1], ws[index:index + 1], config,
                                                 progress=progress, should_stop=should_stop,
                                                 label=f"[{index + 1}/{batch}]",
                                                 transform=None if transform is None else transform[index])
                generators.append(tuned)
                losses.append(record)
                steps_run.append(steps)
    return TunedGenerator(generators=generators, ws=ws.detach().cpu(), losses=losses, config=config,
                          steps_run=steps_run)


__all__ = ["Locality", "TuningConfig", "TunedGenerator", "pivotal_tune", "tunable_parameters",
           "locality_latents"]
