"""Image-comparison metrics between two batches ``[B, 3, H, W]`` in [-1, 1].

Each function returns one value per image (a ``[B]`` tensor).
"""

from __future__ import annotations


import torch

from .errors import ImageError
from .imageio import check_nchw


def _pair(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    check_nchw(a, name="first image")
    check_nchw(b, name="second image")
    if a.shape != b.shape:
        raise ImageError(f"images to compare must have the same shape, got {list(a.shape)} and {list(b.shape)}")
    return a.to(torch.float32), b.to(torch.float32)


def mse(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Returns the mean squared error per image, on the [-1, 1] scale (PTI's convention).

    Examples:
        >>> mse(torch.zeros(1, 3, 2, 2), torch.ones(1, 3, 2, 2)).tolist()
        [1.0]
    """
    a, b = _pair(a, b)
    return (a - b).square().mean(dim=[1, 2, 3])


def psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Returns the PSNR in dB per image, for images in [-1, 1] (peak-to-peak 2)."""
    error = mse(a, b).clamp_min(1e-12)
    return 10 * torch.log10(4.0 / error)


def lpips_distance(a: torch.Tensor, b: torch.Tensor, *, net: str = "lpips-alex",
                   max_size: int | None = None) -> torch.Tensor:
    """Returns the LPIPS distance per image pair (``[B]``) with the perceptual backbone ``net``.

    Args:
        net: a kind of :data:`pti_core.losses.PERCEPTUAL_KINDS`: ``"lpips-alex"`` (the standard
            metric; needs torchvision's AlexNet file in the cache), ``"lpips-vgg"``,
            ``"stlpips-alex"`` (trained ST-LPIPS, no download) or ``"random-alex"`` (tests only).
        max_size: area-downsample larger images to this size first (None: full resolution).

    Raises:
        MissingFileError: the backbone is not in torchvision's cache (nothing is downloaded).
    """
    from .losses import perceptual_model  # noqa: PLC0415

    a, b = _pair(a, b)
    model = perceptual_model(net, a.device)
    with torch.no_grad():
        return model(a, b, max_size=max_size)


def identity_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Returns dlib's face-descriptor distance per image pair (same person < 0.6); needs ``.[align]``."""
    from .face import identity_distance as _identity_distance  # noqa: PLC0415

    return _identity_distance(a, b)


__all__ = ["mse", "psnr", "lpips_distance", "identity_distance"]
