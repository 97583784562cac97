"""Pure-PyTorch versions of StyleGAN's custom ops (no CUDA extension, any device).

Numerics follow the reference (non-CUDA) paths of NVIDIA's ``upfirdn2d``, ``bias_act`` and
``conv2d_resample``: the same padding arithmetic, filter gains and orientation, so images match
the official implementation to float32 rounding. Written from the published behaviour; the code
is our own.

Conventions: ``x`` is ``[N, C, H, W]``; a filter ``f`` is a 2-D FIR ``[fh, fw]`` already
normalised (StyleGAN stores it as the ``resample_filter`` buffer); padding is
``(left, right, top, bottom)``.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F

LRELU_GAIN = math.sqrt(2.0)
ACTIVATION_GAINS = {"linear": 1.0, "lrelu": LRELU_GAIN, "relu": LRELU_GAIN}


def compute_dtype(parameter: torch.Tensor) -> torch.dtype:
    """Returns float64 for a generator converted with ``.double()``, else float32 (always, as NVIDIA)."""
    return torch.float64 if parameter.dtype == torch.float64 else torch.float32


def make_filter(taps: Sequence[float] = (1, 3, 3, 1)) -> torch.Tensor:
    """Returns the separable 2-D FIR filter ``outer(taps, taps)`` normalised to sum 1.

    Examples:
        >>> make_filter([1, 1]).tolist()
        [[0.25, 0.25], [0.25, 0.25]]
    """
    f = torch.as_tensor(taps, dtype=torch.float32)
    f = torch.outer(f, f)
    return f / f.sum()


def _pad4(padding: int | Sequence[int]) -> list[int]:
    if isinstance(padding, int):
        return [padding] * 4
    padding = list(padding)
    if len(padding) == 2:
        return [padding[0], padding[0], padding[1], padding[1]]
    assert len(padding) == 4, padding
    return padding


def _is_nhwc(x: torch.Tensor) -> bool:
    """True for a 4-D tensor stored channels_last (and not also plain contiguous, as when C == 1)."""
    return x.ndim == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)


def pad_or_crop(x: torch.Tensor, padding: Sequence[int]) -> torch.Tensor:
    """Returns ``x`` zero-padded by the positive and cropped by the negative entries of (left, right, top, bottom)."""
    left, right, top, bottom = padding
    if max(left, right, top, bottom) > 0:
        x = F.pad(x, [max(left, 0), max(right, 0), max(top, 0), max(bottom, 0)])
    if min(left, right, top, bottom) < 0:
        h, w = x.shape[-2:]
        x = x[..., max(-top, 0): h - max(-bottom, 0), max(-left, 0): w - max(-right, 0)]
    return x


def upfirdn2d(x: torch.Tensor, f: torch.Tensor | None, *, up: int = 1, down: int = 1,
              padding: int | Sequence[int] = 0, flip_filter: bool = False,
              gain: float = 1.0) -> torch.Tensor:
    """Returns ``x`` upsampled by zero insertion, padded, FIR-filtered and downsampled.

    Matches NVIDIA's ``upfirdn2d`` reference: the filter is flipped unless ``flip_filter``
    (i.e. a true convolution), scaled by ``gain ** (f.ndim / 2)``, applied depthwise.
    """
    n, c, h, w = x.shape
    if up > 1 and _is_nhwc(x):  # zero insertion that keeps the NHWC layout
        out = x.new_zeros([n, c, h * up, w * up]).contiguous(memory_format=torch.channels_last)
        out[:, :, ::up, ::up] = x
        x = out
    elif up > 1:
        x = x.reshape(n, c, h, 1, w, 1)
        x = F.pad(x, [0, up - 1, 0, 0, 0, up - 1])
        x = x.reshape(n, c, h * up, w * up)
    x = pad_or_crop(x, _pad4(padding))
    if f is not None:
        f = (f * (gain ** (f.ndim / 2))).to(x.dtype)
        if not flip_filter:
            f = f.flip(list(range(f.ndim)))
        if f.ndim == 2:
            x = F.conv2d(x, f[None, None].expand(c, 1, *f.shape), groups=c)
        else:  # separable 1-D filter: rows then columns
            x = F.conv2d(x, f[None, None, None, :].expand(c, 1, 1, f.shape[0]), groups=c)
            x = F.conv2d(x, f[None, None, :, None].expand(c, 1, f.shape[0], 1), groups=c)
    elif gain != 1:
        x = x * gain
    if down > 1:
        x = x[:, :, ::down, ::down]
    return x


def _filter_size(f: torch.Tensor | None) -> tuple[int, int]:
    if f is None:
        return 1, 1
    return (f.shape[-1], f.shape[0]) if f.ndim == 2 else (f.shape[0], f.shape[0])


def upsample2d(x: torch.Tensor, f: torch.Tensor, *, up: int = 2, gain: float = 1.0) -> torch.Tensor:
    """Returns ``x`` upsampled ``up``x with the FIR filter ``f`` (output size = input size * up)."""
    fw, fh = _filter_size(f)
    padding = [(fw + up - 1) // 2, (fw - up) // 2, (fh + up - 1) // 2, (fh - up) // 2]
    return upfirdn2d(x, f, up=up, padding=padding, gain=gain * up * up)


def downsample2d(x: torch.Tensor, f: torch.Tensor, *, down: int = 2, gain: float = 1.0) -> torch.Tensor:
    """Returns ``x`` downsampled ``down``x with the FIR filter ``f`` (output size = input size / down)."""
    fw, fh = _filter_size(f)
    padding = [(fw - down + 1) // 2, (fw - down) // 2, (fh - down + 1) // 2, (fh - down) // 2]
    return upfirdn2d(x, f, down=down, padding=padding, gain=gain)


def _flat_view(x: torch.Tensor) -> torch.Tensor:
    """Returns all elements of ``x`` as a 1-D view in memory order (no copy for NCHW or NHWC)."""
    if _is_nhwc(x):
        return x.permute(0, 2, 3, 1).reshape(-1)
    return x.reshape(-1)


class _BiasLeakyReLU(torch.autograd.Function):
    """``clamp(leaky_relu(x + b) * gain)`` over ``[N, C, H, W]`` with a backward computed from the output.

    The forward runs the same operations as the unfused path (bit-identical values) but in place on
    one buffer; the backward needs only the output (``y > 0`` gives the slope, ``|y| >= clamp`` the
    clamped entries, as NVIDIA's fused kernel does), which replaces autograd's four-pass clamp
    backward and the separate activation and gain backwards by two passes.
    """

    @staticmethod
    def forward(ctx, x, b, alpha: float, gain: float, clamp: float | None):
        y = x + b.reshape(1, -1, 1, 1) if b is not None else x.clone()
        F.leaky_relu_(y, alpha)
        if gain != 1:
            y.mul_(gain)
        if clamp is not None:
            y.clamp_(-clamp, clamp)
        ctx.save_for_backward(y)
        ctx.alpha, ctx.gain, ctx.clamp, ctx.has_bias = alpha, gain, clamp, b is not None
        return y

    @staticmethod
    def backward(ctx, grad):
        (y,) = ctx.saved_tensors
        dx = torch.ops.aten.leaky_relu_backward(grad, y, ctx.alpha, True)  # slope from the output's sign
        if ctx.gain != 1:
            dx.mul_(ctx.gain)
        if ctx.clamp is not None:
            low, high = torch.aminmax(_flat_view(y))
            if max(-float(low), float(high)) >= ctx.clamp:  # rare: only then mask the clamped entries
                dx.masked_fill_(y.abs() >= ctx.clamp, 0)
        db = dx.sum(dim=[0, 2, 3]) if ctx.has_bias and ctx.needs_input_grad[1] else None
        return dx, db, None, None, None


def bias_act(x: torch.Tensor, b: torch.Tensor | None = None, *, act: str = "linear",
             alpha: float = 0.2, gain: float | None = None, clamp: float | None = None,
             dim: int = 1) -> torch.Tensor:
    """Returns ``clamp(act(x + b) * gain)``, NVIDIA's ``bias_act`` (gain defaults to the activation's own).

    With autograd recording a 4-D leaky ReLU, a fused function with an output-based backward
    (:class:`_BiasLeakyReLU`) gives the same values with fewer passes over the activations.
    """
    if act == "lrelu" and alpha > 0 and x.ndim == 4 and dim == 1 and torch.is_grad_enabled() \
            and (x.requires_grad or (b is not None and b.requires_grad)) \
            and (b is None or b.dtype == x.dtype) and (clamp is None or clamp >= 0):
        return _BiasLeakyReLU.apply(x, b, alpha, ACTIVATION_GAINS[act] if gain is None else gain, clamp)
    if b is not None:
        shape = [1] * x.ndim
        shape[dim] = -1
        x = x + b.reshape(shape)
    if act == "lrelu":
        x = F.leaky_relu(x, alpha)
    elif act == "relu":
        x = F.relu(x)
    elif act != "linear":
        raise ValueError(f"unsupported activation {act!r}")
    gain = ACTIVATION_GAINS[act] if gain is None else gain
    if gain != 1:
        x = x * gain
    if clamp is not None and clamp >= 0:
        x = x.clamp(-clamp, clamp)
    return x


def conv2d_resample(x: torch.Tensor, w: torch.Tensor, *, f: torch.Tensor | None = None,
                    up: int = 1, down: int = 1, padding: int = 0, groups: int = 1,
                    flip_weight: bool = True) -> torch.Tensor:
    """Returns the 2-D convolution of ``x`` with ``w`` fused with FIR up/downsampling.

    ``flip_weight=True`` is PyTorch's cross-correlation; ``False`` a true convolution. For
    ``up > 1`` a transposed strided convolution followed by the FIR filter (NVIDIA's path).
    """
    out_channels, in_per_group, kh, kw = w.shape
    fw, fh = _filter_size(f)
    px0 = px1 = py0 = py1 = padding
    if up > 1:
        px0 += (fw + up - 1) // 2
        px1 += (fw - up) // 2
        py0 += (fh + up - 1) // 2
        py1 += (fh - up) // 2
    if down > 1:
        px0 += (fw - down + 1) // 2
        px1 += (fw - down) // 2
        py0 += (fh - down + 1) // 2
        py1 += (fh - down) // 2

    def conv(inp: torch.Tensor, weight: torch.Tensor, *, stride: int = 1, pad=0,
             transpose: bool = False, flip: bool = True) -> torch.Tensor:
        if not flip:
            weight = weight.flip([2, 3])
        if transpose:
            return F.conv_transpose2d(inp, weight, stride=stride, padding=pad, groups=groups)
        return F.conv2d(inp, weight, stride=stride, padding=pad, groups=groups)

    if kw == 1 and kh == 1 and up == 1 and down == 1 and padding == 0:
        return _conv1x1(x, w, groups=groups)
    if kw == 1 and kh == 1 and down > 1 and up == 1:
        x = upfirdn2d(x, f, down=down, padding=[px0, px1, py0, py1])
        return conv(x, w, flip=flip_weight)
    if kw == 1 and kh == 1 and up > 1 and down == 1:
        x = conv(x, w, flip=flip_weight)
        return upfirdn2d(x, f, up=up, padding=[px0, px1, py0, py1], gain=up * up)
    if down > 1 and up == 1:
        x = upfirdn2d(x, f, padding=[px0, px1, py0, py1])
        return conv(x, w, stride=down, flip=flip_weight)
    if up > 1:
        if groups == 1:
            w = w.transpose(0, 1)
        else:
            w = w.reshape(groups, out_channels // groups, in_per_group, kh, kw).transpose(1, 2)
            w = w.reshape(groups * in_per_group, out_channels // groups, kh, kw)
        px0 -= kw - 1
        px1 -= kw - up
        py0 -= kh - 1
        py1 -= kh - up
        pxt = max(min(-px0, -px1), 0)
        pyt = max(min(-py0, -py1), 0)
        x = conv(x, w, stride=up, pad=[pyt, pxt], transpose=True, flip=not flip_weight)
        x = upfirdn2d(x, f, padding=[px0 + pxt, px1 + pxt, py0 + pyt, py1 + pyt], gain=up * up)
        if down > 1:
            x = upfirdn2d(x, f, down=down)
        return x
    if px0 == px1 and py0 == py1 and px0 >= 0 and py0 >= 0:
        return conv(x, w, pad=[py0, px0], flip=flip_weight)
    x = upfirdn2d(x, None, padding=[px0, px1, py0, py1])
    return conv(x, w, flip=flip_weight)


def _conv1x1(x: torch.Tensor, w: torch.Tensor, *, groups: int = 1) -> torch.Tensor:
    """Returns the 1x1 convolution of ``x`` ``[N, G*I, H, W]`` with ``w`` ``[G*O, I, 1, 1]`` as a matmul.

    The same sums as ``F.conv2d`` (to float rounding), but several times faster on CPU for the
    few output channels of ToRGB layers, where oneDNN's convolution is slow (forward and backward).
    """
    n, c, h, wd = x.shape
    out_channels, in_per_group = w.shape[:2]
    if groups == 1 and _is_nhwc(x):
        # NHWC activations: one matmul over the channel axis, the result NHWC as well
        y = x.permute(0, 2, 3, 1).reshape(n, h * wd, c) @ w.reshape(out_channels, c).t()
        return y.reshape(n, h, wd, out_channels).permute(0, 3, 1, 2)
    y = w.reshape(groups, out_channels // groups, in_per_group) @ x.reshape(n, groups, in_per_group, h * wd)
    return y.reshape(n, out_channels, h, wd)  # [N, G, O/G, HW] -> [N, G*O/G, H, W]


def modulated_conv2d(x: torch.Tensor, weight: torch.Tensor, styles: torch.Tensor, *,
                     noise: torch.Tensor | None = None, up: int = 1, padding: int = 0,
                     resample_filter: torch.Tensor | None = None, demodulate: bool = True,
                     flip_weight: bool = True, fused: bool = True) -> torch.Tensor:
    """Returns StyleGAN2's modulated (and optionally demodulated) convolution of ``x``.

    Args:
        x: ``[N, I, H, W]`` input activations.
        weight: ``[O, I, k, k]`` shared convolution weight.
        styles: ``[N, I]`` per-sample input-channel scales (the affine of w).
        noise: added after the convolution (already scaled by noise strength), broadcastable.
        fused: one grouped convolution with per-sample weights (True), or scale activations
            before and after a shared convolution (False); the two agree to float32 rounding.
    """
    batch = x.shape[0]
    out_channels, in_channels, kh, kw = weight.shape
    assert styles.shape == (batch, in_channels), (styles.shape, batch, in_channels)
    dcoefs = None
    if demodulate:  # sum_i s_i^2 sum_k W_oik^2 without the [N, O, I, k, k] tensor, in the weight's
        # precision (elementwise ops: autocast leaves them alone; bf16 styles are widened first)
        energy = weight.square().sum(dim=[2, 3])  # [O, I]
        dcoefs = ((styles.to(energy.dtype).square().unsqueeze(1) * energy).sum(dim=2) + 1e-8).rsqrt()  # [N, O]
    if not fused:
        x = x * styles.to(x.dtype).reshape(batch, -1, 1, 1)
        x = conv2d_resample(x, weight.to(x.dtype), f=resample_filter, up=up, padding=padding,
                            flip_weight=flip_weight)
        if dcoefs is not None:
            x = x * dcoefs.to(x.dtype).reshape(batch, -1, 1, 1)
        if noise is not None:
            x = x + noise.to(x.dtype)
        return x
    scales = styles.reshape(batch, 1, in_channels)  # [N, 1, I]
    if dcoefs is not None:
        scales = scales * dcoefs.reshape(batch, -1, 1)  # [N, O, I]
    w = weight.unsqueeze(0) * scales.reshape(batch, -1, in_channels, 1, 1)  # [N, O, I, k, k]
    if batch > 1:  # one grouped convolution over [1, N*I, H, W] (for one image a no-op that would drop NHWC)
        x = x.reshape(1, -1, *x.shape[2:])
    w = w.reshape(-1, in_channels, kh, kw)
    x = conv2d_resample(x, w.to(x.dtype), f=resample_filter, up=up, padding=padding,
                        groups=batch, flip_weight=flip_weight)
    if batch > 1:
        x = x.reshape(batch, -1, *x.shape[2:])
    if noise is not None:
        x = x + noise.to(x.dtype)
    return x


def normalize_2nd_moment(x: torch.Tensor, *, dim: int = 1, eps: float = 1e-8) -> torch.Tensor:
    """Returns ``x`` scaled to unit mean square along ``dim``."""
    return x * (x.square().mean(dim=dim, keepdim=True) + eps).rsqrt()
