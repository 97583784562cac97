"""Perceptual losses (LPIPS family) and the projector's noise regulariser.

Perceptual backbones (``kind``):

* ``"lpips-vgg"``: LPIPS v0.1 with the ImageNet VGG16 trunk (the inversion loss; the reference
  projector used NVIDIA's TorchScript ``vgg16.pt``, which computes the same LPIPS-VGG distance
  from the same published weights; we build it from the ``lpips`` package instead).
* ``"lpips-alex"``: LPIPS v0.1 with the ImageNet AlexNet trunk (the tuning loss and the metric).
* ``"stlpips-alex"``: ST-LPIPS (shift-tolerant BlurPool AlexNet + heads, trained on BAPPS) from the
  ``stlpips-pytorch`` wheel; a real trained metric that needs no download.
* ``"random-alex"`` / ``"random-vgg"``: LPIPS heads on a seeded random trunk; no files needed,
  for fast tests only (not a meaningful perceptual metric).

The trunks are built here (features only: no classifier is ever allocated); the trained LPIPS
heads come from the ``lpips`` package's files. The ImageNet trunks are read from torchvision's cache (``$TORCH_HOME/hub/checkpoints``); when a
file is missing a :class:`MissingFileError` names it, the folder and the download URL. Nothing
is ever downloaded here. Loaded models are cached per ``(kind, device)`` in-process.
"""

from __future__ import annotations

import importlib.util
import threading
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .errors import ConfigError, DependencyError, MissingFileError

PERCEPTUAL_KINDS = ("lpips-vgg", "lpips-alex", "stlpips-alex", "random-alex", "random-vgg")

# torchvision backbone files (declared once: file name, URL).
BACKBONE_FILES = {
    "alex": ("alexnet-owt-7be5be79.pth", "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth"),
    "vgg": ("vgg16-397923af.pth", "https://download.pytorch.org/models/vgg16-397923af.pth"),
}

_CACHE: dict[tuple[str, str, bool], "LPIPSModel"] = {}
_LOCK = threading.Lock()


