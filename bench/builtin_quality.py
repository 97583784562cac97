"""What a person gets from the main job on the built-in model, on the shared real photos.

For each photo (aligned with the model's own face template): the inversion and the PTI reconstruction
against the aligned target (PSNR, dlib identity distance, detail error, ST-LPIPS), and the default edits
through the tuned generator: identity to the target, whether dlib still finds a face, the yaw label at
the negative and positive default strength, and the mouth-open label over a 5-step sweep that opens the
mouth (``BUILTIN_MODEL.mouth_sweep``).

``--settings release1`` runs the first release's main-job settings (invert 100, tune 100 at lr 3e-3,
L2 weight 1) for the before/after table; ``--model`` takes another generator file (e.g. the first
release's, with its own template and directions beside it).

Run::

    python bench/builtin_quality.py --out /tmp/quality        # images per photo in /tmp/quality
    python bench/builtin_quality.py --model first_release/dcgan_faces_sg2_64.safetensors --settings release1
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
PHOTOS = ("astronaut.png", "grace_hopper.jpg", "einstein_aligned256.png", "mona_lisa_aligned256.png",
          "van_gogh_aligned256.png")
MOUTH_SWEEP = 5


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None, help="default: the built-in model")
    parser.add_argument("--photos", nargs="*", default=list(PHOTOS))
    parser.add_argument("--settings", choices=("current", "release1"), default="current")
    parser.add_argument("--tuning", default=None, metavar="JSON",
                        help='TuningConfig fields to override, e.g. \'{"steps": 200, "locality": {"alpha": 8}}\'')
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=None, help="write target | inversion | PTI | edits per photo")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    sys.path.insert(0, str(REPO))
    from pti_core import distill as D
    from pti_core.generators.checkpoints import load_generator
    from pti_core.imageio import save_image
    from pti_core.labels import label_images, landmarks_68
    from pti_core.metrics import identity_distance, quality_report
    from pti_core.pipeline import align_for, reconstruct, render_edits
    from pti_core.presets import BUILTIN_MODEL, builtin_configs
    from pti_core.tune import TuningConfig

    path = args.model or D.DEFAULT_MODEL_PATH
    G = load_generator(path).eval()
    directions = D.model_assets(path).directions
    inversion, tuning = builtin_configs(preview_every=0)
    if args.settings == "release1":
        tuning = dataclasses.replace(tuning, steps=100, lr=3e-3, l2_weight=1.0)
    if args.tuning:
        tuning = TuningConfig.from_dict({**tuning.to_dict(), **json.loads(args.tuning)})
    low, high = BUILTIN_MODEL.edit_strengths[0], BUILTIN_MODEL.edit_strengths[-1]
    rows = []
    for name in args.photos:
        started = time.perf_counter()
        aligned = align_for(G, REPO.parent / "shared" / "realworld" / "photos" / name, name=name)
        result = reconstruct(G, aligned.image, inversion=inversion, tuning=tuning)
        seconds = time.perf_counter() - started
        target = result.target
        row = {"photo": name, "seconds": round(seconds, 1),
               "inversion": quality_report(result.inversion.image, target),
               "pti": quality_report(result.reconstruction, target)}
        yaw = render_edits(result.generator, result.inversion.ws, [(directions["yaw"], low), (directions["yaw"], high)])
        sweep = torch.linspace(*BUILTIN_MODEL.mouth_sweep, MOUTH_SWEEP).tolist()
        mouth = render_edits(result.generator, result.inversion.ws, [(directions["mouth_open"], s) for s in sweep])
        yaw_labels, _ = label_images(yaw, "yaw", box="shared", mirror=True, jitter=2)
        mouth_labels, _ = label_images(mouth, "mouth_open", box="shared", mirror=True, jitter=2)
        edits = torch.cat([yaw, mouth[[0, -1]]])
        row["edits"] = {
            "strengths": [low, high],
            "yaw_labels": [round(float(v), 3) for v in yaw_labels],
            "yaw_change": round(float(yaw_labels[1] - yaw_labels[0]), 3),
            "mouth_labels": [round(float(v), 3) for v in mouth_labels],
            "mouth_rises_every_step": bool((mouth_labels[1:] > mouth_labels[:-1]).all()),
            "identity_max": round(float(identity_distance(edits, target).max()), 3),
            "faces_found": int(landmarks_68(edits).detected.sum()),  # padded as for the sample detection rate
            "edits": int(len(edits))}
        rows.append(row)
        print(json.dumps(row), flush=True)
        if args.out is not None:
            args.out.mkdir(parents=True, exist_ok=True)
            strip = torch.cat([target.cpu(), result.inversion.image.clamp(-1, 1).cpu(), result.reconstruction.cpu(),
                               yaw.cpu(), mouth.cpu()])
            save_image(torch.cat(list(strip), dim=2)[None], args.out / f"{Path(name).stem}.png")

    print(f"\nmodel {path.name}, settings {args.settings}: inversion {inversion.steps} steps, tuning {tuning.steps} "
          f"steps at lr {tuning.lr}, L2 weight {tuning.l2_weight}, locality {tuning.locality}; "
          f"edits at {low:+g} / {high:+g}")
    print("| photo | inversion PSNR / id / detail | PTI PSNR / id / detail / ST-LPIPS | yaw change | mouth rises "
          "| edit id max | faces | s |")
    print("|---|---|---|---|---|---|---|---|")
    for row in rows:
        i, p, e = row["inversion"], row["pti"], row["edits"]
        print(f"| {Path(row['photo']).stem} | {i['psnr']:.1f} / {i['identity_distance']:.2f} / {i['detail_error']:.2f} "
              f"| {p['psnr']:.1f} / {p['identity_distance']:.2f} / {p['detail_error']:.2f} / {p['lpips']:.3f} "
              f"| {e['yaw_change']:+.2f} | {'yes' if e['mouth_rises_every_step'] else 'no'} | {e['identity_max']:.2f} "
              f"| {e['faces_found']}/{e['edits']} | {row['seconds']:.0f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
