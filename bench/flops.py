"""Arithmetic floor of one PTI step: FLOPs per inversion and tuning step, against the machine's peak.

Usage: ``python bench/flops.py [--sizes 64 256] [--threads 2]``

Counts the floating-point operations of one step of each loop on bench/pti.py's generators with
``torch.utils.flop_counter.FlopCounterMode`` (convolutions and matrix products, forward and the
backward the loop needs: tuning computes weight and input gradients, inversion input gradients
only), and measures the machine's dense matrix-product rate (4096 x 4096, float32 and bfloat16)
in the same run. FLOPs / peak rate is the time a step cannot go below on this machine, whatever
the implementation; bench/RESULTS.md compares it with the measured steps and the reference.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent))

from pti import build  # noqa: E402

from pti_core.losses import perceptual_model  # noqa: E402
from pti_core.tune import tunable_parameters  # noqa: E402


def step_flops(size: int) -> dict[str, float]:
    """Returns GFLOPs of one tuning step (L2 + LPIPS-alex) and one inversion step (LPIPS-VGG)."""
    G = build(size, torch.device("cpu"))
    ws = G.mapping.w_avg[None, None].repeat(1, G.num_ws, 1)
    target = torch.zeros(1, 3, size, size)
    alex, vgg = perceptual_model("random-alex", "cpu"), perceptual_model("random-vgg", "cpu")
    alex_target, vgg_target = alex.features(target), vgg.features(target, max_size=256)
    G.requires_grad_(False)
    params = [p for _, p in tunable_parameters(G)]
    for p in params:
        p.requires_grad_(True)
    with FlopCounterMode(display=False) as counter:
        image = G.synthesis(ws, noise_mode="const", fused_modconv=False)
        ((image - target).square().mean() + alex.distance_to_features(image, alex_target).sum()).backward()
    tuning = counter.get_total_flops()
    for p in params:
        p.requires_grad_(False)
    w = ws.clone().requires_grad_(True)
    with FlopCounterMode(display=False) as counter:
        image = G.synthesis(w, noise_mode="const", fused_modconv=False)
        vgg.distance_to_features(image, vgg_target, max_size=256).sum().backward()
    inversion = counter.get_total_flops()
    x = target.clone().requires_grad_(True)
    with FlopCounterMode(display=False) as counter:
        vgg.distance_to_features(x, vgg_target, max_size=256).sum().backward()
    return {"tuning": tuning / 1e9, "inversion": inversion / 1e9, "inversion_vgg": counter.get_total_flops() / 1e9}


def peak_gflops(dtype: torch.dtype, n: int = 4096, repeats: int = 6) -> float:
    """Returns the best rate of an n x n x n matrix product in ``dtype`` (GFLOP/s)."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * n ** 3 / best / 1e9


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    peaks = {"bf16": peak_gflops(torch.bfloat16), "fp32": peak_gflops(torch.float32)}
    print(f"# bench/flops.py  torch {torch.__version__}  threads {args.threads}")
    print(f"peak matrix-product rate: bf16 {peaks['bf16']:.0f} GFLOP/s, fp32 {peaks['fp32']:.0f} GFLOP/s")
    print("| size | loop | GFLOP per step | floor at bf16 peak (s) | floor at fp32 peak (s) |")
    print("| --- | --- | --- | --- | --- |")
    for size in args.sizes:
        flops = step_flops(size)
        for loop in ("inversion", "tuning"):
            extra = f" (VGG16 {flops['inversion_vgg']:.1f})" if loop == "inversion" else ""
            print(f"| {size} | {loop} | {flops[loop]:.1f}{extra} | {flops[loop] / peaks['bf16']:.3f} | "
                  f"{flops[loop] / peaks['fp32']:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
