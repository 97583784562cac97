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

The ImageNet trunks are read from torchvision's cache (``$TORCH_HOME/hub/checkpoints``); when a
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


def _import_lpips():
    try:
        import lpips  # noqa: PLC0415
    except ImportError as error:  # pragma: no cover - lpips is a hard requirement of the pack
        raise DependencyError(f"the 'lpips' package is needed for perceptual losses ({error}); "
                              "pip install lpips") from None
    return lpips


def _stlpips_weights(name: str) -> Path:
    spec = importlib.util.find_spec("stlpips_pytorch")
    if spec is None or not spec.submodule_search_locations:
        raise DependencyError("perceptual='stlpips-alex' needs the stlpips-pytorch wheel; "
                              "pip install --no-deps stlpips-pytorch")
    path = Path(list(spec.submodule_search_locations)[0]) / "weights" / "vST0.0" / name
    if not path.is_file():
        raise MissingFileError(f"ST-LPIPS weights {name} not found in {path.parent}; reinstall stlpips-pytorch")
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


class ShiftTolerantAlexNet(nn.Module):
    """ST-LPIPS AlexNet trunk (stride-1 first conv, BlurPool downsampling); five ReLU outputs.

    Module indices follow the published state dict (``slice1.0``, ``slice1.1.filt``, ...).
    """

    def __init__(self):
        super().__init__()
        relu = lambda: nn.ReLU(inplace=False)  # noqa: E731
        layers = [
            nn.Conv2d(3, 64, 11, stride=1, padding=2), BlurDownsample(64), relu(),          # 0-2
            nn.MaxPool2d(3, stride=1), BlurDownsample(64), nn.Conv2d(64, 192, 5, padding=2), relu(),  # 3-6
            nn.MaxPool2d(3, stride=1), BlurDownsample(192), nn.Conv2d(192, 384, 3, padding=1), relu(),  # 7-10
            nn.Conv2d(384, 256, 3, padding=1), relu(),                                      # 11-12
            nn.Conv2d(256, 256, 3, padding=1), relu(),                                      # 13-14
        ]
        bounds = [(0, 3), (3, 7), (7, 11), (11, 13), (13, 15)]
        for k, (start, stop) in enumerate(bounds, 1):
            block = nn.Sequential()
            for idx in range(start, stop):
                block.add_module(str(idx), layers[idx])
            setattr(self, f"slice{k}", block)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outs = []
        for k in range(1, 6):
            x = getattr(self, f"slice{k}")(x)
            outs.append(x)
        return outs


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
    return torch.load(path, map_location="cpu", weights_only=True)


def _build(kind: str) -> LPIPSModel:
    if kind not in PERCEPTUAL_KINDS:
        raise ConfigError(f"unknown perceptual backbone {kind!r}; choose one of {', '.join(PERCEPTUAL_KINDS)}")
    default_shift = torch.tensor([-0.030, -0.088, -0.188])
    default_scale = torch.tensor([0.458, 0.448, 0.450])
    if kind == "stlpips-alex":
        state = _load_state(_stlpips_weights("alex_shift_tolerant.pth"))
        trunk = ShiftTolerantAlexNet()
        trunk.load_state_dict({k[len("net."):]: v for k, v in state.items() if k.startswith("net.")}, strict=True)
        lins = _lin_layers([64, 192, 384, 256, 256], state)
        return LPIPSModel(kind, trunk, lins, state["scaling_layer.shift"], state["scaling_layer.scale"])
    trunk_name = "vgg" if kind.endswith("vgg") else "alex"
    backbone = None if kind.startswith("random") else backbone_file(trunk_name)  # raise before lpips runs
    lpips = _import_lpips()
    import warnings  # noqa: PLC0415

    with warnings.catch_warnings(), torch.random.fork_rng(devices=[]):
        warnings.simplefilter("ignore")
        torch.manual_seed(0)  # random trunks are reproducible
        model = lpips.LPIPS(net=trunk_name, pretrained=True, pnet_rand=True, verbose=False)
    if backbone is not None:
        state = _load_state(backbone)
        # torchvision names "features.{i}.*" -> lpips "slice{k}.{i}.*"
        mapping = {}
        for k in range(1, 6):
            for idx in getattr(model.net, f"slice{k}")._modules:
                mapping[idx] = f"slice{k}.{idx}"
        trunk_state = {}
        for key, value in state.items():
            if key.startswith("features."):
                idx, rest = key[len("features."):].split(".", 1)
                if idx in mapping:
                    trunk_state[f"{mapping[idx]}.{rest}"] = value
        missing, _ = model.net.load_state_dict(trunk_state, strict=False)
        if missing:
            raise MissingFileError(f"{backbone} does not hold the expected torchvision {trunk_name} weights "
                                   f"(missing {missing[0]}); re-download {BACKBONE_FILES[trunk_name][1]}")
    channels = list(model.chns)
    lins = [nn.Conv2d(c, 1, 1, bias=False) for c in channels]
    for lin, source in zip(lins, model.lins):
        lin.weight.data.copy_(source.model[-1].weight.data)

    class _Trunk(nn.Module):
        def __init__(self, net: nn.Module):
            super().__init__()
            self.net = net

        def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
            return list(self.net(x))

    return LPIPSModel(kind, _Trunk(model.net), lins, default_shift, default_scale,
                      min_size=32)


def perceptual_model(kind: str, device: torch.device | str = "cpu", *, channels_last: bool = False) -> LPIPSModel:
    """Returns the frozen perceptual distance ``kind`` on ``device`` (cached per kind, device and layout).

    ``channels_last`` stores the trunk (and feeds it) in NHWC, faster with bf16/fp16 and on CUDA.

    Raises:
        ConfigError: unknown kind.
        MissingFileError: a backbone file is missing (nothing is downloaded).
    """
    key = (kind, str(torch.device(device)), bool(channels_last))
    with _LOCK:
        model = _CACHE.get(key)
        if model is None:
            model = _build(kind).to(device)
            if channels_last:
                model = model.to(memory_format=torch.channels_last)
                model.channels_last = True
            _CACHE[key] = model
    return model


def noise_regularization(noises: Sequence[torch.Tensor]) -> torch.Tensor:
    """Returns the projector's noise regulariser: squared 1-pixel autocorrelations over a pyramid.

    For each noise map ``n`` ``[H, W]`` (or a batch ``[N, 1, H, W]``, summed over N):
    ``mean(n * roll(n, 1, x))^2 + mean(n * roll(n, 1, y))^2``, repeated on 2x average-pooled
    maps down to 8x8.
    """
    total = None
    for noise in noises:
        n = noise.reshape(-1, 1, *noise.shape[-2:])  # [N, 1, H, W]
        while True:
            term = ((n * torch.roll(n, shifts=1, dims=3)).mean(dim=[1, 2, 3]).square()
                    + (n * torch.roll(n, shifts=1, dims=2)).mean(dim=[1, 2, 3]).square()).sum()
            total = term if total is None else total + term
            if n.shape[-1] <= 8:
                break
            n = F.avg_pool2d(n, kernel_size=2)
    return total if total is not None else torch.zeros([])


__all__ = ["PERCEPTUAL_KINDS", "BACKBONE_FILES", "LPIPSModel", "perceptual_model", "backbone_file",
           "torch_checkpoint_dir", "noise_regularization"]
