"""Benchmark: one-row matrix products (the affine layers w -> styles) in float32 vs bfloat16 on CPU.

Usage: ``python bench/small_matmul.py [--threads 2] [--repeats 300]``

The affine layer of every StyleGAN2/3 synthesis layer maps one w row per image to that layer's
styles. Under a bf16 autocast these products would run in bf16; ``FullyConnectedLayer`` keeps them
in the weights' precision instead. This prints, for the shapes of the benchmark generators
(w_dim 64 and 512; 128 or 512 channels), the forward + backward time of ``x @ W.T + b`` (gradients
for W, b and x, as in tuning) in both types: the float32 path is the one the library takes, the
bf16 one is what autocast would do (baseline, same run).
"""

from __future__ import annotations

import argparse
import time

import torch


def time_affine(rows: int, w_dim: int, channels: int, dtype: torch.dtype, repeats: int) -> float:
    """Returns the median seconds of one forward + backward of a ``rows`` x ``w_dim`` affine in ``dtype``."""
    generator = torch.Generator().manual_seed(0)
    weight = torch.randn(channels, w_dim, generator=generator).to(dtype).requires_grad_(True)
    bias = torch.randn(channels, generator=generator).to(dtype).requires_grad_(True)
    x = torch.randn(rows, w_dim, generator=generator).to(dtype).requires_grad_(True)
    grad = torch.randn(rows, channels, generator=generator).to(dtype)
    times = []
    for i in range(repeats + 20):
        start = time.perf_counter()
        torch.addmm(bias, x, weight.t()).backward(grad)
        times.append(time.perf_counter() - start)
    times = sorted(times[20:])
    return times[len(times) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=300)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} threads; affine x @ W.T + b, forward + backward, median")
    print("| rows x w_dim -> channels | float32 (library) us | bfloat16 (autocast) us | bf16 / fp32 |")
    print("| --- | --- | --- | --- |")
    for rows, w_dim, channels in [(1, 64, 128), (1, 512, 128), (1, 512, 512), (4, 512, 512)]:
        fp32 = time_affine(rows, w_dim, channels, torch.float32, args.repeats)
        bf16 = time_affine(rows, w_dim, channels, torch.bfloat16, args.repeats)
        print(f"| {rows} x {w_dim} -> {channels} | {fp32 * 1e6:.1f} | {bf16 * 1e6:.1f} | {bf16 / fp32:.1f}x |")


if __name__ == "__main__":
    main()
