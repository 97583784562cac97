"""StyleCLIP nodes: load a CLIP model, turn a sentence into a StyleSpace editing direction (global
directions), or edit a latent with a published per-prompt latent mapper.

``PTI_CLIP`` is a ``pti_core.clip_models.ClipModel`` (open_clip CLIP, both towers). It is not
ComfyUI's ``CLIP`` type: that one wraps a diffusion model's text encoder, which has no image
tower and cannot measure how an image changes. Put an OpenAI / open_clip checkpoint in
``models/clip_vision`` (or ``models/clip``): e.g. ``open_clip_model.safetensors`` with its
``open_clip_config.json`` from hf.co/timm/vit_base_patch32_clip_224.openai, or OpenAI's
``ViT-B-32.pt``.

StyleCLIP statistics files live in ``models/stylegan_directions``: the pack's own
(``styleclip_*.safetensors`` from ``python -m pti_core styleclip-stats``, or computed by the node
into ``styleclip_cache/``) or StyleCLIP's published ``fs3.npy`` (``S_mean_std`` beside it is
optional). Mapper checkpoints go in ``models/stylegan_directions/styleclip_mappers/``.
The direction output is a ``pti_core.directions.Direction`` with ``space == "s"``; Apply Direction
renders it through ``pti_core.styleclip.apply_style_edits``.
"""

from __future__ import annotations

import json
import os
from collections import OrderedDict
from pathlib import Path

from . import _common

CLIP_FOLDERS = ("clip_vision", "clip")
CLIP_EXTENSIONS = (".safetensors", ".pt", ".pth", ".bin")
COMPUTE_NOW = "compute now (slow; small models only)"
# Must match pti_core.clip_models.COMMON_ARCHITECTURES (kept here so INPUT_TYPES imports nothing heavy).
ARCHITECTURES = ("auto", "ViT-B-32-quickgelu", "ViT-B-32", "ViT-B-16-quickgelu", "ViT-B-16",
                 "ViT-L-14-quickgelu", "ViT-L-14", "ViT-L-14-336-quickgelu", "RN50-quickgelu", "RN101-quickgelu")
MAPPER_SOURCE = ("StyleCLIP's published mappers are linked from its utils.py (https://github.com/orpatashnik/StyleCLIP); "
                 "put them in models/stylegan_directions/styleclip_mappers/")
_STATS_CACHE: OrderedDict = OrderedDict()
_STATS_CACHE_SIZE = 4


def _folder_paths():
    try:
        import folder_paths  # type: ignore  # noqa: PLC0415
    except ImportError:
        return None
    return folder_paths


def _fallback_folder(kind: str) -> Path:
    return Path(os.environ.get("PTI_MODELS_DIR", "models")) / kind


NO_CLIP = "no CLIP file installed: put one in models/clip_vision"


def list_clip_files() -> list[str]:
    """Returns CLIP weight files in models/clip_vision and models/clip (sorted, unique)."""
    names: set[str] = set()
    folder_paths = _folder_paths()
    for kind in CLIP_FOLDERS:
        if folder_paths is not None:
            try:
                found = folder_paths.get_filename_list(kind)
            except (KeyError, AttributeError):
                found = []
        else:
            folder = _fallback_folder(kind)
            found = [p.relative_to(folder).as_posix() for p in folder.rglob("*")] if folder.is_dir() else []
        names.update(n for n in found if n.lower().endswith(CLIP_EXTENSIONS))
    return sorted(names)


def clip_path(name: str) -> Path:
    """Returns the full path of CLIP file ``name`` (clip_vision first, then clip) or raises MissingFileError."""
    pti_core = _common.core()
    folder_paths = _folder_paths()
    searched = []
    for kind in CLIP_FOLDERS:
        if folder_paths is not None:
            try:
                found = folder_paths.get_full_path(kind, name)
                searched.extend(folder_paths.get_folder_paths(kind))
            except (KeyError, AttributeError):
                found = None
        else:
            candidate = _fallback_folder(kind) / name
            found = str(candidate) if candidate.is_file() else None
            searched.append(str(_fallback_folder(kind)))
        if found:
            return Path(found)
    what = "no CLIP file is installed" if name == NO_CLIP else f"CLIP file {name!r} not found"
    raise pti_core.errors.MissingFileError(
        f"{what} (searched {', '.join(searched)}); {pti_core.clip_models.DOWNLOAD_HINT}")


