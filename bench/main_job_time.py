"""Wall time of the main job and of the no-download workflow on the built-in model, as a new user runs them.

* the README's main job: ``python -m pti_core edit --out DIR --force`` (built-in model, astronaut photo,
  alignment, inversion, pivotal tuning, two edits, metrics), timed from the shell, process start included;
* the no-download workflow (``tests/workflows_api/pti_try_builtin_model.json``) through the pack's node
  classes in one process (the test suite's executor with minimal stand-ins for ComfyUI's core nodes), from
  Load Image to Save Image, on a real photo.

Run on an idle machine (the figure the README states)::

    python bench/main_job_time.py --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PHOTO = REPO.parent / "shared" / "realworld" / "photos" / "grace_hopper.jpg"


def main_job_seconds() -> float:
    with tempfile.TemporaryDirectory() as out:
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "pti_core", "edit", "--out", out, "--force", "--quiet"], cwd=REPO,
                       check=True, capture_output=True)
        return time.perf_counter() - started


def workflow_seconds() -> float:
    sys.path.insert(0, str(REPO / "tests"))
    import test_workflows as W  # noqa: PLC0415
    from helpers import load_pack  # noqa: PLC0415
    from PIL import Image  # noqa: PLC0415

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        os.environ["PTI_MODELS_DIR"] = str(tmp / "empty_models")
        inputs = tmp / "input"
        inputs.mkdir()
        Image.open(PHOTO).convert("RGB").save(inputs / "photo.png")
        prompt = W.load(W.API_DIR / "pti_try_builtin_model.json")
        core = W.CoreStandIns(inputs, tmp / "output")
        started = time.perf_counter()
        W.execute(load_pack(), prompt, core)
        return time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    rows = {"main_job_s": [round(main_job_seconds(), 1) for _ in range(args.repeats)],
            "no_download_workflow_s": [round(workflow_seconds(), 1) for _ in range(args.repeats)],
            "cpus": os.cpu_count()}
    print(json.dumps(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
