"""PTI nodes: invert an image into a pivot latent, then pivotally tune the generator around it.

Both nodes optimise, so they leave ComfyUI's ``torch.inference_mode()``, enable grad, clone their
inputs, report progress with previews, check for Cancel every step and hand memory back after the
run. The input ``STYLEGAN`` is never modified: Pivotal Tune outputs a new generator object.

How a ``STYLEGAN`` output holds per-image tuning of a batch: it holds exactly one generator, so
``mode="per-image"`` needs a batch of one image (split bigger batches, e.g. with ImageFromBatch),
and ``mode="shared"`` tunes one generator for the whole batch (several photos of one person, video
frames). Both are deterministic for the same inputs and seed.
"""

from __future__ import annotations

from . import _common
from .latents import check_latent, make_latent
from .models import render

SPACES = ("w", "w+")
TUNING_MODES = ("per-image", "shared")
LOCALITY = ("off", "on", "built-in model")
PREVIEW_EVERY = 10  # steps between JPEG previews on the node
# "fp32": the paper's arithmetic; "auto": bfloat16 autocast where the device runs it natively (CUDA with
# bf16, CPUs with AVX512-BF16 / AMX), else fp32 (pti_core.presets.native_bf16).
PRECISIONS = ("fp32", "auto")
PRECISION_TOOLTIP = ("fp32: the paper's float32 arithmetic. auto: bfloat16 mixed precision where this device "
                     "runs it natively (recent NVIDIA GPUs, CPUs with AVX512-BF16/AMX), else fp32; faster per step, "
                     "results differ slightly.")
# Perceptual backbones (pti_core.losses.PERCEPTUAL_KINDS); the first of each list is the paper's.
INVERSION_PERCEPTUAL = ("lpips-vgg", "lpips-alex", "stlpips-alex", "random-vgg", "random-alex")
TUNING_PERCEPTUAL = ("lpips-alex", "lpips-vgg", "stlpips-alex", "random-alex", "random-vgg")


def _targets(image, name: str = "images"):
    """Returns ComfyUI IMAGE as a cloned NCHW float32 batch in [-1, 1] on the compute device."""
    x = _common.core().imageio.comfy_to_nchw(image, name=name)  # [B, 3, H, W]
    return x.to(_common.torch_device()).clone()


def _core_module(name: str):
    """Returns submodule ``name`` of the pack's pti_core.

    The nodes reach library functions through their modules (``inversion``, ``tune``).
    """
    from importlib import import_module  # noqa: PLC0415
    return import_module(f"{_common.core().__name__}.{name}")


def autograd_ready(G):
    """Returns ``G`` itself, or a plain copy of it when its tensors were made under inference mode.

    ComfyUI runs every node under ``torch.inference_mode()``; tensors created there (e.g. by a
    loader) cannot take part in autograd, even with inference mode switched off. Call with
    inference mode off. The input generator is never modified.
    """
    import copy  # noqa: PLC0415
    tensors = [*G.parameters(), *G.buffers()]
    if not any(t.is_inference() for t in tensors):
        return G
    return copy.deepcopy(G)


def _generator_device(G):
    return next(G.parameters()).device


def _precision(choice: str, G) -> str:
    """Returns the loop precision for the node's ``precision`` choice on ``G``'s device."""
    if choice not in PRECISIONS:
        raise _common.core().errors.ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got {choice!r}")
    if choice == "fp32":
        return "fp32"
    return "bf16" if _core_module("presets").native_bf16(_generator_device(G)) else "fp32"


