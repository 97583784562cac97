"""``python -m pti_core convert IN OUT.safetensors``: rewrite any supported generator file as safetensors."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from .info import parse_config


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds the ``convert`` arguments to ``parser``."""
    parser.add_argument("input", help="generator file (.pkl, .pt or .safetensors)")
    parser.add_argument("output", help="destination .safetensors file")
    parser.add_argument("--force", action="store_true", help="overwrite OUT if it exists (never the input)")
    parser.add_argument("--config", default=None,
                        help="JSON file (or inline JSON object) with init_kwargs, for bare state dicts")


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return a.resolve() == b.resolve()


def run(args: argparse.Namespace) -> int:
    """Loads ``input`` safely, writes ``output`` atomically and prints one summary line; returns 0."""
    from ..errors import ConfigError, OutputExistsError
    from ..generators.checkpoints import file_sha256, instantiate, read_checkpoint, save_generator

    source, target = Path(args.input), Path(args.output)
    if target.suffix != ".safetensors":
        raise ConfigError(f"{target}: the output must end in .safetensors")
    if target.exists() and _same_file(source, target):
        raise OutputExistsError(f"{target}: is the input file; the input is never overwritten, pick another name")
    if target.exists() and not args.force:
        raise OutputExistsError(f"{target}: already exists; pass --force to overwrite")
    checkpoint = read_checkpoint(source, config=parse_config(args.config))
    G = instantiate(checkpoint, source=str(source))
    metadata = {"source_format": checkpoint.format, "source_name": source.name,
                "source_sha256": file_sha256(source)}
    save_generator(G, target, force=args.force, metadata=metadata)
    print(f"wrote {target} ({checkpoint.architecture}, {G.img_resolution} px, num_ws {G.num_ws}, "
          f"from {checkpoint.format})")
    return 0
