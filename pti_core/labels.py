"""Attribute labels from dlib's 68 face landmarks, for any generator's samples or any face crops.

Labels drive learned editing directions (InterfaceGAN style: sample w, render, label, fit a linear
boundary in W; see ``pti_core.directions``) and the checks that an edit did what it says.

Labellers (``LABELLERS``):

* ``"yaw"``: head yaw from the nose tip's horizontal position between the jaw ends (points 0 and
  16): ``(|nose - jaw_left| - |jaw_right - nose|) / (|nose - jaw_left| + |jaw_right - nose|)``, in
  [-1, 1]; 0 is frontal, positive means the nose is nearer the image's right edge (the face turns
  towards the image's right).
* ``"mouth_open"``: inner-lip gap (points 61-67, 62-66, 63-65, averaged, measured across the
  mouth line and signed: negative where the inner lips cross) over mouth width (48-54).

Landmarks come from :mod:`pti_core.face` (the ``align`` extra): the detector runs on the image
padded by a quarter of its side and upsampled to at least 256 px; where it finds no face, the
shape predictor runs with the whole image as the face box (``detected`` says which happened).

At 64 px the landmarks are noisy; :func:`label_images` can average over the mirror image
(``mirror``) and over 27 nearby boxes (``jitter``), and use one box for all frames of a sweep
(``box="shared"``). :func:`label_samples` (the training labels of learned directions) uses
``mirror=True`` by default. Measure an edit sweep with ``box="shared", mirror=True, jitter=2``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, NamedTuple

import numpy as np
import torch
from torch import nn

from .errors import ConfigError, LatentError


@dataclass(frozen=True)
class Landmarks:
    """dlib landmarks of a batch: ``points`` ``[B, 68, 2]`` (pixels of the input) and ``detected`` ``[B]``.

    ``detected[i]`` is False where the detector found no face and the points come from the
    whole-image box instead (still usable on tight crops, less reliable).
    """

    points: np.ndarray
    detected: np.ndarray
    size: tuple[int, int]  # (height, width) of the images the points refer to


def _detections(padded_arrays: np.ndarray, pad: int, *, upsample: int, threshold: float):
    """Yields the surest detection ``(box, landmarks)`` (input pixels) or None for each padded image."""
    from .face import detect_faces

    for padded_array in padded_arrays:
        faces = detect_faces(np.ascontiguousarray(padded_array), upsample=upsample, threshold=threshold)
        if faces:
            best = max(faces, key=lambda face: face.score)
            box = tuple(float(v) - pad for v in best.box)
            yield box, np.asarray(best.landmarks, dtype=np.float64) - pad
        else:
            yield None


def _upscaled(array: np.ndarray, min_side: int = 256) -> tuple[np.ndarray, int]:
    """Returns ``(array upscaled by an integer k (Lanczos) to a side >= min_side, k)``, as the detector sees it."""
    from PIL import Image

    h, w = array.shape[:2]
    k = max(1, -(-min_side // min(h, w)))
    if k == 1:
        return np.ascontiguousarray(array), 1
    return np.ascontiguousarray(np.asarray(Image.fromarray(array).resize((w * k, h * k), Image.Resampling.LANCZOS))), k


def landmarks_68(images: torch.Tensor, *, pad_fraction: float = 0.25, upsample: int = 0,
                 box: str | tuple[float, float, float, float] = "detect", threshold: float = 0.0,
                 jitter: int = 0) -> Landmarks:
    """Returns dlib's 68 landmarks for every image of ``images`` ``[B, 3, H, W]`` in [-1, 1].

    Generator samples are tight crops whose face box reaches past the border, where dlib's detector
    often fails; each image is therefore padded (edge replication, ``pad_fraction`` of its side on
    every side) before detection. On the DCGAN teacher's samples this raised the detection rate
    from 66% to 78% (64 samples) and, with ``upsample=0``, cut the time per image from 137 to 31 ms.

    Args:
        images: ``[B, 3, H, W]`` in [-1, 1].
        pad_fraction, upsample, threshold: detector settings (see :func:`pti_core.face.detect_faces`).
        box: where the shape predictor looks. ``"detect"``: each image's own detection (the whole
            image where none is found); ``"shared"``: the median of the batch's detections for every
            image (for frames of one face, e.g. an edit sweep: the detector's box snaps between
            scales from frame to frame, which moves the landmarks more than a small edit does; where
            no frame passes ``threshold``, it is lowered in steps of 0.25, down to ``threshold - 1``);
            ``"image"``: the whole image; or ``(left, top, right, bottom)`` in input pixels.
        jitter: > 0 runs the shape predictor on 27 boxes instead of one (the box shifted by
            ``-jitter, 0, +jitter`` pixels in x and y and grown by the same on every side) and
            averages the points. dlib's regression trees depend on where the box starts: on a
            tuned 64 px photo, detector boxes a few pixels apart moved the mouth label by up to 0.06,
            more than a mouth edit of 3 standard deviations changes it.

    Raises:
        DependencyError: dlib or its models are missing (the ``align`` extra).
        ConfigError: an unknown ``box``.
    """
    import torch.nn.functional as F

    from .face import face_landmarks
    from .imageio import check_nchw, nchw_to_uint8

    check_nchw(images, name="images")
    if isinstance(box, str) and box not in ("detect", "shared", "image"):
        raise ConfigError(f"unknown landmark box {box!r}; use 'detect', 'shared', 'image' or (left, top, right, bottom)")
    images = images.detach().cpu().to(torch.float32).clamp(-1, 1)
    h, w = int(images.shape[2]), int(images.shape[3])
    whole = (0.0, 0.0, w - 1.0, h - 1.0)
    pad = int(round(pad_fraction * images.shape[-1]))
    padded = nchw_to_uint8(F.pad(images, (pad, pad, pad, pad), mode="replicate") if pad else images)
    if isinstance(box, str) and box != "image":
        found = list(_detections(padded, pad, upsample=upsample, threshold=threshold))
    else:
        found = [None] * len(padded)
    detected = np.array([f is not None for f in found], dtype=bool)
    if box == "shared":
        boxes = [f[0] for f in found if f is not None]
        for lower in (0.25, 0.5, 0.75, 1.0):                                    # frames of one face: find it once
            if boxes:
                break
            boxes = [f[0] for f in _detections(padded, pad, upsample=upsample, threshold=threshold - lower) if f]
        shared = tuple(float(v) for v in np.median(np.array(boxes), axis=0)) if boxes else whole
        boxes = [shared] * len(padded)
    elif box == "detect":
        boxes = [f[0] if f is not None else whole for f in found]
    else:
        boxes = [whole if box == "image" else tuple(float(v) for v in box)] * len(padded)

    points = []
    for array, image_box, hit in zip(padded, boxes, found):
        if box == "detect" and hit is not None and not jitter:
            points.append(hit[1])                                                # the detector's own run
            continue
        left, top, right, bottom = (v + pad for v in image_box)                  # padded pixels
        tries = [(left, top, right, bottom)]
        if jitter:
            j = float(jitter)
            tries = [(left + dx - g, top + dy - g, right + dx + g, bottom + dy + g)
                     for dx in (-j, 0.0, j) for dy in (-j, 0.0, j) for g in (-j, 0.0, j)]
        big, k = _upscaled(array)                                                # once for all boxes
        runs = [face_landmarks(big, tuple((v + 0.5) * k - 0.5 for v in t)) for t in tries]
        points.append((np.mean(runs, axis=0) + 0.5) / k - 0.5 - pad)
    return Landmarks(points=np.stack(points), detected=detected, size=(h, w))


def yaw_from_landmarks(points: np.ndarray) -> np.ndarray:
    """Returns head yaw in [-1, 1] per face from landmarks ``[B, 68, 2]`` (see module docstring)."""
    points = np.asarray(points, dtype=np.float64)
    nose, left, right = points[:, 30, 0], points[:, 0, 0], points[:, 16, 0]
    to_left, to_right = np.abs(nose - left), np.abs(right - nose)
    return (to_left - to_right) / np.maximum(to_left + to_right, 1e-6)


def mouth_open_from_landmarks(points: np.ndarray) -> np.ndarray:
    """Returns mouth openness per face (signed inner-lip gap / mouth width) from ``[B, 68, 2]``.

    The gap is measured across the mouth line (corners 48-54), from the upper inner lip (61-63) to
    the lower (67-65), so it is negative where dlib's inner lips cross (a closed mouth at 64 px):
    an unsigned distance counted a crossing as opening, which made edit sweeps U-shaped.
    """
    points = np.asarray(points, dtype=np.float64)
    across = points[:, 54] - points[:, 48]                                      # [B, 2] along the mouth
    width = np.linalg.norm(across, axis=-1)
    across = across / np.maximum(width, 1e-6)[:, None]
    down = np.stack([-across[:, 1], across[:, 0]], axis=-1)                     # image y grows downwards
    gap = np.mean([((points[:, b] - points[:, a]) * down).sum(-1) for a, b in ((61, 67), (62, 66), (63, 65))],
                  axis=0)
    return gap / np.maximum(width, 1e-6)


LABELLERS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "yaw": yaw_from_landmarks,
    "mouth_open": mouth_open_from_landmarks,
}


def _labeller(name: str) -> Callable[[np.ndarray], np.ndarray]:
    if name not in LABELLERS:
        raise ConfigError(f"unknown labeller {name!r}; choose one of {', '.join(LABELLERS)}")
    return LABELLERS[name]


MIRROR_SIGNS: dict[str, float] = {"yaw": -1.0, "mouth_open": 1.0}
"""How each label changes when the image is mirrored left-right (yaw changes sign, mouth openness not)."""


def _mirror_box(box, width: int):
    if isinstance(box, str):
        return box
    left, top, right, bottom = box
    return (width - 1.0 - right, top, width - 1.0 - left, bottom)


def label_images(images: torch.Tensor, labeller: str, *, box: str | tuple = "detect", jitter: int = 0,
                 mirror: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Returns ``(labels [B] float32, detected [B] bool)`` of ``labeller`` for ``images`` in [-1, 1].

    Args:
        images: ``[B, 3, H, W]`` in [-1, 1].
        labeller: a key of :data:`LABELLERS`.
        box, jitter: see :func:`landmarks_68` (``box="shared"`` for frames of one face).
        mirror: also label the left-right mirrored images and average (yaw negated): halves the
            landmark predictor's asymmetric noise; ``detected`` then needs a face in both.
    """
    fn = _labeller(labeller)
    marks = landmarks_68(images, box=box, jitter=jitter)
    values, detected = fn(marks.points), marks.detected
    if mirror:
        flipped = landmarks_68(images.flip(-1), box=_mirror_box(box, int(images.shape[-1])), jitter=jitter)
        values = (values + MIRROR_SIGNS.get(labeller, 1.0) * fn(flipped.points)) / 2
        detected = detected & flipped.detected
    return (torch.from_numpy(np.asarray(values, dtype=np.float64)).to(torch.float32), torch.from_numpy(detected))


