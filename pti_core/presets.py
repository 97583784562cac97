"""Named pairs of inversion and tuning settings: the paper's, and a faster one for a CPU or a quick look.

* ``"paper"``: :class:`InversionConfig` and :class:`TuningConfig` defaults, i.e. the paper and
  the reference code (450 inversion steps at lr 0.01, 350 tuning steps at lr 3e-4, float32).
* ``"fast"``: 100 inversion steps; tuning at lr 3e-3; bfloat16 autocast where the hardware
  runs it natively (CUDA, or a CPU whose oneDNN has bf16 kernels: AVX512-BF16 / AMX), else
  float32. Same losses, same early stop. On the benchmark generators it reaches the paper
  settings' final reconstruction MSE in about a fifth of their wall time (``bench/pti.py``,
  bench/RESULTS.md). The ten times larger tuning lr is the one measured on the shipped 64 px face
  model (pti_core/data/MODEL_CARD.md); it was not checked on 1024 px FFHQ models (none here), so
  use ``"paper"`` for final results on those.

Examples:
    >>> from pti_core.presets import preset
    >>> inversion_config, tuning_config = preset("paper")
    >>> inversion_config.steps, tuning_config.lr
    (450, 0.0003)
"""

from __future__ import annotations

import dataclasses

import torch

from .errors import ConfigError
from .inversion import InversionConfig
from .tune import Locality, TuningConfig

PRESETS = ("paper", "fast")
FAST_INVERSION_STEPS = 100
FAST_TUNING_LR = 3e-3


def native_bf16(device: torch.device | str) -> bool:
    """Returns whether bfloat16 autocast runs on native kernels on ``device`` (else it is emulated and slow)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    return False


def native_precision(device: torch.device | str, precision: str) -> bool:
    """Returns whether ``precision`` ("fp32", "bf16", "fp16") autocast runs on native kernels on ``device``.

    float32 always does; elsewhere PyTorch emulates the type: correct, but slower than float32.
    """
    device = torch.device(device)
    if precision == "fp32":
        return True
    if precision == "bf16":
        return native_bf16(device)
    if precision == "fp16":
        if device.type == "cuda":
            return True
        if device.type == "cpu":
            return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_fp16_supported())
        return False
    raise ConfigError(f"precision must be one of fp32, bf16, fp16, got {precision!r}")


def preset(name: str, device: torch.device | str = "cpu", **overrides) -> tuple[InversionConfig, TuningConfig]:
    """Returns ``(InversionConfig, TuningConfig)`` of the preset ``name`` for ``device``.

    Args:
        name: ``"paper"`` or ``"fast"`` (see the module docstring).
        device: where the loops will run (decides the fast preset's precision).
        **overrides: fields set on both configs where they exist (e.g. ``perceptual``, ``seed``,
            ``preview_every``); ``steps`` / ``lr`` are left to the caller, as they differ per stage.

    Raises:
        ConfigError: unknown preset name or override field.
    """
    if name not in PRESETS:
        raise ConfigError(f"preset must be one of {', '.join(PRESETS)}, got {name!r}")
    inversion, tuning = InversionConfig(), TuningConfig()
    if name == "fast":
        precision = "bf16" if native_bf16(device) else "fp32"
        inversion = dataclasses.replace(inversion, steps=FAST_INVERSION_STEPS, precision=precision)
        tuning = dataclasses.replace(tuning, lr=FAST_TUNING_LR, precision=precision)
    inversion_fields = {f.name for f in dataclasses.fields(InversionConfig)}
    tuning_fields = {f.name for f in dataclasses.fields(TuningConfig)}
    unknown = set(overrides) - inversion_fields - tuning_fields
    if unknown:
        raise ConfigError(f"unknown config field(s) {', '.join(sorted(unknown))}")
    inversion = dataclasses.replace(inversion, **{k: v for k, v in overrides.items() if k in inversion_fields})
    tuning = dataclasses.replace(tuning, **{k: v for k, v in overrides.items() if k in tuning_fields})
    return inversion, tuning


@dataclasses.dataclass(frozen=True)
class BuiltinModelSettings:
    """The main job's settings for the built-in 64 px face model, measured on real photos (one place).

    At 64 px the paper's tuning (lr 3e-4, LPIPS-dominated, early stop at LPIPS 0.06) leaves the
    photo's fine detail out and adds speckle that shift-tolerant ST-LPIPS does not see; with the
    pixel L2 weighted 100x the perceptual term and lr 5e-3 the reconstruction reaches PSNR >= 30 dB
    (bench/builtin_quality.py, bench/RESULTS.md). The inversion likewise adds a pixel L2 (weight 10,
    lr 0.05): with ST-LPIPS alone every pivot came out as nearly the same average face (9-11 dB).
    Tuning that hard moves the generator far from the original away from the pivot, so edits of a
    few standard deviations turned into colour noise; locality regularisation at the edits' distance
    (alpha 8 in this model's W, three yaw standard deviations of 2.7; weights as strong as the fit) keeps them faces,
    and the default strengths are one standard deviation of the model's samples (strong enough to read:
    the yaw label moves by 0.3-0.4 on real photos). Adam is invariant to the loss's overall scale, so
    only the ratio of the two weights matters. The CLI applies these whenever the generator is the
    shipped file (named or not); the no-download workflow carries the same values in its widgets.
    """

    inversion_steps: int = 100
    inversion_lr: float = 0.05
    inversion_l2_weight: float = 10.0
    tuning_steps: int = 300
    tuning_lr: float = 5e-3
    l2_weight: float = 100.0
    lpips_threshold: float = 0.0
    perceptual: str = "stlpips-alex"
    locality: tuple[float, float, float] = (8.0, 100.0, 1.0)  # alpha, weight_l2, weight_lpips
    edit_strengths: tuple[float, ...] = (-1.0, 1.0)
    mouth_sweep: tuple[float, float] = (0.0, 3.0)  # opening the mouth from the photo's own expression


BUILTIN_MODEL = BuiltinModelSettings()


def builtin_configs(**overrides) -> tuple[InversionConfig, TuningConfig]:
    """Returns ``(InversionConfig, TuningConfig)`` of the main job on the built-in model (``BUILTIN_MODEL``).

    ``overrides`` are set on both configs where they exist (as in :func:`preset`).
    """
    settings = BUILTIN_MODEL
    inversion, tuning = preset("paper", **overrides)
    inversion = dataclasses.replace(inversion, steps=settings.inversion_steps, lr=settings.inversion_lr,
                                    l2_weight=settings.inversion_l2_weight,
                                    perceptual=overrides.get("perceptual", settings.perceptual))
    alpha, weight_l2, weight_lpips = settings.locality
    tuning = dataclasses.replace(tuning, steps=settings.tuning_steps, lr=settings.tuning_lr,
                                 locality=Locality(alpha=alpha, weight_l2=weight_l2, weight_lpips=weight_lpips),
                                 l2_weight=settings.l2_weight, lpips_threshold=settings.lpips_threshold,
                                 perceptual=overrides.get("perceptual", settings.perceptual))
    return inversion, tuning


__all__ = ["BuiltinModelSettings", "BUILTIN_MODEL", "builtin_configs", "PRESETS", "preset", "native_bf16", "native_precision", "FAST_INVERSION_STEPS", "FAST_TUNING_LR"]
