"""Direction nodes: load editing directions, discover them from the model, make them from latents,
and apply them (several at once, or as a strength sweep of animation frames).

``STYLEGAN_DIRECTION`` is a ``pti_core.directions.Direction``: ``vectors [K, L, w_dim]`` (K > 1 for
a component set), plus name, source, what model it fits, default layers and strengths.
Widget order of every node is a public contract (saved workflows are positional): add only at the end.
"""

from __future__ import annotations

import json
from pathlib import Path

from . import _common
from .latents import check_latent, make_latent
from .models import render

DIRECTION_EXTENSIONS = (".pt", ".pth", ".npy", ".npz", ".safetensors")
LAYER_CHOICES = ("direction default", "all", "coarse", "middle", "fine", "custom")
DISCOVER_LAYERS = ("all", "coarse", "middle", "fine")
MAX_FRAMES = 256
MAX_STRENGTH = 100.0


# ----------------------------------------------------------------------------- files

def _pack_directions_dir() -> Path:
    return _common.pack_dir() / "directions"


def _manifest_files() -> list[str]:
    """Returns the file names of the well-known public directions (read without importing torch)."""
    path = _pack_directions_dir() / "manifest.json"
    try:
        entries = json.loads(path.read_text(encoding="utf-8")).get("directions", [])
    except (OSError, ValueError):
        return []
    return [entry["file"] for entry in entries if entry.get("file")]


def _pack_files() -> list[str]:
    folder = _pack_directions_dir()
    if not folder.is_dir():
        return []
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")
                  if p.is_file() and p.suffix.lower() in DIRECTION_EXTENSIONS)


def list_direction_files() -> list[str]:
    """Returns the choices of Load Direction: the files that exist, in the pack's directions/ folder and in
    models/stylegan_directions. A saved workflow naming a well-known file this ComfyUI lacks is told where
    to download it before the run (``VALIDATE_INPUTS``); the manifest lists them all (directions/README.md)."""
    return sorted(set(_pack_files()) | set(_common.list_models("stylegan_directions")))


def direction_path(name: str) -> Path:
    """Returns the full path of direction file ``name`` (pack's directions/ first, then
    models/stylegan_directions), or raises MissingFileError saying where a well-known file comes from."""
    pti_core = _common.core()
    folder = _pack_directions_dir().resolve()
    candidate = (folder / name).resolve()
    if candidate.is_file() and candidate.suffix.lower() in DIRECTION_EXTENSIONS and folder in candidate.parents:
        return candidate
    try:
        return _common.model_path("stylegan_directions", name)
    except pti_core.errors.MissingFileError:
        hint = pti_core.directions.missing_file_hint(name)
        raise pti_core.errors.MissingFileError(
            f"direction file {name!r} is not in models/stylegan_directions; {hint}") from None


# ----------------------------------------------------------------------------- nodes

class PTI_LoadDirection:
    """Loads a latent editing direction file."""

    DESCRIPTION = ("Loads a latent editing direction: InterFaceGAN/PTI/e4e .pt and .npy boundaries, GANSpace "
                   "PCA (.pt dict or .npz), or this pack's .safetensors, from the pack's directions/ folder or "
                   "models/stylegan_directions. Files are read as plain tensors (nothing is executed). A workflow "
                   "naming a well-known public file you lack says where to download it before it runs.")
    CATEGORY = _common.CATEGORY
    SEARCH_ALIASES = ["load direction", "latent direction", "interfacegan", "ganspace", "age", "smile", "pose",
                      "face edit", "stylegan"]
    RETURN_TYPES = ("STYLEGAN_DIRECTION",)
    RETURN_NAMES = ("direction",)
    OUTPUT_TOOLTIPS = ("The direction (or the whole component set when component is -1).",)
    FUNCTION = "execute"

    @classmethod
    def INPUT_TYPES(cls):
        files = list_direction_files()
        return {"required": {
            "direction_file": (files or [""], {
                "tooltip": "Direction file (.pt, .pth, .npy, .npz, .safetensors) from the pack's directions/ "
                           "folder or models/stylegan_directions."}),
            "component": ("INT", {"default": -1, "min": -1, "max": 4095, "step": 1,
                                  "tooltip": "For component sets (GANSpace/SeFa): which component to output; "
                                             "-1 keeps the whole set (e.g. for GANSpace 'set' edits pick one "
                                             "here). Ignored for single directions."}),
        }}

    @classmethod
    def VALIDATE_INPUTS(cls, direction_file):
        return _common.validation_message(direction_path, direction_file)

    @classmethod
    def IS_CHANGED(cls, direction_file, component=-1):
        try:
            stat = direction_path(direction_file).stat()
        except Exception:  # noqa: BLE001  (missing file: execute reports it)
            return f"missing:{direction_file}:{component}"
        return f"{stat.st_mtime_ns}:{stat.st_size}:{component}"

    def execute(self, direction_file, component=-1):
        pti_core = _common.core()
        try:
            direction = pti_core.directions.load_direction(direction_path(direction_file))
            if component >= 0 and direction.is_component_set:
                direction = direction.component(component)
        except pti_core.errors.PTIError as error:
            raise _common.user_error(error) from None
        return (direction,)


