"""StyleGAN3 synthesis speed: filtered leaky ReLU ``impl="fast"`` (polyphase/strided) vs ``"ref"``.

Random 256 px StyleGAN3-T and -R generators (channel_base=4096, channel_max=64), batch 1,
float32 on CPU, one thread. Times the forward pass (no grad) and forward + backward (what
inversion and pivotal tuning run), median of ``--repeats`` runs after one warm-up, and the largest
|fast - ref| image difference.

    .venv/bin/python bench/bench_stylegan3.py [--resolution 256] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from pti_core.generators.stylegan3 import Generator


def _time(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resolution", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    for config, extra in (("T", {}), ("R", {"conv_kernel": 1, "use_radial_filters": True})):
        torch.manual_seed(0)
        G = Generator(z_dim=64, c_dim=0, w_dim=64, img_resolution=args.resolution, img_channels=3,
                      channel_base=4096, channel_max=64, **extra).eval()
        ws = G.mapping(torch.randn(1, 64))
        with torch.no_grad():
            diff = (G.synthesis(ws, impl="fast") - G.synthesis(ws, impl="ref")).abs().max().item()
        row = [f"{config}-{args.resolution}"]
        for impl in ("ref", "fast"):
            def forward():
                with torch.no_grad():
                    G.synthesis(ws, impl=impl)

            def forward_backward():
                w = ws.detach().requires_grad_(True)
                G.synthesis(w, impl=impl).square().mean().backward()

            row.append(f"{impl}: fwd {_time(forward, args.repeats):.3f} s, "
                       f"fwd+bwd {_time(forward_backward, args.repeats):.3f} s")
        row.append(f"max|fast-ref| {diff:.2e}")
        print(" | ".join(row), flush=True)


if __name__ == "__main__":
    main()
