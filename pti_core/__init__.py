"""pti_core: Pivotal Tuning Inversion (PTI) for StyleGAN2/3 as a plain PyTorch library.

Never imports ComfyUI. Heavy submodules load on first use, so ``import pti_core`` is cheap.

Public API (see each function's docstring):

* ``load_generator``, ``save_generator``, ``inspect_checkpoint``: model files, safely.
* ``invert``: image -> pivot latent (W or W+).
* ``pivotal_tune``: fine-tune the generator around the pivot.
* ``load_direction``, ``apply_directions``, ``sefa``, ``ganspace``: latent editing.
* ``align_face``, ``paste_back``: FFHQ alignment and paste-back into the photo.
* ``styleclip``, ``load_clip``: text-driven StyleSpace directions (StyleCLIP) and latent mappers.
* ``metrics``: MSE, PSNR, LPIPS, identity distance.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> submodule (relative) that defines it
_EXPORTS = {
    "errors": ".errors",
    "imageio": ".imageio",
    "metrics": ".metrics",
    "latents": ".latents",
    "distill": ".distill",
    "fileio": ".fileio",
    "save_latent": ".latents",
    "load_latent": ".latents",
    "build_generator": ".generators",
    "load_generator": ".generators.checkpoints",
    "save_generator": ".generators.checkpoints",
    "inspect_checkpoint": ".generators.checkpoints",
    "read_checkpoint": ".generators.checkpoints",
    "CheckpointInfo": ".generators.checkpoints",
    "invert": ".inversion",
    "InversionConfig": ".inversion",
    "Inversion": ".inversion",
    "pivotal_tune": ".tune",
    "TuningConfig": ".tune",
    "Locality": ".tune",
    "TunedGenerator": ".tune",
    "preset": ".presets",
    "presets": ".presets",
    "load_direction": ".directions",
    "apply_directions": ".directions",
    "sefa": ".directions",
    "ganspace": ".directions",
    "directions": ".directions",
    "styleclip": ".styleclip",
    "clip_models": ".clip_models",
    "load_clip": ".clip_models",
    "Direction": ".directions",
    "Edit": ".directions",
    "save_direction": ".directions",
    "sweep": ".directions",
    "direction_from_latents": ".directions",
    "direction_from_labels": ".directions",
    "align": ".align",
    "generator_template": ".align",
    "align_face": ".align",
    "paste_back": ".align",
    "AlignedFace": ".align",
    "FaceTransform": ".align",
    "FaceTemplate": ".align",
    "FFHQ_TEMPLATE": ".align",
    "face": ".face",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module = importlib.import_module(_EXPORTS[name], __name__)
    value = module if module.__name__.rsplit(".", 1)[-1] == name else getattr(module, name)
    globals()[name] = value
    return value
