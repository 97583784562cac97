"""StyleGAN3 (alias-free, configs T and R) generator in pure PyTorch.

The module tree, parameter and buffer names equal NVIDIA's ``training.networks_stylegan3.Generator``
(official state dicts load with strict key checking) and the constructor takes NVIDIA's
``init_kwargs`` unchanged (synthesis arguments at the top level, as NVIDIA's pickles store them).
Config T is ``conv_kernel=3``, config R ``conv_kernel=1, use_radial_filters=True``; any output
resolution, any number of layers.

Numerics follow NVIDIA's reference (non-CUDA) paths: Fourier-feature input with its user
``transform``, modulated convolution with input-magnitude normalisation (``magnitude_ema``), and
the filtered leaky ReLU of :mod:`.filtered_lrelu`. Always computes in float32 (``num_fp16_res``
is accepted and recorded); a generator converted with ``.double()`` computes in float64 (for
gradient checks against finite differences). StyleGAN3 has no noise inputs: ``noise_mode`` and
``noise`` are accepted and ignored, so the same calls work for StyleGAN2 and StyleGAN3.

The same public API as :mod:`.stylegan2`: ``G.mapping``, ``G.synthesis``, ``G.num_ws``,
``G.synthesis.style_layers()``, ``compute_styles`` and a ``styles=`` override (StyleSpace),
``noise_buffers()`` (empty). In addition ``G.synthesis(ws, transform=m)`` renders with the input
transform ``m`` instead of the stored ``G.synthesis.input.transform`` buffer (see
:func:`input_transform`), without modifying the generator.
"""

from __future__ import annotations

import copy
import math
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from ..errors import CheckpointError, LatentError
from . import ops, stylegan2
from .filtered_lrelu import design_lowpass_filter, filtered_lrelu

__all__ = ["Generator", "SynthesisNetwork", "SynthesisLayer", "SynthesisInput", "MappingNetwork",
           "make_transform", "input_transform"]

FullyConnectedLayer = stylegan2.FullyConnectedLayer


def make_transform(translate: Sequence[float] | torch.Tensor = (0.0, 0.0),
                   angle_degrees: float | torch.Tensor = 0.0) -> torch.Tensor:
    """Returns the ``[3, 3]`` rotation + translation matrix of NVIDIA's ``gen_images.make_transform``.

    ``[[cos, sin, tx], [-sin, cos, ty], [0, 0, 1]]`` with the angle in degrees; float64 for Python
    numbers, the input dtype (differentiable) for tensors. Its inverse is what goes into the
    synthesis input (:func:`input_transform`).

    Examples:
        >>> make_transform((0.5, 0.0), 90).round(decimals=6).tolist()
        [[0.0, 1.0, 0.5], [-1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]
    """
    like = next((t for t in (angle_degrees, translate) if torch.is_tensor(t)), None)
    dtype = like.dtype if like is not None and like.is_floating_point() else torch.float64
    device = like.device if like is not None else None
    angle = torch.as_tensor(angle_degrees, dtype=dtype, device=device)
    translate = torch.as_tensor(translate, dtype=dtype, device=device)
    if translate.shape != (2,) or angle.ndim != 0:
        raise ValueError(f"translate must be (x, y) and angle a scalar, got {list(translate.shape)} "
                         f"and {list(angle.shape)}")
    radians = angle * (math.pi / 180.0)
    s, c = torch.sin(radians), torch.cos(radians)
    zero, one = torch.zeros_like(c), torch.ones_like(c)
    return torch.stack([torch.stack([c, s, translate[0]]),
                        torch.stack([-s, c, translate[1]]),
                        torch.stack([zero, zero, one])])