def _manifest_statistics_files() -> list[str]:
    """Returns the well-known statistics files of directions/manifest.json (read without importing torch)."""
    try:
        data = json.loads((_common.pack_dir() / "directions" / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    return [e["file"] for e in data.get("styleclip_statistics", []) if e.get("file")]


def list_statistics_files() -> list[str]:
    """Returns StyleCLIP statistics files in models/stylegan_directions (names with 'styleclip', or fs3.npy),
    plus the well-known published ones (picking a missing one says where to download it)."""
    files = _common.list_models("stylegan_directions")
    found = {n for n in files if (n.lower().endswith(".safetensors") and "styleclip" in n.lower())
             or Path(n).name.lower() == "fs3.npy"}
    return sorted(found | set(_manifest_statistics_files()))


def statistics_path(name: str) -> Path:
    """Returns the full path of statistics file ``name`` or raises MissingFileError saying where to get it."""
    pti_core = _common.core()
    try:
        return _common.model_path("stylegan_directions", name)
    except pti_core.errors.MissingFileError:
        raise pti_core.errors.MissingFileError(
            f"StyleCLIP statistics {name!r} not in models/stylegan_directions; "
            f"{pti_core.styleclip.statistics_hint(name)}") from None


class PTI_LoadCLIP:
    """Loads an OpenAI / open_clip CLIP model for StyleCLIP."""

    DESCRIPTION = ("Loads a CLIP model (both image and text towers) for text-driven StyleCLIP editing, from "
                   "models/clip_vision or models/clip: open_clip .safetensors/.bin (with open_clip_config.json "
                   "beside it, or pick the architecture), or OpenAI's original ViT-B-32.pt (read safely, its "
                   "TorchScript code is never run). ViT-B/32 from OpenAI is what StyleCLIP's published FFHQ "
                   "statistics were measured with.")
    CATEGORY = _common.CATEGORY
    SEARCH_ALIASES = ["clip", "load clip", "styleclip", "text edit", "pti"]
    RETURN_TYPES = ("PTI_CLIP",)
    RETURN_NAMES = ("clip",)
    OUTPUT_TOOLTIPS = ("The CLIP model (float32, on ComfyUI's compute device).",)
    FUNCTION = "execute"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "clip_name": (list_clip_files() or [NO_CLIP], {
                "tooltip": "CLIP weights in models/clip_vision or models/clip (.safetensors, .bin, .pt)."}),
            "architecture": (list(ARCHITECTURES), {
                "default": "auto",
                "tooltip": "open_clip architecture. auto: open_clip_config.json beside the file, or the shapes "
                           "of OpenAI's TorchScript .pt. OpenAI weights use the -quickgelu variants."}),
        }}

    @classmethod
    def VALIDATE_INPUTS(cls, clip_name):
        return _common.validation_message(clip_path, clip_name)

    @classmethod
    def IS_CHANGED(cls, clip_name, architecture="auto"):
        try:
            stat = clip_path(clip_name).stat()
        except Exception:  # noqa: BLE001  (missing file: execute reports it)
            return f"missing:{clip_name}:{architecture}"
        return f"{stat.st_mtime_ns}:{stat.st_size}:{architecture}"

    def execute(self, clip_name, architecture="auto"):
        pti_core = _common.core()
        try:
            clip = pti_core.clip_models.load_clip(clip_path(clip_name), architecture=architecture,
                                                  device=_common.torch_device())
        except pti_core.errors.PTIError as error:
            raise _common.user_error(error) from None
        return (clip,)


def _cache_folder() -> Path:
    """Returns models/stylegan_directions/styleclip_cache (the first stylegan_directions folder)."""
    folder_paths = _folder_paths()
    if folder_paths is not None:
        base = Path(folder_paths.get_folder_paths("stylegan_directions")[0])
    else:
        base = _fallback_folder("stylegan_directions")
    return base / "styleclip_cache"


def _statistics(generator, clip, statistics: str, samples: int):
    """Returns StyleStatistics from a file, or computed now.

    Computed statistics are cached in memory and on disk as
    ``models/stylegan_directions/styleclip_cache/styleclip_<generator>_<clip>_n<samples>.safetensors``
    (saved every 64 channels, so a cancelled run resumes where it stopped; the file then appears in
    the statistics list).
    """
    pti_core = _common.core()
    styleclip = pti_core.styleclip
    if statistics != COMPUTE_NOW:
        return styleclip.load_statistics(statistics_path(statistics), generator)
    key = (styleclip.generator_fingerprint(generator), clip.fingerprint, int(samples))
    if key in _STATS_CACHE:
        _STATS_CACHE.move_to_end(key)
        return _STATS_CACHE[key]
    path = _cache_folder() / f"styleclip_{key[0][:12]}_{key[1][:12]}_n{int(samples)}.safetensors"
    resume = styleclip.load_statistics(path, generator) if path.is_file() else None
    if resume is not None and resume.complete:
        stats = resume
    else:
        perturbed = styleclip.perturbed_layers(generator)
        channels = sum(c for name, c in styleclip.style_layout(generator) if name in perturbed)
        config = styleclip.RelevanceConfig(samples=int(samples), std_samples=max(1000, int(samples)))
        stats = styleclip.compute_relevance(generator, clip, config=config, resume=resume,
                                            checkpoint=lambda partial: styleclip.save_statistics(partial, path),
                                            progress=_common.make_progress(channels), should_stop=_common.should_stop)
        styleclip.save_statistics(stats, path)
    _STATS_CACHE[key] = stats
    while len(_STATS_CACHE) > _STATS_CACHE_SIZE:
        _STATS_CACHE.popitem(last=False)
    return stats


