"""Helpers every node module shares: ComfyUI integration that falls back to plain torch.

Without ComfyUI installed (tests, plain Python) the nodes still import and run: the device is
CUDA if available else CPU, progress is a no-op and model folders resolve to ``$PTI_MODELS_DIR``
(default ``./models``).
"""

from __future__ import annotations

import gc
import os
from pathlib import Path
from typing import Any, Callable

CATEGORY = "PTI"

# ComfyUI model folder kinds this pack owns, with explicit extensions (a kind with none matches every file).
MODEL_FOLDERS = {
    "stylegan": {".pkl", ".pt", ".pth", ".safetensors"},
    "stylegan_directions": {".pt", ".pth", ".npy", ".npz", ".safetensors"},
}


def pack_dir() -> Path:
    """Returns the pack's root folder."""
    return Path(__file__).resolve().parent.parent


def core():
    """Returns this pack's ``pti_core`` package (imported relative to the pack, on first use)."""
    from .. import pti_core  # noqa: PLC0415  (heavy parts load lazily inside pti_core)
    return pti_core


def _folder_paths():
    try:
        import folder_paths  # type: ignore  # noqa: PLC0415
    except ImportError:
        return None
    return folder_paths


def comfy_available() -> bool:
    """Returns True when running inside ComfyUI."""
    return _folder_paths() is not None


def shipped_dir(kind: str) -> Path:
    """Returns the pack's own folder of ``kind`` (the built-in distilled face model and its directions)."""
    return pack_dir() / "pti_core" / "data" / kind


def register_model_folders() -> None:
    """Adds ``models/stylegan`` and ``models/stylegan_directions`` to ComfyUI's folder registry.

    Also adds the pack's shipped folders (``pti_core/data/<kind>``: the built-in face model and its
    directions), keeps any paths a user's ``extra_model_paths.yaml`` already added and merges our
    extensions. No-op outside ComfyUI.
    """
    folder_paths = _folder_paths()
    if folder_paths is None:
        return
    for kind, extensions in MODEL_FOLDERS.items():
        ours = [os.path.join(folder_paths.models_dir, kind), str(shipped_dir(kind))]
        if kind in folder_paths.folder_names_and_paths:
            paths, exts = folder_paths.folder_names_and_paths[kind]
            paths = list(paths) + [p for p in ours if p not in paths]
            folder_paths.folder_names_and_paths[kind] = (paths, set(exts) | extensions)
        else:
            folder_paths.folder_names_and_paths[kind] = (ours, set(extensions))


def _fallback_dirs(kind: str) -> list[Path]:
    return [Path(os.environ.get("PTI_MODELS_DIR", "models")) / kind, shipped_dir(kind)]


def list_models(kind: str) -> list[str]:
    """Returns the file names available for a model folder kind (sorted; the pack's shipped files included)."""
    folder_paths = _folder_paths()
    if folder_paths is not None:
        return sorted(folder_paths.get_filename_list(kind))
    names = set()
    for folder in _fallback_dirs(kind):
        if folder.is_dir():
            names.update(p.relative_to(folder).as_posix() for p in folder.rglob("*")
                         if p.is_file() and p.suffix.lower() in MODEL_FOLDERS[kind])
    return sorted(names)


def model_path(kind: str, name: str) -> Path:
    """Returns the full path of model ``name`` in folder ``kind``, or raises a clear MissingFileError."""
    errors = core().errors
    folder_paths = _folder_paths()
    if folder_paths is not None:
        found = folder_paths.get_full_path(kind, name)
        folders = folder_paths.get_folder_paths(kind)
    else:
        candidates = [folder / name for folder in _fallback_dirs(kind)]
        found = next((str(c) for c in candidates if c.is_file()), None)
        folders = [str(folder) for folder in _fallback_dirs(kind)]
    if not found:
        raise errors.MissingFileError(
            f"model file {name!r} not found in models/{kind} (searched: {', '.join(map(str, folders))}); "
            f"put the file there and refresh the node")
    return Path(found)


def validation_message(find, name: str):
    """Returns True when ``find(name)`` finds the file, else the one-line message of its MissingFileError.

    For ``VALIDATE_INPUTS``: ComfyUI then skips its own "Value not in list" check for that input and shows
    this message (which folder, where to download) before the run starts, also for a saved workflow that
    names a file this ComfyUI does not have.
    """
    errors = core().errors
    try:
        find(name)
    except errors.MissingFileError as error:
        return str(error)
    return True


def torch_device():
    """Returns the device ComfyUI computes on (or CUDA/CPU without ComfyUI)."""
    import torch  # noqa: PLC0415
    try:
        import comfy.model_management as mm  # type: ignore  # noqa: PLC0415
        return mm.get_torch_device()
    except ImportError:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def intermediate_device():
    """Returns the device IMAGE outputs live on (ComfyUI's intermediate device, CPU otherwise)."""
    import torch  # noqa: PLC0415
    try:
        import comfy.model_management as mm  # type: ignore  # noqa: PLC0415
        return mm.intermediate_device()
    except ImportError:
        return torch.device("cpu")


def should_stop() -> bool:
    """Raises ComfyUI's interrupt exception when the user pressed Cancel; returns False otherwise."""
    try:
        import comfy.model_management as mm  # type: ignore  # noqa: PLC0415
    except ImportError:
        return False
    mm.throw_exception_if_processing_interrupted()
    return False


def make_progress(total: int, *, preview_size: int = 512) -> Callable[[int, int, str, Any], None]:
    """Returns a ``progress(step, total, phase, preview)`` callback driving ComfyUI's progress bar.

    ``preview`` (``[1, 3, H, W]`` in [-1, 1] or None) is shown as a JPEG on the node.
    """
    try:
        import comfy.utils  # type: ignore  # noqa: PLC0415
    except ImportError:
        return lambda step, total_, phase, preview=None: None
    bar = comfy.utils.ProgressBar(total)

    def progress(step: int, total_: int, phase: str, preview=None) -> None:
        shown = None
        if preview is not None:
            shown = ("JPEG", core().imageio.nchw_to_pil(preview[:1]), preview_size)
        bar.update_absolute(step, total_, shown)

    return progress


def free_memory() -> None:
    """Hands memory back after an optimisation run (ComfyUI frees only what it manages)."""
    import torch  # noqa: PLC0415
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    try:
        import comfy.model_management as mm  # type: ignore  # noqa: PLC0415
        mm.soft_empty_cache()
    except ImportError:
        pass


def user_error(error: Exception) -> Exception:
    """Returns an exception whose message is the one-line library message (for ComfyUI's error panel)."""
    return ValueError(str(error))