def input_transform(translate: Sequence[float] | torch.Tensor = (0.0, 0.0),
                    angle_degrees: float | torch.Tensor = 0.0) -> torch.Tensor:
    """Returns the float32 ``[3, 3]`` synthesis-input transform that translates/rotates the image.

    This is ``inverse(make_transform(translate, angle_degrees))``, the matrix NVIDIA's
    ``gen_images.py`` copies into ``G.synthesis.input.transform``; pass it as
    ``G.synthesis(ws, transform=...)``. Closed-form inverse, so it is differentiable in
    ``translate``/``angle_degrees`` (tensor inputs keep their dtype). ``translate`` is in image
    widths (NVIDIA's convention: the image spans [-0.5, 0.5]), the angle in degrees.

    Examples:
        >>> m = input_transform((0.1, -0.05), 10.0)
        >>> torch.allclose(m @ make_transform((0.1, -0.05), 10.0).float(), torch.eye(3), atol=1e-6)
        True
    """
    m = make_transform(translate, angle_degrees)
    rotation = m[:2, :2].t()  # inverse of a rotation
    shift = -(rotation @ m[:2, 2:])  # [2, 1]
    top = torch.cat([rotation, shift], dim=1)  # [2, 3]
    out = torch.cat([top, m[2:]], dim=0)  # [3, 3]
    if torch.is_tensor(angle_degrees) or torch.is_tensor(translate):
        return out
    return out.to(torch.float32)


class MappingNetwork(stylegan2.MappingNetwork):
    """StyleGAN3's mapping: z (+ class embedding ``embed`` of c) -> w; NVIDIA's defaults (2 layers)."""

    def __init__(self, *, z_dim: int, c_dim: int, w_dim: int, num_ws: int, num_layers: int = 2,
                 lr_multiplier: float = 0.01, w_avg_beta: float = 0.998, freeze_layers: int = 0,
                 freeze_embed: bool = False):
        del freeze_layers, freeze_embed  # training-only options of some forks; no effect on outputs
        super().__init__(z_dim=z_dim, c_dim=c_dim, w_dim=w_dim, num_ws=num_ws, num_layers=num_layers,
                         lr_multiplier=lr_multiplier, w_avg_beta=w_avg_beta)


class SynthesisInput(nn.Module):
    """Fourier features: ``channels`` sinusoids of random frequency/phase, rotated and translated by w."""

    def __init__(self, *, w_dim: int, channels: int, size: int | Sequence[int], sampling_rate: float,
                 bandwidth: float):
        super().__init__()
        self.w_dim = w_dim
        self.channels = channels
        self.size = [int(s) for s in np.broadcast_to(np.asarray(size), [2])]  # [width, height]
        self.sampling_rate = float(sampling_rate)
        self.bandwidth = float(bandwidth)
        # Frequencies uniform in a disc of radius `bandwidth`, phases uniform in [-0.5, 0.5).
        freqs = torch.randn([channels, 2])
        radii = freqs.square().sum(dim=1, keepdim=True).sqrt()
        freqs = freqs / (radii * radii.square().exp().pow(0.25)) * bandwidth
        phases = torch.rand([channels]) - 0.5
        self.weight = nn.Parameter(torch.randn([channels, channels]))
        self.affine = FullyConnectedLayer(w_dim, 4)
        with torch.no_grad():  # starts as the identity transform: (cos, sin, tx, ty) = (1, 0, 0, 0)
            self.affine.weight.zero_()
            self.affine.bias.copy_(torch.tensor([1.0, 0.0, 0.0, 0.0]))
        self.register_buffer("transform", torch.eye(3, 3))  # user inverse transform of the image
        self.register_buffer("freqs", freqs)  # [C, 2]
        self.register_buffer("phases", phases)  # [C]
        theta = torch.tensor([[0.5 * self.size[0] / self.sampling_rate, 0.0, 0.0],
                              [0.0, 0.5 * self.size[1] / self.sampling_rate, 0.0]])
        grid = nn.functional.affine_grid(theta.unsqueeze(0), [1, 1, self.size[1], self.size[0]],
                                         align_corners=False)  # [1, H, W, 2] sample positions
        self.register_buffer("grid", grid, persistent=False)

    def forward(self, w: torch.Tensor, *, transform: torch.Tensor | None = None) -> torch.Tensor:
        """Returns the Fourier features ``[N, C, H, W]`` for ``w`` ``[N, w_dim]``.

        Args:
            transform: ``[3, 3]`` or ``[N, 3, 3]`` input transform used instead of the buffer.
        """
        batch = w.shape[0]
        transforms = self.transform if transform is None else transform.to(w.device, ops.compute_dtype(w))
        if transforms.ndim == 2:
            transforms = transforms.unsqueeze(0)  # [1 or N, 3, 3]
        if transforms.shape[1:] != (3, 3) or transforms.shape[0] not in (1, batch):
            raise ValueError(f"transform must be [3, 3] or [{batch}, 3, 3], got {list(transform.shape)}")
        freqs = self.freqs.unsqueeze(0)  # [1, C, 2]
        phases = self.phases.unsqueeze(0)  # [1, C]
        # Learned rotation + translation from w, normalised rotation: t = (cos, sin, tx, ty).
        t = self.affine(w)  # [N, 4]
        t = t / t[:, :2].norm(dim=1, keepdim=True)
        zero, one = torch.zeros_like(t[:, 0]), torch.ones_like(t[:, 0])
        m_r = torch.stack([t[:, 0], -t[:, 1], zero, t[:, 1], t[:, 0], zero, zero, zero, one],
                          dim=1).reshape(batch, 3, 3)  # inverse rotation of the image
        m_t = torch.stack([one, zero, -t[:, 2], zero, one, -t[:, 3], zero, zero, one],
                          dim=1).reshape(batch, 3, 3)  # inverse translation of the image
        transforms = m_r @ m_t @ transforms  # [N, 3, 3]
        phases = phases + (freqs @ transforms[:, :2, 2:]).squeeze(2)  # [N, C]
        freqs = freqs @ transforms[:, :2, :2]  # [N, C, 2]
        # Fade out frequencies the user transform pushed beyond the band.
        amplitudes = (1 - (freqs.norm(dim=2) - self.bandwidth)
                      / (self.sampling_rate / 2 - self.bandwidth)).clamp(0, 1)  # [N, C]
        x = self.grid.unsqueeze(3) @ freqs.permute(0, 2, 1).unsqueeze(1).unsqueeze(2)  # [N, H, W, 1, C]
        x = x.squeeze(3)  # [N, H, W, C]
        x = x + phases.unsqueeze(1).unsqueeze(2)
        x = torch.sin(x * (np.pi * 2))
        x = x * amplitudes.unsqueeze(1).unsqueeze(2)
        weight = self.weight / np.sqrt(self.channels)
        x = x @ weight.t()
        return x.permute(0, 3, 1, 2)  # [N, C, H, W]

    def extra_repr(self) -> str:
        return (f"channels={self.channels}, size={self.size}, sampling_rate={self.sampling_rate:g}, "
                f"bandwidth={self.bandwidth:g}")