class PTI_StyleCLIPDirection:
    """Turns "neutral -> target" text into a StyleSpace direction (StyleCLIP global directions)."""

    DESCRIPTION = ("Makes an editing direction from a sentence (StyleCLIP global directions): CLIP compares the "
                   "target text ('a smiling face') with the neutral text ('a face'); style channels whose measured "
                   "effect on CLIP points that way (|relevance| >= beta) move, all others stay exactly as they are. "
                   "Needs relevance statistics for the generator and CLIP: a styleclip_*.safetensors file from "
                   "'python -m pti_core styleclip-stats' or StyleCLIP's fs3.npy (+ S_mean_std) in "
                   "models/stylegan_directions; 'compute now' measures them here (fine for small models, hours for "
                   "1024 px; saved to models/stylegan_directions/styleclip_cache and resumed if cancelled). Connect "
                   "to Apply Direction; strength 1 there applies alpha.")
    CATEGORY = _common.CATEGORY
    SEARCH_ALIASES = ["styleclip", "text direction", "text edit", "prompt edit", "face edit", "global direction",
                      "stylegan"]
    RETURN_TYPES = ("STYLEGAN_DIRECTION",)
    RETURN_NAMES = ("direction",)
    OUTPUT_TOOLTIPS = ("A StyleSpace direction (space 's', alpha already applied): offsets of the style channels.",)
    FUNCTION = "execute"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "generator": ("STYLEGAN", {"tooltip": "The generator the direction is for (the tuned one works: "
                                                  "statistics of its original model fit it)."}),
            "clip": ("PTI_CLIP", {"tooltip": "The CLIP model (from Load CLIP (PTI)); the one the statistics were "
                                             "measured with."}),
            "statistics": ([COMPUTE_NOW] + list_statistics_files(), {
                "tooltip": "Relevance statistics file in models/stylegan_directions (styleclip_*.safetensors or "
                           "StyleCLIP's fs3.npy), or compute now with `samples` samples."}),
            "target_text": ("STRING", {"default": "a smiling face", "multiline": False,
                                       "tooltip": "What the edited face should look like."}),
            "neutral_text": ("STRING", {"default": "a face", "multiline": False,
                                        "tooltip": "The same description without the change (StyleCLIP edits along "
                                                   "target minus neutral)."}),
            "beta": ("FLOAT", {"default": 0.15, "min": 0.0, "max": 1.0, "step": 0.01,
                               "tooltip": "Disentanglement threshold: channels with |relevance| below beta are not "
                                          "changed. Higher = fewer channels, more targeted (typical 0.08..0.25)."}),
            "alpha": ("FLOAT", {"default": 4.0, "min": -20.0, "max": 20.0, "step": 0.1,
                                "tooltip": "Edit strength baked into the direction (StyleCLIP's alpha; negative "
                                           "edits towards the neutral text). Apply Direction strength 1 = alpha."}),
            "samples": ("INT", {"default": 8, "min": 1, "max": 1000,
                                "tooltip": "Only for 'compute now': samples averaged per channel (paper: 100)."}),
        }}

    @classmethod
    def IS_CHANGED(cls, statistics=COMPUTE_NOW, **_):
        """Re-runs when the statistics file changes on disk (linked inputs are cached by ComfyUI itself)."""
        if statistics == COMPUTE_NOW:
            return statistics
        try:
            stat = statistics_path(statistics).stat()
        except Exception:  # noqa: BLE001  (missing file: execute reports it)
            return f"missing:{statistics}"
        return f"{stat.st_mtime_ns}:{stat.st_size}"

    def execute(self, generator, clip, statistics, target_text, neutral_text, beta=0.15, alpha=4.0, samples=8):
        from dataclasses import replace  # noqa: PLC0415
        pti_core = _common.core()
        styleclip = pti_core.styleclip
        try:
            stats = _statistics(generator, clip, statistics, samples)
            direction = styleclip.styleclip_direction(stats, clip, target_text, neutral_text, beta=float(beta),
                                                      default_strength=float(alpha))
            scaled = {name: value * float(alpha) for name, value in direction.styles.items()}
            direction = replace(direction, styles=scaled,
                                info={**direction.info, "alpha_applied": float(alpha)},
                                model_hash=pti_core.directions.model_fingerprint(generator))
        except pti_core.errors.PTIError as error:
            raise _common.user_error(error) from None
        return (direction,)


