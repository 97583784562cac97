"""Resident memory over consecutive Invert + Pivotal Tune runs through the node classes (one process).

ComfyUI keeps one Python process alive for days; a node that leaks (optimiser state, graphs kept
alive by previews, cached copies of the generator) grows it run after run. This script runs
``PTI_Invert`` then ``PTI_PivotalTune`` N times under ``torch.inference_mode()`` (as ComfyUI does)
on a tiny generator loaded through ``PTI_LoadStyleGAN``, each run on a different target and seed,
and prints the RSS after each run. Acceptance (issue 4): RSS growth after the 2nd run < 5 %.

Baseline in the same run: the RSS after the first run (perceptual network loaded, allocator warm)
and the RSS before any run.

Usage:
    nice -n 10 .venv/bin/python bench/node_memory.py [--runs 20] [--steps 10] [--resolution 32]
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import tempfile
import time
from pathlib import Path

import psutil
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from helpers import load_pack, tiny_generator  # noqa: E402


def rss_mib() -> float:
    """Returns this process's resident set size in MiB (after a garbage collection)."""
    gc.collect()
    return psutil.Process().memory_info().rss / 2**20


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--steps", type=int, default=10, help="steps of each Invert and each Pivotal Tune")
    parser.add_argument("--resolution", type=int, default=32)
    parser.add_argument("--perceptual", default="stlpips-alex", help="download-free backbone")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from pti_core import save_generator

    nodes = load_pack().NODE_CLASS_MAPPINGS
    models = Path(tempfile.mkdtemp(prefix="pti_node_memory_"))
    (models / "stylegan").mkdir()
    save_generator(tiny_generator(0, resolution=args.resolution), models / "stylegan" / "tiny.safetensors")
    os.environ["PTI_MODELS_DIR"] = str(models)
    teacher = tiny_generator(9, resolution=args.resolution)

    with torch.inference_mode():
        (G,) = nodes["PTI_LoadStyleGAN"]().execute("tiny.safetensors")
    before = rss_mib()
    print(f"torch {torch.__version__}, {args.threads} thread(s), {args.resolution} px tiny generator, "
          f"{args.steps}+{args.steps} steps, perceptual {args.perceptual}")
    print(f"RSS before any run: {before:.1f} MiB")
    history = []
    for run in range(1, args.runs + 1):
        start = time.perf_counter()
        with torch.inference_mode():
            target, _ = nodes["PTI_Generate"]().execute(teacher, run, 1, 1.0, "const")
            latent, _ = nodes["PTI_Invert"]().execute(G, target, "w", args.steps, 0.01, run, args.perceptual)
            tuned, image = nodes["PTI_PivotalTune"]().execute(G, target, latent, args.steps, 3e-4, 0.0, "off",
                                                              "per-image", run, args.perceptual)
        del target, latent, tuned, image
        history.append(rss_mib())
        print(f"run {run:2d}: RSS {history[-1]:.1f} MiB  ({time.perf_counter() - start:.1f} s)")
    if len(history) >= 2:
        growth = (max(history[1:]) - history[1]) / history[1] * 100
        final = (history[-1] - history[1]) / history[1] * 100
        print(f"after run 2: {history[1]:.1f} MiB; max later {max(history[1:]):.1f} MiB (+{growth:.2f} %); "
              f"last {history[-1]:.1f} MiB ({final:+.2f} %); first run {history[0]:.1f} MiB; "
              f"before any run {before:.1f} MiB")
        print("PASS" if growth < 5 else "FAIL", "(acceptance: growth after the 2nd run < 5 %)")
        return 0 if growth < 5 else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
