"""``python -m pti_core info FILE``: describe a generator file without building anything heavy."""

from __future__ import annotations

import argparse
import json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds the ``info`` arguments to ``parser``."""
    parser.add_argument("file", help="generator file (.pkl, .pt or .safetensors)")
    parser.add_argument("--config", default=None,
                        help="JSON file (or inline JSON object) with init_kwargs, for bare state dicts")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text lines")


def parse_config(value: str | None):
    """Returns ``None``, a dict (inline JSON starting with ``{``) or the path string, for ``--config``."""
    if value is None:
        return None
    if value.lstrip().startswith("{"):
        from ..errors import ConfigError

        try:
            return json.loads(value)
        except json.JSONDecodeError as error:
            raise ConfigError(f"--config is not valid JSON ({error.msg}); pass a JSON object or a file path") from None
    return value


def run(args: argparse.Namespace) -> int:
    """Prints the file's format, architecture, sizes, parameter count and sha256; returns 0."""
    from ..generators.checkpoints import inspect_checkpoint

    info = inspect_checkpoint(args.file, config=parse_config(args.config))
    if args.json:
        print(json.dumps(info.to_dict(), sort_keys=True))
    else:
        for key in ("path", "format", "architecture", "resolution", "num_ws", "w_dim", "z_dim", "c_dim",
                    "params", "sha256"):
            print(f"{key}: {getattr(info, key)}")
    return 0
