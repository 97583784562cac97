"""Benchmark of PTI's two loops: per-step time, time-to-quality, peak memory; optimised vs naive.

Usage: ``python bench/pti.py [--sizes 64 256] [--steps 8] [--ttq-steps 450 350]
[--threads 2] [--device cpu|cuda]``

For each generator (64 px: the sg2ada_small layout, channels 128..64, 8 mapping layers; 256 px:
FFHQ-like ``skip`` config, w 512, channel_base 16384 capped at 128, i.e. 128 channels up to
128 px and 64 at 256 px, as stylegan2-ada's ``paper256`` with channel_max 128; 1024 px: FFHQ
config-f, CUDA only), seeded random weights:

* per-step time of inversion (perceptual trunk VGG16, as LPIPS-VGG) and tuning (AlexNet, as
  LPIPS-alex), median over steps after a warm-up, for two settings measured in the same run:
  ``naive`` (fp32, fused modulated conv, NCHW, no compile) and ``fast`` (the optimised path:
  the library's automatic modconv choice (on CPU non-fused for inversion, fused for one-image
  tuning), bf16 autocast, channels_last perceptual net and StyleGAN2 blocks from 128 px; on CUDA
  also torch.compile). Both cache the target's features (the library always does).
* time-to-quality on the astronaut photo: the paper's settings (450 + 350 steps, lr 0.01 / 3e-4)
  with the naive loops set the goal (their final reconstruction MSE) and the wall time to beat;
  then the ``fast`` preset (:mod:`pti_core.presets`: 100 inversion steps, tuning lr 3e-3, bf16
  where native, fast loops) runs and the wall time at which its MSE first reaches the goal is
  compared with the paper run's and with the reference code's (issue figures x 450 / 350 steps).

The perceptual trunks are seeded random (``random-vgg`` / ``random-alex``): the ImageNet weights
cannot be downloaded here, and the compute per step is identical. Quality numbers for the
paper defaults with a trained metric come from ``--quality`` (sg2ada_tiny, ST-LPIPS).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pti_core.generators.stylegan2 import Generator  # noqa: E402
from pti_core.imageio import load_image, prepare_target  # noqa: E402
from pti_core.inversion import InversionConfig, invert  # noqa: E402
from pti_core.metrics import lpips_distance, mse  # noqa: E402
from pti_core.presets import preset  # noqa: E402
from pti_core.tune import TuningConfig, pivotal_tune  # noqa: E402

PHOTO = REPO.parent / "shared" / "realworld" / "photos" / "astronaut.png"
CONFIGS = {
    64: {"z_dim": 64, "w_dim": 64, "img_resolution": 64, "img_channels": 3, "c_dim": 0,
         "mapping_kwargs": {"num_layers": 8},
         "synthesis_kwargs": {"channel_base": 4096, "channel_max": 128, "architecture": "skip", "conv_clamp": 256}},
    256: {"z_dim": 512, "w_dim": 512, "img_resolution": 256, "img_channels": 3, "c_dim": 0,
          "mapping_kwargs": {"num_layers": 8},
          "synthesis_kwargs": {"channel_base": 16384, "channel_max": 128, "architecture": "skip", "conv_clamp": 256}},
    1024: {"z_dim": 512, "w_dim": 512, "img_resolution": 1024, "img_channels": 3, "c_dim": 0,
           "mapping_kwargs": {"num_layers": 8},
           "synthesis_kwargs": {"channel_base": 32768, "channel_max": 512, "architecture": "skip", "conv_clamp": 256}},
}
REFERENCE = {64: (0.090, 0.062), 256: (0.652, 0.230)}  # NVIDIA/PTI code, 2 threads, this CPU class (issue 3)


def build(size: int, device: torch.device) -> Generator:
    torch.manual_seed(size)
    G = Generator(**CONFIGS[size])
    with torch.no_grad():
        for name, param in G.named_parameters():
            if name.endswith(("bias", "noise_strength")) and not name.startswith("mapping."):
                param.add_(0.1 * torch.randn(param.shape))
        G.mapping.w_avg.copy_(G.mapping(torch.randn(2000, G.z_dim))[:, 0].mean(0))
    return G.eval().to(device)


def settings(device: torch.device) -> dict[str, dict]:
    fast = {"precision": "bf16", "fused_modconv": None, "channels_last": True, "compile": device.type == "cuda"}
    naive = {"precision": "fp32", "fused_modconv": True, "channels_last": False, "compile": False}
    return {"naive": naive, "fast": fast}


class Clock:
    """progress hook recording the time of every step and, optionally, the MSE of the preview."""

    def __init__(self, target=None):
        self.times, self.mses, self.target = [], [], target

    def __call__(self, step, total, phase, preview):
        self.times.append(time.perf_counter())
        if self.target is not None and preview is not None:
            self.mses.append(float(mse(preview.to(self.target.device), self.target[:1].cpu())[0]))

    def per_step(self, skip: int = 2) -> float:
        gaps = [b - a for a, b in zip(self.times, self.times[1:])][skip:]
        return statistics.median(gaps)


def per_step(G, target, steps: int, opts: dict, mode: str = "per-image") -> tuple[float, float]:
    inv_clock, tune_clock = Clock(), Clock()
    inversion = invert(G, target, config=InversionConfig(steps=steps + 3, perceptual="random-vgg", preview_every=0,
                                                         w_avg_samples=200, **opts), progress=inv_clock)
    pivotal_tune(G, target, inversion.ws.to(target.device),
                 config=TuningConfig(steps=steps + 3, perceptual="random-alex", lpips_threshold=0.0,
                                     preview_every=0, mode=mode, **opts), progress=tune_clock)
    return inv_clock.per_step(), tune_clock.per_step()


def time_to_quality(G, target, inversion_config: InversionConfig, tuning_config: TuningConfig):
    """Returns (elapsed times per tuning step, MSE per tuning step, inversion seconds) of one whole run."""
    start = time.perf_counter()
    inversion = invert(G, target, config=dataclasses.replace(inversion_config, perceptual="random-vgg",
                                                             preview_every=0, w_avg_samples=200))
    inverted = time.perf_counter()
    clock = Clock(target.cpu())
    pivotal_tune(G, target, inversion.ws.to(target.device),
                 config=dataclasses.replace(tuning_config, perceptual="random-alex", lpips_threshold=0.0,
                                            preview_every=1), progress=clock)
    elapsed = [t - start for t in clock.times]
    return elapsed, clock.mses, inverted - start


def quality(steps_inversion: int, steps_tuning: int, lpips_threshold: float = 0.06) -> dict:
    """Paper-default run on sg2ada_tiny + astronaut, measured with ST-LPIPS (trained, offline)."""
    from safetensors.torch import load_file

    folder = REPO.parent / "shared" / "golden" / "sg2ada_tiny"
    G = Generator(**json.loads((folder / "config.json").read_text())["init_kwargs"]).eval()
    G.load_state_dict(load_file(folder / "weights.safetensors"))
    target = prepare_target(load_image(PHOTO), G.img_resolution)
    t0 = time.perf_counter()
    inversion = invert(G, target, config=InversionConfig(steps=steps_inversion, perceptual="stlpips-alex",
                                                         preview_every=0))
    t1 = time.perf_counter()
    tuned = pivotal_tune(G, target, inversion.ws,
                         config=TuningConfig(steps=steps_tuning, perceptual="stlpips-alex", preview_every=0,
                                             lpips_threshold=lpips_threshold))
    t2 = time.perf_counter()
    with torch.no_grad():
        recon = tuned.generator.synthesis(inversion.ws).clamp(-1, 1)
    out = {"inversion_steps": steps_inversion, "tuning_steps": steps_tuning, "lpips_threshold": lpips_threshold,
           "tuning_steps_run": tuned.steps_run[0],
           "inversion_s": round(t1 - t0, 1), "tuning_s": round(t2 - t1, 1)}
    for label, image in (("inversion", inversion.image), ("pti", recon)):
        out[f"{label}_mse"] = round(float(mse(image, target)[0]), 4)
        out[f"{label}_stlpips"] = round(float(lpips_distance(image, target, net="stlpips-alex")[0]), 4)
    out["mse_ratio"] = round(out["pti_mse"] / out["inversion_mse"], 3)
    out["lpips_ratio"] = round(out["pti_stlpips"] / out["inversion_stlpips"], 3)
    # early stopping (LPIPS <= 0.06) uses ST-LPIPS here, whose scale is lower than LPIPS-alex
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=None)
    parser.add_argument("--steps", type=int, default=8, help="timed steps per loop and setting")
    parser.add_argument("--ttq-steps", type=int, nargs=2, default=(450, 350), metavar=("INVERSION", "TUNING"),
                        help="steps of the paper-settings run whose final MSE is the time-to-quality goal")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quality", action="store_true", help="also the paper-default quality run (sg2ada_tiny)")
    parser.add_argument("--skip-ttq", action="store_true")
    parser.add_argument("--batch", type=int, default=4, help="also time the fast path on this many images at once")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    sizes = args.sizes or ([64, 256, 1024] if device.type == "cuda" else [64, 256])
    print(f"# bench/pti.py  torch {torch.__version__}  device {device}  threads {args.threads}  "
          f"load average {os.getloadavg()[0]:.1f}")
    photo = load_image(PHOTO)
    for size in sizes:
        G = build(size, device)
        target = prepare_target(photo, size).to(device)
        modes = settings(device)
        results = {name: [] for name in modes}
        for _ in range(2):  # interleave the settings so machine load hits both alike
            for name, opts in modes.items():
                results[name].append(per_step(G, target, args.steps, opts))
        row = {name: (min(r[0] for r in rs), min(r[1] for r in rs)) for name, rs in results.items()}
        (ni, nt), (fi, ft) = row["naive"], row["fast"]
        print(f"\n## {size} px  (num_ws {G.num_ws}, {sum(p.numel() for p in G.parameters()) / 1e6:.2f} M params)")
        print("| setting | inversion s/step | tuning s/step |")
        print("| --- | --- | --- |")
        print(f"| naive (fp32, fused modconv, NCHW) | {ni:.4f} | {nt:.4f} |")
        print(f"| fast ({', '.join(f'{k}={v}' for k, v in modes['fast'].items())}) | {fi:.4f} | {ft:.4f} |")
        print(f"| ratio naive/fast | {ni / fi:.2f}x | {nt / ft:.2f}x |")
        if args.batch > 1:
            images = torch.cat([target, target.flip(3), target.flip(2), -target] * args.batch)[:args.batch]
            bi, bt = per_step(G, images, args.steps, modes["fast"], mode="shared")
            print(f"| fast, batch {args.batch} (inversion; shared tuning), per image | {bi / args.batch:.4f} | "
                  f"{bt / args.batch:.4f} |")
        if size in REFERENCE and device.type == "cpu":
            ri, rt_ = REFERENCE[size]
            print(f"| reference PTI code (issue figure) | {ri:.3f} | {rt_:.3f} |")
            print(f"| fast / reference | {fi / ri:.2f} | {ft / rt_:.2f} |")
        if size == 64:
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20
            print(f"peak RSS after the 64 px runs: {peak:.2f} GiB (reference 1.13 GiB)")
        if args.skip_ttq:
            continue
        inversion_steps, tuning_steps = args.ttq_steps
        paper_inv, paper_tune = preset("paper", device)
        fast_inv, fast_tune = preset("fast", device)
        fast_loops = {k: v for k, v in modes["fast"].items() if k != "precision"}  # the preset picks precision
        runs = {  # the paper's settings with the naive loops (the reference algorithm), then the fast preset
            "paper settings, naive loops": (dataclasses.replace(paper_inv, steps=inversion_steps, **modes["naive"]),
                                            dataclasses.replace(paper_tune, steps=tuning_steps, **modes["naive"])),
            "fast preset": (dataclasses.replace(fast_inv, **fast_loops),
                            dataclasses.replace(fast_tune, steps=tuning_steps, **fast_loops)),
        }
        results_ttq = {name: time_to_quality(G, target, *configs) for name, configs in runs.items()}
        elapsed, mses, _ = results_ttq["paper settings, naive loops"]
        goal, paper_wall = mses[-1], elapsed[-1]
        print(f"time-to-quality: goal = the paper settings' final MSE {goal:.4f} ({inversion_steps} + {tuning_steps} "
              f"steps, lr {paper_inv.lr} / {paper_tune.lr}, fp32)")
        for name, (inv, tune) in runs.items():
            elapsed, mses, inv_s = results_ttq[name]
            hit = next((t for t, m in zip(elapsed, mses) if m <= goal), None)
            print(f"  {name} ({inv.steps} inversion steps {inv.precision}, tuning lr {tune.lr} {tune.precision}): "
                  f"inversion {inv_s:.1f} s, reached the goal at {'never' if hit is None else f'{hit:.1f} s'}; "
                  f"final MSE {mses[-1]:.4f} at {elapsed[-1]:.1f} s")
            if name == "fast preset" and hit is not None:
                print(f"  fast preset / paper settings (same run): {hit / paper_wall:.2f}")
                if size in REFERENCE and device.type == "cpu" and (inversion_steps, tuning_steps) == (450, 350):
                    reference_wall = 450 * REFERENCE[size][0] + 350 * REFERENCE[size][1]
                    print(f"  fast preset / reference PTI code's wall time for 450 + 350 steps "
                          f"({reference_wall:.1f} s from the issue's per-step figures): {hit / reference_wall:.2f}")
    if args.quality:
        print("\n## paper defaults on sg2ada_tiny + astronaut (ST-LPIPS as metric and loss)")
        print(json.dumps(quality(450, 350)))
        print(json.dumps(quality(450, 350, lpips_threshold=0.0)))  # no early stop: all 350 steps
    return 0


if __name__ == "__main__":
    sys.exit(main())
