"""FFHQ face alignment of a photo, and pasting an edited crop back into that photo.

StyleGAN face models only reproduce faces framed exactly like their training set. FFHQ (and so
every FFHQ generator) frames a face from dlib's 68 landmarks with this recipe
(NVlabs/ffhq-dataset, ``recreate_aligned_images``):

* eye centres = mean of points 36-41 and 42-47; mouth centre = mean of the corners 48 and 54;
  ``eye_avg``, ``eye_to_eye = eye_right - eye_left``, ``eye_to_mouth = mouth_avg - eye_avg``;
* the crop's x axis ``x = eye_to_eye - flipud(eye_to_mouth) * [-1, 1]``, normalised and scaled to
  ``max(|eye_to_eye| * 2.0, |eye_to_mouth| * 1.8)``; ``y = flipud(x) * [-1, 1]``;
* centre ``c = eye_avg + eye_to_mouth * 0.1``; the crop is the square ``quad = c -+ x -+ y``;
* very large faces are shrunk first; the photo is cropped to the quad plus a border; where the quad
  leaves the photo it is padded by reflection, blurred towards the edge and blended to the median
  colour; the quad is then resampled to a supersampled square (4096 px) and downsampled to the
  output size (antialiased), which avoids the aliasing of a direct bilinear resample.

The numbers 2.0, 1.8 and 0.1 are :data:`FFHQ_TEMPLATE`. A generator whose faces are framed
differently (a 64 px model with looser crops, say) supplies its own :class:`FaceTemplate`; see
:meth:`FaceTemplate.from_points`.

The crop comes with a :class:`FaceTransform`: the photo position of the crop's corners. It maps
crop pixels back into the photo, so :func:`paste_back` can put an edited face back at the photo's
own resolution. Warps use kornia (they run on the image's device, CPU or GPU, and in batches).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F

from .errors import AlignmentError, ConfigError, ImageError
from .imageio import ImageLike, check_nchw, nchw_to_uint8, resize, to_nchw

Box = tuple[float, float, float, float]  # (left, top, right, bottom) in photo pixels


# --------------------------------------------------------------------------------------------------
# template


@dataclass(frozen=True)
class FaceTemplate:
    """Where the FFHQ-style recipe puts a face in the crop (the recipe's three numbers).

    For an upright face with eye distance ``E`` and eye-to-mouth distance ``M`` (photo pixels) the
    crop side is ``2 * max(eye_scale * E, mouth_scale * M)`` and the crop centre lies
    ``centre_shift * M`` below the midpoint of the eyes. Bigger scales frame the face more loosely
    (smaller face in the crop); a bigger shift moves the face up. The eye-to-eye direction, averaged
    with the eye-to-mouth direction turned by 90 degrees, sets the crop's rotation, whatever the template.

    Attributes:
        eye_scale: crop half-side per eye-to-eye distance (FFHQ 2.0: eyes 1/4 of the crop apart).
        mouth_scale: crop half-side per eye-to-mouth distance (FFHQ 1.8); the larger of the two wins.
        centre_shift: crop centre below the eye midpoint, per eye-to-mouth distance (FFHQ 0.1).

    Examples:
        >>> FFHQ_TEMPLATE.points(1.0).round(3).tolist()
        [[0.375, 0.475], [0.625, 0.475], [0.5, 0.725]]
        >>> t = FaceTemplate.from_points((0.375, 0.475), (0.625, 0.475), (0.5, 0.725))
        >>> (round(t.eye_scale, 6), round(t.mouth_scale, 6), round(t.centre_shift, 6))
        (2.0, 2.0, 0.1)
    """

    eye_scale: float = 2.0
    mouth_scale: float = 1.8
    centre_shift: float = 0.1

    def __post_init__(self) -> None:
        for name in ("eye_scale", "mouth_scale"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ConfigError(f"FaceTemplate.{name} must be a positive number, got {value!r}")
        if not (isinstance(self.centre_shift, (int, float)) and math.isfinite(self.centre_shift)):
            raise ConfigError(f"FaceTemplate.centre_shift must be a finite number, got {self.centre_shift!r}")

    @classmethod
    def from_points(cls, eye_left: Sequence[float], eye_right: Sequence[float],
                    mouth: Sequence[float]) -> "FaceTemplate":
        """Returns the template that puts a face's eye centres and mouth centre at these positions.

        Positions are ``(x, y)`` in crop units (0..1, y down), e.g. the mean landmark positions
        measured on a generator's samples. The recipe frames faces symmetrically, so only the eye
        distance, the eyes' height and the eye-to-mouth distance are used (horizontal offsets
        are ignored). A face with this eye/mouth proportion lands exactly on the points; other
        faces keep their proportions (the recipe does not stretch faces).

        Raises:
            ConfigError: the points are not eyes side by side above a mouth.
        """
        (xl, yl), (xr, yr), (_, ym) = (tuple(map(float, p)) for p in (eye_left, eye_right, mouth))
        eye_distance = xr - xl
        eye_y = (yl + yr) / 2
        mouth_distance = ym - eye_y
        if eye_distance <= 0 or mouth_distance <= 0:
            raise ConfigError("template points must have the left eye left of the right eye and the "
                              f"mouth below the eyes, got eyes {eye_left}, {eye_right}, mouth {mouth}")
        return cls(eye_scale=0.5 / eye_distance, mouth_scale=0.5 / mouth_distance,
                   centre_shift=(0.5 - eye_y) / mouth_distance)

    def points(self, eye_mouth_ratio: float) -> np.ndarray:
        """Returns ``[3, 2]`` crop positions (0..1) of left eye, right eye and mouth centre.

        Args:
            eye_mouth_ratio: ``|eye_to_mouth| / |eye_to_eye|`` of the face (about 1.0-1.2 for dlib's
                landmarks); the recipe keeps each face's own proportions, so where the mouth (and,
                for long faces, the eyes) land depends on it.
        """
        m = float(eye_mouth_ratio)
        side = 2 * max(self.eye_scale, self.mouth_scale * m)  # in eye distances
        eye_y = 0.5 - self.centre_shift * m / side
        return np.array([[0.5 - 0.5 / side, eye_y], [0.5 + 0.5 / side, eye_y], [0.5, eye_y + m / side]])

    def to_dict(self) -> dict:
        """Returns the template as JSON-able values."""
        return {"eye_scale": float(self.eye_scale), "mouth_scale": float(self.mouth_scale),
                "centre_shift": float(self.centre_shift)}

    @classmethod
    def from_dict(cls, data: dict) -> "FaceTemplate":
        """Returns the template written by :meth:`to_dict`."""
        try:
            return cls(**{k: float(data[k]) for k in ("eye_scale", "mouth_scale", "centre_shift")})
        except (KeyError, TypeError, ValueError) as error:
            raise ConfigError(f"not a face template: {error}; expected eye_scale, mouth_scale, centre_shift") from None


FFHQ_TEMPLATE = FaceTemplate()


def generator_template(G) -> FaceTemplate:
    """Returns the alignment template a generator was trained with (stored in its file), else FFHQ's.

    ``load_generator`` attaches the template saved in a pack safetensors file as ``G.face_template``
    (the shipped distilled model has one; NVIDIA's FFHQ models use the FFHQ recipe).
    """
    stored = getattr(G, "face_template", None)
    if stored is None:
        return FFHQ_TEMPLATE
    return stored if isinstance(stored, FaceTemplate) else FaceTemplate.from_dict(stored)
"""The FFHQ recipe: half-side ``max(2.0 * |eye_to_eye|, 1.8 * |eye_to_mouth|)``, centre shift 0.1."""


def face_points(landmarks: np.ndarray) -> np.ndarray:
    """Returns ``[3, 2]``: left eye centre (points 36-41), right eye centre (42-47), mouth centre (48, 54).

    "Left" is the image's left (the person's right eye).
    """
    lm = _check_landmarks(landmarks)
    return np.stack([lm[36:42].mean(0), lm[42:48].mean(0), (lm[48] + lm[54]) / 2])


def _check_landmarks(landmarks) -> np.ndarray:
    lm = np.asarray(landmarks, dtype=np.float64)
    if lm.shape != (68, 2) or not np.isfinite(lm).all():
        raise AlignmentError(f"expected dlib's 68 landmarks as a finite [68, 2] array, got shape {list(lm.shape)}")
    return lm


def ffhq_quad(landmarks: np.ndarray, template: FaceTemplate | None = None) -> np.ndarray:
    """Returns the crop square ``[4, 2]`` (top-left, bottom-left, bottom-right, top-right) in photo pixels.

    Exactly the FFHQ recipe (module docstring) with the template's numbers.

    Raises:
        AlignmentError: landmarks of the wrong shape, or degenerate (eyes and mouth on one point).
    """
    template = template or FFHQ_TEMPLATE
    eye_left, eye_right, mouth_avg = face_points(landmarks)
    eye_avg = (eye_left + eye_right) * 0.5
    eye_to_eye = eye_right - eye_left
    eye_to_mouth = mouth_avg - eye_avg
    x = eye_to_eye - np.flipud(eye_to_mouth) * [-1, 1]
    norm = np.hypot(*x)
    if not norm > 1e-6:
        raise AlignmentError("the face landmarks are degenerate (eyes and mouth coincide); cannot align")
    x = x / norm
    x = x * max(np.hypot(*eye_to_eye) * template.eye_scale, np.hypot(*eye_to_mouth) * template.mouth_scale)
    y = np.flipud(x) * [-1, 1]
    c = eye_avg + eye_to_mouth * template.centre_shift
    return np.stack([c - x - y, c - x + y, c + x + y, c + x - y])


# --------------------------------------------------------------------------------------------------
# transform


@dataclass(frozen=True)
class FaceTransform:
    """Where an aligned crop lies in its photo; maps crop pixels to photo pixels and back.

    Attributes:
        quad: the crop's four outer corners ``(x, y)`` in photo pixels (pixel centres at integers, as
            dlib's landmarks): top-left, bottom-left, bottom-right, top-right (FFHQ's order).
        photo_height: height of the photo the crop was taken from.
        photo_width: its width.
        crop_size: side of the aligned crop in pixels (a crop of another size, e.g. an edit rendered
            by a 256 px generator, maps with the same quad: see ``crop_size`` arguments).

    Serialise with :meth:`to_dict` / :meth:`to_json` (JSON, or safetensors metadata via
    :meth:`to_metadata`).
    """

    quad: tuple[tuple[float, float], tuple[float, float], tuple[float, float], tuple[float, float]]
    photo_height: int
    photo_width: int
    crop_size: int

    def __post_init__(self) -> None:
        quad = np.asarray(self.quad, dtype=np.float64)
        if quad.shape != (4, 2) or not np.isfinite(quad).all():
            raise AlignmentError(f"a face transform needs 4 finite (x, y) corners, got {self.quad!r}")
        object.__setattr__(self, "quad", tuple((float(x), float(y)) for x, y in quad))
        for name in ("photo_height", "photo_width", "crop_size"):
            value = getattr(self, name)
            if int(value) != value or int(value) < 1:
                raise AlignmentError(f"face transform {name} must be a positive integer, got {value!r}")
            object.__setattr__(self, name, int(value))
        side = np.hypot(*(quad[3] - quad[0]))
        if side <= 0 or np.abs(quad[0] + quad[2] - quad[1] - quad[3]).max() > 1e-3 * side + 1e-6:
            raise AlignmentError("a face transform's corners must form a non-empty parallelogram")

    @property
    def quad_size(self) -> float:
        """Returns the side of the crop square in photo pixels."""
        q = np.asarray(self.quad)
        return float(np.hypot(*(q[3] - q[0])))

    def crop_to_photo_matrix(self, crop_size: int | None = None) -> np.ndarray:
        """Returns the ``[3, 3]`` float64 matrix mapping crop pixels ``(u, v, 1)`` to photo pixels.

        Pixel centres are at integers in both; the crop's outer corner ``(-0.5, -0.5)`` maps to
        ``quad[0]``. ``crop_size`` (default: the aligned crop's) lets a resized crop map too.
        """
        s = float(crop_size or self.crop_size)
        q = np.asarray(self.quad)
        ex, ey = (q[3] - q[0]) / s, (q[1] - q[0]) / s  # photo step per crop pixel along u, v
        origin = q[0] + 0.5 * (ex + ey)
        return np.array([[ex[0], ey[0], origin[0]], [ex[1], ey[1], origin[1]], [0.0, 0.0, 1.0]])

    def photo_to_crop_matrix(self, crop_size: int | None = None) -> np.ndarray:
        """Returns the ``[3, 3]`` float64 matrix mapping photo pixels to crop pixels."""
        return np.linalg.inv(self.crop_to_photo_matrix(crop_size))

    def crop_to_photo(self, points, crop_size: int | None = None) -> np.ndarray:
        """Returns crop points ``[N, 2]`` ``(u, v)`` mapped into photo pixels ``[N, 2]``."""
        return _apply(self.crop_to_photo_matrix(crop_size), points)

    def photo_to_crop(self, points, crop_size: int | None = None) -> np.ndarray:
        """Returns photo points ``[N, 2]`` ``(x, y)`` mapped into crop pixels ``[N, 2]``."""
        return _apply(self.photo_to_crop_matrix(crop_size), points)

    def to_dict(self) -> dict:
        """Returns the transform as JSON-able values."""
        return {"quad": [list(c) for c in self.quad], "photo_height": self.photo_height,
                "photo_width": self.photo_width, "crop_size": self.crop_size}

    @classmethod
    def from_dict(cls, data: dict) -> "FaceTransform":
        """Returns the transform written by :meth:`to_dict`.

        Raises:
            AlignmentError: missing or malformed fields.
        """
        try:
            return cls(quad=tuple(tuple(c) for c in data["quad"]), photo_height=data["photo_height"],
                       photo_width=data["photo_width"], crop_size=data["crop_size"])
        except (KeyError, TypeError, ValueError) as error:
            raise AlignmentError(f"not a face transform ({error.__class__.__name__}: {error}); "
                                 "expected quad, photo_height, photo_width, crop_size") from None

    def to_json(self) -> str:
        """Returns the transform as a JSON string (floats round-trip exactly)."""
        return json.dumps(self.to_dict())

    @classmethod
    def from_json(cls, text: str) -> "FaceTransform":
        """Returns the transform written by :meth:`to_json`."""
        try:
            data = json.loads(text)
        except (TypeError, ValueError) as error:
            raise AlignmentError(f"not a face transform: invalid JSON ({error})") from None
        return cls.from_dict(data)

    def to_metadata(self) -> dict[str, str]:
        """Returns ``{"pti.face_transform": json}`` for a safetensors file's metadata."""
        return {METADATA_KEY: self.to_json()}

    @classmethod
    def from_metadata(cls, metadata: dict[str, str]) -> "FaceTransform":
        """Returns the transform stored by :meth:`to_metadata`."""
        if METADATA_KEY not in (metadata or {}):
            raise AlignmentError(f"no {METADATA_KEY!r} entry in this file's metadata; it holds no face transform")
        return cls.from_json(metadata[METADATA_KEY])


METADATA_KEY = "pti.face_transform"


def _apply(matrix: np.ndarray, points) -> np.ndarray:
    p = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    return p @ matrix[:2, :2].T + matrix[:2, 2]


@dataclass(frozen=True, eq=False)
class AlignedFace:
    """An aligned face crop and where it came from.

    Attributes:
        image: ``[1, 3, S, S]`` float32 in [-1, 1], the aligned crop.
        transform: maps crop pixels back into the photo (for :func:`paste_back`).
        landmarks: ``[68, 2]`` dlib landmarks in photo pixels.
        face_box: the detector's box ``(left, top, right, bottom)`` in photo pixels.
        score: the detector's score (nan when landmarks were given).
        face_index: which face, counting left to right (0 when landmarks were given).
        num_faces: faces found in the photo (1 when landmarks were given).
        template: the framing used.
        supersample: side of the supersampled square the crop was resampled from.
    """

    image: torch.Tensor
    transform: FaceTransform
    landmarks: np.ndarray
    face_box: Box
    score: float = float("nan")
    face_index: int = 0
    num_faces: int = 1
    template: FaceTemplate = field(default=FFHQ_TEMPLATE)
    supersample: int = 0

    @property
    def crop_landmarks(self) -> np.ndarray:
        """Returns the landmarks ``[68, 2]`` in crop pixels."""
        return self.transform.photo_to_crop(self.landmarks)

    def to_dict(self) -> dict:
        """Returns everything but the image as JSON-able values (write it beside the crop)."""
        return {"transform": self.transform.to_dict(), "landmarks": np.asarray(self.landmarks).tolist(),
                "face_box": [float(v) for v in self.face_box], "score": float(self.score),
                "face_index": int(self.face_index), "num_faces": int(self.num_faces),
                "template": self.template.to_dict(), "supersample": int(self.supersample)}


# --------------------------------------------------------------------------------------------------
# alignment


def align_face(image: ImageLike, *, face_index: int | None = None, pick: str | int = "score",
               output_size: int = 1024, supersample: int | None = 4096,
               template: FaceTemplate | None = None, landmarks: np.ndarray | None = None,
               name: str | None = None) -> AlignedFace:
    """Returns the FFHQ-aligned crop of one face in a photo, with the transform back into the photo.

    Args:
        image: one photo: a path, PIL image (EXIF rotation applied, RGBA composited on white,
            greyscale made RGB), uint8 ``[H, W, C]`` array, or ``[1, 3, H, W]`` tensor in [-1, 1]
            (on any device: the warps run there).
        face_index: which face, counting left to right from 0 (see ``pick``).
        pick: ``"score"`` (the detector's surest face; default), ``"largest"``, ``"index"``, or
            an int index. A ``face_index`` with the default pick selects by index.
        output_size: side of the crop, the generator's resolution (FFHQ: 1024).
        supersample: side of the intermediate square the quad is resampled to before the
            antialiased downsampling (FFHQ: 4096); None or <= output_size resamples directly.
        template: the framing (default :data:`FFHQ_TEMPLATE`).
        landmarks: dlib's 68 points ``[68, 2]`` in photo pixels, to skip detection (no dlib needed).
        name: the image's name in error messages (default: the path, or "image").

    Returns:
        An :class:`AlignedFace`.

    Raises:
        AlignmentError: no face found (the message names the image), or a face index out of range.
        DependencyError: detection needed and the ``align`` extra is not installed.
        ImageError: an unreadable image or a batch of more than one.
        ConfigError: a bad output_size or supersample.
    """
    if name is None:
        name = str(image) if isinstance(image, (str, bytes)) or hasattr(image, "__fspath__") else "image"
    output_size = _positive_int(output_size, "output_size")
    sample_size = output_size if supersample is None else max(_positive_int(supersample, "supersample"), output_size)
    template = template or FFHQ_TEMPLATE
    photo = to_nchw(image)  # [1, 3, H, W]
    if photo.shape[0] != 1:
        raise ImageError(f"{name}: align_face takes one image, got a batch of {photo.shape[0]}; align them one by one")
    _, _, height, width = photo.shape
    if landmarks is None:
        from .face import detect_faces, pick_face  # noqa: PLC0415  (dlib is optional)

        faces = detect_faces(np.ascontiguousarray(nchw_to_uint8(photo)[0]))
        face = pick_face(faces, pick, face_index=face_index, name=name)
        landmarks, box, score, index, count = face.landmarks, face.box, face.score, face.index, face.num_faces
    else:
        landmarks = _check_landmarks(landmarks)
        low, high = landmarks.min(0), landmarks.max(0)
        box, score, index, count = (float(low[0]), float(low[1]), float(high[0]), float(high[1])), float("nan"), 0, 1
    quad = ffhq_quad(landmarks, template)
    transform = FaceTransform(quad=quad, photo_height=height, photo_width=width, crop_size=output_size)
    crop = _render(photo, transform, output_size=output_size, sample_size=sample_size)
    return AlignedFace(image=crop, transform=transform, landmarks=np.asarray(landmarks, dtype=np.float64),
                       face_box=tuple(float(v) for v in box), score=float(score), face_index=int(index),
                       num_faces=int(count), template=template, supersample=int(sample_size))


def _positive_int(value, name: str) -> int:
    if isinstance(value, bool) or int(value) != value or int(value) < 1:
        raise ConfigError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _translate(dx: float, dy: float) -> np.ndarray:
    return np.array([[1.0, 0.0, dx], [0.0, 1.0, dy], [0.0, 0.0, 1.0]])


def _reflect_indices(n: int, before: int, after: int, device) -> torch.Tensor:
    """Returns indices of ``np.pad(mode="reflect")`` along one axis (any pad width, repeated reflection)."""
    i = torch.arange(-before, n + after, device=device)
    if n == 1:
        return torch.zeros_like(i)
    period = 2 * (n - 1)
    i = torch.remainder(i, period)
    return torch.where(i >= n, period - i, i)


def _gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Returns ``x`` ``[B, C, H, W]`` blurred with a Gaussian of ``sigma`` px (large sigmas on a reduced copy)."""
    from kornia.filters import gaussian_blur2d  # noqa: PLC0415

    if sigma < 0.3:
        return x
    h, w = x.shape[-2:]
    factor = max(1, int(sigma // 2))
    small = x if factor == 1 else F.interpolate(x, size=(max(1, round(h / factor)), max(1, round(w / factor))),
                                                mode="area")
    s = sigma * small.shape[-1] / w
    radius = max(1, min(int(4 * s + 0.5), min(small.shape[-2:]) - 1))
    border = "reflect" if min(small.shape[-2:]) > radius else "replicate"
    blurred = gaussian_blur2d(small, (2 * radius + 1, 2 * radius + 1), (s, s), border_type=border)
    return blurred if factor == 1 else F.interpolate(blurred, size=(h, w), mode="bilinear", align_corners=False)


def _render(photo: torch.Tensor, transform: FaceTransform, *, output_size: int, sample_size: int) -> torch.Tensor:
    """Returns the quad of ``photo`` ``[1, 3, H, W]`` resampled to ``[1, 3, output_size, output_size]``.

    Shrink, crop and reflect-pad follow the FFHQ recipe on a working copy; the final resampling maps
    crop pixels through the exact transform (photo -> working copy), so paste-back inverts it.
    """
    from kornia.geometry.transform import warp_perspective  # noqa: PLC0415

    work = photo.to(torch.float32)
    _, _, h, w = work.shape
    quad = np.asarray(transform.quad)
    qsize = transform.quad_size
    work_from_photo = np.eye(3)

    # Shrink (antialiased) when the face is far larger than the output.
    shrink = int(np.floor(qsize / output_size * 0.5))
    if shrink > 1:
        rw, rh = max(1, int(np.rint(w / shrink))), max(1, int(np.rint(h / shrink)))
        work = resize(work, (rh, rw)).clamp(-1, 1)
        sx, sy = rw / w, rh / h
        work_from_photo = np.array([[sx, 0, 0.5 * sx - 0.5], [0, sy, 0.5 * sy - 0.5], [0, 0, 1.0]]) @ work_from_photo
        qsize /= shrink
        h, w = rh, rw
    q = _apply(work_from_photo, quad)

    # Crop to the quad plus a border.
    border = max(int(np.rint(qsize * 0.1)), 3)
    crop = (int(np.floor(q[:, 0].min())), int(np.floor(q[:, 1].min())),
            int(np.ceil(q[:, 0].max())), int(np.ceil(q[:, 1].max())))
    crop = (max(crop[0] - border, 0), max(crop[1] - border, 0), min(crop[2] + border, w), min(crop[3] + border, h))
    if crop[2] <= crop[0] or crop[3] <= crop[1]:
        raise AlignmentError("the face lies outside the photo; cannot align")
    if crop[2] - crop[0] < w or crop[3] - crop[1] < h:
        work = work[:, :, crop[1]:crop[3], crop[0]:crop[2]]
        work_from_photo = _translate(-crop[0], -crop[1]) @ work_from_photo
        h, w = work.shape[-2:]
        q = _apply(work_from_photo, quad)

    # Pad by reflection where the quad leaves the photo; blur and fade the padding to the median colour.
    pad = (int(np.floor(q[:, 0].min())), int(np.floor(q[:, 1].min())),
           int(np.ceil(q[:, 0].max())), int(np.ceil(q[:, 1].max())))
    pad = (max(-pad[0] + border, 0), max(-pad[1] + border, 0), max(pad[2] - w + border, 0), max(pad[3] - h + border, 0))
    if max(pad) > border - 4:
        pad = tuple(max(p, int(np.rint(qsize * 0.3)), 1) for p in pad)
        rows = _reflect_indices(h, pad[1], pad[3], work.device)
        cols = _reflect_indices(w, pad[0], pad[2], work.device)
        work = work.index_select(2, rows).index_select(3, cols)
        h, w = work.shape[-2:]
        ys = torch.arange(h, device=work.device, dtype=torch.float32).view(h, 1)
        xs = torch.arange(w, device=work.device, dtype=torch.float32).view(1, w)
        mask = torch.maximum(1.0 - torch.minimum(xs / pad[0], (w - 1 - xs) / pad[2]),
                             1.0 - torch.minimum(ys / pad[1], (h - 1 - ys) / pad[3]))  # [h, w]
        work = work + (_gaussian_blur(work, qsize * 0.02) - work) * (mask * 3.0 + 1.0).clamp(0.0, 1.0)
        median = work.flatten(2).median(dim=2).values[:, :, None, None]  # [1, 3, 1, 1]
        work = work + (median - work) * mask.clamp(0.0, 1.0)
        work_from_photo = _translate(pad[0], pad[1]) @ work_from_photo

    # Resample the quad to the supersampled square, then downsample with antialiasing.
    work_from_crop = work_from_photo @ transform.crop_to_photo_matrix(sample_size)
    crop_from_work = torch.as_tensor(np.linalg.inv(work_from_crop), dtype=torch.float32, device=work.device)[None]
    sampled = warp_perspective(work, crop_from_work, (sample_size, sample_size), mode="bilinear",
                               padding_mode="border", align_corners=True)  # [1, 3, T, T]
    if sample_size != output_size:
        sampled = F.interpolate(sampled, size=(output_size, output_size), mode="bicubic", align_corners=False,
                                antialias=True)
    return sampled.clamp(-1, 1).contiguous()


# --------------------------------------------------------------------------------------------------
# paste back

TransformLike = Union[FaceTransform, AlignedFace]


def _as_transform(item) -> FaceTransform:
    if isinstance(item, AlignedFace):
        return item.transform
    if isinstance(item, FaceTransform):
        return item
    if isinstance(item, dict):
        return FaceTransform.from_dict(item)
    raise AlignmentError(f"expected a FaceTransform or AlignedFace, got {type(item).__name__}")


def feather_mask(size: int, feather: float, *, device=None) -> torch.Tensor:
    """Returns a ``[1, 1, size, size]`` mask: 1 inside, falling smoothly to 0 at the crop's edges.

    Args:
        size: crop side in pixels.
        feather: width of the soft edge as a fraction of the crop side (0 = hard edge, max 0.5).
    """
    u = (torch.arange(size, device=device, dtype=torch.float32) + 0.5) / size
    edge = torch.minimum(u, 1 - u)  # distance to the nearest edge, crop units
    ramp = torch.ones_like(edge) if feather <= 0 else (edge / feather).clamp(0, 1)
    ramp = ramp * ramp * (3 - 2 * ramp)  # smoothstep
    return torch.minimum(ramp.view(1, size), ramp.view(size, 1))[None, None]


def paste_back(photo: torch.Tensor, edited_crop: torch.Tensor,
               transform: TransformLike | Sequence[TransformLike], *, feather: float = 0.1) -> torch.Tensor:
    """Returns the photo(s) with the edited crop warped back in place under a feathered mask.

    The output has the photo's own resolution; pixels outside the mask are bit-identical to the
    photo. The edited crop may have any square size (e.g. 256 px from a smaller generator); it is
    mapped through the same quad. Batches: ``N`` edited frames with one photo and one transform give
    ``N`` photos (an edit sweep); ``N`` photos with ``N`` transforms and ``N`` crops pair up.

    Args:
        photo: ``[B, 3, H, W]`` in [-1, 1], the photo(s) that were aligned (B = 1 or N).
        edited_crop: ``[N, 3, S, S]`` in [-1, 1].
        transform: a :class:`FaceTransform` or :class:`AlignedFace`, or a sequence of 1 or N of them.
        feather: soft-edge width as a fraction of the crop side (0..0.5; default 0.1).

    Returns:
        ``[N, 3, H, W]`` float32 in [-1, 1], on the photo's device.

    Raises:
        ImageError: bad shapes or ranges, or batch sizes that do not pair up.
        AlignmentError: a transform made on a photo of another size.
        ConfigError: feather outside 0..0.5.
    """
    from kornia.geometry.transform import warp_perspective  # noqa: PLC0415

    check_nchw(photo, name="photo")
    check_nchw(edited_crop, name="edited crop")
    if not (isinstance(feather, (int, float)) and 0 <= feather <= 0.5):
        raise ConfigError(f"feather must be between 0 and 0.5 (a fraction of the crop side), got {feather!r}")
    transforms = [transform] if isinstance(transform, (FaceTransform, AlignedFace, dict)) else list(transform)
    transforms = [_as_transform(t) for t in transforms]
    if not transforms:
        raise AlignmentError("paste_back needs at least one face transform")
    counts = {"photo": photo.shape[0], "edited crop": edited_crop.shape[0], "transform": len(transforms)}
    n = max(counts.values())
    bad = {k: v for k, v in counts.items() if v not in (1, n)}
    if bad:
        raise ImageError(f"paste_back: batch sizes must be 1 or {n}, got " +
                         ", ".join(f"{k} {v}" for k, v in counts.items()))
    _, _, height, width = photo.shape
    for t in transforms:
        if (t.photo_height, t.photo_width) != (height, width):
            raise AlignmentError(f"the photo is {height}x{width} but the face was aligned on a "
                                 f"{t.photo_height}x{t.photo_width} photo; paste back into the photo that was aligned")
    s = edited_crop.shape[-1]
    if edited_crop.shape[-2] != s:
        raise ImageError(f"edited crop must be square, got {list(edited_crop.shape[-2:])}")

    device = photo.device
    photo = photo.to(torch.float32)
    crops = edited_crop.to(device=device, dtype=torch.float32)
    # Shrink the crop to about its footprint first, so the bilinear warp does not alias.
    footprint = max(t.quad_size for t in transforms)
    size = s
    if footprint < 0.8 * s:
        size = max(8, int(math.ceil(footprint)))
        crops = resize(crops, size)
    crops = crops.expand(n, -1, -1, -1)
    transforms = transforms * n if len(transforms) == 1 else transforms

    corners = np.concatenate([np.asarray(t.quad) for t in transforms])
    x0 = max(0, int(np.floor(corners[:, 0].min())) - 2)
    y0 = max(0, int(np.floor(corners[:, 1].min())) - 2)
    x1 = min(width, int(np.ceil(corners[:, 0].max())) + 3)
    y1 = min(height, int(np.ceil(corners[:, 1].max())) + 3)
    out = photo.expand(n, -1, -1, -1).clone()
    if x1 <= x0 or y1 <= y0:
        return out  # the crop lies entirely outside the photo
    box_from_crop = np.stack([_translate(-x0, -y0) @ t.crop_to_photo_matrix(size) for t in transforms])
    matrices = torch.as_tensor(box_from_crop, dtype=torch.float32, device=device)  # [N, 3, 3]
    warped = warp_perspective(crops, matrices, (y1 - y0, x1 - x0), mode="bilinear", padding_mode="zeros",
                              align_corners=True)  # [N, 3, h, w]
    mask = feather_mask(size, float(feather), device=device).expand(n, -1, -1, -1)
    mask = warp_perspective(mask, matrices, (y1 - y0, x1 - x0), mode="bilinear", padding_mode="zeros",
                            align_corners=True).clamp(0, 1)  # [N, 1, h, w]
    region = out[:, :, y0:y1, x0:x1]
    blended = (region + (warped - region) * mask).clamp(-1, 1)
    out[:, :, y0:y1, x0:x1] = torch.where(mask > 0, blended, region)  # untouched outside the mask
    return out


__all__ = ["FaceTemplate", "FFHQ_TEMPLATE", "FaceTransform", "AlignedFace", "align_face", "paste_back",
           "ffhq_quad", "face_points", "feather_mask", "METADATA_KEY"]