class PTI_Invert:
    """Projects images into the generator's latent space (the PTI pivot)."""

    DESCRIPTION = ("Inverts images into the generator's latent space (StyleGAN2-ADA projector as PTI uses it): "
                   "the pivot latent for Pivotal Tune, and its reconstruction. Images are centre-cropped to a "
                   "square and resized to the model's resolution; align faces first for face models.")
    CATEGORY = _common.CATEGORY
    SEARCH_ALIASES = ["gan inversion", "invert image", "projection", "pivot", "image to latent", "stylegan projector",
                      "pti", "face edit"]
    RETURN_TYPES = ("STYLEGAN_LATENT", "IMAGE")
    RETURN_NAMES = ("latent", "reconstruction")
    OUTPUT_TOOLTIPS = ("The pivot latents ws [B, num_ws, w_dim] (one per image).",
                       "The generator's rendering of the pivots (before tuning).")
    FUNCTION = "execute"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "generator": ("STYLEGAN", {"tooltip": "The generator to invert into."}),
                "images": ("IMAGE", {"tooltip": "Target images (aligned faces for face models); any size."}),
                "space": (list(SPACES), {"default": "w",
                                         "tooltip": "w: one latent broadcast to all layers (the paper, most "
                                                    "editable); w+: one latent per layer (closer, less editable)."}),
                "steps": ("INT", {"default": 450, "min": 1, "max": 10000,
                                  "tooltip": "Optimisation steps (paper: 450)."}),
                "learning_rate": ("FLOAT", {"default": 0.01, "min": 1e-5, "max": 1.0, "step": 0.001,
                                            "tooltip": "Peak learning rate (paper: 0.01, with ramp-up and "
                                                       "cosine ramp-down)."}),
                "seed": ("INT", {"default": 0, "min": 0, "max": 0xFFFFFFFF, "control_after_generate": False,
                                 "tooltip": "Seed of the latent statistics and noise (same seed, same result)."}),
                "perceptual": (list(INVERSION_PERCEPTUAL),
                               {"default": INVERSION_PERCEPTUAL[0],
                                "tooltip": "Perceptual loss backbone (paper: lpips-vgg; needs vgg16 weights in "
                                           "the torch hub cache). stlpips-alex needs no download."}),
            },
            "optional": {
                "init_latent": ("STYLEGAN_LATENT", {"tooltip": "Optional starting latent (e.g. from an encoder or "
                                                               "a previous inversion) instead of the average."}),
                "precision": (list(PRECISIONS), {"default": "fp32", "tooltip": PRECISION_TOOLTIP}),
                "l2_weight": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 1000.0, "step": 0.1, "round": False,
                                        "tooltip": "Weight of a pixel L2 loss added to the perceptual one (paper and "
                                                   "reference projector: 0). The built-in 64 px model uses 10 (with "
                                                   "learning rate 0.05): its pivots then match the photo's colours "
                                                   "and layout."}),
            },
        }

    def execute(self, generator, images, space, steps, learning_rate, seed, perceptual, init_latent=None,
                precision="fp32", l2_weight=0.0):
        import torch  # noqa: PLC0415
        pti_core = _common.core()
        G = generator
        try:
            init_ws = None
            if init_latent is not None:
                init_ws = check_latent(G, init_latent, name="init_latent").clone()
                if init_ws.shape[0] not in (1, images.shape[0]):
                    raise pti_core.errors.LatentError(
                        f"init_latent has {init_ws.shape[0]} latents for {images.shape[0]} images; "
                        "give one latent or one per image")
                init_ws = init_ws.to(_generator_device(G))
            inversion = _core_module("inversion")
            config = inversion.InversionConfig(space=space, steps=int(steps), lr=float(learning_rate),
                                              seed=int(seed), perceptual=perceptual, l2_weight=float(l2_weight),
                                              preview_every=PREVIEW_EVERY, precision=_precision(precision, G))
            with torch.inference_mode(False), torch.enable_grad():
                target = _targets(images)
                result = inversion.invert(autograd_ready(G), target, config=config, init_ws=init_ws,
                                         progress=_common.make_progress(int(steps)),
                                         should_stop=_common.should_stop)
                latent = make_latent(result.ws, space)
            reconstruction = render(G, latent["ws"])
        except pti_core.errors.PTIError as error:
            raise _common.user_error(error) from None
        finally:
            _common.free_memory()
        return (latent, reconstruction)


def _locality(choice: str):
    """Returns the Locality of the node's choice (None for "off")."""
    tuning, presets = _core_module("tune"), _core_module("presets")
    if choice == "on":
        return tuning.Locality()
    if choice == "built-in model":
        alpha, weight_l2, weight_lpips = presets.BUILTIN_MODEL.locality
        return tuning.Locality(alpha=alpha, weight_l2=weight_l2, weight_lpips=weight_lpips)
    return None