class PTI_ApplyDirection:
    """Edits a latent with up to three directions and renders it (optionally as a strength sweep)."""

    DESCRIPTION = ("Edits a latent: w' = w + strength * direction on the chosen layers only (rows outside stay "
                   "exactly as they were), plus optional second and third directions at their own strengths, and "
                   "renders the result. With sweep on, the first direction's strength goes from strength_from to "
                   "strength_to over `frames` frames, returned as one IMAGE batch (for GIF/MP4 or a grid).")
    CATEGORY = _common.CATEGORY
    SEARCH_ALIASES = ["apply direction", "face edit", "edit latent", "age", "smile", "older", "younger", "head turn",
                      "yaw", "sweep", "interfacegan", "stylegan"]
    RETURN_TYPES = ("IMAGE", "STYLEGAN_LATENT")
    RETURN_NAMES = ("images", "latent")
    OUTPUT_TOOLTIPS = ("The edited image(s) [B, H, W, 3]; a sweep gives frames x latents images, frame-major.",
                       "The edited latent(s), one per image, in the same order (W edits only: StyleSpace "
                       "edits cannot be written into ws).")
    FUNCTION = "execute"

    @classmethod
    def INPUT_TYPES(cls):
        strength = {"min": -MAX_STRENGTH, "max": MAX_STRENGTH, "step": 0.05}
        return {
            "required": {
                "generator": ("STYLEGAN", {"tooltip": "The generator to render with (e.g. the pivotally tuned one)."}),
                "latent": ("STYLEGAN_LATENT", {"tooltip": "The latent to edit (e.g. the PTI pivot)."}),
                "direction": ("STYLEGAN_DIRECTION", {"tooltip": "The main direction (a single direction, or a "
                                                                "component picked in Load/Discover). StyleSpace "
                                                                "directions (StyleCLIP) edit the styles while "
                                                                "rendering and ignore the layer settings."}),
                "strength": ("FLOAT", {"default": 1.0, **strength,
                                       "tooltip": "How far to move along the direction (unit directions: "
                                                  "about -3..3). In 'set' mode: the target in standard "
                                                  "deviations (GANSpace sigma)."}),
                "layers": (list(LAYER_CHOICES), {"default": "direction default",
                                                 "tooltip": "Which ws rows to edit: the direction's own default "
                                                            "(all if it has none), all, coarse (pose, face shape), "
                                                            "middle (features, expression), fine (colour, "
                                                            "texture), or custom (layer_start..layer_end)."}),
                "layer_start": ("INT", {"default": 0, "min": 0, "max": 63,
                                        "tooltip": "First ws row edited when layers is custom."}),
                "layer_end": ("INT", {"default": -1, "min": -1, "max": 64,
                                      "tooltip": "End row (exclusive) when layers is custom; -1 = up to the last."}),
                "mode": (["add", "set"], {"default": "add",
                                          "tooltip": "add: w + strength * d. set (GANSpace components): move the "
                                                     "coordinate along the component to strength * its std."}),
                "sweep": ("BOOLEAN", {"default": False,
                                      "tooltip": "Render a strength sweep of the main direction instead of one "
                                                 "strength."}),
                "strength_from": ("FLOAT", {"default": -3.0, **strength,
                                            "tooltip": "Sweep: strength of the first frame."}),
                "strength_to": ("FLOAT", {"default": 3.0, **strength,
                                          "tooltip": "Sweep: strength of the last frame."}),
                "frames": ("INT", {"default": 8, "min": 2, "max": MAX_FRAMES,
                                   "tooltip": "Sweep: number of frames (evenly spaced strengths)."}),
            },
            "optional": {
                "direction_2": ("STYLEGAN_DIRECTION", {"tooltip": "Optional second direction, added on the same "
                                                                  "layers."}),
                "strength_2": ("FLOAT", {"default": 1.0, **strength,
                                         "tooltip": "Strength of the second direction."}),
                "direction_3": ("STYLEGAN_DIRECTION", {"tooltip": "Optional third direction, added on the same "
                                                                  "layers."}),
                "strength_3": ("FLOAT", {"default": 1.0, **strength,
                                         "tooltip": "Strength of the third direction."}),
                "condition": ("STYLEGAN_DIRECTION", {"tooltip": "Optional direction to keep unchanged: it is "
                                                                "projected out of every edit (InterFaceGAN "
                                                                "conditional editing, e.g. age without glasses)."}),
            },
        }

    def execute(self, generator, latent, direction, strength=1.0, layers="direction default", layer_start=0,
                layer_end=-1, mode="add", sweep=False, strength_from=-3.0, strength_to=3.0, frames=8,
                direction_2=None, strength_2=1.0, direction_3=None, strength_3=1.0, condition=None):
        pti_core = _common.core()
        D = pti_core.directions
        try:
            ws = check_latent(generator, latent)                                   # [B, num_ws, w_dim]
            spec = None if layers == "direction default" else (
                (layer_start, layer_end) if layers == "custom" else layers)
            extras = [(d, float(s)) for d, s in ((direction_2, strength_2), (direction_3, strength_3))
                      if d is not None]
            w_extra = [D.Edit(d, s, spec) for d, s in extras if not _is_stylespace(d)]
            s_extra = [(d, s) for d, s in extras if _is_stylespace(d)]
            conditions = [] if condition is None else [condition]
            main = direction
            if isinstance(main, D.Direction) and main.is_component_set and main.num_components == 1:
                main = main.component(0)
            strengths = D.sweep_strengths(strength_from, strength_to, frames) if sweep else [float(strength)]
            if _is_stylespace(main):
                # StyleSpace (e.g. StyleCLIP) directions edit the styles while rendering; the latent
                # output carries the W edits only.
                if mode != "add":
                    raise pti_core.errors.ConfigError("mode 'set' is for GANSpace components in W; use 'add' "
                                                      "with a StyleSpace direction")
                base = D.apply_directions(ws, w_extra, condition=conditions) if w_extra else ws.clone()
                edited = base.repeat(len(strengths), 1, 1)                           # frame-major
                images = _render_styles(pti_core, generator, base, [[(main, s), *s_extra] for s in strengths])
            else:
                if sweep:
                    edited = D.sweep(ws, main, strengths, layers=spec, mode=mode, condition=conditions,
                                     extra_edits=w_extra)
                else:
                    edited = D.apply_directions(ws, [D.Edit(main, strengths[0], spec, None, mode), *w_extra],
                                                condition=conditions)
                if s_extra:
                    images = _render_styles(pti_core, generator, edited, [s_extra])
                else:
                    images = render(generator, edited, noise_mode="const")
            space = "w" if bool((edited == edited[:, :1]).all()) else "w+"
            return (images, make_latent(edited, space))
        except pti_core.errors.PTIError as error:
            raise _common.user_error(error) from None


