"""``python -m pti_core edit``: the main job. Align (optional), invert, pivotal-tune, edit, save.

Writes into ``--out``: ``input.png`` (the aligned / centre-cropped target), ``inversion.png``,
``pti.png`` (the tuned generator's reconstruction), ``edit_*.png`` (tuned generator) with
``edit_*_inversion.png`` (original generator, for comparison), ``tuned_generator.safetensors``,
``pivot.safetensors``, ``metrics.json`` and ``config.json``.

With no ``--model`` / ``--image`` it runs on the embedded default generator and photo
(see :mod:`pti_core.defaults`), with 100 + 100 steps (about 20 s of CPU time: 23 s wall on one
thread of a 2-core machine); the paper's step counts (450 + 350) stay the library defaults and apply whenever
``--model`` is given.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

PERCEPTUAL_CHOICES = ("auto", "lpips-vgg", "lpips-alex", "stlpips-alex", "random-alex", "random-vgg")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds the ``edit`` arguments to ``parser``."""
    parser.add_argument("--model", default=None, help="generator file (.pkl, .pt, .safetensors); "
                        "default: the embedded demo generator")
    parser.add_argument("--image", default=None, help="photo to edit; default: scikit-image's astronaut")
    parser.add_argument("--out", required=True, help="output folder (created; existing files need --force)")
    parser.add_argument("--direction", action="append", default=[], metavar="FILE",
                        help="editing direction file (repeatable); default: the generator's first SeFa component")
    parser.add_argument("--strength", action="append", type=float, default=[], metavar="S",
                        help="edit strength (repeatable; one per --direction, or one for all); default -3 and +3")
    parser.add_argument("--align", action="store_true", help="FFHQ-align the face first (needs the align extra)")
    parser.add_argument("--space", choices=("w", "w+"), default="w", help="pivot latent space (PTI: w)")
    parser.add_argument("--inversion-steps", type=int, default=None,
                        help="default 450 (the built-in model: 100; --preset fast: 100)")
    parser.add_argument("--tuning-steps", type=int, default=None, help="default 350 (the built-in model: 300)")
    parser.add_argument("--locality", action="store_true", help="locality regularisation while tuning")
    parser.add_argument("--perceptual", choices=PERCEPTUAL_CHOICES, default="auto",
                        help="perceptual backbone; auto = LPIPS-VGG (inversion) / LPIPS-AlexNet (tuning) when "
                             "torchvision's files are cached, else the bundled ST-LPIPS AlexNet")
    parser.add_argument("--preset", choices=("paper", "fast"), default="paper",
                        help="paper: the paper's settings (450 + 350 steps, fp32); fast: 100 inversion steps, "
                             "tuning lr 3e-3, bf16 where native (see pti_core.presets); flags below override")
    parser.add_argument("--precision", choices=("fp32", "bf16", "fp16"), default=None,
                        help="autocast precision of the loops (default: the preset's); fp16 with dynamic loss scaling")
    parser.add_argument("--compile", action="store_true", help="torch.compile the generator (CUDA)")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the optimisation noise")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads for torch (default: torch's choice; 1 is fastest on a busy machine)")
    parser.add_argument("--force", action="store_true", help="overwrite existing outputs")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def _perceptual(choice: str, role: str) -> tuple[str, str | None]:
    """Returns (kind, note) for ``--perceptual`` and a role ("invert" / "tune" / "metric")."""
    from ..errors import MissingFileError
    from ..losses import backbone_file

    if choice != "auto":
        return choice, None
    trunk = "vgg" if role == "invert" else "alex"
    try:
        backbone_file(trunk)
        return f"lpips-{trunk}", None
    except MissingFileError as error:
        return "stlpips-alex", f"{error}; using the bundled ST-LPIPS AlexNet instead"


class _Bar:
    """Terminal progress: tqdm when installed, else a plain line every 10 %."""

    def __init__(self, quiet: bool):
        self.quiet = quiet
        self.bar = None
        self.phase = None

    def __call__(self, step: int, total: int, phase: str, preview) -> None:
        if self.quiet:
            return
        if phase != self.phase:
            self.close()
            self.phase = phase
            try:
                from tqdm import tqdm

                self.bar = tqdm(total=total, desc=phase, unit="step", leave=True, file=sys.stderr)
            except ImportError:
                self.bar = None
            self.done = 0
        if self.bar is not None:
            self.bar.update(step - self.done)
        elif step == total or step % max(1, total // 10) == 0:
            print(f"{phase}: {step}/{total}", file=sys.stderr, flush=True)
        self.done = step

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _write_json(path: Path, data: dict) -> None:
    from ..fileio import atomic_write  # noqa: PLC0415

    text = json.dumps(data, indent=2) + "\n"
    atomic_write(path, lambda tmp: Path(tmp).write_text(text), overwrite=True)


def _align_available() -> bool:
    import importlib.util  # noqa: PLC0415

    return all(importlib.util.find_spec(name) is not None for name in ("dlib", "face_recognition_models"))


def _shipped_directions() -> dict:
    from ..distill import model_assets  # noqa: PLC0415

    return model_assets().direction_paths


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text)[:40] or "direction"