class PTI_PivotalTune:
    """Fine-tunes the generator so the pivot latent reproduces the image."""

    DESCRIPTION = ("Pivotal tuning (Roich et al. 2021): fine-tunes a copy of the generator so that the pivot "
                   "latent reproduces the photo exactly, keeping latent edits working. Outputs the tuned "
                   "generator (the input one is unchanged). per-image mode needs a batch of 1; shared mode "
                   "tunes one generator for all images of the batch.")
    CATEGORY = _common.CATEGORY
    SEARCH_ALIASES = ["pti", "pivotal tuning", "gan inversion", "fine-tune generator", "face edit", "identity",
                      "stylegan"]
    RETURN_TYPES = ("STYLEGAN", "IMAGE")
    RETURN_NAMES = ("tuned_generator", "reconstruction")
    OUTPUT_TOOLTIPS = ("The tuned generator (a new model; feed it to Apply Direction / Render Latent).",
                       "The tuned generator's rendering of the pivots.")
    FUNCTION = "execute"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "generator": ("STYLEGAN", {"tooltip": "The generator the pivot was inverted with (not modified)."}),
            "images": ("IMAGE", {"tooltip": "The same target images that were inverted."}),
            "latent": ("STYLEGAN_LATENT", {"tooltip": "The pivots from Invert Image (one per image)."}),
            "steps": ("INT", {"default": 350, "min": 1, "max": 10000,
                              "tooltip": "Maximum tuning steps (paper: 350)."}),
            "learning_rate": ("FLOAT", {"default": 3e-4, "min": 1e-6, "max": 1e-1, "step": 1e-5,
                                        "round": False, "tooltip": "Adam learning rate (paper: 3e-4)."}),
            "lpips_threshold": ("FLOAT", {"default": 0.06, "min": 0.0, "max": 1.0, "step": 0.005,
                                          "tooltip": "Stop early once the LPIPS loss is at or below this "
                                                     "(paper: 0.06; 0 = always run all steps)."}),
            "locality": (list(LOCALITY), {"default": "off",
                                          "tooltip": "Locality regularisation: keeps the tuned generator close "
                                                     "to the original away from the pivot (slower; paper "
                                                     "default off, recommended for shared mode). 'built-in "
                                                     "model': the built-in 64 px model's measured setting (at "
                                                     "the edits' distance, as strong as the fit), which keeps "
                                                     "its edits faces."}),
            "mode": (list(TUNING_MODES), {"default": "per-image",
                                          "tooltip": "per-image: one tuned generator for a single image "
                                                     "(batch 1). shared: one generator for all images."}),
            "seed": ("INT", {"default": 0, "min": 0, "max": 0xFFFFFFFF, "control_after_generate": False,
                             "tooltip": "Seed of the locality samples (same seed, same result)."}),
            "perceptual": (list(TUNING_PERCEPTUAL),
                           {"default": TUNING_PERCEPTUAL[0],
                            "tooltip": "Perceptual loss backbone (paper: lpips-alex; needs alexnet weights in "
                                       "the torch hub cache). stlpips-alex needs no download."}),
        }, "optional": {
            "precision": (list(PRECISIONS), {"default": "fp32", "tooltip": PRECISION_TOOLTIP}),
            "l2_weight": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1000.0, "step": 0.1, "round": False,
                                    "tooltip": "Weight of the pixel L2 loss; the perceptual loss has weight 1 "
                                               "(paper: 1). The built-in 64 px model uses 100: at 64 px the "
                                               "perceptual loss alone leaves speckle and loses fine detail."}),
        }}

    def execute(self, generator, images, latent, steps, learning_rate, lpips_threshold, locality, mode, seed,
                perceptual, precision="fp32", l2_weight=1.0):
        import torch  # noqa: PLC0415
        pti_core = _common.core()
        G = generator
        try:
            ws = check_latent(G, latent)
            if ws.shape[0] != images.shape[0]:
                raise pti_core.errors.LatentError(
                    f"the latent holds {ws.shape[0]} pivots for {images.shape[0]} images; "
                    "invert the same image batch you tune with")
            if mode == "per-image" and images.shape[0] != 1:
                raise pti_core.errors.ConfigError(
                    f"per-image mode tunes one generator per image but got {images.shape[0]} images; a STYLEGAN "
                    "output holds one generator, so use mode 'shared' or split the batch (ImageFromBatch)")
            tuning = _core_module("tune")
            config = tuning.TuningConfig(
                steps=int(steps), lr=float(learning_rate), lpips_threshold=float(lpips_threshold),
                l2_weight=float(l2_weight), locality=_locality(locality), mode=mode, seed=int(seed),
                perceptual=perceptual, preview_every=PREVIEW_EVERY, precision=_precision(precision, G))
            with torch.inference_mode(False), torch.enable_grad():
                target = _targets(images)
                pivots = ws.clone().to(_generator_device(G))
                result = tuning.pivotal_tune(autograd_ready(G), target, pivots, config=config,
                                               progress=_common.make_progress(int(steps)),
                                               should_stop=_common.should_stop)
                tuned = result.generator.eval().requires_grad_(False)
            reconstruction = render(tuned, ws)
        except pti_core.errors.PTIError as error:
            raise _common.user_error(error) from None
        finally:
            _common.free_memory()
        return (tuned, reconstruction)


NODE_CLASS_MAPPINGS = {
    "PTI_Invert": PTI_Invert,
    "PTI_PivotalTune": PTI_PivotalTune,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "PTI_Invert": "Invert Image (PTI)",
    "PTI_PivotalTune": "Pivotal Tune (PTI)",
}
