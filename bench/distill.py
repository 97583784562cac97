"""Fidelity of the embedded distilled face model to its DCGAN teacher, and dlib's detection rate.

Figures (all on held-out z that no training batch used):

* mean ST-LPIPS (AlexNet, shift-tolerant) and MSE ([-1, 1] images) student vs teacher, with two
  baselines in the same run: an untrained student, and the teacher's mean image;
* dlib detection rate on samples of the student and of the teacher (same z), padded as
  ``pti_core.labels.landmarks_68`` does;
* synthesis time per image (1 thread).

Run::

    python bench/distill.py                 # 256 z for fidelity, 128 for detection
    python bench/distill.py --side-by-side /tmp/sbs.png   # teacher (top) vs student (bottom)
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None, help="default: the embedded model")
    parser.add_argument("--fidelity-samples", type=int, default=256)
    parser.add_argument("--detection-samples", type=int, default=128)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--side-by-side", type=Path, default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    sys.path.insert(0, str(REPO))
    from pti_core import distill as D
    from pti_core.generators.checkpoints import load_generator
    from pti_core.labels import landmarks_68
    from pti_core.losses import perceptual_model

    path = args.model or D.DEFAULT_MODEL_PATH
    G = load_generator(path)
    teacher = D.load_teacher("dcgan-faces")
    distance = perceptual_model("stlpips-alex")
    out: dict = {"model": path.name, "size_mb": round(path.stat().st_size / 2**20, 2),
                 "parameters": sum(p.numel() for p in G.parameters())}
    out["student"] = D.fidelity(G, teacher, n=args.fidelity_samples, perceptual=distance)
    out["untrained_student"] = D.fidelity(D.build_student(D.DistillConfig(), z_dim=100, resolution=64), teacher,
                                          n=args.fidelity_samples, perceptual=distance)
    z = D.held_out_z(args.fidelity_samples, 100)
    with torch.no_grad():
        targets = torch.cat([D.teacher_images(teacher, c) for c in z.split(64)])
        mean = targets.mean(0, keepdim=True).expand_as(targets)
        out["teacher_mean_image"] = {"stlpips": float(torch.cat([distance(m, t) for m, t in
                                                                zip(mean.split(64), targets.split(64))]).mean()),
                                     "mse": float((mean - targets).square().mean())}
        zd = D.held_out_z(args.detection_samples, 100, seed=D.HELD_OUT_SEED + 1)
        started = time.perf_counter()
        student_images = torch.cat([G.synthesis(G.mapping(c), noise_mode="const") for c in zd.split(32)]).clamp(-1, 1)
        out["synthesis_ms_per_image"] = round(1000 * (time.perf_counter() - started) / len(zd), 2)
        teacher_images = torch.cat([D.teacher_images(teacher, c) for c in zd.split(32)])
    out["detection_rate_student"] = float(landmarks_68(student_images).detected.mean())
    out["detection_rate_teacher"] = float(landmarks_68(teacher_images).detected.mean())
    out["detection_samples"] = args.detection_samples
    print(json.dumps(out, indent=2))
    if args.side_by_side is not None:
        from pti_core.imageio import nchw_to_pil

        top, bottom = teacher_images[:8], student_images[:8]
        grid = torch.cat([torch.cat(list(top), dim=2), torch.cat(list(bottom), dim=2)], dim=1)
        nchw_to_pil(grid[None]).resize((8 * 128, 256), 0).save(args.side_by_side)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