def modulated_conv2d(x: torch.Tensor, weight: torch.Tensor, styles: torch.Tensor, *,
                     demodulate: bool = True, padding: int = 0,
                     input_gain: torch.Tensor | None = None) -> torch.Tensor:
    """Returns StyleGAN3's modulated convolution of ``x`` ``[N, I, H, W]`` (one grouped conv).

    Differs from StyleGAN2's: with ``demodulate`` the weight is first normalised per output channel
    and the styles by their mean square (over the whole batch, as NVIDIA does; this cancels in
    the demodulation up to its 1e-8), and ``input_gain`` (``[]``, ``[I]`` or ``[N, I]``) scales
    the input channels after demodulation.
    """
    batch = x.shape[0]
    out_channels, in_channels, kh, kw = weight.shape
    if styles.shape != (batch, in_channels):
        raise ValueError(f"styles must be [{batch}, {in_channels}], got {list(styles.shape)}")
    if demodulate:
        weight = weight * weight.square().mean([1, 2, 3], keepdim=True).rsqrt()
        styles = styles * styles.square().mean().rsqrt()
    w = weight.unsqueeze(0) * styles.reshape(batch, 1, in_channels, 1, 1)  # [N, O, I, k, k]
    if demodulate:
        dcoefs = (w.square().sum(dim=[2, 3, 4]) + 1e-8).rsqrt()  # [N, O]
        w = w * dcoefs.reshape(batch, out_channels, 1, 1, 1)
    if input_gain is not None:
        input_gain = input_gain.expand(batch, in_channels)  # [N, I]
        w = w * input_gain.reshape(batch, 1, in_channels, 1, 1)
    x = x.reshape(1, -1, *x.shape[2:])
    w = w.reshape(-1, in_channels, kh, kw)
    x = nn.functional.conv2d(x, w.to(x.dtype), padding=padding, groups=batch)
    return x.reshape(batch, -1, *x.shape[2:])


