"""``python -m pti_core directions discover|learn|show|known``: make and inspect editing directions.

* ``discover --model G --method sefa|ganspace --out d.safetensors``: directions from the model, no data.
* ``learn --model G --labeller yaw|mouth_open --out d.safetensors``: an InterFaceGAN-style boundary
  fitted to samples of G labelled from their face landmarks (needs the align extra: dlib); ridge
  regression on all samples by default, strength 1 = one standard deviation of the samples along it.
* ``show FILE``: what a direction file holds; ``known``: the well-known public files (manifest).
"""

from __future__ import annotations

import argparse
import json


def _layers(value: str):
    """Parses ``all|coarse|middle|fine`` or ``START:END`` (END empty = to the last row)."""
    from ..errors import ConfigError

    if ":" not in value:
        return None if value == "all" else value
    start, _, end = value.partition(":")
    try:
        return int(start or 0), (int(end) if end else None)
    except ValueError:
        raise ConfigError(f"--layers must be all, coarse, middle, fine or START:END, got {value!r}") from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds the ``directions`` subcommands to ``parser``."""
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")

    discover = sub.add_parser("discover", help="SeFa or GANSpace directions of a generator (no data)")
    discover.add_argument("--model", required=True, help="generator file (.pkl, .pt, .safetensors)")
    discover.add_argument("--config", default=None, help="init_kwargs JSON (file or inline) for bare state dicts")
    discover.add_argument("--method", choices=("sefa", "ganspace"), default="sefa")
    discover.add_argument("--layers", default="all",
                          help="all, coarse, middle, fine or START:END ws rows (SeFa: whose affines; "
                               "both: the default edit rows)")
    discover.add_argument("--num-components", type=int, default=None, help="keep the first K (default all)")
    discover.add_argument("--num-samples", type=int, default=10_000, help="GANSpace: sampled w")
    discover.add_argument("--seed", type=int, default=0, help="GANSpace: seed of the samples")
    discover.add_argument("--out", required=True, help="output .safetensors (the component set)")
    discover.add_argument("--force", action="store_true", help="overwrite --out if it exists")

    learn = sub.add_parser("learn", help="fit a boundary to landmark-labelled samples of a generator")
    learn.add_argument("--model", required=True, help="generator file")
    learn.add_argument("--config", default=None, help="init_kwargs JSON (file or inline) for bare state dicts")
    learn.add_argument("--labeller", default="yaw", help="label from landmarks: yaw or mouth_open")
    learn.add_argument("--num-samples", type=int, default=500, help="labelled samples to draw")
    learn.add_argument("--seed", type=int, default=0)
    learn.add_argument("--truncation-psi", type=float, default=1.0)
    learn.add_argument("--method", choices=("ridge", "logistic"), default="ridge",
                       help="ridge: regression of the scores on all samples; logistic: InterFaceGAN's "
                            "boundary between the top and bottom --score-fraction")
    learn.add_argument("--ridge-alpha", type=float, default=0.5, help="ridge penalty per sample")
    learn.add_argument("--score-fraction", type=float, default=0.2,
                       help="logistic: top/bottom fraction of the scores used as positives/negatives")
    learn.add_argument("--unit", choices=("std", "unit"), default="std",
                       help="strength 1 = one std of the samples along the direction (std) or a W distance of 1")
    learn.add_argument("--jitter", type=int, default=0,
                       help="average the landmarks over 27 boxes shifted/grown by this many pixels (0: off)")
    learn.add_argument("--no-mirror", action="store_true",
                       help="do not average each label with its mirror image's")
    learn.add_argument("--condition", action="append", default=[], metavar="FILE",
                       help="a direction file whose direction is projected out of the result (repeatable)")
    learn.add_argument("--name", default=None, help="direction name (default: the labeller)")
    learn.add_argument("--out", required=True, help="output .safetensors")
    learn.add_argument("--force", action="store_true", help="overwrite --out if it exists")

    show = sub.add_parser("show", help="describe a direction file")
    show.add_argument("file")
    show.add_argument("--json", action="store_true", help="print one JSON object")

    sub.add_parser("known", help="list the well-known public direction files (directions/manifest.json)")


def _check_out(path: str, force: bool) -> None:
    from pathlib import Path

    from ..errors import ConfigError, OutputExistsError

    if not path.lower().endswith(".safetensors"):
        raise ConfigError(f"--out must end in .safetensors, got {path!r}")
    if Path(path).exists() and not force:
        raise OutputExistsError(f"{path} exists; pass --force to overwrite it")


def run(args: argparse.Namespace) -> int:
    """Runs the chosen action; returns 0 on success (errors raise PTIError -> exit 2)."""
    from .. import directions as D

    if args.action == "known":
        for entry in D.manifest_entries():
            print(f"{entry['file']:40s} {entry['name']:32s} {entry['model']}  {entry['url']}")
        return 0
    if args.action == "show":
        direction = D.load_direction(args.file)
        facts = {"name": direction.name, "kind": direction.kind, "space": direction.space,
                 "shape": None if direction.vectors is None else list(direction.vectors.shape),
                 "model": direction.model, "source": direction.source, "layers": direction.layers,
                 "strength_range": direction.strength_range, "has_std": direction.std is not None,
                 "sha256": direction.info.get("sha256")}
        if args.json:
            print(json.dumps(facts, sort_keys=True))
        else:
            print(direction.describe())
            for key, value in facts.items():
                print(f"{key}: {value}")
        return 0

    from ..generators.checkpoints import load_generator
    from .info import parse_config

    _check_out(args.out, args.force)
    G = load_generator(args.model, config=parse_config(args.config))
    if args.action == "discover":
        layers = _layers(args.layers)
        if args.method == "sefa":
            found = D.sefa(G, layers=layers, num_components=args.num_components)
        else:
            found = D.ganspace(G, num_samples=args.num_samples, num_components=args.num_components,
                               seed=args.seed, layers=layers)
    else:
        from dataclasses import replace
        from pathlib import Path

        from .. import labels

        conditions = [D.load_direction(path) for path in args.condition]        # before the long labelling
        samples = labels.label_samples(G, args.num_samples, labeller=args.labeller, seed=args.seed,
                                       truncation_psi=args.truncation_psi, mirror=not args.no_mirror,
                                       jitter=args.jitter)
        found = D.direction_from_labels(samples.ws, samples.labels, method=args.method,
                                        score_fraction=args.score_fraction, ridge_alpha=args.ridge_alpha,
                                        unit=args.unit, condition=conditions, name=args.name or args.labeller)
        found = replace(found, source=(f"learn(labeller={args.labeller}, n={args.num_samples}, seed={args.seed}, "
                                       f"method={args.method}, mirror={not args.no_mirror}, jitter={args.jitter}"
                                       + "".join(f", condition={Path(c).name}" for c in args.condition) + ")"),
                        model_hash=D.model_fingerprint(G))
        info = found.info
        fit = (f"training accuracy {info['accuracy']:.3f} on {info['num_positive']} + {info['num_negative']} samples"
               if args.method == "logistic" else
               f"correlation of the fit with the labels {info['correlation']:.3f} on {info['num_samples']} samples")
        scale = ("strength 1 = one std of the samples along it = "
                 if info["unit"] == "std" else "strength 1 = distance 1 in W; one std of the samples = ")
        print(f"{fit}; label std {info['label_std']:.4f}; {scale}{info['projection_std']:.3f}")
        if "condition" in info:
            print(f"conditioned on {', '.join(info['condition'])}: correlation of the samples' projection with "
                  f"the labels {info['label_correlation']:.3f}")
    path = D.save_direction(found, args.out, overwrite=args.force)
    print(f"{found.describe()} -> {path}")
    return 0
