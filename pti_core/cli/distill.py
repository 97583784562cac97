"""``python -m pti_core distill``: distil a small StyleGAN2 from a teacher generator (resumable).

Examples::

    python -m pti_core distill --out runs/faces --steps 2600
    python -m pti_core distill --out runs/faces --steps 3000 --resume      # continue / extend
    python -m pti_core distill --out runs/faces --export faces.safetensors --fidelity 256
    python -m pti_core distill --method glo --init first.safetensors --out runs/glo --steps 7000 \
        --learning-rate 5e-3 --latent-learning-rate 0.1 --threads 2        # latent-optimised (pti_core.glo)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

from ..errors import ConfigError, OutputExistsError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ..distill import DistillConfig

    defaults = DistillConfig()
    parser.add_argument("--out", required=True, type=Path, help="run folder (checkpoint + config)")
    parser.add_argument("--method", choices=("regression", "glo"), default="regression",
                        help="regression: the student's mapping regresses the teacher's z -> image (pti_core.distill); "
                             "glo: per-image latents optimised with the synthesis network, the mapping fitted "
                             "to them (pti_core.glo; starts from --init)")
    parser.add_argument("--init", type=Path, default=None,
                        help="glo: generator file to start from (default: the shipped model's file)")
    parser.add_argument("--dataset-size", type=int, default=None, help="glo: teacher images (default 4096)")
    parser.add_argument("--latent-learning-rate", type=float, default=None,
                        help="glo: SparseAdam lr of the per-image latents (default 0.03)")
    parser.add_argument("--fit-mapping", type=int, default=0, metavar="STEPS",
                        help="glo: before exporting, refit the mapping network to the run's latents for STEPS steps "
                             "(regression on the teacher's z plus a sliced-Wasserstein match of the distribution)")
    parser.add_argument("--mapping-distribution-weight", type=float, default=1.0,
                        help="glo: weight of the distribution term of --fit-mapping (0 = regression only)")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out (same settings)")
    parser.add_argument("--steps", type=int, default=None, help=f"total steps (default {defaults.steps})")
    parser.add_argument("--max-steps-this-run", type=int, default=None,
                        help="stop after this many steps in this call (checkpointed; resume later)")
    parser.add_argument("--config", type=Path, default=None,
                        help="a DistillConfig JSON file (fields not given keep their defaults)")
    for name in ("batch_size", "learning_rate", "perceptual_weight", "l1_weight", "l2_weight",
                 "w_dim", "mapping_layers", "channel_base", "channel_max", "checkpoint_every", "seed"):
        default = getattr(defaults, name)
        parser.add_argument("--" + name.replace("_", "-"), type=type(default), default=None,
                            help=f"DistillConfig.{name} (default {default})")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    parser.add_argument("--device", default="cpu", help="accepted for the future; training runs on cpu")
    parser.add_argument("--no-train", action="store_true", help="only export / evaluate an existing run")
    parser.add_argument("--export", type=Path, default=None,
                        help="write the EMA student as the pack's generator safetensors here")
    parser.add_argument("--fidelity", type=int, default=0,
                        help="report mean ST-LPIPS and MSE to the teacher on this many held-out z")
    parser.add_argument("--template", type=Path, default=None,
                        help="measure where eyes and mouth fall in the student's samples (dlib) and write "
                             "the alignment template JSON here (also embedded in --export's metadata)")
    parser.add_argument("--template-samples", type=int, default=256, help="samples for --template (default 256)")
    parser.add_argument("--template-from", choices=("student", "teacher"), default="student",
                        help="whose samples --template measures (same z; default the student)")
    parser.add_argument("--side-by-side", type=Path, default=None,
                        help="write a PNG grid: teacher (top row) vs student (bottom row) on held-out z")


def _run_config(args: argparse.Namespace, config_cls, config_name: str, fields: tuple[str, ...], **extra):
    """Returns the run's config: the saved one when resuming, else --config or the defaults, with the flags given."""
    if args.resume and (args.out / config_name).is_file():
        base = config_cls.from_json((args.out / config_name).read_text())
    elif args.config is not None:
        base = config_cls.from_json(args.config.read_text())
    else:
        base = config_cls()
    overrides = {name: getattr(args, name) for name in fields if getattr(args, name) is not None}
    return dataclasses.replace(base, **overrides, **extra)


def _glo_config(args: argparse.Namespace):
    from ..glo import CONFIG_NAME, GLOConfig

    return _run_config(args, GLOConfig, CONFIG_NAME, (
        "steps", "batch_size", "learning_rate", "perceptual_weight", "l2_weight", "checkpoint_every", "seed",
        "dataset_size", "latent_learning_rate"), **({"init": str(args.init)} if args.init is not None else {}))