class LabelledSamples(NamedTuple):
    """Generated samples with labels: ``ws`` ``[n, w_dim]`` (W space) and ``labels`` ``[n]`` float32."""

    ws: torch.Tensor
    labels: torch.Tensor


@torch.no_grad()
def label_samples(G: nn.Module, n: int, *, labeller: str = "yaw", seed: int = 0, truncation_psi: float = 1.0,
                  batch_size: int = 16, require_detection: bool = True, max_draws: int | None = None,
                  mirror: bool = True, jitter: int = 0, progress=None) -> LabelledSamples:
    """Returns ``n`` random samples of ``G`` in W with their landmark labels (``ws, labels = ...``).

    Samples are drawn from z (seeded), mapped to w, rendered with constant noise and labelled.
    With ``require_detection`` samples where dlib's detector finds no face (in the image or, with
    ``mirror``, in its mirror image) are skipped and more are drawn (up to ``max_draws``, default
    ``4 * n``).

    Args:
        G: a generator with ``mapping``/``synthesis`` (``G.synthesis(ws)`` in [-1, 1]).
        n: samples to return.
        labeller: a key of :data:`LABELLERS` ("yaw" or "mouth_open").
        seed: seeds the z draws.
        truncation_psi: truncation towards ``w_avg`` (1 = none).
        mirror, jitter: label noise reduction (see :func:`label_images`). Mirror averaging raised
            the held-out correlation of a fitted mouth boundary's projection with the labels from
            0.81 to 0.85 (embedded 64 px model, 3,600 samples). Jitter (27 predictor runs per
            image, ~5x the time) is off by default: a regression over thousands of samples
            averages that noise out; it matters when measuring single images (edit sweeps).
        progress: optional ``progress(done, n, "label", None)``.

    Raises:
        LatentError: fewer than ``n`` detected faces within ``max_draws`` samples.
    """
    _labeller(labeller)
    if n < 1:
        raise ConfigError(f"n must be >= 1, got {n}")
    max_draws = 4 * n if max_draws is None else max_draws
    generator = torch.Generator().manual_seed(seed)
    ws_out, labels_out, drawn = [], [], 0
    kept = 0
    while kept < n:
        if drawn >= max_draws:
            raise LatentError(f"dlib found a face in only {kept} of {drawn} samples; lower n, raise max_draws "
                              "or pass require_detection=False")
        count = min(batch_size, max_draws - drawn)
        z = torch.randn(count, G.z_dim, generator=generator)
        ws = G.mapping(z, None, truncation_psi=truncation_psi)  # [B, num_ws, w_dim]
        images = G.synthesis(ws, noise_mode="const").clamp(-1, 1)
        drawn += count
        values, detected = label_images(images, labeller, mirror=mirror, jitter=jitter)
        keep = detected.numpy() if require_detection else np.ones(count, dtype=bool)
        for i in np.flatnonzero(keep):
            if kept < n:
                ws_out.append(ws[i, 0])
                labels_out.append(float(values[i]))
                kept += 1
        if progress is not None:
            progress(kept, n, "label", None)
    return LabelledSamples(ws=torch.stack(ws_out), labels=torch.tensor(labels_out, dtype=torch.float32))