class SynthesisLayer(nn.Module):
    """Modulated conv + filtered leaky ReLU between two sampling grids (or the final ToRGB)."""

    def __init__(self, *, w_dim: int, is_torgb: bool, is_critically_sampled: bool, use_fp16: bool,
                 in_channels: int, out_channels: int, in_size: int | Sequence[int],
                 out_size: int | Sequence[int], in_sampling_rate: float, out_sampling_rate: float,
                 in_cutoff: float, out_cutoff: float, in_half_width: float, out_half_width: float,
                 conv_kernel: int = 3, filter_size: int = 6, lrelu_upsampling: int = 2,
                 use_radial_filters: bool = False, conv_clamp: float | None = 256,
                 magnitude_ema_beta: float = 0.999):
        super().__init__()
        self.w_dim = w_dim
        self.is_torgb = is_torgb
        self.is_critically_sampled = is_critically_sampled
        self.use_fp16 = use_fp16  # recorded only: computation is float32
        self.in_channels, self.out_channels = in_channels, out_channels
        self.in_size = [int(s) for s in np.broadcast_to(np.asarray(in_size), [2])]  # [width, height]
        self.out_size = [int(s) for s in np.broadcast_to(np.asarray(out_size), [2])]
        self.in_sampling_rate, self.out_sampling_rate = in_sampling_rate, out_sampling_rate
        self.tmp_sampling_rate = (max(in_sampling_rate, out_sampling_rate)
                                  * (1 if is_torgb else lrelu_upsampling))
        self.in_cutoff, self.out_cutoff = float(in_cutoff), float(out_cutoff)
        self.in_half_width, self.out_half_width = float(in_half_width), float(out_half_width)
        self.conv_kernel = 1 if is_torgb else conv_kernel
        self.conv_clamp = conv_clamp
        self.magnitude_ema_beta = magnitude_ema_beta

        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        kernel = self.conv_kernel
        self.weight = nn.Parameter(torch.randn([out_channels, in_channels, kernel, kernel]))
        self.bias = nn.Parameter(torch.zeros([out_channels]))
        self.register_buffer("magnitude_ema", torch.ones([]))

        self.up_factor = int(np.rint(self.tmp_sampling_rate / in_sampling_rate))
        self.down_factor = int(np.rint(self.tmp_sampling_rate / out_sampling_rate))
        if (in_sampling_rate * self.up_factor != self.tmp_sampling_rate
                or out_sampling_rate * self.down_factor != self.tmp_sampling_rate):
            raise CheckpointError("StyleGAN3 layer sampling rates are not integer ratios; "
                                  "check the generator's constructor arguments")
        self.up_taps = filter_size * self.up_factor if self.up_factor > 1 and not is_torgb else 1
        self.down_taps = filter_size * self.down_factor if self.down_factor > 1 and not is_torgb else 1
        self.down_radial = bool(use_radial_filters and not is_critically_sampled)
        self.register_buffer("up_filter", design_lowpass_filter(
            numtaps=self.up_taps, cutoff=self.in_cutoff, width=self.in_half_width * 2,
            fs=self.tmp_sampling_rate))
        self.register_buffer("down_filter", design_lowpass_filter(
            numtaps=self.down_taps, cutoff=self.out_cutoff, width=self.out_half_width * 2,
            fs=self.tmp_sampling_rate, radial=self.down_radial))

        # Padding of the upsampled signal so the output lands on the output grid (symmetric
        # sample positions, StyleGAN3 paper appendix C.3).
        padding = []
        for axis in range(2):
            total = (self.out_size[axis] - 1) * self.down_factor + 1
            total -= (self.in_size[axis] + self.conv_kernel - 1) * self.up_factor
            total += self.up_taps + self.down_taps - 2
            low = (total + self.up_factor) // 2
            padding += [low, total - low]
        self.padding = padding  # [x0, x1, y0, y1]
        self.gain = 1.0 if is_torgb else math.sqrt(2)
        self.slope = 1.0 if is_torgb else 0.2

    def forward(self, x: torch.Tensor, w: torch.Tensor, *, style: torch.Tensor | None = None,
                update_emas: bool = False, impl: str = "fast") -> torch.Tensor:
        """Returns the layer output ``[N, out_channels, out_h, out_w]`` for ``x`` and ``w`` ``[N, w_dim]``.

        Args:
            style: StyleSpace override ``[N, in_channels]`` used instead of ``affine(w)``.
            update_emas: update ``magnitude_ema`` with this batch's input mean square (training).
            impl: filtered leaky ReLU implementation, ``"fast"`` or ``"ref"``.
        """
        expected = (self.in_channels, self.in_size[1], self.in_size[0])
        if x.shape[1:] != expected:
            raise ValueError(f"layer input must be [N, {', '.join(map(str, expected))}], "
                             f"got {list(x.shape)}")
        if update_emas:
            with torch.no_grad():
                magnitude = x.detach().to(torch.float32).square().mean()
                self.magnitude_ema.copy_(magnitude.lerp(self.magnitude_ema, self.magnitude_ema_beta))
        input_gain = self.magnitude_ema.rsqrt()
        dtype = ops.compute_dtype(self.weight)
        styles = self.affine(w) if style is None else style.to(dtype)  # [N, I]
        if self.is_torgb:
            styles = styles * (1 / np.sqrt(self.in_channels * self.conv_kernel ** 2))
        x = modulated_conv2d(x.to(dtype), self.weight, styles, padding=self.conv_kernel - 1,
                             demodulate=not self.is_torgb, input_gain=input_gain)
        return filtered_lrelu(x, self.up_filter, self.down_filter, self.bias.to(x.dtype),
                              up=self.up_factor, down=self.down_factor, padding=self.padding,
                              gain=self.gain, slope=self.slope, clamp=self.conv_clamp, impl=impl)

    def extra_repr(self) -> str:
        return (f"is_torgb={self.is_torgb}, in={self.in_channels}x{self.in_size[1]}, "
                f"out={self.out_channels}x{self.out_size[1]}, up={self.up_factor}, "
                f"down={self.down_factor}, "
                f"radial={self.down_radial}")


