"""Command line: ``python -m pti_core <command> ...`` (also installed as ``pti``).

The command line only parses arguments and calls the library. A :class:`pti_core.errors.PTIError`
becomes one line on stderr and exit code 2; Ctrl-C exits with 130.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# command -> (module under pti_core.cli, one-line help)
COMMANDS = {
    "info": (".cli.info", "describe a generator file (format, architecture, resolution, num_ws, sha256)"),
    "convert": (".cli.convert", "convert a generator file to the pack's safetensors format"),
    "edit": (".cli.edit", "the main job: align, invert, pivotal-tune and edit a photo"),
    "directions": (".cli.directions", "discover (SeFa/GANSpace) or learn editing directions"),
    "distill": (".cli.distill", "distill a small StyleGAN2 from a teacher generator"),
    "styleclip-stats": (".cli.styleclip_stats", "compute StyleCLIP global-direction statistics"),
}


def _load(command: str):
    module_name, _ = COMMANDS[command]
    package = __package__ or "pti_core"
    return importlib.import_module(module_name, package)


def build_parser(available: dict[str, object]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m pti_core", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, module in available.items():
        command_parser = sub.add_parser(name, help=COMMANDS[name][1], description=COMMANDS[name][1])
        module.add_arguments(command_parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    from .errors import PTIError

    argv = sys.argv[1:] if argv is None else list(argv)
    # Import only the chosen command's module (some pull in heavy packages); all of them for --help.
    wanted = [argv[0]] if argv and argv[0] in COMMANDS else list(COMMANDS)
    available = {}
    for name in wanted:
        try:
            available[name] = _load(name)
        except ModuleNotFoundError as error:
            if error.name and error.name.startswith((__package__ or "pti_core") + ".cli."):
                continue  # command not part of this build
            raise
    parser = build_parser(available)
    args = parser.parse_args(argv)
    try:
        return int(available[args.command].run(args) or 0)
    except PTIError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; no output was left half-written", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
