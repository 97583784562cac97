"""StyleGAN2 / StyleGAN2-ADA generator in pure PyTorch.

The module tree and parameter names equal NVIDIA's ``training.networks.Generator`` (so official
state dicts load with strict key checking), and the constructor takes NVIDIA's ``init_kwargs``
unchanged. Architectures ``orig``, ``skip`` and ``resnet``; any power-of-two resolution; noise
modes ``const``, ``random`` and ``none``; fused and non-fused modulated convolution.

Computes in float32 (NVIDIA's ``num_fp16_res`` is accepted and recorded; callers that want
reduced precision use ``torch.autocast``); a generator converted with ``.double()`` computes in
float64 (for gradient checks).
"""

from __future__ import annotations

import copy
import math
from typing import Any, Iterator, Mapping

import torch
from torch import nn

from ..errors import CheckpointError, LatentError
from . import ops

# Keyword arguments NVIDIA pickles carry that change nothing in float32 inference/training here.
_IGNORED_SYNTHESIS_KWARGS = {"num_fp16_res", "fp16_channels_last", "channels_last", "fused_modconv_default"}
_IGNORED_MAPPING_KWARGS: set[str] = set()


class FullyConnectedLayer(nn.Module):
    """Dense layer with equalised learning rate: ``act(x @ (W * gain).T + b * lr_multiplier)``."""

    def __init__(self, in_features: int, out_features: int, *, bias: bool = True,
                 activation: str = "linear", lr_multiplier: float = 1.0, bias_init: float = 0.0):
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.activation = activation
        self.weight = nn.Parameter(torch.randn([out_features, in_features]) / lr_multiplier)
        self.bias = nn.Parameter(torch.full([out_features], float(bias_init))) if bias else None
        self.weight_gain = lr_multiplier / math.sqrt(in_features)
        self.bias_gain = lr_multiplier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_autocast_enabled(x.device.type):
            # in the weights' precision under autocast too, as NVIDIA's networks keep w and the
            # styles in float32: these products have one row per image, where bf16 is slower than
            # float32 on CPU, forward + backward 1.3-2.6x for one image (bench/small_matmul.py)
            with torch.autocast(x.device.type, enabled=False):
                return self.forward(x.to(self.weight.dtype))
        w = self.weight.to(x.dtype) * self.weight_gain
        b = self.bias
        if b is not None:
            b = b.to(x.dtype)
            if self.bias_gain != 1:
                b = b * self.bias_gain
        if self.activation == "linear" and b is not None:
            return torch.addmm(b.unsqueeze(0), x, w.t())
        return ops.bias_act(x.matmul(w.t()), b, act=self.activation)


