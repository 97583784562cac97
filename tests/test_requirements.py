"""What ComfyUI-Manager installs (requirements.txt) is enough for every shipped workflow.

Each workflow runs (few steps) in a fresh interpreter in which every installed distribution that
neither requirements.txt nor ComfyUI's torch build brings (directly or through their dependencies)
cannot be imported, nor found with ``importlib.util.find_spec`` (how the pack locates weight files).
A node that needs a package missing from requirements.txt then fails the run.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from importlib import metadata

import pytest

from helpers import REPO, realworld

COMFYUI_BRINGS = ("torch", "torchvision", "torchaudio")  # ComfyUI's own environment: never in requirements.txt
# Workflows that need a user's file (an FFHQ model, CLIP weights, an upscaler) run on tiny stand-ins in
# test_workflows.py; the no-download one runs here as shipped (its real model, direction and template).
NO_DOWNLOAD_WORKFLOWS = ("pti_try_builtin_model",)
PACK_DISTRIBUTION = re.search(r'^name = "([^"]+)"', (REPO / "pyproject.toml").read_text(), re.M).group(1)


def _name(requirement: str) -> str:
    return re.split(r"[\s<>=!~;\[]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def requirement_names() -> list[str]:
    lines = (REPO / "requirements.txt").read_text().splitlines()
    return [_name(line) for line in lines if line.strip() and not line.lstrip().startswith("#")]


def allowed_distributions(roots) -> set[str]:
    """Returns ``roots`` and everything they require (no extras), as installed here."""
    seen, todo = set(), [_name(r) for r in roots]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue
        todo += [_name(r) for r in requires if "extra ==" not in r]
    return seen


def blocked_modules(allowed: set[str]) -> list[str]:
    """Returns the top-level module names that only distributions outside ``allowed`` provide."""
    providers = metadata.packages_distributions()
    blocked = []
    for module, dists in providers.items():
        if module.startswith("_") and module != "_pytest":
            continue
        if all(_name(d) not in allowed for d in dists) and _name(dists[0]) != PACK_DISTRIBUTION:
            blocked.append(module)
    return sorted(blocked)


RUNNER = r"""
import importlib.abc, json, sys
blocked = set(json.loads(sys.argv[1]))
class Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in blocked:
            raise ModuleNotFoundError(f"{name} is not installed by requirements.txt", name=name)
        return None
sys.path.insert(0, sys.argv[2])
import test_workflows as W, helpers                          # pytest and friends load before the blocker
for module in [m for m in sys.modules if m.split(".")[0] in blocked]:
    del sys.modules[module]
sys.meta_path.insert(0, Blocker())
from pathlib import Path
import os, tempfile
tmp = Path(tempfile.mkdtemp())
os.environ["PTI_MODELS_DIR"] = str(tmp / "empty_models")
inputs = tmp / "input"; inputs.mkdir()
from PIL import Image
Image.open(sys.argv[4]).convert("RGB").save(inputs / "photo.png")
prompt = W.load(W.API_DIR / (sys.argv[3] + ".json"))
for node in prompt.values():
    if "steps" in node["inputs"]:
        node["inputs"]["steps"] = 2
core = W.CoreStandIns(inputs, tmp / "output")
W.execute(helpers.load_pack(), prompt, core)
print("RAN", len(core.saved))
"""


def test_requirements_never_list_comfyuis_torch_and_never_pin_numpy():
    names = requirement_names()
    assert not set(names) & set(COMFYUI_BRINGS)
    assert not any(re.match(r"\s*numpy\s*[=<>~]", line) for line in (REPO / "requirements.txt").read_text().splitlines())


def test_blocker_sees_test_only_packages():
    """The check below can fail: test-only packages (pytest, scikit-image) are blocked, dlib is not."""
    blocked = blocked_modules(allowed_distributions(requirement_names() + list(COMFYUI_BRINGS)))
    assert "pytest" in blocked and "skimage" in blocked
    assert "dlib" not in blocked and "safetensors" not in blocked
    blocked_without_stlpips = blocked_modules(allowed_distributions(
        [n for n in requirement_names() if n != "stlpips-pytorch"] + list(COMFYUI_BRINGS)))
    assert "stlpips_pytorch" in blocked_without_stlpips


def _run(workflow: str, requirements: list[str]) -> subprocess.CompletedProcess:
    blocked = blocked_modules(allowed_distributions(requirements + list(COMFYUI_BRINGS)))
    photo = realworld("photos", "astronaut.png")
    return subprocess.run([sys.executable, "-c", RUNNER, json.dumps(blocked), str(REPO / "tests"), workflow,
                           str(photo)], capture_output=True, text=True, cwd=REPO, timeout=600)


@pytest.mark.parametrize("workflow", NO_DOWNLOAD_WORKFLOWS)
def test_no_download_workflow_runs_with_requirements_txt_only(workflow):
    result = _run(workflow, requirement_names())
    assert result.returncode == 0 and "RAN 1" in result.stdout, result.stderr[-3000:]


def test_a_missing_requirement_fails_the_run():
    """Without stlpips-pytorch in requirements.txt the no-download workflow cannot run (the check bites)."""
    result = _run(NO_DOWNLOAD_WORKFLOWS[0], [n for n in requirement_names() if n != "stlpips-pytorch"])
    assert result.returncode != 0
    assert "stlpips" in result.stderr.lower()