def run(args: argparse.Namespace) -> int:
    """Runs the main job; returns 0."""
    import torch

    from .. import defaults
    from ..errors import ConfigError, OutputExistsError
    from ..imageio import load_image, prepare_target, save_image
    from ..latents import save_latent
    from ..metrics import quality_report
    from ..presets import BUILTIN_MODEL, builtin_configs, native_precision, preset
    from ..pipeline import align_for, reconstruct, render_edits
    from ..tune import Locality

    started = time.time()
    if args.threads is not None:
        if args.threads < 1:
            raise ConfigError(f"--threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file; pass a folder")
    if out.is_dir() and any(out.iterdir()) and not args.force:
        raise OutputExistsError(f"{out} is not empty; pass --force to overwrite its files, or choose another --out")
    device = torch.device(args.device) if args.device else torch.device("cuda" if torch.cuda.is_available() else "cpu")

    demo = args.model is None
    if demo:
        G, description = defaults.default_generator()
        _say(f"no --model given: using the {description}. Real edits need a real face model, such as "
             f"NVIDIA's FFHQ StyleGAN2 ({defaults.FFHQ_URL}): pass it with --model ffhq.pkl")
    else:
        from ..generators.checkpoints import load_generator

        G, description = load_generator(args.model), str(args.model)
    G = G.to(device).eval()
    if args.image is None:
        photo = defaults.default_photo()
        _say("no --image given: using scikit-image's astronaut photo (public domain)")
    else:
        photo = load_image(args.image)

    shipped = defaults.DEFAULT_GENERATOR_FILE.is_file() and (
        demo or Path(args.model).resolve() == defaults.DEFAULT_GENERATOR_FILE.resolve())
    if shipped and args.image is None and not args.align and _align_available():
        args.align = True
        _say("demo: aligning the astronaut's face with the built-in model's own face framing")
    if args.align:
        aligned = align_for(G, photo, name=args.image or "astronaut")
        target = aligned.image
    else:
        target = photo  # centre crop + antialiased resize in prepare_target
    target = prepare_target(target, G.img_resolution)  # [1, 3, R, R]

    # The paper's early stop (LPIPS-AlexNet <= 0.06), lr and loss weights assume the real LPIPS at >= 256 px;
    # the built-in 64 px model gets its measured settings (pti_core.presets.BuiltinModelSettings), named or not.
    inversion_preset, tuning_preset = builtin_configs() if shipped else preset(args.preset, device)
    inversion_steps = args.inversion_steps or inversion_preset.steps
    tuning_steps = args.tuning_steps or tuning_preset.steps
    if shipped and args.perceptual == "auto":  # measured with the bundled ST-LPIPS; 64 px is below LPIPS' range
        (invert_kind, note), (tune_kind, note2) = (inversion_preset.perceptual, None), (tuning_preset.perceptual, None)
    else:
        (invert_kind, note), (tune_kind, note2) = _perceptual(args.perceptual, "invert"), _perceptual(args.perceptual, "tune")
    for message in {note, note2} - {None}:
        _say(f"note: {message}")
    inversion_config = dataclasses.replace(inversion_preset, space=args.space, steps=inversion_steps,
                                           perceptual=invert_kind, seed=args.seed,
                                           precision=args.precision or inversion_preset.precision,
                                           compile=args.compile)
    tuning_config = dataclasses.replace(tuning_preset, steps=tuning_steps, perceptual=tune_kind, seed=args.seed,
                                        locality=Locality() if args.locality else tuning_preset.locality,
                                        precision=args.precision or tuning_preset.precision,
                                        compile=args.compile)

    for precision in sorted({inversion_config.precision, tuning_config.precision}):
        if not native_precision(device, precision):
            _say(f"note: {precision} autocast has no native kernels on this {device.type}; PyTorch emulates it, "
                 f"which is slower than fp32 (--precision fp32 avoids that)")
    if args.compile and device.type != "cuda":
        _say(f"note: --compile applies on CUDA only; the loops run uncompiled on {device.type}")

    # directions (edits with the tuned generator)
    strengths = args.strength or list(BUILTIN_MODEL.edit_strengths if shipped else (-3.0, 3.0))
    edits = []
    from ..directions import load_direction, sefa

    if args.direction:
        if len(args.strength) not in (0, 1, len(args.direction)):
            raise ConfigError(f"{len(args.direction)} --direction and {len(args.strength)} --strength; "
                              "give one strength per direction, or one for all")
        for index, path in enumerate(args.direction):
            direction = load_direction(path, G=G)
            chosen = strengths if len(args.strength) != len(args.direction) else [args.strength[index]]
            for s in chosen:
                edits.append((_slug(direction.name or Path(path).stem), direction, s))
    elif shipped and "yaw" in _shipped_directions():
        direction = load_direction(_shipped_directions()["yaw"], G=G)  # the built-in model's learned head yaw
        for s in strengths:
            edits.append(("yaw", direction, s))
    else:
        direction = sefa(G, num_components=1).component(0)
        for s in strengths:
            edits.append(("sefa0", direction, s))

    bar = _Bar(args.quiet)
    out.mkdir(parents=True, exist_ok=True)
    save_image(target, out / "input.png")
    result = reconstruct(G, target, inversion=inversion_config, tuning=tuning_config, progress=bar)
    bar.close()
    inversion, tuned, G_tuned = result.inversion, result.tuned, result.generator
    reconstruction = result.reconstruction.cpu()
    save_image(inversion.image, out / "inversion.png")
    save_image(reconstruction, out / "pti.png")
    written_edits = []
    pairs = [(direction, strength) for _, direction, strength in edits]
    tuned_edits = render_edits(G_tuned, inversion.ws, pairs).cpu() if pairs else []
    original_edits = render_edits(G, inversion.ws, pairs).cpu() if pairs else []
    for (name, direction, strength), edited, edited_original in zip(edits, tuned_edits, original_edits):
        edited, edited_original = edited[None], edited_original[None]
        stem = f"edit_{name}_{strength:+g}"
        save_image(edited, out / f"{stem}.png")
        save_image(edited_original, out / f"{stem}_inversion.png")
        written_edits.append({"name": name, "strength": strength, "file": f"{stem}.png",
                              "source": direction.source})

    from ..generators.checkpoints import save_generator

    save_generator(G_tuned, out / "tuned_generator.safetensors", force=True,
                   metadata={"pti_tuned_from": description, "pti_tuning_config": tuning_config.to_dict()})
    save_latent(inversion.ws, out / "pivot.safetensors", space=args.space, overwrite=True)

    metric_kind, _ = _perceptual(args.perceptual, "metric")
    target_cpu = target.cpu()
    metrics = {"lpips_net": metric_kind}
    for label, image in (("inversion", inversion.image), ("pti", reconstruction)):
        metrics[label] = quality_report(image, target_cpu, net=metric_kind, identity=_align_available())
    metrics.update({"inversion_seconds": round(result.seconds[0], 3), "tuning_seconds": round(result.seconds[1], 3),
                    "total_seconds": round(time.time() - started, 3), "tuning_steps_run": tuned.steps_run[0],
                    "device": str(device)})
    _write_json(out / "metrics.json", metrics)
    config = {"generator": description, "image": args.image or "skimage.data.astronaut", "align": args.align,
              "demo": demo, "inversion": inversion_config.to_dict(), "tuning": tuning_config.to_dict(),
              "edits": written_edits}
    _write_json(out / "config.json", config)
    def summary(m: dict) -> str:
        identity = f" identity {m['identity_distance']:.3f}" if "identity_distance" in m else ""
        return f"PSNR {m['psnr']:.2f} dB{identity} detail error {m['detail_error']:.3f} LPIPS {m['lpips']:.4f}"

    _say(f"inversion {summary(metrics['inversion'])} -> PTI {summary(metrics['pti'])} ({metric_kind})")
    _say(f"wrote {out}/: input.png inversion.png pti.png {len(written_edits) * 2} edit images "
         f"tuned_generator.safetensors pivot.safetensors metrics.json config.json "
         f"in {metrics['total_seconds']:.1f} s")
    if demo:
        _say("this was the embedded demo; for real face edits run: python -m pti_core edit --model ffhq.pkl "
             "--image photo.jpg --align --direction age.pt --out pti_out/me")
    return 0