class MappingNetwork(nn.Module):
    """z (+ optional class embedding) -> w, broadcast to ``num_ws``; tracks ``w_avg``."""

    def __init__(self, *, z_dim: int, c_dim: int, w_dim: int, num_ws: int | None,
                 num_layers: int = 8, embed_features: int | None = None,
                 layer_features: int | None = None, activation: str = "lrelu",
                 lr_multiplier: float = 0.01, w_avg_beta: float | None = 0.995):
        super().__init__()
        self.z_dim, self.c_dim, self.w_dim = z_dim, c_dim, w_dim
        self.num_ws = num_ws
        self.num_layers = num_layers
        self.w_avg_beta = w_avg_beta
        if embed_features is None:
            embed_features = w_dim
        if c_dim == 0:
            embed_features = 0
        if layer_features is None:
            layer_features = w_dim
        features = [z_dim + embed_features] + [layer_features] * (num_layers - 1) + [w_dim]
        if c_dim > 0:
            self.embed = FullyConnectedLayer(c_dim, embed_features)
        for idx in range(num_layers):
            setattr(self, f"fc{idx}", FullyConnectedLayer(features[idx], features[idx + 1],
                                                          activation=activation,
                                                          lr_multiplier=lr_multiplier))
        if num_ws is not None and w_avg_beta is not None:
            self.register_buffer("w_avg", torch.zeros([w_dim]))

    def forward(self, z: torch.Tensor | None, c: torch.Tensor | None = None, *,
                truncation_psi: float = 1.0, truncation_cutoff: int | None = None,
                update_w_avg: bool = False) -> torch.Tensor:
        x = None
        if self.z_dim > 0:
            if z is None or z.ndim != 2 or z.shape[1] != self.z_dim:
                raise LatentError(f"z must be [N, {self.z_dim}], got "
                                  f"{None if z is None else list(z.shape)}")
            x = ops.normalize_2nd_moment(z.to(torch.float32))
        if self.c_dim > 0:
            if c is None or c.ndim != 2 or c.shape[1] != self.c_dim:
                raise LatentError(f"this generator is conditional: c must be [N, {self.c_dim}], got "
                                  f"{None if c is None else list(c.shape)}")
            y = ops.normalize_2nd_moment(self.embed(c.to(torch.float32)))
            x = torch.cat([x, y], dim=1) if x is not None else y
        for idx in range(self.num_layers):
            x = getattr(self, f"fc{idx}")(x)
        if update_w_avg and self.w_avg_beta is not None:
            self.w_avg.copy_(x.detach().mean(dim=0).lerp(self.w_avg, self.w_avg_beta))
        if self.num_ws is not None:
            x = x.unsqueeze(1).repeat([1, self.num_ws, 1])  # [N, num_ws, w_dim]
        if truncation_psi != 1:
            if self.num_ws is None or truncation_cutoff is None:
                x = self.w_avg.lerp(x, truncation_psi)
            else:
                x = x.clone()
                x[:, :truncation_cutoff] = self.w_avg.lerp(x[:, :truncation_cutoff], truncation_psi)
        return x


class SynthesisLayer(nn.Module):
    """Modulated 3x3 conv (optionally 2x up), noise, bias, leaky ReLU, clamp."""

    def __init__(self, in_channels: int, out_channels: int, *, w_dim: int, resolution: int,
                 kernel_size: int = 3, up: int = 1, use_noise: bool = True,
                 activation: str = "lrelu", resample_filter=(1, 3, 3, 1),
                 conv_clamp: float | None = None):
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.resolution = resolution
        self.up = up
        self.use_noise = use_noise
        self.activation = activation
        self.conv_clamp = conv_clamp
        self.register_buffer("resample_filter", ops.make_filter(resample_filter))
        self.padding = kernel_size // 2
        self.act_gain = ops.ACTIVATION_GAINS[activation]
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        self.weight = nn.Parameter(torch.randn([out_channels, in_channels, kernel_size, kernel_size]))
        if use_noise:
            self.register_buffer("noise_const", torch.randn([resolution, resolution]))
            self.noise_strength = nn.Parameter(torch.zeros([]))
        self.bias = nn.Parameter(torch.zeros([out_channels]))

    def forward(self, x: torch.Tensor, w: torch.Tensor, *, noise_mode: str = "const",
                noise: torch.Tensor | None = None, fused_modconv: bool = True,
                gain: float = 1.0, generator: torch.Generator | None = None,
                style: torch.Tensor | None = None) -> torch.Tensor:
        styles = self.affine(w) if style is None else style.to(w.dtype)  # [N, I]
        noise_term = None
        if self.use_noise:
            if noise is not None:
                noise_term = noise * self.noise_strength
            elif noise_mode == "random":
                shape = [x.shape[0], 1, self.resolution, self.resolution]
                noise_term = torch.randn(shape, device=x.device, generator=generator) * self.noise_strength
            elif noise_mode == "const":
                noise_term = self.noise_const * self.noise_strength
        x = ops.modulated_conv2d(x, self.weight, styles, noise=noise_term, up=self.up,
                                 padding=self.padding, resample_filter=self.resample_filter,
                                 flip_weight=(self.up == 1), fused=fused_modconv)
        clamp = self.conv_clamp * gain if self.conv_clamp is not None else None
        return ops.bias_act(x, self.bias.to(x.dtype), act=self.activation,
                            gain=self.act_gain * gain, clamp=clamp)


