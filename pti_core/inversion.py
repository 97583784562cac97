"""Stage 1 of PTI: project a photo into the generator's latent space (the pivot).

The StyleGAN2-ADA projector as PTI uses it (see ``PTI.md``): start at ``w_avg``, optimise one w
(W space, broadcast to every layer) or one w per layer (W+), plus copies of the per-layer noise
maps, with LPIPS + noise regularisation, a w-noise ramp and a ramped learning rate.
For StyleGAN3 (no noise inputs) ``optimize_transform`` also searches a translation + rotation of
the Fourier-feature input per image, so a face need not sit exactly where the model expects it.

Differences from the reference code, on purpose:

* the perceptual loss is LPIPS-VGG built from the ``lpips`` package and torchvision's VGG16
  (the reference loads NVIDIA's TorchScript ``vgg16.pt``, the same LPIPS-VGG distance);
* one learning rate that takes effect (the reference's ``first_inv_lr`` is overwritten);
* any ``num_ws`` (the reference hard-codes 18);
* the generator is never modified (the reference overwrites its noise buffers);
* the target's perceptual features are computed once; several images run as one batch.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from . import _runtime as rt
from .errors import ConfigError, LatentError
from .generators.stylegan3 import input_transform
from .imageio import check_nchw, prepare_target
from .losses import PERCEPTUAL_KINDS, noise_regularization, perceptual_model
from .progress import ProgressFn, StopFn, check_stop, report


@dataclass(frozen=True)
class InversionConfig:
    """Hyperparameters of the projection (defaults: PTI / StyleGAN2-ADA projector).

    Attributes:
        space: ``"w"`` (one w broadcast to all layers; PTI's pivot) or ``"w+"`` (one w per layer).
        steps: optimisation steps.
        lr: peak learning rate of Adam.
        lr_rampup: fraction of steps of the linear warm-up.
        lr_rampdown: fraction of steps of the cosine ramp-down at the end.
        betas: Adam betas.
        initial_noise_factor: w noise std at the start, in units of ``w_std``.
        noise_ramp_length: fraction of steps over which the w noise decays (quadratically) to 0.
        regularize_noise_weight: weight of the noise autocorrelation regulariser.
        optimize_noise: optimise copies of the noise maps (the reference does).
        w_avg_samples: number of z sampled to estimate w_avg and w_std.
        w_avg_seed: seed of ``numpy.random.RandomState`` for those z (the reference's 123).
        perceptual: perceptual backbone (see :mod:`pti_core.losses`).
        perceptual_size: images larger than this are area-downsampled before the loss.
        l2_weight: weight of a pixel MSE (images in [-1, 1]) added to the perceptual distance; 0 = the
            reference projector (perceptual only). At 64 px the shift-tolerant ST-LPIPS alone leaves the
            colours and layout unfitted (the built-in model's pivots were 9-11 dB); the built-in model uses 1.
        seed: seed of the w noise and the initial noise maps.
        preview_every: pass a preview image to ``progress`` every this many steps (0 = never).
        precision: ``"fp32"``, ``"bf16"`` or ``"fp16"`` (autocast; parameters stay float32; fp16
            with dynamic loss scaling, see ``pti_core._runtime.loss_scaler``).
        compile: ``torch.compile`` the synthesis network (CUDA only; ignored elsewhere).
        fused_modconv: modulated-conv path; None = auto (fused on CUDA, non-fused on CPU).
        channels_last: NHWC perceptual net, and StyleGAN2 activations from 128 px; None = auto
            (the perceptual net on CUDA or with bf16/fp16, the generator on CPU).
        optimize_transform: StyleGAN3 only: also optimise, per image, a translation (image widths)
            and rotation of the synthesis input jointly with w (same learning-rate schedule; the
            angle in radians), starting from ``transform_init``. The result's ``transform`` holds it.
        transform_init: ``(translate_x, translate_y, angle_degrees)`` the search starts from.
    """

    space: str = "w"
    steps: int = 450
    lr: float = 0.01
    lr_rampup: float = 0.05
    lr_rampdown: float = 0.25
    betas: tuple[float, float] = (0.9, 0.999)
    initial_noise_factor: float = 0.05
    noise_ramp_length: float = 0.75
    regularize_noise_weight: float = 1e5
    optimize_noise: bool = True
    w_avg_samples: int = 600
    w_avg_seed: int = 123
    perceptual: str = "lpips-vgg"
    perceptual_size: int = 256
    l2_weight: float = 0.0
    seed: int = 0
    preview_every: int = 50
    precision: str = "fp32"
    compile: bool = False
    fused_modconv: bool | None = None
    channels_last: bool | None = None
    optimize_transform: bool = False
    transform_init: tuple[float, float, float] = (0.0, 0.0, 0.0)

    def __post_init__(self):
        rt.check_choice("space", self.space, ("w", "w+"))
        rt.check_choice("perceptual", self.perceptual, PERCEPTUAL_KINDS)
        rt.check_choice("precision", self.precision, tuple(rt.PRECISIONS))
        rt.check_positive("steps", self.steps)
        rt.check_positive("lr", self.lr)
        rt.check_positive("l2_weight", self.l2_weight, allow_zero=True)
        rt.check_positive("w_avg_samples", self.w_avg_samples)
        rt.check_positive("perceptual_size", self.perceptual_size)
        for name in ("lr_rampup", "lr_rampdown", "initial_noise_factor", "regularize_noise_weight",
                     "noise_ramp_length", "preview_every"):
            rt.check_positive(name, getattr(self, name), allow_zero=True)
        object.__setattr__(self, "betas", tuple(float(b) for b in self.betas))
        if len(self.transform_init) != 3:
            raise ConfigError(f"transform_init must be (translate_x, translate_y, angle_degrees), "
                              f"got {self.transform_init!r}")
        object.__setattr__(self, "transform_init", tuple(float(v) for v in self.transform_init))

    def to_dict(self) -> dict[str, Any]:
        """Returns the config as a JSON-serialisable dict."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "InversionConfig":
        """Returns a config from :meth:`to_dict` output."""
        return cls(**{k: tuple(v) if k in ("betas", "transform_init") else v for k, v in data.items()})


@dataclass(frozen=True)
class Inversion:
    """Result of :func:`invert`.

    Attributes:
        ws: the pivot latents ``[B, num_ws, w_dim]`` float32 (rows equal for ``space="w"``).
        image: ``G.synthesis(ws, noise_mode="const"[, transform=transform])`` ``[B, 3, R, R]`` in
            [-1, 1] (what tuning starts from).
        losses: per step, the batch-mean perceptual distance to the target.
        config: the configuration used.
        transform: with ``optimize_transform``, the StyleGAN3 synthesis-input transforms found
            ``[B, 3, 3]`` float32 CPU (pass to ``G.synthesis(ws, transform=...)`` or
            ``pivotal_tune(..., transform=...)``); None otherwise.
    """

    ws: torch.Tensor
    image: torch.Tensor
    losses: list[float]
    config: InversionConfig
    transform: torch.Tensor | None = None

    @property
    def space(self) -> str:
        return self.config.space


def w_statistics(G: nn.Module, *, samples: int = 600, seed: int = 123) -> tuple[torch.Tensor, float]:
    """Returns ``(w_avg [w_dim], w_std)`` from ``samples`` mapped z (``RandomState(seed)``).

    ``w_std = sqrt(mean_i ||w_i - w_avg||^2)`` (the projector's scale of the w noise).
    """
    device = rt.module_device(G)
    z = torch.from_numpy(np.random.RandomState(seed).randn(samples, G.z_dim)).to(device, torch.float32)
    c = None
    if getattr(G, "c_dim", 0):
        raise LatentError("inverting into a conditional generator is not supported; use an unconditional one")
    with torch.no_grad():
        w = G.mapping(z, c)[:, 0].to(torch.float32)  # [S, w_dim]
    w_avg = w.mean(dim=0)
    w_std = float((w - w_avg).square().sum() / samples) ** 0.5
    return w_avg, w_std


def learning_rate(step: int, steps: int, config: InversionConfig) -> float:
    """Returns the projector's learning rate at ``step`` (linear ramp-up, cosine ramp-down)."""
    t = step / steps
    ramp = min(1.0, (1.0 - t) / config.lr_rampdown) if config.lr_rampdown > 0 else 1.0
    ramp = 0.5 - 0.5 * math.cos(ramp * math.pi)
    if config.lr_rampup > 0:
        ramp = ramp * min(1.0, t / config.lr_rampup)
    return config.lr * ramp


def _initial_latent(G: nn.Module, init_ws: torch.Tensor | None, batch: int, space: str,
                    w_avg: torch.Tensor) -> torch.Tensor:
    num_ws, w_dim = G.num_ws, G.w_dim
    if init_ws is None:
        rows = 1 if space == "w" else num_ws
        return w_avg.reshape(1, 1, w_dim).repeat(batch, rows, 1)
    ws = torch.as_tensor(init_ws).detach().to(w_avg.device, torch.float32)
    if ws.ndim == 2:
        ws = ws.unsqueeze(0)
    if ws.ndim != 3 or ws.shape[2] != w_dim or ws.shape[1] not in (1, num_ws):
        raise LatentError(f"init_ws must be [B, {num_ws} or 1, {w_dim}] for this generator, got {list(ws.shape)}")
    if ws.shape[0] == 1 and batch > 1:
        ws = ws.repeat(batch, 1, 1)
    if ws.shape[0] != batch:
        raise LatentError(f"init_ws has {ws.shape[0]} latents for {batch} target images")
    if space == "w":
        return ws.mean(dim=1, keepdim=True)  # [B, 1, w_dim]
    return ws.expand(batch, num_ws, w_dim).clone()


def input_transforms(G: nn.Module, translate: torch.Tensor, angle: torch.Tensor) -> torch.Tensor:
    """Returns StyleGAN3 synthesis-input transforms ``[B, 3, 3]`` (differentiable) that move each image.

    ``translate`` ``[B, 2]`` is in image widths, ``angle`` ``[B]`` in radians; each matrix is
    ``G.synthesis.input.transform @ input_transform(translate[i], degrees(angle[i]))``, i.e. the
    move is applied on top of the transform stored in the generator (the identity for NVIDIA's
    pickles).
    """
    stored = _stored_transform(G).to(translate.device, torch.float32)  # [3, 3]
    moves = [input_transform(translate[i], angle[i] * (180.0 / math.pi)) for i in range(translate.shape[0])]
    return stored @ torch.stack(moves).to(torch.float32)  # [B, 3, 3]


def _stored_transform(G: nn.Module) -> torch.Tensor:
    stored = getattr(getattr(G.synthesis, "input", None), "transform", None)
    if not torch.is_tensor(stored) or stored.shape != (3, 3):
        raise ConfigError("optimize_transform needs a StyleGAN3 generator (a Fourier-feature input with a "
                          "transform); turn it off for this model")
    return stored.detach()


def invert(G: nn.Module, target: Any, *, config: InversionConfig | None = None,
           init_ws: torch.Tensor | None = None, progress: ProgressFn | None = None,
           should_stop: StopFn | None = None) -> Inversion:
    """Returns the pivot latents that best reproduce ``target`` through ``G`` (the PTI projector).

    Args:
        G: a StyleGAN2/3 generator (never modified).
        target: image(s): ``[B, 3, H, W]`` tensor in [-1, 1], PIL image, uint8 array or path;
            resized (antialiased) and centre-cropped to ``G.img_resolution``.
        config: hyperparameters (default: the paper's).
        init_ws: optional start latent ``[B, num_ws | 1, w_dim]`` instead of ``w_avg``.
        progress: ``progress(step, total, "invert", preview)`` after each step.
        should_stop: checked before every step; True raises :class:`pti_core.errors.Cancelled`.

    Returns:
        :class:`Inversion` with ``ws`` ``[B, num_ws, w_dim]`` (and ``transform`` ``[B, 3, 3]`` with
        ``config.optimize_transform``).

    Raises:
        ImageError: empty or non-image target.  Cancelled: ``should_stop()`` returned True.
        ConfigError: ``optimize_transform`` on a generator without a StyleGAN3 input transform.
    """
    config = config or InversionConfig()
    device = rt.module_device(G)
    target = prepare_target(target, G.img_resolution).to(device)  # [B, 3, R, R]
    check_nchw(target, name="target")
    batch = target.shape[0]
    num_ws = G.num_ws

    with torch.enable_grad(), rt.frozen_parameters(G):
        w_avg, w_std = w_statistics(G, samples=config.w_avg_samples, seed=config.w_avg_seed)
        generator = torch.Generator(device=device).manual_seed(config.seed)
        w_opt = _initial_latent(G, init_ws, batch, config.space, w_avg).requires_grad_(True)
        noise = {}
        if config.optimize_noise:
            for name, buf in rt.noise_buffers(G).items():  # copies; G keeps its own buffers
                shape = [batch, 1, *buf.shape[-2:]]
                noise[name] = torch.randn(shape, generator=generator, device=device,
                                          dtype=torch.float32).requires_grad_(True)
        params = [w_opt, *noise.values()]
        if config.optimize_transform:
            _stored_transform(G)  # fails early for generators without an input transform
            translate = torch.tensor(config.transform_init[:2], device=device).repeat(batch, 1).requires_grad_(True)
            angle = torch.full([batch], math.radians(config.transform_init[2]), device=device).requires_grad_(True)
            params += [translate, angle]  # [B, 2] image widths, [B] radians
        optimizer = rt.adam(params, lr=config.lr, betas=config.betas)
        scaler = rt.loss_scaler(device, config.precision)
        perceptual = perceptual_model(config.perceptual, device,
                                      channels_last=rt.use_channels_last(config.channels_last, device,
                                                                         config.precision),
                                      dtype=rt.PRECISIONS[config.precision])
        fused = rt.use_fused_modconv(config.fused_modconv, device)
        nhwc_from = rt.generator_channels_last_from(config.channels_last, G)
        with torch.no_grad():
            target_features = perceptual.features(target, max_size=config.perceptual_size)
        synthesis = rt.synthesis_fn(G, compile=config.compile)
        noise_arg = noise or None
        losses: list[float] = []
        for step in range(config.steps):
            check_stop(should_stop, phase="inversion", step=step)
            t = step / config.steps
            w_noise_scale = w_std * config.initial_noise_factor * max(0.0, 1.0 - t / config.noise_ramp_length) ** 2 \
                if config.noise_ramp_length > 0 else 0.0
            lr = learning_rate(step, config.steps, config)
            for group in optimizer.param_groups:
                group["lr"] = lr
            w_noise = torch.randn(w_opt.shape, generator=generator, device=device) * w_noise_scale
            ws = (w_opt + w_noise).expand(batch, num_ws, G.w_dim)  # [B, num_ws, w_dim]
            render = synthesis
            if config.optimize_transform:
                render = functools.partial(synthesis, transform=input_transforms(G, translate, angle))
            with rt.autocast(device, config.precision):
                images = rt.synthesize(render, ws, noise_mode="const", noise=noise_arg, fused_modconv=fused,
                                       channels_last_from=nhwc_from)
                distance = perceptual.distance_to_features(images, target_features,
                                                           max_size=config.perceptual_size)  # [B]
            loss = distance.sum()
            if config.l2_weight:
                loss = loss + config.l2_weight * (images.float() - target).square().mean(dim=[1, 2, 3]).sum()
            if noise and config.regularize_noise_weight > 0:
                loss = loss + config.regularize_noise_weight * noise_regularization(list(noise.values()))
            grads = torch.autograd.grad(scaler.scale(loss), params)  # never touches G's .grad
            for param, grad in zip(params, grads):
                param.grad = grad
            rt.scaled_step(scaler, optimizer)
            with torch.no_grad():  # renormalise the noise maps to zero mean, unit variance
                for buf in noise.values():
                    buf -= buf.mean(dim=[1, 2, 3], keepdim=True)
                    buf *= buf.square().mean(dim=[1, 2, 3], keepdim=True).rsqrt()
            losses.append(float(distance.detach().mean()))
            show = config.preview_every and ((step + 1) % config.preview_every == 0 or step + 1 == config.steps)
            report(progress, step + 1, config.steps, "invert", rt.preview(images) if show else None)

        with torch.no_grad():
            ws = w_opt.detach().expand(batch, num_ws, G.w_dim).clone().to(torch.float32)
            render, transform = G.synthesis, None
            if config.optimize_transform:
                transform = input_transforms(G, translate.detach(), angle.detach())  # [B, 3, 3]
                render = functools.partial(G.synthesis, transform=transform)
            image = rt.synthesize(render, ws, noise_mode="const").clamp(-1, 1)
    return Inversion(ws=ws.cpu(), image=image.cpu(), losses=losses, config=config,
                     transform=None if transform is None else transform.cpu())


__all__ = ["InversionConfig", "Inversion", "invert", "w_statistics", "learning_rate", "input_transforms"]