def list_mapper_files() -> list[str]:
    """Returns StyleCLIP mapper checkpoints: .pt files under a folder or name containing 'mapper' in
    models/stylegan_directions, plus the well-known published ones of the manifest."""
    files = {n for n in _common.list_models("stylegan_directions")
             if n.lower().endswith((".pt", ".pth")) and "mapper" in n.lower()}
    try:
        data = json.loads((_common.pack_dir() / "directions" / "manifest.json").read_text(encoding="utf-8"))
        files |= {e["file"] for e in data.get("styleclip_mappers", []) if e.get("file")}
    except (OSError, ValueError):
        pass
    return sorted(files)


class PTI_StyleCLIPMapper:
    """Edits a latent with a StyleCLIP latent mapper (one trained network per prompt)."""

    DESCRIPTION = ("Edits a latent with a StyleCLIP latent mapper: ws' = ws + 0.1 * strength * mapper(ws). Mappers "
                   "are trained per prompt (StyleCLIP publishes afro, angry, bobcut, bowlcut, curly hair, mohawk, "
                   "purple hair, surprised, ... for the FFHQ 1024 generator); put the .pt files in "
                   "models/stylegan_directions/styleclip_mappers/. Render the result with the (tuned) generator.")
    CATEGORY = _common.CATEGORY
    SEARCH_ALIASES = ["styleclip mapper", "text edit", "prompt edit", "face edit", "stylegan"]
    RETURN_TYPES = ("STYLEGAN_LATENT",)
    RETURN_NAMES = ("latent",)
    OUTPUT_TOOLTIPS = ("The edited latent (space w+: the mapper changes rows differently).",)
    FUNCTION = "execute"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "latent": ("STYLEGAN_LATENT", {"tooltip": "The latent to edit (e.g. the PTI pivot)."}),
            "mapper_file": (list_mapper_files() or [""], {
                "tooltip": "StyleCLIP mapper checkpoint (.pt) in models/stylegan_directions (a path containing "
                           "'mapper', e.g. styleclip_mappers/mohawk.pt); read as plain tensors."}),
            "strength": ("FLOAT", {"default": 1.0, "min": -5.0, "max": 5.0, "step": 0.05,
                                   "tooltip": "Multiplies the mapper's step (1 = as trained; 0 = unchanged)."}),
        }}

    @classmethod
    def IS_CHANGED(cls, mapper_file="", **_):
        try:
            stat = _common.model_path("stylegan_directions", mapper_file).stat()
        except Exception:  # noqa: BLE001  (missing file: execute reports it)
            return f"missing:{mapper_file}"
        return f"{stat.st_mtime_ns}:{stat.st_size}"

    def execute(self, latent, mapper_file, strength=1.0):
        from .latents import make_latent  # noqa: PLC0415
        pti_core = _common.core()
        try:
            try:
                path = _common.model_path("stylegan_directions", mapper_file)
            except pti_core.errors.MissingFileError:
                raise pti_core.errors.MissingFileError(
                    f"StyleCLIP mapper {mapper_file!r} not in models/stylegan_directions; "
                    f"{pti_core.styleclip.statistics_hint(mapper_file, fallback=MAPPER_SOURCE)}") from None
            mapper = pti_core.styleclip.load_mapper(path)
            ws = latent["ws"]
            edited = pti_core.styleclip.apply_mapper(mapper, ws.clone(), float(strength))
        except pti_core.errors.PTIError as error:
            raise _common.user_error(error) from None
        return (make_latent(edited, "w+"),)


NODE_CLASS_MAPPINGS = {
    "PTI_LoadCLIP": PTI_LoadCLIP,
    "PTI_StyleCLIPDirection": PTI_StyleCLIPDirection,
    "PTI_StyleCLIPMapper": PTI_StyleCLIPMapper,
}

NODE_DISPLAY_NAME_MAPPINGS = {
    "PTI_LoadCLIP": "Load CLIP (PTI, for StyleCLIP)",
    "PTI_StyleCLIPDirection": "StyleCLIP Direction (PTI)",
    "PTI_StyleCLIPMapper": "StyleCLIP Mapper (PTI)",
}
