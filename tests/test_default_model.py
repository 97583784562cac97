"""The embedded 64 px face model (distilled from the DCGAN teacher) and its companions.

These run on the shipped files (small: a 64 px StyleGAN2 of a few MB), with few samples and
short PTI runs, so they stay fast on a CPU.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors import safe_open

from helpers import realworld
from pti_core import distill as D
from pti_core import labels as L
from pti_core.align import FFHQ_TEMPLATE, FaceTemplate

MB = 1024 * 1024


@pytest.fixture(scope="module")
def G():
    from pti_core.generators.checkpoints import load_generator

    return load_generator(D.DEFAULT_MODEL_PATH)


@pytest.fixture(scope="module")
def assets():
    return D.model_assets()


# ----------------------------------------------------------------------------- labellers (no dlib)

def _face(nose_x: float = 50.0, mouth_gap: float = 0.0) -> np.ndarray:
    """A synthetic 68-point face: jaw ends at x=20 and x=80, mouth 48-54 from x=40 to x=60."""
    p = np.zeros((68, 2))
    p[0], p[16], p[30] = (20, 50), (80, 50), (nose_x, 55)
    p[48], p[54] = (40, 75), (60, 75)
    for top, bottom in ((61, 67), (62, 66), (63, 65)):
        p[top], p[bottom] = (50, 75 - mouth_gap / 2), (50, 75 + mouth_gap / 2)
    return p


def test_labellers_on_synthetic_landmarks():
    faces = np.stack([_face(35), _face(50), _face(65)])
    np.testing.assert_allclose(L.yaw_from_landmarks(faces), [-0.5, 0.0, 0.5])
    gaps = np.stack([_face(mouth_gap=g) for g in (-2.0, 0.0, 4.0, 10.0)])   # -2: the inner lips cross
    np.testing.assert_allclose(L.mouth_open_from_landmarks(gaps), [-0.1, 0.0, 0.2, 0.5], atol=1e-12)
    with pytest.raises(Exception, match="unknown labeller"):
        L.label_images(torch.zeros(1, 3, 8, 8), "smile")


# ----------------------------------------------------------------------------- the file

def test_shipped_file_is_small_safetensors_with_template(G):
    path = D.DEFAULT_MODEL_PATH
    assert path.stat().st_size <= 20 * MB
    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata()
    assert metadata["architecture"] == "stylegan2"
    assert json.loads(metadata["init_kwargs"])["z_dim"] == 100
    assert G.img_resolution == 64 and G.z_dim == 100
    template = FaceTemplate.from_dict(json.loads(metadata[D.TEMPLATE_METADATA_KEY]))
    side = json.loads(path.with_name(path.stem + ".template.json").read_text())
    assert FaceTemplate.from_dict(side["template"]) == template == D.face_template_for(path)
    # The teacher frames faces tighter than FFHQ: a smaller eye_scale (eyes further apart in the crop).
    assert template.eye_scale < 0.9 * FFHQ_TEMPLATE.eye_scale


def test_reproduces_teacher_on_held_out_z(G):
    teacher = D.load_teacher("dcgan-faces")
    trained = D.fidelity(G, teacher, n=16)
    fresh = D.fidelity(D.build_student(D.DistillConfig(), z_dim=100, resolution=64), teacher, n=16)
    assert trained["stlpips"] < 0.5 * fresh["stlpips"], (trained, fresh)
    assert trained["mse"] < 0.25 * fresh["mse"], (trained, fresh)


def test_dlib_finds_faces_in_most_samples(G):
    # bench/distill.py: 67% of 128 student samples (teacher: 76%); an untrained student: none.
    z = torch.randn(24, 100, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        images = G.synthesis(G.mapping(z), noise_mode="const").clamp(-1, 1)
        fresh = D.build_student(D.DistillConfig(), z_dim=100, resolution=64)
        noise = fresh.synthesis(fresh.mapping(z[:8]), noise_mode="const").clamp(-1, 1)
    assert L.landmarks_68(images).detected.mean() >= 0.5
    assert L.landmarks_68(noise).detected.mean() <= 0.25


def test_directions_ship_and_fit(G, assets):
    assert set(assets.direction_paths) == set(D.DIRECTION_NAMES)
    for name, direction in assets.directions.items():
        direction.check_fits(G)
        assert direction.w_dim == G.w_dim, name
    for name in ("yaw", "mouth_open"):                   # MODEL_CARD.md: ridge fit, strength 1 = one std
        info = assets.directions[name].info
        assert info["method"] == "interfacegan_ridge" and info["unit"] == "std", name
        assert abs(float(assets.directions[name].vectors.norm()) - info["projection_std"]) < 1e-4, name


def test_label_options_mirror_and_boxes(G):
    """Mirror averaging makes yaw exactly antisymmetric and mouth openness symmetric under a flip;
    a fixed box gives the same points for the same image whatever the rest of the batch is."""
    z = torch.randn(3, 100, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        images = G.synthesis(G.mapping(z), noise_mode="const").clamp(-1, 1)
    yaw, _ = L.label_images(images, "yaw", box="image", mirror=True)
    yaw_flipped, _ = L.label_images(images.flip(-1), "yaw", box="image", mirror=True)
    torch.testing.assert_close(yaw_flipped, -yaw, atol=1e-6, rtol=0)
    mouth, _ = L.label_images(images, "mouth_open", box=(10.0, 15.0, 58.0, 63.0), mirror=True, jitter=1)
    mouth_flipped, _ = L.label_images(images.flip(-1), "mouth_open", box=(5.0, 15.0, 53.0, 63.0), mirror=True, jitter=1)
    torch.testing.assert_close(mouth_flipped, mouth, atol=1e-6, rtol=0)
    single = L.landmarks_68(images[1:2], box=(10.0, 15.0, 58.0, 63.0), jitter=1)
    batch = L.landmarks_68(images, box=(10.0, 15.0, 58.0, 63.0), jitter=1)
    np.testing.assert_allclose(single.points[0], batch.points[1])
    shared = L.landmarks_68(images, box="shared")
    assert shared.points.shape == (3, 68, 2) and not np.allclose(shared.points[0], shared.points[1])
    with pytest.raises(Exception, match="unknown landmark box"):
        L.landmarks_68(images, box="middle")


# ----------------------------------------------------------------------------- PTI on a real photo

PHOTOS = ["astronaut.png", "grace_hopper.jpg"]


@pytest.fixture(scope="module", params=PHOTOS)
def tuned_photo(request, G):
    """The main job on a real photo with the built-in model's own settings (pti_core.presets.BUILTIN_MODEL)."""
    from pti_core.pipeline import align_for, reconstruct
    from pti_core.presets import builtin_configs

    aligned = align_for(G, realworld("photos", request.param))
    inversion, tuning = builtin_configs(preview_every=0)
    return reconstruct(G, aligned.image.clamp(-1, 1), inversion=inversion, tuning=tuning)


