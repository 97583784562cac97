"""Latent files: the pivot and other ``ws`` as safetensors; NVIDIA ``projected_w.npz`` and ``.npy`` on load.

Files written: one tensor ``ws`` ``[B, num_ws, w_dim]`` float32 with metadata ``format``,
``space`` ("w" or "w+"), ``num_ws``, ``w_dim``. Nothing is ever unpickled.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .errors import LatentError, PTIError, UnsafeCheckpointError
from .fileio import atomic_write

LATENT_FORMAT = "pti_core.latent"
LATENT_EXTENSIONS = (".safetensors", ".npz", ".npy")
SPACES = ("w", "w+")


@dataclass(frozen=True)
class Latent:
    """A latent batch: ``ws`` ``[B, num_ws, w_dim]`` float32 CPU and its space ("w" or "w+")."""

    ws: torch.Tensor
    space: str


def infer_space(ws: torch.Tensor) -> str:
    """Returns "w" when every layer row of every latent is the same (true W space), else "w+"."""
    return "w" if bool((ws == ws[:, :1]).all()) else "w+"


def save_latent(ws: torch.Tensor, path: str | os.PathLike, *, space: str | None = None,
                overwrite: bool = False) -> Path:
    """Writes ``ws`` ``[B, num_ws, w_dim]`` to ``path`` as safetensors atomically; returns the path.

    Raises:
        LatentError: wrong shape or space. OutputExistsError: the file exists and not ``overwrite``.
    """
    from safetensors.torch import save_file  # noqa: PLC0415

    if not isinstance(ws, torch.Tensor) or ws.ndim != 3 or 0 in ws.shape:
        raise LatentError(f"a latent must be a [B, num_ws, w_dim] tensor, got "
                          f"{list(ws.shape) if isinstance(ws, torch.Tensor) else type(ws).__name__}")
    space = infer_space(ws) if space is None else space
    if space not in SPACES:
        raise LatentError(f"latent space must be 'w' or 'w+', got {space!r}")
    tensor = ws.detach().to("cpu", torch.float32).contiguous()
    metadata = {"format": LATENT_FORMAT, "space": space, "num_ws": str(ws.shape[1]), "w_dim": str(ws.shape[2])}
    return atomic_write(path, lambda tmp: save_file({"ws": tensor}, tmp, metadata=metadata), overwrite=overwrite)


def load_latent(path: str | os.PathLike) -> Latent:
    """Returns the latent stored at ``path`` (.safetensors, NVIDIA ``projected_w.npz`` key ``w``, or .npy).

    A ``[num_ws, w_dim]`` array is read as a batch of one. The space comes from the metadata, or is
    inferred (identical rows = "w").

    Raises:
        LatentError: missing, unreadable or wrongly shaped file. UnsafeCheckpointError: a pickled array.
    """
    path = Path(path)
    if not path.is_file():
        raise LatentError(f"{path}: no such latent file")
    suffix = path.suffix.lower()
    space = None
    try:
        if suffix == ".safetensors":
            from safetensors import safe_open  # noqa: PLC0415

            with safe_open(str(path), framework="pt") as handle:
                keys = list(handle.keys())
                key = "ws" if "ws" in keys else ("w" if "w" in keys else (keys[0] if len(keys) == 1 else None))
                if key is None:
                    raise LatentError(f"{path.name}: no 'ws' tensor in the file (keys: {keys})")
                ws = handle.get_tensor(key)
                space = (handle.metadata() or {}).get("space")
        elif suffix == ".npz":
            with np.load(path, allow_pickle=False) as data:
                keys = list(data.keys())
                key = "w" if "w" in keys else ("ws" if "ws" in keys else (keys[0] if len(keys) == 1 else None))
                if key is None:
                    raise LatentError(f"{path.name}: no 'w' array in the file (keys: {keys})")
                ws = torch.from_numpy(np.ascontiguousarray(data[key], dtype=np.float32))
        elif suffix == ".npy":
            ws = torch.from_numpy(np.ascontiguousarray(np.load(path, allow_pickle=False), dtype=np.float32))
        else:
            raise LatentError(f"{path.name}: unsupported latent file; use {', '.join(LATENT_EXTENSIONS)}")
    except PTIError:
        raise
    except ValueError as error:  # numpy refusing pickled object arrays, bad headers
        raise UnsafeCheckpointError(f"{path.name}: cannot read it as plain arrays ({error}); "
                                    "pickled latents are refused") from None
    except Exception as error:  # noqa: BLE001  (a corrupt file of any kind -> one line)
        raise LatentError(f"{path.name}: not a readable latent file ({type(error).__name__}: {error})") from None
    if ws.ndim == 2:
        ws = ws[None]
    if ws.ndim != 3 or 0 in ws.shape:
        raise LatentError(f"{path.name}: expected ws [B, num_ws, w_dim], got {list(ws.shape)}")
    ws = ws.to(torch.float32).contiguous()
    if not torch.isfinite(ws).all():
        raise LatentError(f"{path.name}: the latent contains NaN or infinite values")
    return Latent(ws=ws, space=space if space in SPACES else infer_space(ws))
