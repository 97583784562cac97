"""Generator nodes: load and save StyleGAN models, generate images, render latents.

``STYLEGAN`` is the generator ``nn.Module`` itself (eval mode, on ComfyUI's torch device). Nodes
never modify an input generator: ComfyUI caches outputs and shares them between branches.
"""

from __future__ import annotations

import os
from pathlib import Path

from . import _common
from .latents import check_latent, make_latent, next_free_path

NOISE_MODES = ("const", "random", "none")
MAX_BATCH = 64


def render(G, ws, *, noise_mode: str = "const", seed: int = 0, batch_size: int = 8):
    """Returns ComfyUI IMAGE ``[B, H, W, 3]`` in 0..1 for ``ws`` ``[B, num_ws, w_dim]`` rendered by ``G``.

    Runs in chunks of ``batch_size`` without gradients; ``noise_mode="random"`` draws its noise from
    a generator seeded with ``seed`` (deterministic).
    """
    import torch  # noqa: PLC0415
    imageio = _common.core().imageio
    device = next(G.parameters()).device
    images = []
    with torch.no_grad():
        for start in range(0, ws.shape[0], batch_size):
            chunk = ws[start:start + batch_size].to(device, torch.float32)  # [b, num_ws, w_dim]
            if noise_mode == "random":
                generator = torch.Generator(device=device).manual_seed(int(seed) + start)
                image = G.synthesis(chunk, noise_mode="random", generator=generator)
            else:
                image = G.synthesis(chunk, noise_mode=noise_mode)  # [b, 3, H, W]
            images.append(image.to(_common.intermediate_device(), torch.float32))
    return imageio.nchw_to_comfy(torch.cat(images))


KNOWN_GENERATORS = {  # public files the shipped workflows name: where a user gets them
    "ffhq.pkl": "NVIDIA's FFHQ StyleGAN2 (1024 px): https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/ffhq.pkl",
    "stylegan3-t-ffhqu-256x256.pkl": "NVIDIA's StyleGAN3-T FFHQ-U 256 px: https://api.ngc.nvidia.com/v2/models/nvidia/"
                                     "research/stylegan3/versions/1/files/stylegan3-t-ffhqu-256x256.pkl",
}


def generator_path(name: str) -> Path:
    """Returns the path of generator ``name`` in models/stylegan, or raises MissingFileError with its source."""
    pti_core = _common.core()
    try:
        return _common.model_path("stylegan", name)
    except pti_core.errors.MissingFileError as error:
        source = KNOWN_GENERATORS.get(Path(name).name)
        if source is None:
            raise
        raise pti_core.errors.MissingFileError(f"{error}; {name} is {source}") from None


class PTI_LoadStyleGAN:
    """Loads a generator file from models/stylegan."""

    DESCRIPTION = ("Loads a StyleGAN2/3 generator from ComfyUI's models/stylegan folder: NVIDIA .pkl "
                   "(read safely, no code runs), rosinality .pt, PTI tuned .pt, or this pack's .safetensors.")
    CATEGORY = _common.CATEGORY
    SEARCH_ALIASES = ["stylegan", "load stylegan", "stylegan2", "stylegan3", "ffhq", "gan loader", "pkl", "pti"]
    RETURN_TYPES = ("STYLEGAN",)
    RETURN_NAMES = ("generator",)
    OUTPUT_TOOLTIPS = ("The generator (eval mode, on ComfyUI's compute device).",)
    FUNCTION = "execute"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model_name": (_common.list_models("stylegan"),
                           {"tooltip": "Generator file in models/stylegan (.pkl, .pt, .pth, .safetensors)."}),
        }}

    @classmethod
    def VALIDATE_INPUTS(cls, model_name):
        return _common.validation_message(generator_path, model_name)

    @classmethod
    def IS_CHANGED(cls, model_name):
        try:
            stat = generator_path(model_name).stat()
        except Exception:  # noqa: BLE001  (missing file: let execute report it)
            return f"missing:{model_name}"
        return f"{stat.st_mtime_ns}:{stat.st_size}"

    def execute(self, model_name):
        import torch  # noqa: PLC0415
        pti_core = _common.core()
        try:
            path = generator_path(model_name)
            with torch.inference_mode(False):  # plain tensors, so optimisation nodes can use autograd
                G = pti_core.load_generator(path, device=_common.torch_device())
        except pti_core.errors.PTIError as error:
            raise _common.user_error(error) from None
        return (G.eval().requires_grad_(False),)


class PTI_SaveStyleGAN:
    """Writes a generator to models/stylegan as safetensors."""

    DESCRIPTION = ("Saves a generator (e.g. the pivotally tuned one) as .safetensors into models/stylegan, "
                   "never overwriting: <prefix>_00001_.safetensors, ... Load it again with Load StyleGAN.")
    CATEGORY = _common.CATEGORY
    SEARCH_ALIASES = ["save stylegan", "save tuned generator", "export generator", "safetensors", "pti"]
    RETURN_TYPES = ()
    OUTPUT_TOOLTIPS = ()
    OUTPUT_NODE = True
    FUNCTION = "execute"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "generator": ("STYLEGAN", {"tooltip": "The generator to save."}),
            "filename_prefix": ("STRING", {"default": "PTI/tuned",
                                           "tooltip": "File name prefix inside models/stylegan; "
                                                      "sub-folders allowed."}),
        }}

    def execute(self, generator, filename_prefix):
        pti_core = _common.core()
        try:
            folder = _stylegan_save_folder()
            path = next_free_path(folder, filename_prefix, ".safetensors")
            pti_core.save_generator(generator, path)
        except pti_core.errors.PTIError as error:
            raise _common.user_error(error) from None
        return {"ui": {"text": [path.relative_to(folder.resolve()).as_posix()]}}


