"""oneDNN 3x3 convolution, NCHW vs NHWC (channels_last): the measurement behind the generator's layout choice.

Usage: ``python bench/conv_layout.py [--threads 2] [--dtype bf16|fp32]``

Times, for the feature-map sizes of bench/pti.py's 256 px generator, one 3x3 convolution forward and
its backward (input and weight gradients, as in pivotal tuning) in both memory layouts, best of 10
after 3 warm-ups, in the same run. ``pti_core._runtime.GENERATOR_CHANNELS_LAST_FROM`` is set from this.
"""

from __future__ import annotations

import argparse
import sys
import time

import torch
import torch.nn.functional as F


def best_ms(fn, repeats: int = 10) -> float:
    for _ in range(3):
        fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best * 1e3


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--dtype", choices=["bf16", "fp32"], default="bf16")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32
    print(f"# bench/conv_layout.py  torch {torch.__version__}  threads {args.threads}  {args.dtype}")
    print("| channels x size | layout | forward ms | backward (input + weight) ms |")
    print("| --- | --- | --- | --- |")
    for channels, size in ((128, 32), (128, 64), (128, 128), (64, 256)):
        for layout in ("NCHW", "NHWC"):
            x = torch.randn(1, channels, size, size, dtype=dtype)
            w = torch.randn(channels, channels, 3, 3, dtype=dtype)
            if layout == "NHWC":
                x, w = x.contiguous(memory_format=torch.channels_last), w.contiguous(memory_format=torch.channels_last)
            grad = F.conv2d(x, w, padding=1)
            forward = best_ms(lambda: F.conv2d(x, w, padding=1))
            backward = best_ms(lambda: torch.ops.aten.convolution_backward(
                grad, x, w, None, [1, 1], [1, 1], [1, 1], False, [0, 0], 1, [True, True, False]))
            print(f"| {channels} x {size}^2 | {layout} | {forward:.1f} | {backward:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