def _is_stylespace(direction) -> bool:
    return getattr(direction, "space", "w") == "s"


def _render_styles(pti_core, G, ws, frame_edits):
    """Returns IMAGE for ``ws`` rendered once per entry of ``frame_edits`` (StyleSpace edits), frame-major."""
    import torch  # noqa: PLC0415
    images = [pti_core.styleclip.apply_style_edits(G, ws, edits, noise_mode="const") for edits in frame_edits]
    return pti_core.imageio.nchw_to_comfy(torch.cat(images).to(_common.intermediate_device(), torch.float32))


class PTI_DiscoverDirections:
    """Finds editing directions from the generator itself (SeFa or GANSpace), no data needed."""

    DESCRIPTION = ("Discovers editing directions from the model, with no data: SeFa (closed-form factorisation "
                   "of the style weights of the chosen layers; instant) or GANSpace (PCA of sampled w; seeded). "
                   "Components are sorted, strongest first; pick one by index. Works for any StyleGAN, "
                   "including models nobody published directions for.")
    CATEGORY = _common.CATEGORY
    SEARCH_ALIASES = ["discover directions", "sefa", "ganspace", "pca", "unsupervised directions", "latent direction",
                      "stylegan"]
    RETURN_TYPES = ("STYLEGAN_DIRECTION",)
    RETURN_NAMES = ("direction",)
    OUTPUT_TOOLTIPS = ("The chosen component as a unit direction (default layers = the chosen layers).",)
    FUNCTION = "execute"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "generator": ("STYLEGAN", {"tooltip": "The generator to analyse."}),
            "method": (["sefa", "ganspace"], {"default": "sefa",
                                              "tooltip": "sefa: eigenvectors of the style weights (no sampling). "
                                                         "ganspace: principal components of sampled w."}),
            "layers": (list(DISCOVER_LAYERS), {"default": "all",
                                               "tooltip": "SeFa: whose style weights to factorise (coarse = pose "
                                                          "and shape, middle = features, fine = colour). Both "
                                                          "methods: the direction's default edit layers."}),
            "component": ("INT", {"default": 0, "min": 0, "max": 4095,
                                  "tooltip": "Which component, 0 = the strongest."}),
            "num_samples": ("INT", {"default": 10000, "min": 100, "max": 1000000, "step": 100,
                                    "tooltip": "GANSpace: how many w to sample for the PCA."}),
            "seed": ("INT", {"default": 0, "min": 0, "max": 0xFFFFFFFF,
                             "tooltip": "GANSpace: seed of the sampled z (same seed, same directions)."}),
        }}

    def execute(self, generator, method, layers="all", component=0, num_samples=10000, seed=0):
        pti_core = _common.core()
        D = pti_core.directions
        try:
            if method == "sefa":
                found = D.sefa(generator, layers=None if layers == "all" else layers)
            elif method == "ganspace":
                found = D.ganspace(generator, num_samples=int(num_samples), seed=int(seed),
                                   layers=None if layers == "all" else layers)
            else:
                raise pti_core.errors.ConfigError(f"method must be sefa or ganspace, got {method!r}")
            return (found.component(int(component)),)
        except pti_core.errors.PTIError as error:
            raise _common.user_error(error) from None


