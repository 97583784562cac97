"""Package-level contracts: the public API names, no ComfyUI in pti_core, the CLI entry."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from helpers import REPO


def test_public_functions_stay_functions_after_submodules_load():
    import pti_core
    import pti_core.inversion  # noqa: F401  (a submodule import must not rebind the public name)
    import pti_core.tune  # noqa: F401

    assert callable(pti_core.invert) and pti_core.invert.__module__.endswith("inversion")
    assert callable(pti_core.pivotal_tune) and pti_core.pivotal_tune.__name__ == "pivotal_tune"
    for name in pti_core.__all__:
        assert getattr(pti_core, name) is not None, name


def test_pti_core_never_imports_comfyui():
    banned = {"comfy", "folder_paths", "comfy_api", "comfy_extras", "server", "execution"}
    offenders = []
    for path in (REPO / "pti_core").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            offenders += [f"{path.name}: {n}" for n in names if n.split(".")[0] in banned]
    assert not offenders, offenders


def test_pti_core_uses_only_relative_imports_of_itself():
    """pti_core is also imported as <pack>.pti_core inside ComfyUI; absolute self-imports would load a second copy."""
    offenders = []
    for path in (REPO / "pti_core").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("pti_core"):
                offenders.append(f"{path.relative_to(REPO)}: from {node.module}")
            if isinstance(node, ast.Import):
                offenders += [f"{path.relative_to(REPO)}: import {a.name}" for a in node.names
                              if a.name.startswith("pti_core")]
    assert not offenders, offenders


def test_cli_help_lists_every_command_and_bad_command_fails():
    ok = subprocess.run([sys.executable, "-m", "pti_core", "--help"], capture_output=True, text=True, cwd=REPO)
    assert ok.returncode == 0, ok.stderr
    for command in ("info", "convert", "edit", "directions", "distill", "styleclip-stats"):
        assert command in ok.stdout
    bad = subprocess.run([sys.executable, "-m", "pti_core", "no-such-command"], capture_output=True, text=True,
                         cwd=REPO)
    assert bad.returncode != 0 and "invalid choice" in bad.stderr


def test_registry_fields():
    """What the Comfy Registry reads: a PEP 508 name without the "comfyui" prefix its tools strip, a version,
    the publisher, display name, an icon URL and the ComfyUI versions the pack was checked on."""
    import re
    import tomllib

    data = tomllib.loads((REPO / "pyproject.toml").read_text())
    name = data["project"]["name"]
    assert re.fullmatch(r"[a-z0-9]([a-z0-9._-]*[a-z0-9])?", name) and not name.startswith(("comfyui", "comfy"))
    assert re.fullmatch(r"\d+\.\d+\.\d+", data["project"]["version"])
    comfy = data["tool"]["comfy"]
    assert comfy["PublisherId"] and comfy["DisplayName"]
    assert comfy["Icon"].startswith("https://") and comfy["Icon"].endswith(".png")
    assert (REPO / "docs" / Path(comfy["Icon"]).name).is_file()  # the icon the URL serves is in the repository
    assert comfy["requires-comfyui"] == ">=0.3.64"
