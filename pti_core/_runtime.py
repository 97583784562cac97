"""Shared plumbing of the optimisation loops: devices, precision, compile, synthesis calls.

Private to pti_core (used by :mod:`.inversion` and :mod:`.tune`).
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Mapping

import torch
from torch import nn

from .errors import ConfigError

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def check_choice(name: str, value: Any, choices) -> None:
    if value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(map(str, choices))}, got {value!r}")


def check_positive(name: str, value: float, *, allow_zero: bool = False) -> None:
    if not (value > 0 or (allow_zero and value == 0)):
        raise ConfigError(f"{name} must be {'>= 0' if allow_zero else '> 0'}, got {value!r}")


def module_device(module: nn.Module) -> torch.device:
    for tensor in module.parameters():
        return tensor.device
    for tensor in module.buffers():
        return tensor.device
    return torch.device("cpu")


def autocast(device: torch.device, precision: str):
    """Returns the autocast context for ``precision`` ("fp32" = no autocast)."""
    dtype = PRECISIONS[precision]
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


@contextlib.contextmanager
def frozen_parameters(module: nn.Module):
    """Context in which ``module``'s parameters do not require grad; their flags are restored after.

    For loops that optimise something else through a fixed network (inversion): autograd then
    records no graph through the weights (no casts, products or reductions on them kept for a
    backward that never comes): a few per cent of a 64 px inversion step on CPU.
    """
    flipped = [p for p in module.parameters() if p.requires_grad]
    for p in flipped:
        p.requires_grad_(False)
    try:
        yield module
    finally:
        for p in flipped:
            p.requires_grad_(True)


def adam(params: list[torch.Tensor], *, lr: float, betas: tuple[float, float] = (0.9, 0.999)) -> torch.optim.Adam:
    """Returns Adam over ``params``, with PyTorch's fused (one-kernel) update where it is supported.

    The fused update is the same algorithm as the default per-tensor loop (to float rounding) and
    takes about a fifth of its time on CPU (1 ms instead of 5 ms per step for 1.3 M parameters).
    """
    fused = all(p.dtype in (torch.float32, torch.float16, torch.bfloat16) and p.device.type in ("cpu", "cuda")
                for p in params)
    return torch.optim.Adam(params, lr=lr, betas=betas, fused=fused or None)


def loss_scaler(device: torch.device, precision: str) -> torch.amp.GradScaler:
    """Returns the loop's loss scaler: PyTorch's dynamic one for ``"fp16"``, a pass-through otherwise.

    float16 has 5 exponent bits: gradients below about 6e-8 flush to zero in its backward. A pixel MSE
    averaged over a 1024 px image has per-pixel gradients of about that size, so without scaling fp16
    loops silently lose most of their gradient. The scaled loss starts at 2**16 times the loss; a step
    whose gradients overflow is skipped and the scale halved (PyTorch's defaults). bfloat16 has
    float32's range and needs no scaling.
    """
    return torch.amp.GradScaler(device.type, enabled=precision == "fp16")


def scaled_step(scaler: torch.amp.GradScaler, optimizer: torch.optim.Optimizer) -> bool:
    """Unscales the gradients, takes the optimizer step unless they overflowed, updates the scale.

    Returns whether the step was taken (always True when ``scaler`` is disabled).
    """
    if not scaler.is_enabled():
        optimizer.step()
        return True
    scale = scaler.get_scale()
    scaler.step(optimizer)
    scaler.update()
    return scaler.get_scale() >= scale


def use_fused_modconv(setting: bool | None, device: torch.device, *, train_weights: bool = False,
                      batch: int = 1) -> bool:
    """Returns the modulated-conv path: ``setting``, or when None (auto) the faster one for the loop.

    The two agree to float32 rounding. Auto: fused on CUDA. On CPU, fused (the style folded into
    the weight of one ordinary convolution) when the weights are trained on one image, as in pivotal
    tuning: the weight gradient is computed anyway and the activation-sized scalings are saved;
    otherwise non-fused (one shared convolution on scaled activations), which is faster for
    inversion (no weight gradient at all) and for batches (no grouped convolution).
    The same holds with fp32 and bf16 (measured, bench/RESULTS.md).
    """
    if setting is not None:
        return bool(setting)
    return device.type == "cuda" or (train_weights and batch == 1)


def use_channels_last(setting: bool | None, device: torch.device, precision: str) -> bool:
    """Returns whether the perceptual net runs NHWC: ``setting``, or when None on CUDA or with bf16/fp16."""
    return (device.type == "cuda" or precision != "fp32") if setting is None else bool(setting)


GENERATOR_CHANNELS_LAST_FROM = 128  # on CPU, NHWC pays off from about this feature-map size


def generator_channels_last_from(setting: bool | None, G: nn.Module) -> int | None:
    """Returns the resolution from which StyleGAN2 synthesis runs NHWC, or None (all NCHW).

    ``setting`` False: never; True: from 128 px; None (auto): from 128 px on CPU, where oneDNN's
    3x3 convolutions over large NHWC maps are 15-35 % faster (bench/conv_layout.py, results in
    bench/RESULTS.md); NCHW on CUDA, not measured there. Generators without the option (StyleGAN3) always get None.
    """
    if getattr(G, "architecture_name", "") != "stylegan2" or setting is False:
        return None
    if setting is None and module_device(G).type != "cpu":
        return None
    return GENERATOR_CHANNELS_LAST_FROM


def synthesis_fn(G: nn.Module, *, compile: bool) -> Callable[..., torch.Tensor]:
    """Returns ``G.synthesis`` or, when ``compile`` and on CUDA, a ``torch.compile``d version of it."""
    synthesis = G.synthesis
    if compile and module_device(G).type == "cuda":
        return torch.compile(synthesis, dynamic=False)
    return synthesis


def synthesize(synthesis: Callable[..., torch.Tensor], ws: torch.Tensor, *, noise_mode: str,
               noise: Mapping[str, torch.Tensor] | None = None, fused_modconv: bool = True,
               channels_last_from: int | None = None) -> torch.Tensor:
    """Returns ``synthesis(ws)`` as float32, passing ``noise`` only when there is some (StyleGAN3 has
    none) and ``channels_last_from`` only when set (StyleGAN2 only)."""
    kwargs: dict[str, Any] = {"noise_mode": noise_mode}
    if noise:
        kwargs["noise"] = noise
    if channels_last_from is not None:
        kwargs["channels_last_from"] = channels_last_from
    if not fused_modconv:
        kwargs["fused_modconv"] = False
    return synthesis(ws, **kwargs).to(torch.float32)


def noise_buffers(G: nn.Module) -> dict[str, torch.Tensor]:
    """Returns ``{name: noise_const}`` of ``G.synthesis`` ({} for generators without noise inputs)."""
    getter = getattr(G.synthesis, "noise_buffers", None)
    return dict(getter()) if getter is not None else {}


def preview(images: torch.Tensor) -> torch.Tensor:
    """Returns a cheap detached preview ``[1, 3, H, W]`` in [-1, 1] of the first image."""
    return images[:1].detach().to(torch.float32).clamp(-1, 1).cpu()
