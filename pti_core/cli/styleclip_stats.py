"""``python -m pti_core styleclip-stats``: StyleCLIP relevance statistics of a generator + CLIP model.

Computes (resumably) the per-channel relevance file that text-driven global directions need, or
converts StyleCLIP's published ``fs3.npy`` + ``S_mean_std`` into the pack's safetensors format
after checking they fit the generator.

Examples:
    python -m pti_core styleclip-stats --model ffhq.pkl --clip ViT-B-32.pt --samples 100 --out stats.safetensors
    python -m pti_core styleclip-stats --model ffhq.pkl --clip ViT-B-32.pt --out stats.safetensors --resume
    python -m pti_core styleclip-stats --model ffhq.pkl --import-published npy/ffhq/fs3.npy --out ffhq.safetensors
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds the ``styleclip-stats`` arguments to ``parser``."""
    parser.add_argument("--model", required=True, help="generator file (.pkl, .pt or .safetensors)")
    parser.add_argument("--clip", default=None, help="CLIP weights (.safetensors, .bin, .pt; OpenAI ViT-B-32.pt)")
    parser.add_argument("--clip-arch", default="auto",
                        help="open_clip architecture name (default auto: open_clip_config.json beside the "
                             "weights, or OpenAI's TorchScript file); e.g. ViT-B-32-quickgelu")
    parser.add_argument("--out", default=None,
                        help="output .safetensors (default: styleclip_<generator>_<clip>.safetensors here)")
    parser.add_argument("--samples", type=int, default=100, help="seeded samples perturbed per channel (100)")
    parser.add_argument("--std-samples", type=int, default=10_000, help="samples for style mean/std (10000)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the samples (0)")
    parser.add_argument("--delta", type=float, default=5.0, help="perturbation in channel std units (5)")
    parser.add_argument("--truncation-psi", type=float, default=0.7, help="truncation of the samples (0.7)")
    parser.add_argument("--batch-size", type=int, default=16, help="images per synthesis call (16)")
    parser.add_argument("--max-channels", type=int, default=None,
                        help="stop after this many channels (the file stays resumable)")
    parser.add_argument("--checkpoint-every", type=int, default=64, help="save every N channels (64)")
    parser.add_argument("--resume", action="store_true", help="continue an incomplete --out file")
    parser.add_argument("--force", action="store_true", help="overwrite an existing --out file")
    parser.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    parser.add_argument("--import-published", metavar="FS3_NPY", default=None,
                        help="convert StyleCLIP's fs3.npy (+ S_mean_std beside it) instead of computing")
    parser.add_argument("--mean-std", default=None, help="StyleCLIP S_mean_std file (default: beside fs3.npy)")


def run(args: argparse.Namespace) -> int:
    """Computes or converts the statistics; returns 0 (complete) or 3 (stopped early, resumable)."""
    import torch

    from .. import styleclip
    from ..errors import ConfigError, OutputExistsError
    from ..generators.checkpoints import load_generator

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    G = load_generator(args.model, device=device).requires_grad_(False)
    if args.import_published:
        if not args.out:
            raise ConfigError("--import-published needs --out FILE.safetensors")
        out = Path(args.out)
        if out.exists() and not args.force:
            raise OutputExistsError(f"{out} exists; pass --force to overwrite it")
        stats = styleclip.load_published_statistics(args.import_published, G, mean_std_path=args.mean_std)
        styleclip.save_statistics(stats, out)
        print(f"wrote {out}: {stats.rows} channels x {stats.relevance.shape[1]} from {args.import_published}")
        return 0
    if not args.clip:
        raise ConfigError("--clip FILE is required to compute statistics (or use --import-published)")
    from ..clip_models import load_clip

    clip = load_clip(args.clip, architecture=args.clip_arch, device=device)
    out = Path(args.out) if args.out else Path(styleclip.default_statistics_name(G, clip))
    resume = None
    if out.exists():
        if args.resume:
            resume = styleclip.load_statistics(out, G)
            if resume.complete:
                print(f"{out} is already complete ({resume.rows} channels)")
                return 0
            print(f"resuming {out} at channel {resume.channels_done} of {resume.rows}")
        elif not args.force:
            raise OutputExistsError(f"{out} exists; pass --resume to continue it or --force to start over")
    config = styleclip.RelevanceConfig(samples=args.samples, std_samples=args.std_samples, seed=args.seed,
                                       delta=args.delta, truncation_psi=args.truncation_psi,
                                       batch_size=args.batch_size)

    def progress(step: int, total: int, phase: str, preview=None) -> None:
        if step == total or step % 16 == 0:
            print(f"\r{phase}: {step}/{total} channels", end="", file=sys.stderr, flush=True)

    def checkpoint(partial) -> None:
        styleclip.save_statistics(partial, out)

    stats = styleclip.compute_relevance(G, clip, config=config, resume=resume, max_channels=args.max_channels,
                                        checkpoint=checkpoint, checkpoint_every=args.checkpoint_every,
                                        progress=progress)
    print(file=sys.stderr)
    styleclip.save_statistics(stats, out)
    state = "complete" if stats.complete else f"stopped at {stats.channels_done}/{stats.rows}; rerun with --resume"
    print(f"wrote {out} ({state})")
    return 0 if stats.complete else 3
