"""FFHQ alignment and paste-back: the recipe's quad, exact warp conventions, real-photo acceptance."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from helpers import realworld
from pti_core import imageio, metrics
from pti_core.align import (FFHQ_TEMPLATE, AlignedFace, FaceTemplate, FaceTransform, align_face, face_points,
                            feather_mask, ffhq_quad, paste_back)
from pti_core.errors import AlignmentError, ConfigError, ImageError

# FFHQ recipe on a real photo is tested at output 256 from a 1024 supersample (fast); the
# properties checked do not depend on the sizes.
SIZE, SUPER = 256, 1024


def _landmarks(eye_left, eye_right, mouth_left, mouth_right) -> np.ndarray:
    """Returns 68 landmarks whose eye centres and mouth corners are the given points."""
    lm = np.zeros((68, 2))
    lm[:] = np.mean([eye_left, eye_right, mouth_left, mouth_right], axis=0)
    lm[36:42] = eye_left + np.array([[-3, 0], [-1, -1], [1, -1], [3, 0], [1, 1], [-1, 1]], dtype=float)
    lm[42:48] = eye_right + np.array([[-3, 0], [-1, -1], [1, -1], [3, 0], [1, 1], [-1, 1]], dtype=float)
    lm[48], lm[54] = mouth_left, mouth_right
    return lm


def _ramp(height: int, width: int) -> torch.Tensor:
    """Returns ``[1, 3, H, W]`` whose channels are x and y pixel coordinates scaled into [-1, 1]."""
    ys, xs = torch.meshgrid(torch.arange(height, dtype=torch.float64), torch.arange(width, dtype=torch.float64),
                            indexing="ij")
    return torch.stack([xs / (width - 1) * 2 - 1, ys / (height - 1) * 2 - 1, xs * 0])[None].float()


UPRIGHT = _landmarks((100.0, 100.0), (140.0, 100.0), (110.0, 140.0), (130.0, 140.0))


# ---------------------------------------------------------------------------------------------- recipe


def test_ffhq_quad_matches_recipe_by_hand():
    # eye_to_eye (40, 0), eye_to_mouth (0, 40): x = (40,0) - (40,0)*[-1,1] = (80, 0) -> scaled to
    # max(40*2, 40*1.8) = 80; y = (0, 80); c = (120, 100) + 0.1*(0, 40) = (120, 104).
    quad = ffhq_quad(UPRIGHT)
    np.testing.assert_allclose(quad, [[40, 24], [40, 184], [200, 184], [200, 24]], atol=1e-9)


def test_ffhq_quad_long_face_uses_mouth_scale():
    lm = _landmarks((100.0, 100.0), (140.0, 100.0), (110.0, 160.0), (130.0, 160.0))  # eye-to-mouth 60
    quad = ffhq_quad(lm)
    # x = (40,0)+(60,0) -> unit (1,0) * max(80, 108) = 108 ; c = (120, 106)
    np.testing.assert_allclose(quad[0], [120 - 108, 106 - 108], atol=1e-9)
    np.testing.assert_allclose(quad[2], [120 + 108, 106 + 108], atol=1e-9)


def test_ffhq_quad_rotates_and_scales_with_the_face():
    angle, scale, shift = 0.3, 1.7, np.array([13.0, -7.0])
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    moved = UPRIGHT @ rot.T * scale + shift
    np.testing.assert_allclose(ffhq_quad(moved), ffhq_quad(UPRIGHT) @ rot.T * scale + shift, atol=1e-9)


def test_bad_landmarks_raise():
    with pytest.raises(AlignmentError, match="68"):
        ffhq_quad(np.zeros((5, 2)))
    with pytest.raises(AlignmentError, match="degenerate"):
        ffhq_quad(np.zeros((68, 2)))


# ---------------------------------------------------------------------------------------------- template


def test_ffhq_template_points():
    np.testing.assert_allclose(FFHQ_TEMPLATE.points(1.0), [[0.375, 0.475], [0.625, 0.475], [0.5, 0.725]])
    # a long face (eye-to-mouth 1.5 eye distances) is framed by the mouth: side 2*1.8*1.5 = 5.4
    np.testing.assert_allclose(FFHQ_TEMPLATE.points(1.5)[1, 0] - FFHQ_TEMPLATE.points(1.5)[0, 0], 1 / 5.4)


def test_custom_template_puts_the_face_on_its_points():
    wanted = ((0.3, 0.42), (0.7, 0.42), (0.5, 0.78))
    template = FaceTemplate.from_points(*wanted)
    # UPRIGHT has eye-to-mouth / eye-to-eye = 1.0 ; make the template from points of that proportion
    ratio = (0.78 - 0.42) / 0.4
    lm = _landmarks((100.0, 100.0), (140.0, 100.0), (110.0, 100 + 40 * ratio), (130.0, 100 + 40 * ratio))
    aligned = align_face(_ramp(300, 300), landmarks=lm, template=template, output_size=64, supersample=None)
    got = (face_points(aligned.crop_landmarks) + 0.5) / 64
    np.testing.assert_allclose(got, wanted, atol=1e-6)
    np.testing.assert_allclose(template.points(ratio), wanted, atol=1e-12)
    assert FaceTemplate.from_dict(json.loads(json.dumps(template.to_dict()))) == template


def test_template_validation():
    with pytest.raises(ConfigError):
        FaceTemplate(eye_scale=0)
    with pytest.raises(ConfigError):
        FaceTemplate.from_points((0.7, 0.4), (0.3, 0.4), (0.5, 0.8))  # eyes swapped


# ---------------------------------------------------------------------------------------------- transform


def test_transform_maps_crop_corners_to_the_quad_and_round_trips():
    quad = ffhq_quad(UPRIGHT)
    t = FaceTransform(quad=quad, photo_height=300, photo_width=400, crop_size=64)
    corners = t.crop_to_photo([[-0.5, -0.5], [-0.5, 63.5], [63.5, 63.5], [63.5, -0.5]])
    np.testing.assert_allclose(corners, quad, atol=1e-9)
    # the same quad for a crop of another size
    np.testing.assert_allclose(t.crop_to_photo([[255.5, 255.5]], crop_size=256), quad[2:3], atol=1e-9)
    points = np.random.default_rng(0).uniform(0, 300, (10, 2))
    np.testing.assert_allclose(t.crop_to_photo(t.photo_to_crop(points)), points, atol=1e-9)
    assert FaceTransform.from_json(t.to_json()) == t
    assert t.quad_size == pytest.approx(160.0)


def test_transform_in_safetensors_metadata(tmp_path):
    from safetensors import safe_open
    from safetensors.torch import save_file

    t = FaceTransform(quad=ffhq_quad(UPRIGHT) + 0.123456789, photo_height=300, photo_width=400, crop_size=1024)
    save_file({"crop": torch.zeros(1)}, str(tmp_path / "face.safetensors"), metadata=t.to_metadata())
    with safe_open(str(tmp_path / "face.safetensors"), "pt") as handle:
        assert FaceTransform.from_metadata(handle.metadata()) == t
    with pytest.raises(AlignmentError):
        FaceTransform.from_metadata({})
    with pytest.raises(AlignmentError):
        FaceTransform.from_dict({"quad": [[0, 0]], "photo_height": 1, "photo_width": 1, "crop_size": 1})


# ---------------------------------------------------------------------------------------------- warps


@pytest.mark.parametrize("supersample", [None, 256])
def test_crop_samples_the_photo_where_the_transform_says(supersample):
    # On a linear ramp bilinear sampling (and a symmetric antialiasing filter) is exact, so every
    # crop pixel must hold the ramp value at crop_to_photo(pixel).
    height, width = 300, 400
    angle = 0.2
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    lm = (UPRIGHT - 120) @ rot.T + [200, 150]
    aligned = align_face(_ramp(height, width), landmarks=lm, output_size=64, supersample=supersample)
    assert isinstance(aligned, AlignedFace) and aligned.image.shape == (1, 3, 64, 64)
    uv = np.stack(np.meshgrid(np.arange(64.0), np.arange(64.0), indexing="xy"), -1).reshape(-1, 2)
    xy = aligned.transform.crop_to_photo(uv)
    expected = np.stack([xy[:, 0] / (width - 1) * 2 - 1, xy[:, 1] / (height - 1) * 2 - 1], -1)
    got = aligned.image[0, :2].permute(1, 2, 0).reshape(-1, 2).double().numpy()
    inner = (np.abs(uv - 31.5) < 28).all(1)  # away from the antialiasing filter's reach of the edge
    np.testing.assert_allclose(got[inner], expected[inner], atol=2e-3)


def test_quad_outside_the_photo_is_reflect_padded_and_blended():
    photo = _ramp(120, 120)
    lm = UPRIGHT - [100, 80]  # face near the top-left corner: the quad leaves the photo
    aligned = align_face(photo, landmarks=lm, output_size=64, supersample=128)
    crop = aligned.image
    assert torch.isfinite(crop).all() and crop.abs().max() <= 1
    # the photo part of the crop still matches the photo
    uv = np.array([[40.0, 40.0]])
    x, y = aligned.transform.crop_to_photo(uv)[0]
    assert 0 <= x < 120 and 0 <= y < 120
    assert float(crop[0, 0, 40, 40]) == pytest.approx(x / 119 * 2 - 1, abs=0.02)
    # the padded part is not black (zero padding) nor a copy of the edge: it fades to the median
    corner = crop[0, :2, :4, :4].mean().item()
    assert abs(corner - float(photo[0, :2].median())) < 0.5


@pytest.mark.parametrize("n, before, after", [(5, 2, 3), (4, 9, 11), (2, 3, 1), (1, 2, 2)])
def test_reflect_padding_matches_numpy(n, before, after):
    from pti_core.align import _reflect_indices

    expected = np.pad(np.arange(n), (before, after), mode="reflect") if n > 1 else np.zeros(n + before + after)
    assert _reflect_indices(n, before, after, "cpu").tolist() == expected.tolist()


def test_tiny_image_with_given_landmarks():
    lm = UPRIGHT / 5  # face of 8 px eye distance in a 60 px photo
    aligned = align_face(_ramp(60, 60), landmarks=lm, output_size=32, supersample=64)
    assert aligned.image.shape == (1, 3, 32, 32) and torch.isfinite(aligned.image).all()


def test_bad_arguments():
    with pytest.raises(ConfigError):
        align_face(_ramp(50, 50), landmarks=UPRIGHT / 3, output_size=0)
    with pytest.raises(ImageError):
        align_face(torch.zeros(2, 3, 50, 50), landmarks=UPRIGHT / 3)


# ---------------------------------------------------------------------------------------------- paste back


def test_feather_mask():
    mask = feather_mask(64, 0.1)
    assert mask.shape == (1, 1, 64, 64)
    assert float(mask[0, 0, 32, 32]) == 1.0 and float(mask[0, 0, 0, 0]) < 0.05
    assert float(mask[0, 0, 32, 3]) < float(mask[0, 0, 32, 5]) < 1.0  # soft edge inside the outer 10 %
    assert torch.equal(feather_mask(16, 0.0), torch.ones(1, 1, 16, 16))


def test_paste_back_synthetic_edit_lands_inside_the_quad_only():
    photo = _ramp(200, 240)
    aligned = align_face(photo, landmarks=UPRIGHT, output_size=64, supersample=None)
    edited = torch.full_like(aligned.image, -1.0)  # a black face
    out = paste_back(photo, edited, aligned, feather=0.1)
    assert out.shape == photo.shape
    # centre of the face is replaced, far outside is bit-identical
    assert torch.allclose(out[0, :, 100:110, 115:125], torch.full((3, 10, 10), -1.0), atol=1e-5)
    changed = (out != photo).any(1)[0]
    ys, xs = torch.nonzero(changed, as_tuple=True)
    quad = np.asarray(aligned.transform.quad)
    assert xs.min() >= quad[:, 0].min() - 1 and xs.max() <= quad[:, 0].max() + 1
    assert ys.min() >= quad[:, 1].min() - 1 and ys.max() <= quad[:, 1].max() + 1


def test_paste_back_batches():
    photo = _ramp(200, 240)
    aligned = align_face(photo, landmarks=UPRIGHT, output_size=64, supersample=None)
    frames = torch.stack([torch.full((3, 64, 64), v) for v in (-1.0, 0.0, 1.0)])  # [3, 3, 64, 64]
    out = paste_back(photo, frames, aligned.transform)
    assert out.shape == (3, 3, 200, 240)
    for i in range(3):
        assert torch.equal(out[i:i + 1], paste_back(photo, frames[i:i + 1], aligned.transform))
    # N photos with N transforms
    other = align_face(photo, landmarks=UPRIGHT + [30, 10], output_size=64, supersample=None)
    pair = paste_back(torch.cat([photo, photo]), frames[:2], [aligned, other])
    assert torch.allclose(pair[1:2], paste_back(photo, frames[1:2], other), atol=1e-4)
    assert torch.allclose(pair[0:1], out[0:1], atol=1e-4)


def test_paste_back_errors():
    photo = _ramp(200, 240)
    aligned = align_face(photo, landmarks=UPRIGHT, output_size=64, supersample=None)
    with pytest.raises(AlignmentError, match="aligned on a 200x240"):
        paste_back(_ramp(100, 100), aligned.image, aligned)
    with pytest.raises(ConfigError):
        paste_back(photo, aligned.image, aligned, feather=0.7)
    with pytest.raises(ImageError, match="batch sizes"):
        paste_back(torch.cat([photo] * 2), torch.cat([aligned.image] * 3), aligned)


# ---------------------------------------------------------------------------------------------- real photo


@pytest.fixture(scope="module")
def astronaut():
    path = realworld("photos", "astronaut.png")
    return path, align_face(path, output_size=SIZE, supersample=SUPER)


def test_astronaut_face_is_detected_not_the_mission_patch(astronaut):
    _, aligned = astronaut
    left, top, right, bottom = aligned.face_box
    # the astronaut's face is in the upper middle; the mission patch (a known false detection) is
    # at about (120..215, 335..430)
    assert 150 < (left + right) / 2 < 260 and 60 < (top + bottom) / 2 < 190
    assert aligned.num_faces >= 1


def test_astronaut_eyes_land_on_the_ffhq_template(astronaut):
    from pti_core.face import detect_faces

    _, aligned = astronaut
    eye_left, eye_right, mouth = face_points(aligned.landmarks)
    ratio = np.linalg.norm(mouth - (eye_left + eye_right) / 2) / np.linalg.norm(eye_right - eye_left)
    expected = FFHQ_TEMPLATE.points(ratio)  # [3, 2] in crop units
    transformed = (face_points(aligned.crop_landmarks) + 0.5) / SIZE
    assert np.abs(transformed[:2] - expected[:2]).max() < 0.02
    faces = detect_faces(aligned.image)  # landmarks found again on the crop itself
    assert len(faces) == 1
    redetected = (face_points(faces[0].landmarks) + 0.5) / SIZE
    assert np.abs(redetected[:2] - expected[:2]).max() < 0.02
    assert np.abs(redetected[2] - expected[2]).max() < 0.03  # mouth


def test_crop_matches_pillow_quad_transform(astronaut):
    # FFHQ renders with Pillow: transform(QUAD, quad + 0.5, BILINEAR) at the supersample size, then a
    # Lanczos resize. Same pixel convention here: 50 dB apart, while a 1 px shift is ~24 dB apart.
    path, aligned = astronaut
    quad = np.asarray(aligned.transform.quad)
    with Image.open(path) as image:
        rgb = image.convert("RGB")

    def pillow_crop(offset: float) -> torch.Tensor:
        big = rgb.transform((SUPER, SUPER), Image.Transform.QUAD, tuple((quad + offset).flatten()),
                            Image.Resampling.BILINEAR)
        return imageio.pil_to_nchw(big.resize((SIZE, SIZE), Image.Resampling.LANCZOS))

    assert float(metrics.psnr(pillow_crop(0.5), aligned.image)) > 45
    assert float(metrics.psnr(pillow_crop(1.5), aligned.image)) < 30


def test_astronaut_paste_back_reproduces_the_photo(astronaut):
    path, aligned = astronaut
    photo = imageio.load_image(path)
    out = paste_back(photo, aligned.image, aligned.transform)
    left, top, right, bottom = (int(round(v)) for v in aligned.face_box)
    assert float(metrics.psnr(out[:, :, top:bottom, left:right], photo[:, :, top:bottom, left:right])) >= 30
    # outside the mask: bit-identical (the quad covers far less than the photo)
    same = (out == photo).all(1)[0]
    assert same.float().mean() > 0.5
    mask = paste_back(torch.zeros_like(photo) - 1, torch.ones_like(aligned.image), aligned.transform) > -1
    assert torch.equal(same | mask.any(1)[0], torch.ones_like(same))


def test_large_photo_is_shrunk_first_and_gives_the_same_crop(astronaut):
    path, aligned = astronaut
    photo = imageio.load_image(path)
    big = imageio.resize(photo, 2048)  # 4x: the face quad (~700 px) is > 4x the 128 px output -> shrink 2
    lm = (aligned.landmarks + 0.5) * 4 - 0.5
    small_crop = align_face(photo, landmarks=aligned.landmarks, output_size=128, supersample=512)
    big_crop = align_face(big, landmarks=lm, output_size=128, supersample=512)
    expected_quad = (np.asarray(small_crop.transform.quad) + 0.5) * 4 - 0.5
    np.testing.assert_allclose(np.asarray(big_crop.transform.quad), expected_quad, atol=1e-6)
    assert float(metrics.psnr(big_crop.image, small_crop.image)) > 30


def test_rgba_greyscale_and_exif_rotated_photos(tmp_path):
    path = realworld("photos", "astronaut.png")
    with Image.open(path) as image:
        rgb = image.convert("RGB").crop((0, 0, 512, 400))  # non-square, so a rotation changes the size
    reference = align_face(rgb, output_size=64, supersample=128)
    for variant in (rgb.convert("RGBA"), rgb.convert("L")):
        aligned = align_face(variant, output_size=64, supersample=128)
        np.testing.assert_allclose(aligned.transform.quad, reference.transform.quad, atol=3.0)
    # stored turned 90 degrees with EXIF orientation 6 ("rotate 90 clockwise to display")
    exif = Image.Exif()
    exif[0x0112] = 6
    rgb.rotate(90, expand=True).save(tmp_path / "rotated.jpg", quality=95, exif=exif.tobytes())
    aligned = align_face(tmp_path / "rotated.jpg", output_size=64, supersample=128)
    assert (aligned.transform.photo_height, aligned.transform.photo_width) == (400, 512)
    np.testing.assert_allclose(aligned.transform.quad, reference.transform.quad, atol=4.0)


def test_tiny_photo_is_upsampled_for_detection():
    path = realworld("photos", "astronaut.png")
    with Image.open(path) as image:
        small = image.convert("RGB").resize((96, 96), Image.Resampling.LANCZOS)  # face about 17 px
    aligned = align_face(small, output_size=64, supersample=128)
    big = align_face(path, output_size=64, supersample=128)
    np.testing.assert_allclose(np.asarray(aligned.transform.quad) * 512 / 96, big.transform.quad, atol=12.0)


def test_no_face_names_the_image(tmp_path):
    blank = tmp_path / "blank_wall.png"
    Image.new("RGB", (160, 120), (120, 130, 140)).save(blank)
    with pytest.raises(AlignmentError, match="blank_wall.png: no face found"):
        align_face(blank, output_size=64, supersample=None)