def _stylegan_save_folder() -> Path:
    """Returns the first models/stylegan folder (ComfyUI's, else ``$PTI_MODELS_DIR/stylegan``)."""
    try:
        import folder_paths  # type: ignore  # noqa: PLC0415
        folder = Path(folder_paths.get_folder_paths("stylegan")[0])
    except ImportError:
        folder = Path(os.environ.get("PTI_MODELS_DIR", "models")) / "stylegan"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


class PTI_Generate:
    """Samples images and their latents from a generator."""

    DESCRIPTION = ("Generates a batch of images from random z (seeded) and outputs their W latents, "
                   "ready for Apply Direction. Truncation psi < 1 pulls towards the average face.")
    CATEGORY = _common.CATEGORY
    SEARCH_ALIASES = ["stylegan generate", "random face", "sample gan", "gan", "truncation", "stylegan"]
    RETURN_TYPES = ("IMAGE", "STYLEGAN_LATENT")
    RETURN_NAMES = ("images", "latent")
    OUTPUT_TOOLTIPS = ("The generated images [B, H, W, 3].",
                       "Their latents ws [B, num_ws, w_dim] (space w unless a truncation cutoff applies).")
    FUNCTION = "execute"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "generator": ("STYLEGAN", {"tooltip": "The generator to sample from."}),
            "seed": ("INT", {"default": 0, "min": 0, "max": 0xFFFFFFFF, "control_after_generate": True,
                             "tooltip": "Seed of the random z (same seed, same images)."}),
            "batch_size": ("INT", {"default": 1, "min": 1, "max": MAX_BATCH,
                                   "tooltip": "Number of images."}),
            "truncation_psi": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 2.0, "step": 0.05,
                                         "tooltip": "Truncation: 1 = none, 0.7 = typical, 0 = the average image."}),
            "noise_mode": (list(NOISE_MODES), {"default": "const",
                                              "tooltip": "Per-pixel noise: the model's constant noise, "
                                                         "random (seeded) or none."}),
        }}

    def execute(self, generator, seed, batch_size, truncation_psi, noise_mode="const"):
        import torch  # noqa: PLC0415
        pti_core = _common.core()
        G = generator
        try:
            if getattr(G, "c_dim", 0):
                raise pti_core.errors.ConfigError(
                    f"this generator is class-conditional (c_dim={G.c_dim}); only unconditional models are supported")
            if not 1 <= batch_size <= MAX_BATCH:
                raise pti_core.errors.ConfigError(f"batch_size must be 1..{MAX_BATCH}, got {batch_size}")
            device = next(G.parameters()).device
            z = torch.randn(batch_size, G.z_dim, generator=torch.Generator().manual_seed(int(seed)))  # [B, z_dim]
            with torch.no_grad():
                ws = G.mapping(z.to(device), None, truncation_psi=float(truncation_psi))  # [B, num_ws, w_dim]
            latent = make_latent(ws, "w")
            images = render(G, latent["ws"], noise_mode=noise_mode, seed=seed)
        except pti_core.errors.PTIError as error:
            raise _common.user_error(error) from None
        return (images, latent)


class PTI_RenderLatent:
    """Renders a latent with a generator."""

    DESCRIPTION = ("Renders a STYLEGAN_LATENT with a generator (e.g. the pivot with the tuned generator). "
                   "The latent must come from a model with the same num_ws and w_dim.")
    CATEGORY = _common.CATEGORY
    SEARCH_ALIASES = ["render latent", "synthesis", "latent to image", "stylegan", "gan"]
    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("images",)
    OUTPUT_TOOLTIPS = ("The rendered images [B, H, W, 3].",)
    FUNCTION = "execute"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "generator": ("STYLEGAN", {"tooltip": "The generator (original or tuned)."}),
            "latent": ("STYLEGAN_LATENT", {"tooltip": "Latent ws [B, num_ws, w_dim] to render."}),
            "noise_mode": (list(NOISE_MODES), {"default": "const",
                                              "tooltip": "Per-pixel noise: the model's constant noise "
                                                         "(what PTI tunes with), random (seed 0) or none."}),
        }}

    def execute(self, generator, latent, noise_mode="const"):
        pti_core = _common.core()
        try:
            ws = check_latent(generator, latent)
            images = render(generator, ws, noise_mode=noise_mode)
        except pti_core.errors.PTIError as error:
            raise _common.user_error(error) from None
        return (images,)


NODE_CLASS_MAPPINGS = {
    "PTI_LoadStyleGAN": PTI_LoadStyleGAN,
    "PTI_SaveStyleGAN": PTI_SaveStyleGAN,
    "PTI_Generate": PTI_Generate,
    "PTI_RenderLatent": PTI_RenderLatent,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "PTI_LoadStyleGAN": "Load StyleGAN",
    "PTI_SaveStyleGAN": "Save StyleGAN",
    "PTI_Generate": "StyleGAN Generate",
    "PTI_RenderLatent": "Render Latent",
}