def _config(args: argparse.Namespace):
    from ..distill import CONFIG_NAME, DistillConfig

    return _run_config(args, DistillConfig, CONFIG_NAME, (
        "steps", "batch_size", "learning_rate", "perceptual_weight", "l1_weight", "l2_weight", "w_dim",
        "mapping_layers", "channel_base", "channel_max", "checkpoint_every", "seed"))


class _TeacherAsGenerator:
    """Gives a teacher the ``z_dim`` / ``mapping`` / ``synthesis`` surface ``measure_template`` uses."""

    def __init__(self, teacher):
        from ..distill import normalize_z

        self.z_dim = teacher.z_dim
        self.mapping = lambda z, *args, **kwargs: normalize_z(z)[:, None]
        self.synthesis = lambda ws, **kwargs: teacher(ws[:, 0])


def run(args: argparse.Namespace) -> int:
    import torch

    from .. import distill as D

    torch.set_num_threads(max(1, args.threads))
    if args.device != "cpu":
        raise ConfigError("distill runs on cpu in this version; drop --device")
    if args.export is not None and args.export.exists():
        raise OutputExistsError(f"{args.export} exists; choose another --export path")
    if args.method == "glo":
        from .. import glo

        if not args.no_train:
            config = _glo_config(args)
            result = glo.train_glo(config, args.out, resume=args.resume, max_steps_this_run=args.max_steps_this_run,
                                   log=lambda line: print(line, flush=True))
            print(f"step {result.step}/{config.steps}; checkpoint {result.checkpoint}")
        G, config, step = glo.load_glo_student(args.out)
        if args.fit_mapping:
            z, latents = glo.run_dataset(args.out)
            glo.fit_mapping(G, z, latents, steps=args.fit_mapping, distribution_weight=args.mapping_distribution_weight,
                            log=lambda line: print(line, flush=True))
    else:
        if not args.no_train:
            config = _config(args)
            result = D.distill(config, args.out, resume=args.resume, max_steps_this_run=args.max_steps_this_run,
                               log=lambda line: print(line, flush=True))
            print(f"step {result.step}/{config.steps}; checkpoint {result.checkpoint}")
        G, config, step = D.load_student(args.out)
    if args.fidelity:
        teacher = D.load_teacher(config.teacher)
        print(json.dumps({"step": step, **D.fidelity(G, teacher, n=args.fidelity)}))
    if args.side_by_side is not None:
        from ..imageio import nchw_to_pil

        teacher = D.load_teacher(config.teacher)
        z = D.held_out_z(8, teacher.z_dim)
        with torch.no_grad():
            top = D.teacher_images(teacher, z)
            bottom = G.synthesis(G.mapping(z), noise_mode="const")
        grid = torch.cat([torch.cat(list(top), dim=2), torch.cat(list(bottom), dim=2)], dim=1)  # [3, 2R, 8R]
        nchw_to_pil(grid[None].clamp(-1, 1)).save(args.side_by_side)
        print(f"wrote {args.side_by_side}")
    extra = {"distill_step": str(step), "distill_method": args.method, "distill_config": config.to_json()}
    if args.method == "glo" and args.fit_mapping:
        extra["mapping_fit"] = json.dumps({"steps": args.fit_mapping,
                                           "distribution_weight": args.mapping_distribution_weight})
    if args.template is not None:
        from ..labels import measure_template

        source = G if args.template_from == "student" else _TeacherAsGenerator(D.load_teacher(config.teacher))
        template, measurement = measure_template(source, args.template_samples)
        record = {"template": template.to_dict(), "measurement": measurement.to_dict(),
                  "how": f"dlib 68-point landmarks on {args.template_samples} {args.template_from} samples "
                         "(z seed 0), padded by a "
                         "quarter side; mean eye centres (36-41, 42-47) and mouth centre (48, 54)"}
        tmp = args.template.with_name(args.template.name + ".tmp")
        tmp.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
        tmp.replace(args.template)
        extra["face_template"] = json.dumps(template.to_dict(), sort_keys=True)
        print(f"wrote {args.template}: {json.dumps(record['template'])} "
              f"({measurement.detected}/{measurement.samples} samples with a detected face)")
    if args.export is not None:
        D.estimate_w_avg(G)
        D.export_generator(G, args.export, extra_metadata=extra)
        print(f"wrote {args.export}")
    return 0
