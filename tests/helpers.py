"""Test helpers importable from every test module (``from helpers import ...``)."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

# The test models are tiny: one thread is as fast, and never stalls on a busy machine (OpenMP spin-waits).
torch.set_num_threads(1)


def require(path: Path) -> Path:
    """Returns ``path``; when missing, fails in CI (data is required there) and skips elsewhere."""
    if not path.exists():
        message = f"required test data missing: {path}"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return path


def golden_dir(name: str) -> Path:
    """Returns ../shared/golden/<name> (required in CI)."""
    return require(SHARED / "golden" / name)


def realworld(*parts: str) -> Path:
    """Returns ../shared/realworld/<parts> (required in CI)."""
    return require(SHARED.joinpath("realworld", *parts))


def load_pack():
    """Returns the repository imported as a ComfyUI custom-node package named ``comfyui_pti``."""
    name = "comfyui_pti"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, REPO / "__init__.py",
                                                  submodule_search_locations=[str(REPO)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def tiny_generator(seed: int = 0, *, resolution: int = 16, w_dim: int = 16, architecture: str = "skip"):
    """Returns a small random StyleGAN2 (deterministic for ``seed``) with a meaningful ``w_avg``."""
    from pti_core.generators.stylegan2 import Generator

    torch.manual_seed(seed)
    G = Generator(z_dim=w_dim, c_dim=0, w_dim=w_dim, img_resolution=resolution, img_channels=3,
                  mapping_kwargs={"num_layers": 2},
                  synthesis_kwargs={"channel_base": 32 * resolution, "channel_max": 32,
                                    "architecture": architecture})
    with torch.no_grad():
        G.mapping.w_avg.copy_(G.mapping(torch.randn(256, w_dim))[:, 0].mean(0))
    return G.eval()


def state_copy(module) -> dict:
    """Returns a detached copy of ``module.state_dict()`` (to check a module was not modified)."""
    return {name: tensor.detach().clone() for name, tensor in module.state_dict().items()}


def assert_pti_beats_inversion(inversion_image, reconstruction, target, *, metric: str = "stlpips-alex"):
    """Issue 3's acceptance: PTI's MSE <= 1/3 and LPIPS <= 1/2 of inversion-only (same metric)."""
    from pti_core.metrics import lpips_distance, mse

    inv_mse, pti_mse = mse(inversion_image, target).item(), mse(reconstruction, target).item()
    inv_lpips = lpips_distance(inversion_image, target, net=metric).item()
    pti_lpips = lpips_distance(reconstruction, target, net=metric).item()
    assert pti_mse <= inv_mse / 3, (pti_mse, inv_mse)
    assert pti_lpips <= inv_lpips / 2, (pti_lpips, inv_lpips)