def test_pti_reconstruction_is_the_photo(tuned_photo):
    """What a person sees: PSNR >= 30 dB, the same person (dlib < 0.35), the fine detail kept (detail
    error <= 0.4: no blur, no speckle), and far better than the inversion alone on every figure."""
    from pti_core.metrics import quality_report

    pivot = quality_report(tuned_photo.inversion.image, tuned_photo.target)
    pti = quality_report(tuned_photo.reconstruction, tuned_photo.target)
    assert pti["psnr"] >= 30.0, (pivot, pti)
    assert pti["identity_distance"] <= 0.35, (pivot, pti)
    assert pti["detail_error"] <= 0.4, (pivot, pti)
    assert pti["psnr"] >= pivot["psnr"] + 5 and pti["lpips"] <= 0.5 * pivot["lpips"], (pivot, pti)


def test_default_edits_keep_the_person_and_do_what_they_say(tuned_photo, assets):
    """The default yaw edits (the CLI's strengths) turn the head (label change >= 0.15), keep identity
    (dlib <= 0.6 to the target) and still look like a face (dlib finds one, padded as for the samples)."""
    from pti_core.metrics import identity_distance
    from pti_core.pipeline import render_edits
    from pti_core.presets import BUILTIN_MODEL

    low, high = BUILTIN_MODEL.edit_strengths[0], BUILTIN_MODEL.edit_strengths[-1]
    images = render_edits(tuned_photo.generator, tuned_photo.inversion.ws,
                          [(assets.directions["yaw"], low), (assets.directions["yaw"], high)])
    yaw, _ = L.label_images(images, "yaw", box="shared", mirror=True, jitter=2)
    assert float(yaw[1] - yaw[0]) >= 0.15, yaw.tolist()
    assert float(identity_distance(images, tuned_photo.target).max()) <= 0.6
    assert bool(L.landmarks_68(images).detected.all())


@pytest.mark.parametrize("name", ["yaw", "mouth_open"])
def test_edit_sweep_on_tuned_photo_is_monotonic(tuned_photo, assets, name):
    """Strengths are in standard deviations of the model's samples along the direction; the labels
    are measured with one shared face box for the five frames, averaged over 27 nearby boxes and the
    mirror image (pti_core.labels: a box a few pixels off moves the 64 px mouth label as much as the
    edit does). Yaw sweeps the CLI's default strengths (one standard deviation each way); the mouth
    sweep opens the mouth from the photo's own expression (closing a toothy smile reads as "open" to the
    landmark label). The sweep must move the label plainly: yaw by >= 0.15 (see the test above), the mouth
    by more than the label's spread over the model's samples."""
    from pti_core.pipeline import render_edits
    from pti_core.presets import BUILTIN_MODEL

    direction = assets.directions[name]
    span = BUILTIN_MODEL.edit_strengths if name == "yaw" else BUILTIN_MODEL.mouth_sweep
    strengths = torch.linspace(span[0], span[-1], 5).tolist()
    images = render_edits(tuned_photo.generator, tuned_photo.inversion.ws, [(direction, s) for s in strengths])
    values, _ = L.label_images(images, name, box="shared", mirror=True, jitter=2)
    steps = values[1:] - values[:-1]
    assert bool((steps > 0).all()), values.tolist()
    needed = 0.15 if name == "yaw" else direction.info["label_std"]
    assert float(values[-1] - values[0]) > needed, (values.tolist(), needed)
