"""StyleGAN3's filtered leaky ReLU and its low-pass filter design, in pure PyTorch.

``filtered_lrelu`` computes, for ``x`` ``[N, C, H, W]``::

    x + bias -> upsample ``up``x (zero insertion, pad, FIR ``fu``, gain ``up**2``)
             -> leaky ReLU (``slope``) * ``gain`` -> clamp to [-clamp, clamp]
             -> FIR ``fd`` and keep every ``down``-th sample

with the padding arithmetic, filter orientation and gains of NVIDIA's reference path
(``_filtered_lrelu_ref``), so results agree with the official code to float32 rounding. Two
implementations: ``impl="ref"`` is that composition literally (built on :mod:`.ops`);
``impl="fast"`` (default) computes the same sums without the multiplications by inserted zeros
and without the samples the decimation throws away (polyphase upsampling, strided
downsampling). Both are differentiable. Written from the published behaviour; the code is our own.

Filters: a 1-D tensor ``[K]`` is separable (applied along the rows, then the columns), a 2-D
tensor ``[K, K]`` is a full (e.g. radially symmetric) filter; ``None`` is the identity.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from . import ops

__all__ = ["filtered_lrelu", "design_lowpass_filter", "filter_size"]


def filter_size(f: torch.Tensor | None) -> int:
    """Returns the number of taps of ``f`` along one axis (1 for ``None``)."""
    if f is None:
        return 1
    if f.ndim == 2 and f.shape[0] != f.shape[1]:
        raise ValueError(f"2-D filters must be square, got {list(f.shape)}")
    return int(f.shape[-1])


def _kaiser_beta_for(numtaps: int, width_normalised: float) -> float:
    """Returns Kaiser's window beta for a transition width given as a fraction of Nyquist."""
    attenuation = 2.285 * (numtaps - 1) * np.pi * width_normalised + 7.95  # dB
    if attenuation > 50:
        return 0.1102 * (attenuation - 8.7)
    if attenuation > 21:
        return 0.5842 * (attenuation - 21) ** 0.4 + 0.07886 * (attenuation - 21)
    return 0.0


def design_lowpass_filter(*, numtaps: int, cutoff: float, width: float, fs: float,
                          radial: bool = False) -> torch.Tensor | None:
    """Returns StyleGAN3's Kaiser-windowed low-pass FIR filter (float32), or ``None`` for one tap.

    Separable (``radial=False``): the windowed-sinc design of ``scipy.signal.firwin(numtaps,
    cutoff, width=width, fs=fs)``, ``[numtaps]``, normalised to unit DC gain. Radial: a jinc
    filter times the outer product of the Kaiser window, ``[numtaps, numtaps]``, normalised to
    sum 1. Computed in float64 with numpy (Bessel J1 from ``torch.special``), no scipy needed.

    Args:
        numtaps: filter length.
        cutoff: cutoff frequency, in the units of ``fs``.
        width: transition band width (twice the half-width), in the units of ``fs``.
        fs: sampling rate.
        radial: design the radially symmetric 2-D filter.

    Examples:
        >>> f = design_lowpass_filter(numtaps=12, cutoff=2.0, width=12.0, fs=32.0)
        >>> f.shape, round(float(f.sum()), 6)
        (torch.Size([12]), 1.0)
    """
    if numtaps < 1:
        raise ValueError(f"numtaps must be >= 1, got {numtaps}")
    if numtaps == 1:
        return None
    nyquist = fs / 2
    beta = _kaiser_beta_for(numtaps, width / nyquist)
    window = np.kaiser(numtaps, beta)  # [K] float64, symmetric
    if not radial:
        m = np.arange(numtaps) - (numtaps - 1) / 2
        c = cutoff / nyquist
        f = c * np.sinc(c * m) * window
        f = f / f.sum()
        return torch.as_tensor(f, dtype=torch.float32)
    x = (np.arange(numtaps) - (numtaps - 1) / 2) / fs
    r = np.hypot(*np.meshgrid(x, x))  # [K, K]
    arg = torch.as_tensor(2 * cutoff * np.pi * r, dtype=torch.float64, device="cpu")
    j1 = torch.special.bessel_j1(arg).numpy()
    with np.errstate(divide="ignore", invalid="ignore"):
        f = np.where(r > 0, j1 / (np.pi * r), cutoff)  # limit at r = 0 is cutoff
    f = f * np.outer(window, window)
    f = f / f.sum()
    return torch.as_tensor(f, dtype=torch.float32)