class SynthesisNetwork(stylegan2.StyleSpaceMixin, nn.Module):
    """ws ``[N, num_ws, w_dim]`` -> image ``[N, img_channels, R, R]``; ws[:, 0] drives ``input``."""

    def __init__(self, *, w_dim: int, img_resolution: int, img_channels: int,
                 channel_base: int = 32768, channel_max: int = 512, num_layers: int = 14,
                 num_critical: int = 2, first_cutoff: float = 2, first_stopband: float = 2 ** 2.1,
                 last_stopband_rel: float = 2 ** 0.3, margin_size: int = 10, output_scale: float = 0.25,
                 num_fp16_res: int = 4, **layer_kwargs: Any):
        super().__init__()
        if img_resolution < 4 or num_layers <= num_critical:
            raise CheckpointError(f"invalid StyleGAN3 geometry: img_resolution={img_resolution}, "
                                  f"num_layers={num_layers}, num_critical={num_critical}")
        self.w_dim = w_dim
        self.num_ws = num_layers + 2
        self.img_resolution = img_resolution
        self.img_channels = img_channels
        self.num_layers = num_layers
        self.num_critical = num_critical
        self.margin_size = margin_size
        self.output_scale = output_scale
        self.num_fp16_res = num_fp16_res

        # Cutoffs and minimum stopbands grow geometrically up to the critically sampled layers.
        last_cutoff = img_resolution / 2
        last_stopband = last_cutoff * last_stopband_rel
        exponents = np.minimum(np.arange(num_layers + 1) / (num_layers - num_critical), 1)
        cutoffs = first_cutoff * (last_cutoff / first_cutoff) ** exponents
        stopbands = first_stopband * (last_stopband / first_stopband) ** exponents
        sampling_rates = np.exp2(np.ceil(np.log2(np.minimum(stopbands * 2, img_resolution))))
        half_widths = np.maximum(stopbands, sampling_rates / 2) - cutoffs
        sizes = sampling_rates + margin_size * 2
        sizes[-2:] = img_resolution
        channels = np.rint(np.minimum((channel_base / 2) / cutoffs, channel_max))
        channels[-1] = img_channels

        self.input = SynthesisInput(w_dim=w_dim, channels=int(channels[0]), size=int(sizes[0]),
                                    sampling_rate=sampling_rates[0], bandwidth=cutoffs[0])
        self.layer_names: list[str] = []
        for idx in range(num_layers + 1):
            prev = max(idx - 1, 0)
            layer = SynthesisLayer(
                w_dim=w_dim, is_torgb=idx == num_layers,
                is_critically_sampled=idx >= num_layers - num_critical,
                use_fp16=bool(sampling_rates[idx] * (2 ** num_fp16_res) > img_resolution),
                in_channels=int(channels[prev]), out_channels=int(channels[idx]),
                in_size=int(sizes[prev]), out_size=int(sizes[idx]),
                in_sampling_rate=int(sampling_rates[prev]), out_sampling_rate=int(sampling_rates[idx]),
                in_cutoff=cutoffs[prev], out_cutoff=cutoffs[idx],
                in_half_width=half_widths[prev], out_half_width=half_widths[idx], **layer_kwargs)
            name = f"L{idx}_{layer.out_size[0]}_{layer.out_channels}"
            setattr(self, name, layer)
            self.layer_names.append(name)

    def layers(self) -> list[tuple[str, SynthesisLayer]]:
        """Returns ``[(name, layer)]`` of the synthesis layers after the input, in execution order."""
        return [(name, getattr(self, name)) for name in self.layer_names]

    def style_layers(self) -> list[tuple[str, int, FullyConnectedLayer]]:
        """Returns ``[(layer name, ws index, affine)]`` of every channel-style input, in execution order.

        These are the 15 (``num_layers + 1``) synthesis layers, ws indices 1.. ; ``ws[:, 0]``
        drives the input's rotation/translation affine, which is geometry, not a StyleSpace
        channel, and is not listed.
        """
        return [(name, idx + 1, layer.affine) for idx, (name, layer) in enumerate(self.layers())]

    def noise_buffers(self) -> dict[str, torch.Tensor]:
        """Returns ``{}``: StyleGAN3 has no noise inputs."""
        return {}

    def forward(self, ws: torch.Tensor, *, noise_mode: str = "const",
                noise: Mapping[str, torch.Tensor] | None = None, fused_modconv: bool = True,
                force_fp32: bool = True, generator: torch.Generator | None = None,
                styles: Mapping[str, torch.Tensor] | None = None, transform: torch.Tensor | None = None,
                update_emas: bool = False, return_intermediates: bool = False, impl: str = "fast"):
        """Returns the image ``[N, C, R, R]`` for ``ws`` ``[N, num_ws, w_dim]``.

        Args:
            noise_mode, noise, fused_modconv, force_fp32, generator: accepted for API compatibility
                with StyleGAN2 and ignored (no noise inputs; always float32, always fused).
            styles: optional StyleSpace override ``{layer name: [N, C]}`` (see ``compute_styles``);
                layers not named use ``affine(w)``.
            transform: optional ``[3, 3]`` or ``[N, 3, 3]`` input transform used instead of the
                ``input.transform`` buffer (see :func:`input_transform`); may require grad.
            update_emas: update every layer's ``magnitude_ema`` from this batch (training only).
            return_intermediates: also return ``{"input": x, layer name: x}`` (layer outputs,
                before ``output_scale``).
            impl: filtered leaky ReLU implementation, ``"fast"`` (default) or ``"ref"``.
        """
        del noise, fused_modconv, force_fp32, generator
        if noise_mode not in ("const", "random", "none"):
            raise ValueError(f"noise_mode must be 'const', 'random' or 'none', got {noise_mode!r}")
        self._check_ws(ws)
        dtype = ops.compute_dtype(self.input.weight)
        ws = ws.to(dtype)
        if styles:
            unknown = set(styles) - set(self.layer_names)
            if unknown:
                raise LatentError(f"unknown StyleSpace layer(s) {sorted(unknown)}; "
                                  f"expected names from style_layers(): {self.layer_names[0]}, ...")
        x = self.input(ws[:, 0], transform=transform)
        intermediates = {"input": x} if return_intermediates else None
        for idx, (name, layer) in enumerate(self.layers()):
            style = None if styles is None else styles.get(name)
            x = layer(x, ws[:, idx + 1], style=style, update_emas=update_emas, impl=impl)
            if intermediates is not None:
                intermediates[name] = x
        if self.output_scale != 1:
            x = x * self.output_scale
        x = x.to(dtype)
        return (x, intermediates) if return_intermediates else x

    def extra_repr(self) -> str:
        return (f"w_dim={self.w_dim}, num_ws={self.num_ws}, img_resolution={self.img_resolution}, "
                f"num_layers={self.num_layers}, num_critical={self.num_critical}")