def torch_checkpoint_dir() -> Path:
    """Returns torchvision's weight cache folder (``$TORCH_HOME/hub/checkpoints``)."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def backbone_file(trunk: str) -> Path:
    """Returns the cached torchvision file for ``trunk`` ("alex" or "vgg").

    Raises:
        MissingFileError: the file is not in torchvision's cache (names file, folder and URL).
    """
    name, url = BACKBONE_FILES[trunk]
    path = torch_checkpoint_dir() / name
    if not path.is_file():
        raise MissingFileError(f"perceptual backbone {name} not found in {path.parent}; download {url} "
                               f"into that folder (or set TORCH_HOME), or choose perceptual='stlpips-alex'")
    return path


class BlurDownsample(nn.Module):
    """Anti-aliased stride-2 downsampling: reflection pad 2, depthwise [1, 2, 1]^2 / 16 blur (BlurPool)."""

    def __init__(self, channels: int):
        super().__init__()
        taps = torch.tensor([1.0, 2.0, 1.0])
        filt = torch.outer(taps, taps)
        self.register_buffer("filt", (filt / filt.sum())[None, None].repeat(channels, 1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.pad(x, [2, 2, 2, 2], mode="reflect")
        return F.conv2d(x, self.filt, stride=2, groups=x.shape[1])


class SliceTrunk(nn.Module):
    """A feature network cut into five slices; returns the five slice outputs (LPIPS' taps).

    Module names are the layer indices of the published networks (torchvision's
    ``features.{i}``, ST-LPIPS' ``slice{k}.{i}``), so their state dicts load by name.
    """

    def __init__(self, layers: Sequence[nn.Module], bounds: Sequence[tuple[int, int]]):
        super().__init__()
        for k, (start, stop) in enumerate(bounds, 1):
            block = nn.Sequential()
            for idx in range(start, stop):
                block.add_module(str(idx), layers[idx])
            setattr(self, f"slice{k}", block)
        self.num_slices = len(bounds)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outs = []
        for k in range(1, self.num_slices + 1):
            x = getattr(self, f"slice{k}")(x)
            outs.append(x)
        return outs


def _relu() -> nn.Module:
    return nn.ReLU(inplace=False)


def vgg16_trunk() -> SliceTrunk:
    """Returns VGG16's convolutional features (torchvision layout) cut at relu1_2 ... relu5_3."""
    layers: list[nn.Module] = []
    channels = 3
    for item in (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512):
        if item == "M":
            layers.append(nn.MaxPool2d(2, stride=2))
        else:
            layers += [nn.Conv2d(channels, item, 3, padding=1), _relu()]
            channels = item
    return SliceTrunk(layers, [(0, 4), (4, 9), (9, 16), (16, 23), (23, 30)])


def alexnet_trunk() -> SliceTrunk:
    """Returns AlexNet's convolutional features (torchvision layout) cut at relu1 ... relu5."""
    layers = [nn.Conv2d(3, 64, 11, stride=4, padding=2), _relu(), nn.MaxPool2d(3, stride=2),
              nn.Conv2d(64, 192, 5, padding=2), _relu(), nn.MaxPool2d(3, stride=2),
              nn.Conv2d(192, 384, 3, padding=1), _relu(), nn.Conv2d(384, 256, 3, padding=1), _relu(),
              nn.Conv2d(256, 256, 3, padding=1), _relu()]
    return SliceTrunk(layers, [(0, 2), (2, 5), (5, 8), (8, 10), (10, 12)])


def shift_tolerant_alexnet_trunk() -> SliceTrunk:
    """Returns ST-LPIPS' AlexNet (stride-1 first conv, BlurPool downsampling), published layout."""
    layers = [nn.Conv2d(3, 64, 11, stride=1, padding=2), BlurDownsample(64), _relu(),
              nn.MaxPool2d(3, stride=1), BlurDownsample(64), nn.Conv2d(64, 192, 5, padding=2), _relu(),
              nn.MaxPool2d(3, stride=1), BlurDownsample(192), nn.Conv2d(192, 384, 3, padding=1), _relu(),
              nn.Conv2d(384, 256, 3, padding=1), _relu(), nn.Conv2d(256, 256, 3, padding=1), _relu()]
    return SliceTrunk(layers, [(0, 3), (3, 7), (7, 11), (11, 13), (13, 15)])


TRUNK_CHANNELS = {"alex": [64, 192, 384, 256, 256], "vgg": [64, 128, 256, 512, 512]}


class LPIPSModel(nn.Module):
    """Frozen LPIPS-style distance: ``d(a, b) = sum_l mean_hw(w_l . (phi_l(a) - phi_l(b))^2)``.

    ``phi_l`` are channel-normalised trunk features. :meth:`features` lets a loop compute the
    target's features once (:meth:`distance_to_features`), halving the per-step cost.
    Inputs are ``[B, 3, H, W]`` in [-1, 1]; images smaller than ``min_size`` are upsampled
    (bilinear) and, when ``max_size`` is set, larger ones area-downsampled to it.
    """

    def __init__(self, kind: str, trunk: nn.Module, lins: Sequence[nn.Module], shift: torch.Tensor,
                 scale: torch.Tensor, *, min_size: int = 32):
        super().__init__()
        self.kind = kind
        self.trunk = trunk
        self.lins = nn.ModuleList(lins)
        self.register_buffer("shift", shift.reshape(1, 3, 1, 1).clone())
        self.register_buffer("scale", scale.reshape(1, 3, 1, 1).clone())
        self.min_size = min_size
        self.channels_last = False
        self.compute_dtype = torch.float32  # the trunk's storage type (see perceptual_model's dtype)
        self.eval().requires_grad_(False)

    def _resize(self, x: torch.Tensor, max_size: int | None) -> torch.Tensor:
        size = x.shape[-1]
        if max_size is not None and size > max_size:
            return F.interpolate(x, size=(max_size, max_size), mode="area")
        if size < self.min_size:
            return F.interpolate(x, size=(self.min_size, self.min_size), mode="bilinear", align_corners=False)
        return x

    def features(self, x: torch.Tensor, *, max_size: int | None = None) -> list[torch.Tensor]:
        """Returns the channel-normalised trunk features of ``x`` ``[B, 3, H, W]`` in [-1, 1]."""
        x = self._resize(x, max_size)
        x = (x - self.shift.to(x.dtype)) / self.scale.to(x.dtype)
        x = x.to(self.compute_dtype)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        outs = self.trunk(x)
        return [f / (f.square().sum(dim=1, keepdim=True).sqrt() + 1e-10) for f in outs]

    def distance_to_features(self, x: torch.Tensor, target_features: Sequence[torch.Tensor], *,
                             max_size: int | None = None) -> torch.Tensor:
        """Returns the distance ``[B]`` between ``x`` and precomputed ``target_features``."""
        total = None
        for feat, target, lin in zip(self.features(x, max_size=max_size), target_features, self.lins):
            d = lin((feat - target.to(feat.dtype)).square()).mean(dim=[1, 2, 3])  # [B]
            total = d if total is None else total + d
        return total.to(torch.float32)

    def forward(self, a: torch.Tensor, b: torch.Tensor, *, max_size: int | None = None) -> torch.Tensor:
        """Returns the distance ``[B]`` between two batches in [-1, 1]."""
        return self.distance_to_features(a, self.features(b, max_size=max_size), max_size=max_size)


def _lin_layers(channels: Sequence[int], weights: dict[str, torch.Tensor]) -> list[nn.Module]:
    lins = []
    for k, c in enumerate(channels):
        conv = nn.Conv2d(c, 1, 1, bias=False)
        key = f"lin{k}.model.1.weight"
        if key not in weights:
            raise MissingFileError(f"LPIPS head weights lack {key}; reinstall the lpips / stlpips-pytorch package")
        conv.weight.data.copy_(weights[key])
        lins.append(conv)
    return lins


def _load_state(path: Path) -> dict[str, torch.Tensor]:
    """Returns the tensors of a ``torch.save`` file, read with the pack's restricted reader (nothing runs)."""
    from .generators.unpickler import load_torch_file  # noqa: PLC0415

    state = load_torch_file(str(path), source=path.name)
    if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
        raise MissingFileError(f"{path} is not a state dict of tensors; delete it and re-download it")
    return state


def _package_file(package: str, *parts: str, hint: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise DependencyError(f"the perceptual loss needs the {package} package; {hint}")
    path = Path(list(spec.submodule_search_locations)[0]).joinpath(*parts)
    if not path.is_file():
        raise MissingFileError(f"{path.name} not found in {path.parent}; reinstall {package} ({hint})")
    return path


def lpips_head_weights(trunk: str) -> dict[str, torch.Tensor]:
    """Returns the trained LPIPS v0.1 linear heads for ``trunk`` from the installed ``lpips`` package."""
    return _load_state(_package_file("lpips", "weights", "v0.1", f"{trunk}.pth", hint="pip install lpips"))


def _build(kind: str) -> LPIPSModel:
    if kind not in PERCEPTUAL_KINDS:
        raise ConfigError(f"unknown perceptual backbone {kind!r}; choose one of {', '.join(PERCEPTUAL_KINDS)}")
    if kind == "stlpips-alex":
        state = _load_state(_package_file("stlpips_pytorch", "weights", "vST0.0", "alex_shift_tolerant.pth",
                                          hint="pip install --no-deps stlpips-pytorch"))
        trunk = shift_tolerant_alexnet_trunk()
        trunk.load_state_dict({k[len("net."):]: v for k, v in state.items() if k.startswith("net.")}, strict=True)
        lins = _lin_layers(TRUNK_CHANNELS["alex"], state)
        return LPIPSModel(kind, trunk, lins, state["scaling_layer.shift"], state["scaling_layer.scale"])
    name = "vgg" if kind.endswith("vgg") else "alex"
    backbone = None if kind.startswith("random") else backbone_file(name)  # raise before anything loads
    heads = lpips_head_weights(name)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)  # random trunks are reproducible
        trunk = vgg16_trunk() if name == "vgg" else alexnet_trunk()
    if backbone is not None:
        state = _load_state(backbone)
        # torchvision "features.{i}.*" -> "slice{k}.{i}.*"
        where = {idx: f"slice{k}.{idx}" for k in range(1, 6) for idx in getattr(trunk, f"slice{k}")._modules}
        trunk_state = {}
        for key, value in state.items():
            if key.startswith("features."):
                idx, rest = key[len("features."):].split(".", 1)
                if idx in where:
                    trunk_state[f"{where[idx]}.{rest}"] = value
        try:
            trunk.load_state_dict(trunk_state, strict=True)
        except RuntimeError:
            raise MissingFileError(f"{backbone} does not hold torchvision's {name} weights; "
                                   f"re-download {BACKBONE_FILES[name][1]}") from None
    return LPIPSModel(kind, trunk, _lin_layers(TRUNK_CHANNELS[name], heads),
                      torch.tensor([-0.030, -0.088, -0.188]), torch.tensor([0.458, 0.448, 0.450]))


def perceptual_model(kind: str, device: torch.device | str = "cpu", *, channels_last: bool = False,
                     dtype: torch.dtype | None = None) -> LPIPSModel:
    """Returns the frozen perceptual distance ``kind`` on ``device`` (cached per kind, device, layout, dtype).

    ``channels_last`` stores the trunk (and feeds it) in NHWC, faster with bf16/fp16 and on CUDA.
    ``dtype`` (e.g. ``torch.bfloat16`` for a bf16 autocast loop) stores the trunk in that type and
    casts inputs to it: autocast would otherwise re-cast the frozen float32 weights on every call
    (autocast caches casts of trainable weights only); distances are still returned as float32.

    Raises:
        ConfigError: unknown kind.
        MissingFileError: a backbone file is missing (nothing is downloaded).
    """
    dtype = torch.float32 if dtype is None else dtype
    key = (kind, str(torch.device(device)), bool(channels_last), dtype)
    with _LOCK:
        model = _CACHE.get(key)
        if model is None:
            model = _build(kind).to(device)
            model.trunk.to(dtype)
            model.lins.to(dtype)
            model.compute_dtype = dtype
            if channels_last:
                model = model.to(memory_format=torch.channels_last)
                model.channels_last = True
            _CACHE[key] = model
    return model


def _autocorrelation_terms(n: torch.Tensor) -> torch.Tensor:
    """Returns ``mean(n * roll_x(n))^2 + mean(n * roll_y(n))^2`` per map of ``n`` ``[K, 1, H, W]`` -> ``[K]``."""
    return ((n * torch.roll(n, shifts=1, dims=3)).mean(dim=[1, 2, 3]).square()
            + (n * torch.roll(n, shifts=1, dims=2)).mean(dim=[1, 2, 3]).square())


def noise_regularization(noises: Sequence[torch.Tensor]) -> torch.Tensor:
    """Returns the projector's noise regulariser: squared 1-pixel autocorrelations over a pyramid.

    For each noise map ``n`` ``[H, W]`` (or a batch ``[N, 1, H, W]``, summed over N):
    ``mean(n * roll(n, 1, x))^2 + mean(n * roll(n, 1, y))^2``, repeated on 2x average-pooled
    maps down to 8x8 (maps smaller than 8x8 count once, at their size).

    All maps of one size, their own or pooled from larger ones, are stacked and handled by one
    set of operations (a few dozen per step instead of hundreds for a 1024 px generator's 17 maps).
    """
    pending: dict[tuple[int, int], list[torch.Tensor]] = {}  # size -> maps of that size, own or pooled
    for noise in noises:
        n = noise.reshape(-1, 1, *noise.shape[-2:])  # [N, 1, H, W]
        pending.setdefault(tuple(n.shape[-2:]), []).append(n)
    if not pending:
        return torch.zeros([])
    terms = []
    while pending:  # largest size first, so pooled maps join the maps of their new size
        size = max(pending, key=lambda hw: (hw[-1], hw[-2]))
        group = pending.pop(size)
        stack = torch.cat(group) if len(group) > 1 else group[0]  # [K, 1, H, W]
        terms.append(_autocorrelation_terms(stack).sum())
        if size[-1] > 8:
            pooled = F.avg_pool2d(stack, kernel_size=2)
            pending.setdefault(tuple(pooled.shape[-2:]), []).append(pooled)
    return torch.stack(terms).sum()


__all__ = ["PERCEPTUAL_KINDS", "BACKBONE_FILES", "LPIPSModel", "perceptual_model", "backbone_file",
           "torch_checkpoint_dir", "noise_regularization", "lpips_head_weights", "vgg16_trunk", "alexnet_trunk",
           "shift_tolerant_alexnet_trunk"]
