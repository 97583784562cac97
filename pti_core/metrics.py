"""Image-comparison metrics between two batches ``[B, 3, H, W]`` in [-1, 1].

Each function returns one value per image (a ``[B]`` tensor).
"""

from __future__ import annotations


import torch
import torch.nn.functional as F

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


def laplacian(images: torch.Tensor) -> torch.Tensor:
    """Returns the 3x3 Laplacian of ``images`` ``[N, C, H, W]``, per channel (replicate padding).

    Examples:
        >>> laplacian(torch.ones(1, 3, 4, 4)).abs().max().item()
        0.0
    """
    kernel = images.new_tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]]).expand(images.shape[1], 1, 3, 3)
    return F.conv2d(F.pad(images, (1, 1, 1, 1), mode="replicate"), kernel, groups=images.shape[1])


def laplacian_energy(images: torch.Tensor) -> torch.Tensor:
    """Returns the mean squared Laplacian per image (``[B]``): the high-frequency energy (fine detail, noise)."""
    check_nchw(images, name="images")
    return laplacian(images.to(torch.float32)).square().mean(dim=[1, 2, 3])


def detail_error(reconstruction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Returns the high-frequency energy of ``reconstruction - target`` over the target's own, per image.

    0 = every fine detail reproduced; 1 = none of it (a blurred copy), or speckle as strong as the
    detail itself. Shift-tolerant perceptual metrics (ST-LPIPS) miss both; this does not.

    Examples:
        >>> t = torch.rand(1, 3, 16, 16) * 2 - 1
        >>> detail_error(t, t).item(), round(detail_error(torch.zeros_like(t), t).item(), 6)
        (0.0, 1.0)
    """
    reconstruction, target = _pair(reconstruction, target)
    energy = lambda images: laplacian(images).square().mean(dim=[1, 2, 3])  # noqa: E731
    return energy(reconstruction - target) / energy(target).clamp_min(1e-12)


def frechet_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Returns the Fréchet distance between Gaussians fitted to two sets of feature vectors ``[N, D]``, ``[M, D]``.

    ``|mu_a - mu_b|^2 + tr(S_a + S_b - 2 (S_a S_b)^(1/2))``, computed in float64 through symmetric
    eigendecompositions (no complex square roots).

    Examples:
        >>> x = torch.randn(500, 4, generator=torch.Generator().manual_seed(0))
        >>> round(frechet_distance(x, x).item(), 6), round(frechet_distance(x, x + 1).item(), 3)
        (0.0, 4.0)
    """
    a, b = a.to(torch.float64), b.to(torch.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1] or min(len(a), len(b)) < 2:
        raise ImageError(f"frechet_distance needs two [N, D] feature sets with N >= 2, got {list(a.shape)} and {list(b.shape)}")
    mean_a, mean_b = a.mean(0), b.mean(0)
    cov_a, cov_b = torch.cov(a.T), torch.cov(b.T)
    values, vectors = torch.linalg.eigh(cov_a)
    root_a = vectors @ torch.diag(values.clamp_min(0).sqrt()) @ vectors.T
    cross = torch.linalg.eigvalsh(root_a @ cov_b @ root_a).clamp_min(0).sqrt().sum()
    return (mean_a - mean_b).square().sum() + torch.trace(cov_a) + torch.trace(cov_b) - 2 * cross


def identity_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Returns dlib's face-descriptor distance per image pair (same person < 0.6); needs ``.[align]``."""
    from .face import identity_distance as _identity_distance  # noqa: PLC0415

    return _identity_distance(a, b)


def quality_report(image: torch.Tensor, target: torch.Tensor, *, net: str = "stlpips-alex",
                   identity: bool | None = None) -> dict[str, float]:
    """Returns the figures that say how close one image is to its target (batch of one each).

    ``mse``, ``psnr`` (dB), ``lpips`` (with ``net``), ``detail_error`` and, when dlib is installed
    (or ``identity`` is True), ``identity_distance``. A perceptual figure never stands alone: a
    speckled reconstruction can score well on shift-tolerant ST-LPIPS and badly on the others.
    """
    import importlib.util  # noqa: PLC0415

    image = image.detach().to(torch.float32).clamp(-1, 1).cpu()
    target = target.detach().to(torch.float32).cpu()
    report = {"mse": float(mse(image, target)[0]), "psnr": float(psnr(image, target)[0]),
              "lpips": float(lpips_distance(image, target, net=net)[0]),
              "detail_error": float(detail_error(image, target)[0])}
    if identity is None:
        identity = all(importlib.util.find_spec(name) is not None for name in ("dlib", "face_recognition_models"))
    if identity:
        report["identity_distance"] = float(identity_distance(image, target)[0])
    return report


__all__ = ["quality_report", "mse", "psnr", "lpips_distance", "identity_distance", "laplacian", "laplacian_energy", "detail_error",
           "frechet_distance"]
