"""Shared fixtures; the helper functions live in helpers.py (``from helpers import golden_dir``)."""

from __future__ import annotations

import pytest

from helpers import load_pack


@pytest.fixture(scope="session")
def pack():
    """The repository imported as a ComfyUI custom-node package (``comfyui_pti``)."""
    return load_pack()
