"""Benchmark: StyleGAN2 generator forward and forward+backward time per image.

Random weights with FFHQ's real channel configuration (channel_base 32768, channel_max 512,
8 mapping layers, z/w 512, ``skip`` architecture; at 1024 px this is the official
``stylegan2-ffhq-config-f`` network, 18 ws) at each requested resolution.

* forward: ``G.synthesis(G.mapping(z))`` under ``torch.no_grad()`` (noise_mode ``const``), as
  rendering an edit does.
* forward+backward: the same with autograd, ``loss = img.square().mean()``, ``loss.backward()``
  into every generator parameter and ``ws`` (what one pivotal-tuning / projection step costs,
  without the perceptual loss).

Both modulated-convolution paths are timed: ``fused`` (grouped convolution; NVIDIA's eval
default) and ``unfused`` (per-sample scaling around one shared convolution), so each run carries
its own baseline. Reports the median over ``--repeats`` after one warm-up.

With ``--load`` it times reading generator files instead (see :func:`bench_loading`).

Usage:
    python bench/generator.py --threads 1 --resolutions 64 256 --repeats 3
    python bench/generator.py --load --threads 1 --resolutions 1024
    python bench/generator.py --device cuda --batch 8 --resolutions 64 256 1024
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from pti_core.generators.stylegan2 import Generator  # noqa: E402


def ffhq_generator(resolution: int) -> Generator:
    """Returns a random StyleGAN2 with FFHQ config-f channels at ``resolution`` (eval mode)."""
    torch.manual_seed(0)
    G = Generator(z_dim=512, c_dim=0, w_dim=512, img_resolution=resolution, img_channels=3,
                  mapping_kwargs={"num_layers": 8},
                  synthesis_kwargs={"channel_base": 32768, "channel_max": 512, "architecture": "skip",
                                    "conv_clamp": 256})
    return G.eval()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_call(fn, *, repeats: int, device: torch.device) -> float:
    """Returns the median wall time (s) of ``fn()`` over ``repeats`` runs after one warm-up."""
    fn()
    _sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def bench_resolution(resolution: int, *, batch: int, repeats: int, device: torch.device) -> list[dict]:
    """Returns one result row per (modconv path, pass) at ``resolution``."""
    G = ffhq_generator(resolution).to(device)
    z = torch.randn(batch, G.z_dim, generator=torch.Generator().manual_seed(1)).to(device)
    params = sum(p.numel() for p in G.parameters())
    rows = []
    for fused in (True, False):
        def forward():
            with torch.no_grad():
                return G.synthesis(G.mapping(z), noise_mode="const", fused_modconv=fused)

        def forward_backward():
            G.zero_grad(set_to_none=True)
            ws = G.mapping(z).detach().requires_grad_(True)
            img = G.synthesis(ws, noise_mode="const", fused_modconv=fused)
            img.square().mean().backward()

        for name, fn in (("forward", forward), ("forward+backward", forward_backward)):
            seconds = time_call(fn, repeats=repeats, device=device)
            rows.append({"resolution": resolution, "num_ws": G.num_ws, "params": params,
                         "modconv": "fused" if fused else "unfused", "pass": name, "batch": batch,
                         "seconds_per_batch": seconds, "seconds_per_image": seconds / batch})
    return rows


def bench_loading(resolution: int, *, repeats: int) -> list[dict]:
    """Times loading one generator from each file format (ours) against ``torch.load(weights_only=True)``.

    Writes, in a temporary folder, the FFHQ-config generator as an NVIDIA persistence pickle
    (``torch.storage._load_from_bytes`` blobs, written by the test writer), as this pack's
    safetensors, and a plain ``torch.save`` of its state dict (the baseline: torch's own
    weights-only loader on the simplest file).
    """
    import tempfile

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from _checkpoint_writers import write_nvidia_pickle

    from pti_core.generators.checkpoints import load_generator, read_checkpoint, save_generator

    G = ffhq_generator(resolution)
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        pkl, st, pt = Path(folder) / "g.pkl", Path(folder) / "g.safetensors", Path(folder) / "g.pt"
        write_nvidia_pickle(G, pkl)
        save_generator(G, st)
        torch.save(G.state_dict(), pt)
        cases = [("nvidia-pkl read_checkpoint", lambda: read_checkpoint(pkl)),
                 ("nvidia-pkl load_generator", lambda: load_generator(pkl)),
                 ("pti-safetensors load_generator", lambda: load_generator(st)),
                 ("baseline torch.load(weights_only=True) state dict", lambda: torch.load(pt, weights_only=True))]
        for name, fn in cases:
            seconds = time_call(fn, repeats=repeats, device=torch.device("cpu"))
            rows.append({"resolution": resolution, "what": name, "file_mb": round(
                (pkl if "pkl" in name else st if "safetensors" in name else pt).stat().st_size / 1e6, 1),
                "seconds": seconds})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resolutions", type=int, nargs="+", default=[64, 256, 1024])
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path, default=None, help="also write the rows to this JSON file")
    parser.add_argument("--load", action="store_true",
                        help="time loading files (NVIDIA pickle, safetensors, torch.load baseline) instead")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if args.load:
        print(f"# torch {torch.__version__}, loading on cpu, threads {torch.get_num_threads()}, "
              f"median of {args.repeats}")
        print("| resolution | file | MB | s |")
        print("|---|---|---|---|")
        rows = []
        for resolution in args.resolutions:
            for row in bench_loading(resolution, repeats=args.repeats):
                rows.append(row)
                print(f"| {row['resolution']} | {row['what']} | {row['file_mb']} | {row['seconds']:.2f} |", flush=True)
        if args.json:
            args.json.write_text(json.dumps(rows, indent=1))
        return 0
    print(f"# torch {torch.__version__}, {platform.processor() or platform.machine()}, device {device}, "
          f"threads {torch.get_num_threads()}, batch {args.batch}, median of {args.repeats}")
    print("| resolution | num_ws | params | modconv | pass | s / image |")
    print("|---|---|---|---|---|---|")
    rows = []
    for resolution in args.resolutions:
        for row in bench_resolution(resolution, batch=args.batch, repeats=args.repeats, device=device):
            rows.append(row)
            print(f"| {row['resolution']} | {row['num_ws']} | {row['params'] / 1e6:.1f} M | {row['modconv']} | "
                  f"{row['pass']} | {row['seconds_per_image']:.3f} |", flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
