"""Shared fixtures; the helper functions live in helpers.py (``from helpers import golden_dir``)."""

from __future__ import annotations

import pytest
import torch

from helpers import load_pack, tiny_generator


@pytest.fixture(scope="session")
def pack():
    """The repository imported as a ComfyUI custom-node package (``comfyui_pti``)."""
    return load_pack()


@pytest.fixture()
def tiny_setup(tmp_path, monkeypatch):
    """A models folder with a tiny generator and tiny age/smile directions, and an input photo."""
    from pti_core import save_generator

    models = tmp_path / "models"
    (models / "stylegan").mkdir(parents=True)
    (models / "stylegan_directions").mkdir()
    save_generator(tiny_generator(3), models / "stylegan" / "tiny.safetensors")
    generator = torch.Generator().manual_seed(0)
    for name in ("age", "smile"):  # InterFaceGAN-style .pt files ([1, w_dim] tensors), width 16
        direction = torch.randn(1, 16, generator=generator)
        torch.save(direction / direction.norm(), models / "stylegan_directions" / f"{name}.pt")
    monkeypatch.setenv("PTI_MODELS_DIR", str(models))
    inputs = tmp_path / "input"
    inputs.mkdir()
    return tmp_path, inputs
