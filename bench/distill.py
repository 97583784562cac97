"""How faithful the built-in face model is to its DCGAN teacher, with the teacher against itself as the baseline.

Every figure is on z that no training batch used (``pti_core.distill.HELD_OUT_SEED`` and seeds above it):

* realism and variety: Fréchet distance between dlib face descriptors (128-D) of ``--samples`` images of
  the model and of the teacher, next to the same distance between two disjoint sets of teacher samples
  (all three sets on different z); target: model <= 1.5x teacher-vs-teacher;
* diversity: mean ST-LPIPS between pairs of different samples (target >= 0.85x the teacher's);
* dlib detection rate (padded as ``pti_core.labels.landmarks_68`` does; target within 5 points);
* high-frequency energy: mean squared Laplacian of the samples (target 0.8-1.25x the teacher's);
* room for PTI: held-out teacher images inverted into the model's W with the pack's own ``invert``
  (the main job's steps for the built-in model), PSNR / LPIPS / identity / detail error (target PSNR >= 22 dB);
* paired figures (the model takes the teacher's z): PSNR, ST-LPIPS, MSE of model vs teacher on the same z;
* synthesis time per image (``--threads``).

Run::

    python bench/distill.py                                   # the shipped model
    python bench/distill.py --model old.safetensors           # another file (e.g. an earlier release)
    python bench/distill.py --side-by-side sbs.png            # teacher (top) vs model (bottom), 8 held-out z
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]


def _ratio(a: float, b: float) -> float:
    return round(a / b, 3) if b else float("nan")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None, help="default: the built-in model")
    parser.add_argument("--samples", type=int, default=512, help="samples per set (Fréchet, diversity, energy)")
    parser.add_argument("--detection-samples", type=int, default=256)
    parser.add_argument("--inversions", type=int, default=12, help="held-out teacher images to invert")
    parser.add_argument("--inversion-steps", type=int, default=None, help="default: the main job's")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--side-by-side", type=Path, default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    sys.path.insert(0, str(REPO))
    from pti_core import distill as D
    from pti_core.face import face_descriptor
    from pti_core.generators.checkpoints import load_generator
    from pti_core.inversion import invert
    from pti_core.labels import landmarks_68
    from pti_core.losses import perceptual_model
    from pti_core.presets import builtin_configs
    from pti_core.metrics import (detail_error, frechet_distance, identity_distance, laplacian_energy, mse,
                                  psnr)

    path = args.model or D.DEFAULT_MODEL_PATH
    G = load_generator(path).eval()
    teacher = D.load_teacher("dcgan-faces")
    distance = perceptual_model("stlpips-alex")
    n = args.samples
    z_a, z_b, z_c = (D.held_out_z(n, 100, seed=D.HELD_OUT_SEED + k) for k in (0, 1, 2))

    def student(z: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return torch.cat([G.synthesis(G.mapping(c), noise_mode="const") for c in z.split(64)]).clamp(-1, 1)

    def teach(z: torch.Tensor) -> torch.Tensor:
        return torch.cat([D.teacher_images(teacher, c) for c in z.split(128)])

    started = time.perf_counter()
    model_c = student(z_c)
    synthesis_ms = 1000 * (time.perf_counter() - started) / n
    teacher_a, teacher_b, teacher_c = teach(z_a), teach(z_b), teach(z_c)
    out: dict = {"model": path.name, "size_mb": round(path.stat().st_size / 2**20, 2),
                 "parameters": sum(p.numel() for p in G.parameters()), "samples": n,
                 "synthesis_ms_per_image": round(synthesis_ms, 2)}

    descriptors = {name: face_descriptor(images) for name, images in
                   (("teacher_a", teacher_a), ("teacher_b", teacher_b), ("model", model_c))}
    fd_teacher = float(frechet_distance(descriptors["teacher_a"], descriptors["teacher_b"]))
    fd_model = float(frechet_distance(descriptors["model"], descriptors["teacher_b"]))
    out["frechet_dlib"] = {"teacher_vs_teacher": round(fd_teacher, 4), "model_vs_teacher": round(fd_model, 4),
                           "ratio": _ratio(fd_model, fd_teacher), "target": "<= 1.5"}

    def diversity(images: torch.Tensor) -> float:
        with torch.no_grad():
            return float(torch.cat([distance(a, b) for a, b in zip(images[0::2].split(64), images[1::2].split(64))]).mean())

    div_t, div_m = diversity(teacher_c), diversity(model_c)
    out["diversity_stlpips"] = {"teacher": round(div_t, 4), "model": round(div_m, 4), "ratio": _ratio(div_m, div_t),
                                "target": ">= 0.85"}
    hf_t, hf_m = float(laplacian_energy(teacher_c).mean()), float(laplacian_energy(model_c).mean())
    out["laplacian_energy"] = {"teacher": round(hf_t, 5), "model": round(hf_m, 5), "ratio": _ratio(hf_m, hf_t),
                               "target": "0.8-1.25"}
    k = args.detection_samples
    det_t = float(landmarks_68(teacher_c[:k]).detected.mean())
    det_m = float(landmarks_68(model_c[:k]).detected.mean())
    out["detection_rate"] = {"teacher": round(det_t, 3), "model": round(det_m, 3),
                             "points_apart": round(100 * abs(det_m - det_t), 1), "target": "<= 5 points apart",
                             "samples": k}
    with torch.no_grad():
        out["paired_same_z"] = {"psnr": round(float(psnr(model_c, teacher_c).mean()), 2),
                                "mse": round(float(mse(model_c, teacher_c).mean()), 4),
                                "stlpips": round(float(torch.cat([distance(a, b) for a, b in
                                                                  zip(model_c.split(64), teacher_c.split(64))]).mean()), 4)}

    config, _ = builtin_configs(preview_every=0)  # the main job's inversion on the built-in model
    if args.inversion_steps:
        config = dataclasses.replace(config, steps=args.inversion_steps)
    steps = config.steps
    targets = teach(D.held_out_z(args.inversions, 100, seed=D.HELD_OUT_SEED + 3))
    started = time.perf_counter()
    inverted = torch.cat([invert(G, t[None], config=config).image for t in targets]).clamp(-1, 1)
    out["inversion_of_held_out_teacher_images"] = {
        "images": args.inversions, "steps": steps, "seconds_per_image": round((time.perf_counter() - started) / args.inversions, 2),
        "psnr": round(float(psnr(inverted, targets).mean()), 2), "target": "psnr >= 22",
        "stlpips": round(float(distance(inverted, targets).mean()), 4),
        "identity_distance": round(float(identity_distance(inverted, targets).mean()), 3),
        "detail_error": round(float(detail_error(inverted, targets).mean()), 3)}
    print(json.dumps(out, indent=2))
    if args.side_by_side is not None:
        from pti_core.imageio import nchw_to_pil

        top, bottom = teacher_c[:8], model_c[:8]
        grid = torch.cat([torch.cat(list(top), dim=2), torch.cat(list(bottom), dim=2)], dim=1)
        nchw_to_pil(grid[None]).resize((8 * 128, 256), 0).save(args.side_by_side)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
