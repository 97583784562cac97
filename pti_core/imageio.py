"""The one place where image ranges and layouts are converted.

Inside the library an image batch is a float tensor ``[B, 3, H, W]`` in [-1, 1] (NCHW).
ComfyUI's ``IMAGE`` is ``[B, H, W, 3]`` float32 in [0, 1]; PIL images and uint8 arrays are
``[H, W, C]`` in 0..255. Every conversion between these lives here.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Union

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import ImageError
from .fileio import atomic_write

ImageLike = Union[Image.Image, np.ndarray, torch.Tensor, str, os.PathLike]

_RANGE_SLACK = 1e-3


def check_nchw(images: torch.Tensor, *, name: str = "image", channels: int = 3) -> torch.Tensor:
    """Returns ``images`` unchanged after checking it is ``[B, channels, H, W]`` float in [-1, 1].

    Raises:
        ImageError: on another rank, channel count, dtype, an empty batch or values outside [-1, 1].
    """
    if not isinstance(images, torch.Tensor):
        raise ImageError(f"{name}: expected a torch tensor, got {type(images).__name__}")
    if images.ndim != 4 or images.shape[1] != channels:
        raise ImageError(f"{name}: expected shape [B, {channels}, H, W], got {list(images.shape)}")
    if images.numel() == 0:
        raise ImageError(f"{name}: the image batch is empty ({list(images.shape)})")
    if not images.is_floating_point():
        raise ImageError(f"{name}: expected a float tensor in [-1, 1], got {images.dtype}")
    lo, hi = float(images.min()), float(images.max())
    if lo < -1 - _RANGE_SLACK or hi > 1 + _RANGE_SLACK:
        raise ImageError(f"{name}: values must lie in [-1, 1], found [{lo:.3f}, {hi:.3f}]; "
                         "convert with pti_core.imageio first")
    return images


def comfy_to_nchw(images: torch.Tensor, *, name: str = "IMAGE") -> torch.Tensor:
    """Returns ComfyUI ``IMAGE`` ``[B, H, W, C]`` in [0, 1] as ``[B, 3, H, W]`` float32 in [-1, 1].

    One channel is repeated to RGB; a fourth (alpha) channel is dropped (ComfyUI keeps
    masks separately).

    Examples:
        >>> x = torch.zeros(2, 8, 6, 3)
        >>> comfy_to_nchw(x).shape
        torch.Size([2, 3, 8, 6])
    """
    if not isinstance(images, torch.Tensor) or images.ndim != 4:
        shape = list(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ImageError(f"{name}: expected an IMAGE batch [B, H, W, C], got {shape}")
    if images.shape[0] == 0 or images.shape[1] == 0 or images.shape[2] == 0:
        raise ImageError(f"{name}: the image batch is empty ({list(images.shape)})")
    c = images.shape[-1]
    if c == 1:
        images = images.expand(-1, -1, -1, 3)
    elif c == 4:
        images = images[..., :3]
    elif c != 3:
        raise ImageError(f"{name}: expected 1, 3 or 4 channels, got {c}")
    x = images.detach().to(torch.float32).permute(0, 3, 1, 2)
    return (x.clamp(0, 1) * 2 - 1).contiguous()


def nchw_to_comfy(images: torch.Tensor) -> torch.Tensor:
    """Returns ``[B, 3, H, W]`` in [-1, 1] as ComfyUI ``IMAGE`` ``[B, H, W, 3]`` float32 in [0, 1], contiguous.

    Values outside [-1, 1] (raw generator output) are clamped.
    """
    if images.ndim != 4 or images.shape[1] != 3:
        raise ImageError(f"expected [B, 3, H, W], got {list(images.shape)}")
    x = (images.detach().to(torch.float32) + 1) / 2
    return x.clamp(0, 1).permute(0, 2, 3, 1).contiguous()


def pil_to_nchw(image: Image.Image) -> torch.Tensor:
    """Returns a PIL image (any mode; EXIF orientation applied; alpha composited on white) as ``[1, 3, H, W]`` in [-1, 1]."""
    image = ImageOps.exif_transpose(image)
    if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    image = image.convert("RGB")
    array = np.array(image, dtype=np.uint8)  # a writable copy (torch.from_numpy warns on read-only)
    return uint8_to_nchw(array)


def uint8_to_nchw(array: np.ndarray) -> torch.Tensor:
    """Returns an ``[H, W]``, ``[H, W, C]`` or ``[B, H, W, C]`` uint8 array as ``[B, 3, H, W]`` float32 in [-1, 1]."""
    if array.dtype != np.uint8:
        raise ImageError(f"expected a uint8 array, got {array.dtype}")
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim == 3:
        array = array[None]
    if array.ndim != 4 or array.shape[-1] not in (1, 3, 4):
        raise ImageError(f"expected an image array [H, W, C], got {list(array.shape)}")
    if array.shape[-1] == 1:
        array = np.repeat(array, 3, axis=-1)
    array = array[..., :3]
    if 0 in array.shape:
        raise ImageError(f"the image is empty ({list(array.shape)})")
    x = torch.from_numpy(np.ascontiguousarray(array)).permute(0, 3, 1, 2).to(torch.float32)
    return (x / 127.5 - 1).contiguous()


def nchw_to_uint8(images: torch.Tensor) -> np.ndarray:
    """Returns ``[B, 3, H, W]`` in [-1, 1] as a ``[B, H, W, 3]`` uint8 array (clamped, rounded)."""
    x = (images.detach().to(torch.float32).cpu() + 1) * 127.5
    return x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()


def nchw_to_pil(images: torch.Tensor, index: int = 0) -> Image.Image:
    """Returns image ``index`` of an ``[B, 3, H, W]`` batch in [-1, 1] as a PIL RGB image."""
    return Image.fromarray(nchw_to_uint8(images[index:index + 1])[0], mode="RGB")


def load_image(path: str | os.PathLike) -> torch.Tensor:
    """Returns the image file at ``path`` as ``[1, 3, H, W]`` float32 in [-1, 1].

    Raises:
        ImageError: when the file is missing, empty or not an image Pillow can read.
    """
    path = Path(path)
    if not path.is_file():
        raise ImageError(f"{path}: no such image file")
    if path.stat().st_size == 0:
        raise ImageError(f"{path}: the file is empty, not an image")
    try:
        with Image.open(path) as image:
            image.load()
            return pil_to_nchw(image)
    except (UnidentifiedImageError, OSError, ValueError) as error:
        raise ImageError(f"{path}: not a readable image ({error.__class__.__name__}: {error})") from None


def to_nchw(image: ImageLike) -> torch.Tensor:
    """Returns any supported image (path, PIL, uint8 array, NCHW tensor in [-1, 1]) as ``[B, 3, H, W]`` in [-1, 1]."""
    if isinstance(image, (str, os.PathLike)):
        return load_image(image)
    if isinstance(image, Image.Image):
        return pil_to_nchw(image)
    if isinstance(image, np.ndarray):
        return uint8_to_nchw(image)
    if isinstance(image, torch.Tensor):
        if image.ndim == 3:
            image = image[None]
        if image.ndim == 4 and image.shape[1] == 1:
            image = image.expand(-1, 3, -1, -1)
        if image.ndim == 4 and image.shape[1] == 4:
            image = image[:, :3]
        return check_nchw(image.to(torch.float32))
    raise ImageError(f"unsupported image type {type(image).__name__}; pass a path, PIL image, uint8 array or tensor")


def resize(images: torch.Tensor, size: int | tuple[int, int]) -> torch.Tensor:
    """Returns ``images`` ``[B, C, H, W]`` resized to ``size`` (int = square) with antialiasing when shrinking."""
    if isinstance(size, int):
        size = (size, size)
    if tuple(images.shape[-2:]) == tuple(size):
        return images
    shrink = size[0] < images.shape[-2] or size[1] < images.shape[-1]
    return F.interpolate(images, size=size, mode="bilinear", align_corners=False, antialias=shrink)


def prepare_target(image: ImageLike, resolution: int) -> torch.Tensor:
    """Returns an image as a PTI target: ``[B, 3, resolution, resolution]`` in [-1, 1].

    Non-square images are centre-cropped to a square first (aligned faces are square already).

    Raises:
        ImageError: for empty or unreadable input.
    """
    x = to_nchw(image)
    h, w = x.shape[-2:]
    if h != w:
        side = min(h, w)
        top, left = (h - side) // 2, (w - side) // 2
        x = x[:, :, top:top + side, left:left + side]
    return resize(x, resolution).clamp(-1, 1).contiguous()


def save_image(images: torch.Tensor, path: str | os.PathLike, *, index: int = 0) -> Path:
    """Writes image ``index`` of ``[B, 3, H, W]`` in [-1, 1] to ``path`` atomically (temp file + rename); returns the path."""
    path = Path(path)
    fmt = (path.suffix.lstrip(".") or "png").upper()
    fmt = "JPEG" if fmt == "JPG" else fmt
    picture = nchw_to_pil(images, index)
    return atomic_write(path, lambda tmp: picture.save(tmp, format=fmt), overwrite=True)
