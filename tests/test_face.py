"""dlib face detection, landmarks, face picking and the identity distance."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from helpers import REPO, realworld
from pti_core import imageio, metrics
from pti_core.errors import AlignmentError, ImageError
from pti_core.face import Face, detect_faces, face_descriptor, face_landmarks, find_face, identity_distance, pick_face


def _blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    from kornia.filters import gaussian_blur2d

    radius = int(3 * sigma + 0.5)
    return gaussian_blur2d(x, (2 * radius + 1, 2 * radius + 1), (sigma, sigma)).clamp(-1, 1)


@pytest.fixture(scope="module")
def astronaut() -> torch.Tensor:
    return imageio.load_image(realworld("photos", "astronaut.png"))


@pytest.fixture(scope="module")
def hopper() -> torch.Tensor:
    return imageio.load_image(realworld("photos", "grace_hopper.jpg"))


# ---------------------------------------------------------------------------------------------- picking


def _face(box, score, index=0) -> Face:
    return Face(box=box, score=score, landmarks=np.zeros((68, 2)), index=index, num_faces=3)


FACES = [_face((0, 0, 10, 10), 0.5, 0), _face((20, 0, 60, 40), 0.2, 1), _face((70, 0, 90, 20), 1.5, 2)]


def test_pick_face_by_score_size_and_index():
    assert pick_face(FACES).index == 2
    assert pick_face(FACES, "largest").index == 1
    assert pick_face(FACES, "index", face_index=0).index == 0
    assert pick_face(FACES, 1).index == 1
    assert pick_face(FACES, face_index=0).index == 0  # an index with the default pick selects by index
    with pytest.raises(AlignmentError, match="out of range: found 3"):
        pick_face(FACES, "index", face_index=3)
    with pytest.raises(AlignmentError, match="needs a face_index"):
        pick_face(FACES, "index")
    with pytest.raises(AlignmentError, match="unknown face pick"):
        pick_face(FACES, "best")
    with pytest.raises(AlignmentError, match="holiday.jpg: no face found"):
        pick_face([], name="holiday.jpg")


# ---------------------------------------------------------------------------------------------- detection


def test_astronaut_face_wins_over_the_mission_patch(astronaut):
    # with a lower threshold dlib also reports the mission patch on the suit (a known false detection)
    faces = detect_faces(astronaut, threshold=-0.5)
    assert len(faces) >= 2
    assert [f.index for f in faces] == list(range(len(faces)))
    centres_x = [(f.box[0] + f.box[2]) / 2 for f in faces]
    assert centres_x == sorted(centres_x)  # indexed left to right
    best = pick_face(faces)
    left, top, right, bottom = best.box
    assert 150 < (left + right) / 2 < 260 and 60 < (top + bottom) / 2 < 190  # the face, upper middle
    assert all((f.box[1] + f.box[3]) / 2 > 250 for f in faces if f is not best)  # the rest is the suit
    # the landmarks belong to that face: eyes above the mouth, inside the box
    lm = best.landmarks
    assert lm.shape == (68, 2)
    assert lm[36:48, 1].mean() < lm[48:60, 1].mean()
    inside = (lm[:, 0] > left - 10) & (lm[:, 0] < right + 10) & (lm[:, 1] > top - 20) & (lm[:, 1] < bottom + 20)
    assert inside.mean() > 0.9
    assert find_face(astronaut).box == best.box


def test_tiny_image_detection_and_landmarks_match_the_full_size():
    full = imageio.load_image(realworld("photos", "mona_lisa_aligned256.png"))
    small = imageio.resize(full, 64)
    faces = detect_faces(small)  # 64 px: upsampled internally before dlib sees it
    assert len(faces) == 1
    expected = (face_landmarks(full) + 0.5) / 4 - 0.5  # full-size landmarks in 64 px coordinates
    assert np.abs(faces[0].landmarks - expected).mean() < 1.0
    whole = face_landmarks(small, "image")  # the whole image as the box (tight generated crops)
    assert np.abs(whole - expected).mean() < 1.5


def test_no_face_gives_no_detection():
    assert detect_faces(torch.zeros(1, 3, 120, 160)) == []
    with pytest.raises(AlignmentError, match="wall.png: no face found"):
        find_face(torch.zeros(1, 3, 120, 160), name="wall.png")
    with pytest.raises(ImageError, match="one image"):
        detect_faces(torch.zeros(2, 3, 32, 32))


# ---------------------------------------------------------------------------------------------- identity


def test_identity_same_person_blurred_is_below_0_6(astronaut):
    distance = metrics.identity_distance(astronaut, _blur(astronaut, 2.0))
    assert distance.shape == (1,) and float(distance) < 0.6


def test_identity_different_person_is_above_0_6(astronaut, hopper):
    # images of different sizes are fine; a batch of one pairs with every image of the other
    distance = identity_distance(torch.cat([astronaut, _blur(astronaut, 1.0)]), hopper)
    assert distance.shape == (2,) and (distance > 0.6).all()


def test_identity_without_a_detected_face_uses_the_whole_crop(astronaut):
    tight = astronaut[:, :, 95:160, 185:255]  # 70x65 crop of the face: too tight for the detector
    assert detect_faces(tight) == []
    # described with the whole crop as the face box, it still matches the full photo's face
    assert float(identity_distance(tight, astronaut)) < 0.6
    descriptors = face_descriptor(torch.cat([imageio.resize(tight, 64), torch.zeros(1, 3, 64, 64)]))
    assert descriptors.shape == (2, 128) and torch.isfinite(descriptors).all()
    assert float(identity_distance(tight, tight)) == 0.0
    with pytest.raises(ImageError, match="batch sizes"):
        identity_distance(torch.zeros(2, 3, 32, 32), torch.zeros(3, 3, 32, 32))


# ---------------------------------------------------------------------------------------------- without dlib


def test_missing_extra_gives_install_hint_and_the_rest_works():
    code = "\n".join([
        "import sys",
        "sys.modules['dlib'] = None",  # import dlib -> ImportError
        "import importlib.util as u",
        "_find = u.find_spec",
        "u.find_spec = lambda name, *a: None if name == 'face_recognition_models' else _find(name, *a)",
        "import numpy as np, torch",
        "import pti_core",
        "from pti_core import align, face",
        "from pti_core.errors import DependencyError",
        "lm = np.zeros((68, 2)); lm[36:42] = (20, 20); lm[42:48] = (40, 20); lm[48] = (25, 40); lm[54] = (35, 40)",
        "crop = pti_core.align_face(torch.zeros(1, 3, 64, 64), landmarks=lm, output_size=32, supersample=None)",
        "assert crop.image.shape == (1, 3, 32, 32)",
        "for call in (lambda: face.detect_faces(torch.zeros(1, 3, 8, 8)), lambda: face.model_file('x.dat'),",
        "             lambda: pti_core.align_face(torch.zeros(1, 3, 64, 64))):",
        "    try:",
        "        call()",
        "    except DependencyError as error:",
        "        assert 'pip install' in str(error) and '\\n' not in str(error), str(error)",
        "    else:",
        "        raise SystemExit('no DependencyError')",
        "print('ok')",
    ])
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-2000:]