_SYNTHESIS_KWARGS = {"channel_base", "channel_max", "num_layers", "num_critical", "first_cutoff",
                     "first_stopband", "last_stopband_rel", "margin_size", "output_scale", "num_fp16_res",
                     "conv_kernel", "filter_size", "lrelu_upsampling", "use_radial_filters",
                     "conv_clamp", "magnitude_ema_beta"}


class Generator(nn.Module):
    """NVIDIA StyleGAN3 generator (T or R): ``G(z, c) = synthesis(mapping(z, c))``.

    Attributes:
        z_dim, c_dim, w_dim, num_ws, img_resolution, img_channels: as in NVIDIA's code.
        architecture_name: ``"stylegan3"`` (the family tag written into saved files).
        init_kwargs: the constructor arguments (JSON-serialisable) needed to rebuild it.

    Examples:
        >>> G = Generator(z_dim=8, c_dim=0, w_dim=8, img_resolution=16, img_channels=3,
        ...               mapping_kwargs={"num_layers": 2}, channel_base=64, channel_max=4,
        ...               num_layers=4, num_critical=1, margin_size=2)
        >>> G.num_ws
        6
        >>> G(torch.zeros(1, 8)).shape
        torch.Size([1, 3, 16, 16])
    """

    architecture_name = "stylegan3"

    def __init__(self, *, z_dim: int, c_dim: int = 0, w_dim: int, img_resolution: int,
                 img_channels: int = 3, mapping_kwargs: Mapping[str, Any] | None = None,
                 **synthesis_kwargs: Any):
        super().__init__()
        mapping_kwargs = dict(mapping_kwargs or {})
        unknown = sorted(set(synthesis_kwargs) - _SYNTHESIS_KWARGS)
        if unknown:
            raise CheckpointError(f"unsupported StyleGAN3 constructor argument(s) {unknown}; "
                                  "this is not an NVIDIA stylegan3 Generator")
        self.init_kwargs = copy.deepcopy(dict(
            z_dim=z_dim, c_dim=c_dim, w_dim=w_dim, img_resolution=img_resolution,
            img_channels=img_channels, mapping_kwargs=mapping_kwargs, **synthesis_kwargs))
        self.z_dim, self.c_dim, self.w_dim = z_dim, c_dim, w_dim
        self.img_resolution, self.img_channels = img_resolution, img_channels
        try:
            self.synthesis = SynthesisNetwork(w_dim=w_dim, img_resolution=img_resolution,
                                              img_channels=img_channels, **synthesis_kwargs)
            self.num_ws = self.synthesis.num_ws
            self.mapping = MappingNetwork(z_dim=z_dim, c_dim=c_dim, w_dim=w_dim, num_ws=self.num_ws,
                                          **mapping_kwargs)
        except TypeError as error:
            raise CheckpointError(f"unsupported StyleGAN3 constructor argument: {error}") from None

    def forward(self, z: torch.Tensor, c: torch.Tensor | None = None, *, truncation_psi: float = 1.0,
                truncation_cutoff: int | None = None, update_emas: bool = False,
                **synthesis_kwargs: Any) -> torch.Tensor:
        ws = self.mapping(z, c, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff,
                          update_w_avg=update_emas)
        return self.synthesis(ws, update_emas=update_emas, **synthesis_kwargs)

    def extra_repr(self) -> str:
        return (f"resolution={self.img_resolution}, num_ws={self.num_ws}, w_dim={self.w_dim}, "
                f"z_dim={self.z_dim}, c_dim={self.c_dim}")