@dataclass(frozen=True)
class TemplateMeasurement:
    """Mean landmark positions of a generator's samples, in crop units (0..1, y down)."""

    eye_left: tuple[float, float]
    eye_right: tuple[float, float]
    mouth: tuple[float, float]
    samples: int
    detected: int
    eye_distance_std: float
    mouth_y_std: float

    def to_dict(self) -> dict:
        """Returns JSON-able values."""
        return {"eye_left": list(self.eye_left), "eye_right": list(self.eye_right), "mouth": list(self.mouth),
                "samples": self.samples, "detected": self.detected,
                "eye_distance_std": self.eye_distance_std, "mouth_y_std": self.mouth_y_std}


def face_points_normalised(marks: Landmarks) -> np.ndarray:
    """Returns ``[B, 3, 2]`` eye-left, eye-right, mouth centres in crop units (pixel centres at (i + 0.5) / size)."""
    p = marks.points
    h, w = marks.size
    eyes_l, eyes_r = p[:, 36:42].mean(1), p[:, 42:48].mean(1)
    mouth = (p[:, 48] + p[:, 54]) / 2
    pts = np.stack([eyes_l, eyes_r, mouth], axis=1)
    return (pts + 0.5) / np.array([w, h], dtype=np.float64)


@torch.no_grad()
def measure_template(images_or_G, n: int = 256, *, seed: int = 0, batch_size: int = 32):
    """Returns ``(FaceTemplate, TemplateMeasurement)``: where eyes and mouth fall in a generator's samples.

    Args:
        images_or_G: a generator (``n`` seeded samples are rendered) or images ``[B, 3, H, W]``.
        n, seed, batch_size: samples to draw from a generator.

    Only images where dlib's detector found a face are used.
    """
    from .align import FaceTemplate

    if isinstance(images_or_G, torch.Tensor):
        batches = [images_or_G]
    else:
        G = images_or_G
        z = torch.randn(n, G.z_dim, generator=torch.Generator().manual_seed(seed))
        batches = [G.synthesis(G.mapping(chunk), noise_mode="const").clamp(-1, 1) for chunk in z.split(batch_size)]
    pts, total = [], 0
    for images in batches:
        marks = landmarks_68(images)
        total += len(marks.detected)
        pts.append(face_points_normalised(marks)[marks.detected])
    pts = np.concatenate(pts)
    if len(pts) == 0:
        raise LatentError("dlib found no face in any sample; cannot measure a template")
    mean = pts.mean(0)
    template = FaceTemplate.from_points(mean[0], mean[1], mean[2])
    measurement = TemplateMeasurement(
        eye_left=tuple(map(float, mean[0])), eye_right=tuple(map(float, mean[1])), mouth=tuple(map(float, mean[2])),
        samples=int(total), detected=int(len(pts)),
        eye_distance_std=float((pts[:, 1, 0] - pts[:, 0, 0]).std()), mouth_y_std=float(pts[:, 2, 1].std()))
    return template, measurement