class PTI_DirectionFromLatents:
    """Makes a direction from two groups of latents (mean difference)."""

    DESCRIPTION = ("Makes a direction from examples: the normalised difference between the mean of latent_to and "
                   "the mean of latent_from (e.g. inverted smiling photos minus the same people neutral). "
                   "Positive strengths then move towards latent_to.")
    CATEGORY = _common.CATEGORY
    SEARCH_ALIASES = ["direction from latents", "latent difference", "learn direction", "face edit", "stylegan"]
    RETURN_TYPES = ("STYLEGAN_DIRECTION",)
    RETURN_NAMES = ("direction",)
    OUTPUT_TOOLTIPS = ("A unit direction from latent_from towards latent_to.",)
    FUNCTION = "execute"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "latent_from": ("STYLEGAN_LATENT", {"tooltip": "Latents without the attribute (a batch is averaged)."}),
            "latent_to": ("STYLEGAN_LATENT", {"tooltip": "Latents with the attribute (a batch is averaged)."}),
            "per_layer": ("BOOLEAN", {"default": False,
                                      "tooltip": "Keep one row per layer (W+ differences) instead of one vector "
                                                 "for all layers."}),
        }}

    def execute(self, latent_from, latent_to, per_layer=False):
        pti_core = _common.core()
        try:
            for name, latent in (("latent_from", latent_from), ("latent_to", latent_to)):
                if not isinstance(latent, dict) or "ws" not in latent:
                    raise pti_core.errors.LatentError(f"{name}: expected a STYLEGAN_LATENT")
            direction = pti_core.directions.direction_from_latents(latent_from["ws"], latent_to["ws"],
                                                                   per_layer=bool(per_layer))
        except pti_core.errors.PTIError as error:
            raise _common.user_error(error) from None
        return (direction,)


NODE_CLASS_MAPPINGS = {
    "PTI_LoadDirection": PTI_LoadDirection,
    "PTI_ApplyDirection": PTI_ApplyDirection,
    "PTI_DiscoverDirections": PTI_DiscoverDirections,
    "PTI_DirectionFromLatents": PTI_DirectionFromLatents,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "PTI_LoadDirection": "Load Direction (PTI)",
    "PTI_ApplyDirection": "Apply Direction (PTI)",
    "PTI_DiscoverDirections": "Discover Directions (PTI)",
    "PTI_DirectionFromLatents": "Direction From Latents (PTI)",
}
