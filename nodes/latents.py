"""Latent nodes: save and load ``STYLEGAN_LATENT`` values as files.

A ``STYLEGAN_LATENT`` is a dict ``{"ws": [B, num_ws, w_dim] float32 CPU tensor, "space": "w" | "w+"}``.
Files written are safetensors (tensor ``ws``, metadata ``space``); loading also reads NVIDIA's
``projected_w.npz`` (key ``w``) and plain ``.npy`` arrays, always with ``allow_pickle=False``.
"""

from __future__ import annotations

import os
from pathlib import Path

from . import _common

LATENT_EXTENSIONS = (".safetensors", ".npz", ".npy")
SPACES = ("w", "w+")


# ----------------------------------------------------------------------------- shared helpers

def make_latent(ws, space: str) -> dict:
    """Returns a ``STYLEGAN_LATENT`` dict for ``ws`` ``[B, num_ws, w_dim]`` (copied to float32 CPU)."""
    import torch  # noqa: PLC0415
    errors = _common.core().errors
    if not isinstance(ws, torch.Tensor) or ws.ndim != 3 or 0 in ws.shape:
        shape = list(ws.shape) if isinstance(ws, torch.Tensor) else type(ws).__name__
        raise errors.LatentError(f"a latent must be a [B, num_ws, w_dim] tensor, got {shape}")
    if space not in SPACES:
        raise errors.LatentError(f"latent space must be 'w' or 'w+', got {space!r}")
    ws = ws.detach().to("cpu", torch.float32).clone().contiguous()
    if not torch.isfinite(ws).all():
        raise errors.LatentError("the latent contains NaN or infinite values; re-run the inversion")
    return {"ws": ws, "space": space}


def check_latent(G, latent, *, name: str = "latent"):
    """Returns ``latent["ws"]`` ``[B, num_ws, w_dim]`` after checking it fits generator ``G``.

    Raises:
        LatentError: not a STYLEGAN_LATENT, or num_ws / w_dim differ from the generator's.
    """
    import torch  # noqa: PLC0415
    errors = _common.core().errors
    if not isinstance(latent, dict) or not isinstance(latent.get("ws"), torch.Tensor):
        raise errors.LatentError(f"{name}: expected a STYLEGAN_LATENT, got {type(latent).__name__}")
    ws = latent["ws"]
    if ws.ndim != 3 or ws.shape[0] == 0:
        raise errors.LatentError(f"{name}: expected ws [B, num_ws, w_dim], got {list(ws.shape)}")
    if (ws.shape[1], ws.shape[2]) != (G.num_ws, G.w_dim):
        raise errors.LatentError(
            f"{name} is from a different model: it has num_ws={ws.shape[1]}, w_dim={ws.shape[2]} but the "
            f"generator needs num_ws={G.num_ws}, w_dim={G.w_dim}; invert/generate with this model or load "
            "the model the latent came from")
    return ws


def _latent_folder() -> Path:
    """Returns the folder PTI_LoadLatent lists (ComfyUI's input folder, ``$PTI_INPUT_DIR`` or ./input)."""
    try:
        import folder_paths  # type: ignore  # noqa: PLC0415
        return Path(folder_paths.get_input_directory())
    except ImportError:
        return Path(os.environ.get("PTI_INPUT_DIR", "input"))


def _output_folder() -> Path:
    """Returns the folder outputs go to (ComfyUI's output folder, ``$PTI_OUTPUT_DIR`` or ./output)."""
    try:
        import folder_paths  # type: ignore  # noqa: PLC0415
        return Path(folder_paths.get_output_directory())
    except ImportError:
        return Path(os.environ.get("PTI_OUTPUT_DIR", "output"))


def list_latent_files() -> list[str]:
    """Returns latent files under the input folder (relative paths, sorted)."""
    folder = _latent_folder()
    if not folder.is_dir():
        return []
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")
                  if p.is_file() and p.suffix.lower() in LATENT_EXTENSIONS)


def next_free_path(folder: Path, prefix: str, suffix: str) -> Path:
    """Returns ``folder/<prefix>_NNNNN_<suffix>`` with the first counter not taken (never overwrites).

    ``prefix`` may contain sub-folders; it must stay inside ``folder``.
    """
    errors = _common.core().errors
    prefix = prefix.strip().replace("\\", "/") or "PTI"
    target = (folder / prefix).resolve()
    if os.path.commonpath([str(target), str(folder.resolve())]) != str(folder.resolve()):
        raise errors.ConfigError(f"filename_prefix {prefix!r} points outside {folder}; use a relative name")
    target.parent.mkdir(parents=True, exist_ok=True)
    for counter in range(1, 100000):
        path = target.parent / f"{target.name}_{counter:05d}_{suffix}"
        if not path.exists():
            return path
    raise errors.OutputExistsError(f"too many files named {prefix}_*; choose another filename_prefix")


