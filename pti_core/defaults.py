"""The embedded default generator and photo for ``python -m pti_core edit`` with no inputs.

* Generator: the pack's shipped face model (``pti_core.distill.DEFAULT_MODEL_PATH``,
  ``pti_core/data/stylegan/dcgan_faces_sg2_64.safetensors``, a small StyleGAN2 distilled from a real
  DCGAN face generator) when present; otherwise a deterministic seeded random StyleGAN2 (64 px, built in code). A random
  generator only demonstrates the pipeline: real edits need a real face model, such as
  NVIDIA's FFHQ pickle (https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/ffhq.pkl).
* Photo: scikit-image's astronaut (Eileen Collins, NASA, public domain).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from .errors import DependencyError

DATA_DIR = Path(__file__).resolve().parent / "data"
DEFAULT_GENERATOR_FILE = DATA_DIR / "stylegan" / "dcgan_faces_sg2_64.safetensors"  # == distill.DEFAULT_MODEL_PATH
FFHQ_URL = "https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/ffhq.pkl"

# The built-in stand-in: 64 px, w 64, channels 64..32 (small enough for a CPU demo).
BUILTIN_INIT_KWARGS = {
    "z_dim": 64, "c_dim": 0, "w_dim": 64, "img_resolution": 64, "img_channels": 3,
    "mapping_kwargs": {"num_layers": 4},
    "synthesis_kwargs": {"channel_base": 2048, "channel_max": 64, "architecture": "skip"},
}
BUILTIN_SEED = 2106_05744  # PTI's arXiv number


def builtin_generator(seed: int = BUILTIN_SEED) -> nn.Module:
    """Returns the built-in seeded random StyleGAN2 (64 px), identical on every machine for ``seed``."""
    from .generators.stylegan2 import Generator  # noqa: PLC0415

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        G = Generator(**BUILTIN_INIT_KWARGS)
        with torch.no_grad():
            for name, param in G.named_parameters():  # non-trivial biases / noise strengths
                if name.endswith(("bias", "noise_strength")) and not name.startswith("mapping."):
                    param.add_(0.1 * torch.randn(param.shape))
            G.mapping.w_avg.copy_(G.mapping(torch.randn(1000, G.z_dim))[:, 0].mean(0))
    return G.eval()


def default_generator() -> tuple[nn.Module, str]:
    """Returns ``(generator, description)``: the shipped model if present, else the built-in random one."""
    if DEFAULT_GENERATOR_FILE.is_file():
        from .generators.checkpoints import load_generator  # noqa: PLC0415

        return load_generator(DEFAULT_GENERATOR_FILE), f"shipped default generator ({DEFAULT_GENERATOR_FILE.name})"
    return builtin_generator(), "built-in seeded random StyleGAN2, 64 px (demonstrates the pipeline only)"


def default_photo() -> torch.Tensor:
    """Returns scikit-image's astronaut photo as ``[1, 3, 512, 512]`` in [-1, 1]."""
    try:
        from skimage import data  # noqa: PLC0415
    except ImportError:
        raise DependencyError("the default photo comes from scikit-image; pip install scikit-image, "
                              "or pass --image FILE") from None
    from .imageio import uint8_to_nchw  # noqa: PLC0415

    return uint8_to_nchw(data.astronaut().copy())


__all__ = ["DEFAULT_GENERATOR_FILE", "FFHQ_URL", "builtin_generator", "default_generator", "default_photo"]