class ToRGBLayer(nn.Module):
    """Modulated 1x1 conv without demodulation to image channels."""

    def __init__(self, in_channels: int, out_channels: int, *, w_dim: int, kernel_size: int = 1,
                 conv_clamp: float | None = None):
        super().__init__()
        self.conv_clamp = conv_clamp
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        self.weight = nn.Parameter(torch.randn([out_channels, in_channels, kernel_size, kernel_size]))
        self.bias = nn.Parameter(torch.zeros([out_channels]))
        self.weight_gain = 1 / math.sqrt(in_channels * kernel_size ** 2)

    def forward(self, x: torch.Tensor, w: torch.Tensor, *, fused_modconv: bool = True,
                style: torch.Tensor | None = None) -> torch.Tensor:
        styles = (self.affine(w) if style is None else style.to(w.dtype)) * self.weight_gain
        x = ops.modulated_conv2d(x, self.weight, styles, demodulate=False, fused=fused_modconv)
        return ops.bias_act(x, self.bias.to(x.dtype), clamp=self.conv_clamp)


class Conv2dLayer(nn.Module):
    """Plain equalised-lr convolution with optional FIR up/downsampling (the resnet skip)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, *, bias: bool = True,
                 activation: str = "linear", up: int = 1, down: int = 1,
                 resample_filter=(1, 3, 3, 1), conv_clamp: float | None = None):
        super().__init__()
        self.activation = activation
        self.up, self.down = up, down
        self.conv_clamp = conv_clamp
        self.register_buffer("resample_filter", ops.make_filter(resample_filter))
        self.padding = kernel_size // 2
        self.weight_gain = 1 / math.sqrt(in_channels * kernel_size ** 2)
        self.act_gain = ops.ACTIVATION_GAINS[activation]
        self.weight = nn.Parameter(torch.randn([out_channels, in_channels, kernel_size, kernel_size]))
        self.bias = nn.Parameter(torch.zeros([out_channels])) if bias else None

    def forward(self, x: torch.Tensor, *, gain: float = 1.0) -> torch.Tensor:
        w = (self.weight * self.weight_gain).to(x.dtype)
        b = self.bias.to(x.dtype) if self.bias is not None else None
        x = ops.conv2d_resample(x, w, f=self.resample_filter, up=self.up, down=self.down,
                                padding=self.padding, flip_weight=(self.up == 1))
        clamp = self.conv_clamp * gain if self.conv_clamp is not None else None
        return ops.bias_act(x, b, act=self.activation, gain=self.act_gain * gain, clamp=clamp)


class SynthesisBlock(nn.Module):
    """One resolution of the synthesis network: [const | conv0 (2x up)], conv1, [torgb], [skip]."""

    def __init__(self, in_channels: int, out_channels: int, *, w_dim: int, resolution: int,
                 img_channels: int, is_last: bool, architecture: str = "skip",
                 resample_filter=(1, 3, 3, 1), conv_clamp: float | None = None,
                 **layer_kwargs: Any):
        super().__init__()
        if architecture not in ("orig", "skip", "resnet"):
            raise CheckpointError(f"unknown StyleGAN2 architecture {architecture!r} "
                                  "(expected 'orig', 'skip' or 'resnet')")
        self.in_channels = in_channels
        self.resolution = resolution
        self.is_last = is_last
        self.architecture = architecture
        self.num_conv = 0
        self.num_torgb = 0
        self.register_buffer("resample_filter", ops.make_filter(resample_filter))
        if in_channels == 0:
            self.const = nn.Parameter(torch.randn([out_channels, resolution, resolution]))
        else:
            self.conv0 = SynthesisLayer(in_channels, out_channels, w_dim=w_dim, resolution=resolution,
                                        up=2, resample_filter=resample_filter,
                                        conv_clamp=conv_clamp, **layer_kwargs)
            self.num_conv += 1
        self.conv1 = SynthesisLayer(out_channels, out_channels, w_dim=w_dim, resolution=resolution,
                                    conv_clamp=conv_clamp, **layer_kwargs)
        self.num_conv += 1
        if is_last or architecture == "skip":
            self.torgb = ToRGBLayer(out_channels, img_channels, w_dim=w_dim, conv_clamp=conv_clamp)
            self.num_torgb += 1
        if in_channels != 0 and architecture == "resnet":
            self.skip = Conv2dLayer(in_channels, out_channels, kernel_size=1, bias=False, up=2,
                                    resample_filter=resample_filter)

    def conv_layers(self) -> list[tuple[str, SynthesisLayer]]:
        """Returns ``[(name, layer)]`` of the block's synthesis layers in execution order."""
        return [(name, getattr(self, name)) for name in ("conv0", "conv1") if hasattr(self, name)]

    def forward(self, x: torch.Tensor | None, img: torch.Tensor | None, ws: torch.Tensor, *,
                noise_mode: str = "const", noise: Mapping[str, torch.Tensor] | None = None,
                fused_modconv: bool = True, generator: torch.Generator | None = None,
                styles: Mapping[str, torch.Tensor] | None = None,
                prefix: str = "", channels_last: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        w_iter: Iterator[torch.Tensor] = iter(ws.unbind(dim=1))
        layer_kwargs = dict(noise_mode=noise_mode, fused_modconv=fused_modconv, generator=generator)

        def given(name: str) -> dict[str, torch.Tensor | None]:
            key = f"{prefix}{name}"
            return {"noise": None if noise is None else noise.get(key),
                    "style": None if styles is None else styles.get(key)}

        if self.in_channels == 0:
            x = self.const.to(ws.dtype).unsqueeze(0).repeat([ws.shape[0], 1, 1, 1])
        if channels_last:  # NHWC activations; every op below keeps the layout
            x = x.contiguous(memory_format=torch.channels_last)
        if self.in_channels == 0:
            x = self.conv1(x, next(w_iter), **given("conv1"), **layer_kwargs)
        elif self.architecture == "resnet":
            y = self.skip(x, gain=math.sqrt(0.5))
            x = self.conv0(x, next(w_iter), **given("conv0"), **layer_kwargs)
            x = self.conv1(x, next(w_iter), **given("conv1"), gain=math.sqrt(0.5), **layer_kwargs)
            x = y + x
        else:
            x = self.conv0(x, next(w_iter), **given("conv0"), **layer_kwargs)
            x = self.conv1(x, next(w_iter), **given("conv1"), **layer_kwargs)
        if img is not None:
            img = ops.upsample2d(img, self.resample_filter)
        if self.is_last or self.architecture == "skip":
            y = self.torgb(x, next(w_iter), fused_modconv=fused_modconv,
                           style=given("torgb")["style"]).to(ws.dtype)
            img = img + y if img is not None else y
        return x, img


class StyleSpaceMixin:
    """Latent checks and StyleSpace shared by the StyleGAN2 and StyleGAN3 synthesis networks.

    A subclass provides ``num_ws``, ``w_dim`` and ``style_layers() -> [(name, ws index, affine)]``.
    """

    num_ws: int
    w_dim: int

    def compute_styles(self, ws: torch.Tensor) -> dict[str, torch.Tensor]:
        """Returns StyleSpace: ``{layer name: affine(ws[:, index])}`` (``[N, C]`` each), in execution order.

        Passing (edited) styles back as ``synthesis(ws, styles=...)`` renders from them; unedited
        styles reproduce ``synthesis(ws)`` exactly.
        """
        self._check_ws(ws)
        ws = ws.to(ops.compute_dtype(next(self.parameters())))
        return {name: affine(ws[:, index]) for name, index, affine in self.style_layers()}

    def _check_ws(self, ws: torch.Tensor) -> None:
        if ws.ndim != 3 or ws.shape[1] != self.num_ws or ws.shape[2] != self.w_dim:
            raise LatentError(f"ws must be [N, {self.num_ws}, {self.w_dim}] for this generator, "
                              f"got {list(ws.shape)}")


class SynthesisNetwork(StyleSpaceMixin, nn.Module):
    """ws ``[N, num_ws, w_dim]`` -> image ``[N, img_channels, R, R]`` (about [-1, 1])."""

    def __init__(self, *, w_dim: int, img_resolution: int, img_channels: int,
                 channel_base: int = 32768, channel_max: int = 512, **block_kwargs: Any):
        super().__init__()
        log2 = int(math.log2(img_resolution)) if img_resolution > 0 else 0
        if img_resolution < 4 or 2 ** log2 != img_resolution:
            raise CheckpointError(f"img_resolution must be a power of two >= 4, got {img_resolution}")
        self.w_dim = w_dim
        self.img_resolution = img_resolution
        self.img_channels = img_channels
        self.block_resolutions = [2 ** i for i in range(2, log2 + 1)]
        channels = {res: min(channel_base // res, channel_max) for res in self.block_resolutions}
        self.num_ws = 0
        self.block_ws_ranges: dict[int, tuple[int, int]] = {}
        w_idx = 0
        for res in self.block_resolutions:
            in_channels = channels[res // 2] if res > 4 else 0
            is_last = res == img_resolution
            block = SynthesisBlock(in_channels, channels[res], w_dim=w_dim, resolution=res,
                                   img_channels=img_channels, is_last=is_last, **block_kwargs)
            setattr(self, f"b{res}", block)
            self.block_ws_ranges[res] = (w_idx, w_idx + block.num_conv + block.num_torgb)
            w_idx += block.num_conv
            self.num_ws += block.num_conv + (block.num_torgb if is_last else 0)

    def blocks(self) -> list[tuple[int, SynthesisBlock]]:
        """Returns ``[(resolution, block)]`` from 4 px up."""
        return [(res, getattr(self, f"b{res}")) for res in self.block_resolutions]

    def style_layers(self) -> list[tuple[str, int, FullyConnectedLayer]]:
        """Returns ``[(layer name, ws index, affine)]`` of every style input, in execution order.

        The affines map w to the per-channel styles (StyleSpace); SeFa factorises their weights.
        """
        out = []
        for res, block in self.blocks():
            start, _ = self.block_ws_ranges[res]
            idx = start
            for name, layer in block.conv_layers():
                out.append((f"b{res}.{name}", idx, layer.affine))
                idx += 1
            if hasattr(block, "torgb"):
                out.append((f"b{res}.torgb", idx, block.torgb.affine))
        return out

    def noise_buffers(self) -> dict[str, torch.Tensor]:
        """Returns ``{"b{R}.conv{i}": noise_const}`` for every layer that takes noise."""
        return {f"b{res}.{name}": layer.noise_const
                for res, block in self.blocks() for name, layer in block.conv_layers()
                if layer.use_noise}

    def forward(self, ws: torch.Tensor, *, noise_mode: str = "const",
                noise: Mapping[str, torch.Tensor] | None = None, fused_modconv: bool = True,
                force_fp32: bool = True, generator: torch.Generator | None = None,
                styles: Mapping[str, torch.Tensor] | None = None,
                return_intermediates: bool = False, channels_last_from: int | None = None):
        """Returns the image ``[N, C, R, R]`` for ``ws`` ``[N, num_ws, w_dim]``.

        Args:
            noise_mode: ``const`` (the stored noise buffers), ``random`` or ``none``.
            noise: optional ``{"b{R}.conv{i}": [H, W] or [N, 1, H, W]}`` replacing the stored
                buffers (the projector optimises these); scaled by each layer's noise strength.
            force_fp32: accepted for NVIDIA compatibility; computation is float32 (float64 after
                ``.double()``).
            styles: optional StyleSpace override ``{layer name: [N, C]}`` (see ``compute_styles``);
                layers not named use ``affine(w)``.
            return_intermediates: also return ``{"b{R}": (x, img)}`` for every block.
            channels_last_from: blocks at this resolution and above keep their activations NHWC
                (``channels_last``): the same values to float rounding, and on CPU faster
                convolutions for large feature maps. The returned image is NCHW either way.
                (The fused path with a batch > 1 folds the batch into channels for its grouped
                convolution, which brings NCHW back.)
        """
        del force_fp32
        if noise_mode not in ("const", "random", "none"):
            raise ValueError(f"noise_mode must be 'const', 'random' or 'none', got {noise_mode!r}")
        self._check_ws(ws)
        ws = ws.to(ops.compute_dtype(next(self.parameters())))
        x = img = None
        intermediates = {}
        for res, block in self.blocks():
            start, stop = self.block_ws_ranges[res]
            x, img = block(x, img, ws[:, start:stop], noise_mode=noise_mode, noise=noise,
                           fused_modconv=fused_modconv, generator=generator, styles=styles,
                           prefix=f"b{res}.",
                           channels_last=channels_last_from is not None and res >= channels_last_from)
            if return_intermediates:
                intermediates[f"b{res}"] = (x, img)
        if channels_last_from is not None:
            img = img.contiguous()
        return (img, intermediates) if return_intermediates else img


class Generator(nn.Module):
    """NVIDIA StyleGAN2(-ADA) generator: ``G(z, c) = synthesis(mapping(z, c))``.

    Attributes:
        z_dim, c_dim, w_dim, num_ws, img_resolution, img_channels: as in NVIDIA's code.
        architecture_name: ``"stylegan2"`` (the family tag written into saved files).
        init_kwargs: the constructor arguments (JSON-serialisable) needed to rebuild it.

    Examples:
        >>> G = Generator(z_dim=8, c_dim=0, w_dim=8, img_resolution=8, img_channels=3,
        ...               mapping_kwargs={"num_layers": 2},
        ...               synthesis_kwargs={"channel_base": 64, "channel_max": 8})
        >>> G.num_ws
        4
        >>> G(torch.zeros(1, 8)).shape
        torch.Size([1, 3, 8, 8])
    """

    architecture_name = "stylegan2"

    def __init__(self, *, z_dim: int, c_dim: int = 0, w_dim: int, img_resolution: int,
                 img_channels: int = 3, mapping_kwargs: Mapping[str, Any] | None = None,
                 synthesis_kwargs: Mapping[str, Any] | None = None):
        super().__init__()
        mapping_kwargs = dict(mapping_kwargs or {})
        synthesis_kwargs = dict(synthesis_kwargs or {})
        self.init_kwargs = copy.deepcopy(dict(
            z_dim=z_dim, c_dim=c_dim, w_dim=w_dim, img_resolution=img_resolution,
            img_channels=img_channels, mapping_kwargs=mapping_kwargs,
            synthesis_kwargs=synthesis_kwargs))
        self.z_dim, self.c_dim, self.w_dim = z_dim, c_dim, w_dim
        self.img_resolution, self.img_channels = img_resolution, img_channels
        synthesis_args = {k: v for k, v in synthesis_kwargs.items() if k not in _IGNORED_SYNTHESIS_KWARGS}
        mapping_args = {k: v for k, v in mapping_kwargs.items() if k not in _IGNORED_MAPPING_KWARGS}
        try:
            self.synthesis = SynthesisNetwork(w_dim=w_dim, img_resolution=img_resolution,
                                              img_channels=img_channels, **synthesis_args)
            self.num_ws = self.synthesis.num_ws
            self.mapping = MappingNetwork(z_dim=z_dim, c_dim=c_dim, w_dim=w_dim,
                                          num_ws=self.num_ws, **mapping_args)
        except TypeError as error:
            raise CheckpointError(f"unsupported StyleGAN2 constructor argument: {error}") from None

    def forward(self, z: torch.Tensor, c: torch.Tensor | None = None, *, truncation_psi: float = 1.0,
                truncation_cutoff: int | None = None, **synthesis_kwargs: Any) -> torch.Tensor:
        ws = self.mapping(z, c, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff)
        return self.synthesis(ws, **synthesis_kwargs)

    def extra_repr(self) -> str:
        return (f"resolution={self.img_resolution}, num_ws={self.num_ws}, w_dim={self.w_dim}, "
                f"z_dim={self.z_dim}, c_dim={self.c_dim}")