def write_latent(latent: dict, path: Path) -> Path:
    """Writes a STYLEGAN_LATENT as safetensors atomically (never overwriting); returns ``path``."""
    return _common.core().latents.save_latent(latent["ws"], path, space=latent["space"])


def read_latent(path: Path) -> dict:
    """Returns the STYLEGAN_LATENT stored in ``path`` (.safetensors, NVIDIA .npz, or .npy); never unpickles."""
    latent = _common.core().latents.load_latent(path)
    return make_latent(latent.ws, latent.space)


# ----------------------------------------------------------------------------- nodes

class PTI_SaveLatent:
    """Writes a STYLEGAN_LATENT to ComfyUI's output folder as safetensors."""

    DESCRIPTION = ("Saves a StyleGAN latent (e.g. the PTI pivot) as a .safetensors file in ComfyUI's output "
                   "folder, never overwriting: <prefix>_00001_.safetensors, ... Copy it to the input folder "
                   "to load it again with Load Latent.")
    CATEGORY = _common.CATEGORY
    SEARCH_ALIASES = ["save latent", "save pivot", "w latent", "stylegan latent", "pti"]
    RETURN_TYPES = ()
    OUTPUT_TOOLTIPS = ()
    OUTPUT_NODE = True
    FUNCTION = "execute"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "latent": ("STYLEGAN_LATENT", {"tooltip": "The latent to save (ws [B, num_ws, w_dim] and its space)."}),
            "filename_prefix": ("STRING", {"default": "PTI/latent",
                                           "tooltip": "File name prefix, relative to the output folder; "
                                                      "sub-folders allowed."}),
        }}

    def execute(self, latent, filename_prefix):
        try:
            if not isinstance(latent, dict):
                raise _common.core().errors.LatentError(
                    f"expected a STYLEGAN_LATENT, got {type(latent).__name__}")
            latent = make_latent(latent.get("ws"), latent.get("space", "w+"))
            folder = _output_folder()
            path = write_latent(latent, next_free_path(folder, filename_prefix, ".safetensors"))
        except _common.core().errors.PTIError as error:
            raise _common.user_error(error) from None
        return {"ui": {"text": [path.relative_to(folder.resolve()).as_posix()]}}


class PTI_LoadLatent:
    """Reads a STYLEGAN_LATENT from the input folder."""

    DESCRIPTION = ("Loads a StyleGAN latent from ComfyUI's input folder: this pack's .safetensors latents, "
                   "NVIDIA projector output (projected_w.npz) or a plain .npy array [B, num_ws, w_dim]. "
                   "Files are read as plain arrays; pickles are refused.")
    CATEGORY = _common.CATEGORY
    SEARCH_ALIASES = ["load latent", "load pivot", "w latent", "stylegan latent", "pti"]
    RETURN_TYPES = ("STYLEGAN_LATENT",)
    RETURN_NAMES = ("latent",)
    OUTPUT_TOOLTIPS = ("The latent: ws [B, num_ws, w_dim] float32 and its space (w if all layers are equal).",)
    FUNCTION = "execute"

    @classmethod
    def INPUT_TYPES(cls):
        files = list_latent_files()
        return {"required": {
            "latent_file": (files or [""], {"tooltip": "Latent file in ComfyUI's input folder "
                                                       "(.safetensors, projected_w.npz, .npy)."}),
        }}

    @classmethod
    def IS_CHANGED(cls, latent_file):
        path = _latent_folder() / latent_file
        try:
            stat = path.stat()
        except OSError:
            return f"missing:{latent_file}"
        return f"{stat.st_mtime_ns}:{stat.st_size}"

    @classmethod
    def VALIDATE_INPUTS(cls, latent_file):
        if not latent_file or not (_latent_folder() / latent_file).is_file():
            return f"latent file {latent_file!r} not found in the input folder ({_latent_folder()})"
        return True

    def execute(self, latent_file):
        errors = _common.core().errors
        try:
            folder = _latent_folder().resolve()
            path = (folder / latent_file).resolve()
            if os.path.commonpath([str(path), str(folder)]) != str(folder) or not path.is_file():
                raise errors.MissingFileError(f"latent file {latent_file!r} not found in {folder}; "
                                              "put it in ComfyUI's input folder")
            return (read_latent(path),)
        except errors.PTIError as error:
            raise _common.user_error(error) from None


NODE_CLASS_MAPPINGS = {
    "PTI_SaveLatent": PTI_SaveLatent,
    "PTI_LoadLatent": PTI_LoadLatent,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "PTI_SaveLatent": "Save Latent (PTI)",
    "PTI_LoadLatent": "Load Latent (PTI)",
}