def _pad4(padding: int | Sequence[int]) -> list[int]:
    if isinstance(padding, int):
        return [padding] * 4
    padding = [int(p) for p in padding]
    if len(padding) == 2:
        return [padding[0], padding[0], padding[1], padding[1]]
    if len(padding) != 4:
        raise ValueError(f"padding must be an int, [x, y] or [x0, x1, y0, y1], got {padding}")
    return padding


def filtered_lrelu(x: torch.Tensor, fu: torch.Tensor | None = None, fd: torch.Tensor | None = None,
                   b: torch.Tensor | None = None, *, up: int = 1, down: int = 1,
                   padding: int | Sequence[int] = 0, gain: float = math.sqrt(2), slope: float = 0.2,
                   clamp: float | None = None, flip_filter: bool = False,
                   impl: str = "fast") -> torch.Tensor:
    """Returns bias, upsampling, leaky ReLU, gain, clamp and downsampling of ``x``, fused.

    Args:
        x: ``[N, C, H, W]``.
        fu: upsampling filter (``[K]`` separable or ``[K, K]``), or ``None``.
        fd: downsampling filter, or ``None``.
        b: per-channel bias ``[C]``, added first.
        up: integer upsampling factor.
        down: integer downsampling factor.
        padding: ``(x0, x1, y0, y1)`` applied to the upsampled signal (negative crops).
        gain: multiplier after the activation.
        slope: leaky ReLU slope (1 makes it linear).
        clamp: clamp magnitude after the gain, ``None`` for none.
        flip_filter: correlate instead of convolve (NVIDIA's ``flip_filter``).
        impl: ``"fast"`` or ``"ref"`` (see the module docstring); they agree to float32 rounding.

    Returns:
        ``[N, C, (H * up + x0 + x1 - (Ku - 1) - (Kd - 1) + down - 1) // down, ...]``.
    """
    if x.ndim != 4:
        raise ValueError(f"x must be [N, C, H, W], got {list(x.shape)}")
    px0, px1, py0, py1 = _pad4(padding)
    ku, kd = filter_size(fu), filter_size(fd)
    out_w = (x.shape[3] * up + px0 + px1 - (ku - 1) - (kd - 1) + down - 1) // down
    out_h = (x.shape[2] * up + py0 + py1 - (ku - 1) - (kd - 1) + down - 1) // down
    if out_w < 1 or out_h < 1:
        raise ValueError(f"filtered_lrelu output would be empty ({out_h}x{out_w})")
    if impl == "ref":
        y = ops.bias_act(x, b)
        y = ops.upfirdn2d(y, fu, up=up, padding=[px0, px1, py0, py1], gain=up ** 2,
                          flip_filter=flip_filter)
        y = ops.bias_act(y, None, act="lrelu", alpha=slope, gain=gain, clamp=clamp)
        y = ops.upfirdn2d(y, fd, down=down, flip_filter=flip_filter)
    elif impl == "fast":
        y = ops.bias_act(x, b)
        y = _upsample(y, fu, up=up, padding=(px0, px1, py0, py1), flip_filter=flip_filter)
        # With an upsampling filter, y is a new tensor of ours: the activation may overwrite it.
        y = _activate(y, slope=slope, gain=gain, clamp=clamp, inplace=fu is not None)
        y = _downsample(y, fd, down=down, flip_filter=flip_filter)
    else:
        raise ValueError(f"impl must be 'fast' or 'ref', got {impl!r}")
    assert y.shape[2:] == (out_h, out_w), (y.shape, out_h, out_w)
    return y


def _activate(x: torch.Tensor, *, slope: float, gain: float, clamp: float | None,
              inplace: bool) -> torch.Tensor:
    """Returns ``clamp(leaky_relu(x, slope) * gain)``, as ``ops.bias_act``; overwrites ``x`` when
    ``inplace`` and no gradient is recorded (the upsampled tensor is the largest of the layer)."""
    if not inplace or (torch.is_grad_enabled() and x.requires_grad):
        return ops.bias_act(x, None, act="lrelu", alpha=slope, gain=gain, clamp=clamp)
    if slope != 1:
        x = F.leaky_relu_(x, slope)
    if gain != 1:
        x = x.mul_(gain)
    if clamp is not None and clamp >= 0:
        x = x.clamp_(-clamp, clamp)
    return x


def _crop_or_pad_1d(x: torch.Tensor, dim: int, start: int, length: int) -> torch.Tensor:
    """Returns ``x[start : start + length]`` along ``dim``, zero-filled where out of range."""
    size = x.shape[dim]
    before, after = max(-start, 0), max(start + length - size, 0)
    if before or after:
        pad = [0, 0] * (x.ndim - 1 - dim) + [before, after]
        x = F.pad(x, pad)
        start += before
    return x.narrow(dim, start, length)


def _upsample_1d(x: torch.Tensor, f: torch.Tensor, *, up: int, pad0: int, pad1: int,
                 dim: int) -> torch.Tensor:
    """Zero-insertion upsampling by ``up`` + padding + true convolution with ``f`` along ``dim`` (2 or 3).

    Computed polyphase: output sample ``n`` of the reference (zero-inserted, padded, convolved)
    signal is ``sum_i x[i] * f[n - pad0 - i * up + K - 1]`` over the input samples ``i``; the
    ``up`` phases are ordinary convolutions with the taps ``f[phase::up]``, interleaved.
    """
    k = f.shape[0]
    n_in = x.shape[dim]
    out_len = n_in * up + pad0 + pad1 - (k - 1)
    channels = x.shape[1]
    # Full transposed-convolution output t[m] = sum_i x[i] * f[m - i * up], m in [0, (n_in - 1) * up + k);
    # the reference output is n -> t[n + k - 1 - pad0].
    taps = -(-k // up)  # taps per phase
    f_padded = F.pad(f, [0, taps * up - k]).to(x.dtype)  # [taps * up]
    # Phase r holds t[j * up + r] = sum_q x[j - q] * f[q * up + r]: a depthwise correlation of
    # x (zero-padded by taps - 1) with the reversed taps f[r::up]; the phases are interleaved.
    phases = f_padded.reshape(taps, up).t().flip(1)  # [up, taps]
    shape = [channels, 1, 1, taps] if dim == 3 else [channels, 1, taps, 1]
    pad = [taps - 1, taps - 1] if dim == 3 else [0, 0, taps - 1, taps - 1]
    xp = F.pad(x, pad)
    y = torch.stack([F.conv2d(xp, phases[r].reshape(shape[1:]).expand(shape), groups=channels)
                     for r in range(up)], dim=dim + 1)  # [N, C, H', up, W'] or [N, C, H', W', up]
    y = y.flatten(dim, dim + 1)  # j * up + r along dim
    return _crop_or_pad_1d(y, dim, k - 1 - pad0, out_len)


def _upsample(x: torch.Tensor, f: torch.Tensor | None, *, up: int, padding: Sequence[int],
              flip_filter: bool) -> torch.Tensor:
    px0, px1, py0, py1 = padding
    gain = float(up ** 2)
    if f is None or (f.ndim == 2 and up == 1):
        return ops.upfirdn2d(x, f, up=up, padding=[px0, px1, py0, py1], gain=gain, flip_filter=flip_filter)
    if f.ndim == 2:  # full 2-D upsampling filter (StyleGAN3 never uses one): reference path
        return ops.upfirdn2d(x, f, up=up, padding=[px0, px1, py0, py1], gain=gain, flip_filter=flip_filter)
    f = f * up  # gain ** (1 / 2) per axis
    if flip_filter:
        f = f.flip(0)
    x = _upsample_1d(x, f, up=up, pad0=px0, pad1=px1, dim=3)
    return _upsample_1d(x, f, up=up, pad0=py0, pad1=py1, dim=2)


def _downsample(x: torch.Tensor, f: torch.Tensor | None, *, down: int, flip_filter: bool) -> torch.Tensor:
    """Returns the reference ``upfirdn2d(x, f, down=down)`` computing only the kept samples."""
    if f is None:
        return x[:, :, ::down, ::down] if down > 1 else x
    channels = x.shape[1]
    f = f.to(x.dtype)
    if not flip_filter:
        f = f.flip(list(range(f.ndim)))
    if f.ndim == 2:
        return F.conv2d(x, f[None, None].expand(channels, 1, *f.shape), stride=down, groups=channels)
    x = F.conv2d(x, f[None, None, None, :].expand(channels, 1, 1, f.shape[0]), stride=(1, down),
                 groups=channels)
    return F.conv2d(x, f[None, None, :, None].expand(channels, 1, f.shape[0], 1), stride=(down, 1),
                    groups=channels)
