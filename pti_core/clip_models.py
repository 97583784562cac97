"""CLIP models for text-driven editing (StyleCLIP), built with ``open-clip-torch`` and loaded safely.

A :class:`ClipModel` wraps an ``open_clip`` CLIP module with the pack's image convention: images
go in as ``[N, 3, H, W]`` in [-1, 1] and are resized / normalised the way the checkpoint expects.

Weights come from a file the user has, never from the network:

* ``*.safetensors`` (preferred): an ``open_clip`` / OpenAI-layout state dict.
* ``*.bin`` / ``*.pt`` / ``*.pth``: read with the pack's restricted ``torch.save`` reader
  (:mod:`pti_core.generators.unpickler`, nothing in the file runs); an ``open_clip``
  training checkpoint (``{"state_dict": ...}``, ``module.`` prefixes) is unwrapped.
* OpenAI's original ``ViT-B-32.pt`` is a TorchScript archive: its tensors are read from the zip
  with an allow-listed unpickler (no TorchScript code is loaded or run).

The architecture comes from, in this order: an explicit ``architecture`` name (any
``open_clip.list_models()`` entry, e.g. ``ViT-B-32-quickgelu`` for OpenAI weights); an
``open_clip_config.json`` beside the weights (the Hugging Face hub layout of open_clip models);
the tensor shapes of an OpenAI TorchScript archive (QuickGELU, as OpenAI trained them).

ComfyUI's own ``clip_vision`` files (Hugging Face ``CLIPVisionModel`` layout, image tower only) and
Stable Diffusion text encoders are NOT accepted: StyleCLIP needs both towers of one CLIP model.
"""

from __future__ import annotations

import hashlib
import io
import json
import pickle
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
from torch import nn

from .errors import CheckpointError, ConfigError, DependencyError, MissingFileError, UnsafeCheckpointError
from .generators.unpickler import load_torch_file, read_zip_entry, scan_pickle

# Where users get CLIP weights (shown in error messages; nothing here downloads).
OPENAI_VIT_B_32_URL = ("https://openaipublic.azureedge.net/clip/models/"
                       "40d365715913c9da98579312b702a82c18be219cc2a73407c4526f58eba950af/ViT-B-32.pt")
DOWNLOAD_HINT = ("download open_clip_model.safetensors + open_clip_config.json from "
                 "https://huggingface.co/timm/vit_base_patch32_clip_224.openai (OpenAI's ViT-B/32, the CLIP that "
                 f"StyleCLIP's published statistics use; or the original {OPENAI_VIT_B_32_URL}) "
                 "into ComfyUI/models/clip_vision")

# Architectures offered by the node's combo box (any open_clip name works from Python / the CLI).
COMMON_ARCHITECTURES = ("auto", "ViT-B-32-quickgelu", "ViT-B-32", "ViT-B-16-quickgelu", "ViT-B-16",
                        "ViT-L-14-quickgelu", "ViT-L-14", "ViT-L-14-336-quickgelu", "RN50-quickgelu",
                        "RN101-quickgelu")

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)

# Extra tensors OpenAI's TorchScript archive carries that are not weights.
_NON_WEIGHT_KEYS = ("input_resolution", "context_length", "vocab_size")


def _open_clip():
    try:
        import open_clip  # noqa: PLC0415
    except ImportError as error:  # pragma: no cover - the dependency is declared
        raise DependencyError("StyleCLIP needs the open-clip-torch package: pip install open-clip-torch") from error
    return open_clip


def state_fingerprint(module: nn.Module) -> str:
    """Returns the sha256 (hex) of a module's state dict: names, dtypes, shapes and values.

    Two modules with the same weights have the same fingerprint whatever file they came from.
    """
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        data = tensor.detach().to("cpu").contiguous().reshape(-1)
        digest.update(f"{name}:{data.dtype}:{list(data.shape)};".encode())
        digest.update(data.view(torch.uint8).numpy().tobytes() if data.numel() else b"")
    return digest.hexdigest()


def _embed_dim(model: nn.Module) -> int:
    """Returns the joint embedding size of an open_clip CLIP model."""
    projection = getattr(model, "text_projection", None)
    if isinstance(projection, torch.Tensor) and projection.ndim == 2:
        return int(projection.shape[1])
    if isinstance(projection, nn.Linear):
        return int(projection.out_features)
    output_dim = getattr(getattr(model, "visual", None), "output_dim", None)
    if output_dim is None:
        raise ConfigError("cannot tell this CLIP model's embedding size; use an OpenAI-architecture CLIP")
    return int(output_dim)


class ClipModel(nn.Module):
    """An open_clip CLIP model with the pack's image convention and a tokenizer.

    Attributes:
        name: short description (architecture and file name).
        embed_dim: size of the joint embedding.
        image_size: side the image tower expects.
        fingerprint: sha256 of the weights (names the StyleCLIP statistics cache).
    """

    def __init__(self, model: nn.Module, *, name: str, image_mean: Sequence[float] = OPENAI_MEAN,
                 image_std: Sequence[float] = OPENAI_STD):
        super().__init__()
        self.model = model.float().eval().requires_grad_(False)
        self.name = name
        size = getattr(model.visual, "image_size", 224)
        self.image_size = int(size[0] if isinstance(size, (tuple, list)) else size)
        self.context_length = int(getattr(model, "context_length", 77))
        self.embed_dim = _embed_dim(model)
        self.register_buffer("image_mean", torch.tensor(image_mean, dtype=torch.float32).view(1, 3, 1, 1),
                             persistent=False)
        self.register_buffer("image_std", torch.tensor(image_std, dtype=torch.float32).view(1, 3, 1, 1),
                             persistent=False)
        self.fingerprint = state_fingerprint(self.model)

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """Returns CLIP input ``[N, 3, S, S]`` from images ``[N, 3, H, W]`` in [-1, 1].

        Square images are resized (bicubic, antialiased) to ``image_size``; others are resized on
        the short side and centre-cropped, as CLIP's own preprocessing does.
        """
        if images.ndim != 4 or images.shape[1] != 3:
            raise ConfigError(f"CLIP images must be [N, 3, H, W], got {list(images.shape)}")
        x = (images.to(torch.float32) + 1) / 2  # [N, 3, H, W] in [0, 1]
        height, width = x.shape[-2:]
        scale = self.image_size / min(height, width)
        new_h, new_w = max(self.image_size, round(height * scale)), max(self.image_size, round(width * scale))
        if (new_h, new_w) != (height, width):
            x = torch.nn.functional.interpolate(x, size=(new_h, new_w), mode="bicubic", align_corners=False,
                                                antialias=True)
        top, left = (new_h - self.image_size) // 2, (new_w - self.image_size) // 2
        x = x[:, :, top:top + self.image_size, left:left + self.image_size]
        return (x - self.image_mean) / self.image_std

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """Returns image embeddings ``[N, D]`` (float32, not normalised) for images in [-1, 1]."""
        return self.model.encode_image(self.preprocess(images)).to(torch.float32)

    def tokenize(self, texts: Sequence[str]) -> torch.Tensor:
        """Returns token ids ``[N, context_length]`` (CLIP's BPE tokenizer)."""
        return _open_clip().tokenize(list(texts), context_length=self.context_length)

    def encode_text(self, texts: Sequence[str]) -> torch.Tensor:
        """Returns text embeddings ``[N, D]`` (float32, not normalised)."""
        device = self.image_mean.device
        return self.model.encode_text(self.tokenize(texts).to(device)).to(torch.float32)


def build_clip(model_cfg: Mapping[str, Any] | str, *, seed: int | None = None, name: str | None = None,
               image_mean: Sequence[float] = OPENAI_MEAN, image_std: Sequence[float] = OPENAI_STD) -> ClipModel:
    """Returns a CLIP model with random weights from an open_clip name or ``model_cfg`` dict (for tests).

    Args:
        model_cfg: an ``open_clip.list_models()`` name, or a config dict
            (``{"embed_dim", "vision_cfg", "text_cfg", "quick_gelu"}``) as in ``open_clip_config.json``.
        seed: torch seed for the random initialisation.
    """
    open_clip = _open_clip()
    if seed is not None:
        torch.manual_seed(seed)
    if isinstance(model_cfg, str):
        model = open_clip.create_model(model_cfg, pretrained=None, load_weights=False)
        label = model_cfg
    else:
        model = _model_from_config(model_cfg)
        label = "custom"
    return ClipModel(model, name=name or f"{label} (random)", image_mean=image_mean, image_std=image_std)


def _model_from_config(model_cfg: Mapping[str, Any]) -> nn.Module:
    open_clip = _open_clip()
    cfg = dict(model_cfg)
    text_cfg = dict(cfg.get("text_cfg", {}))
    if text_cfg.get("hf_model_name") or text_cfg.get("hf_tokenizer_name") or cfg.get("custom_text"):
        raise ConfigError("this CLIP uses a Hugging Face text tower, which the pack does not support; "
                          "use an OpenAI-architecture CLIP (e.g. ViT-B-32)")
    try:
        return open_clip.CLIP(**cfg).eval()
    except TypeError as error:
        raise ConfigError(f"unusable open_clip model_cfg ({error}); check open_clip_config.json") from error


def _read_state_dict(path: Path) -> tuple[dict[str, torch.Tensor], bool]:
    """Returns ``(state dict, is_openai_torchscript)`` from a weights file, without running code."""
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        from safetensors.torch import load_file  # noqa: PLC0415
        try:
            return dict(load_file(str(path))), False
        except Exception as error:  # safetensors raises its own error types
            raise CheckpointError(f"cannot read {path.name} as safetensors ({error}); re-download it") from error
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
        if any(name.endswith("/constants.pkl") for name in names) or any("/code/" in name for name in names):
            return read_torchscript_tensors(path), True
    loaded = load_torch_file(str(path), source=path.name)  # the pack's restricted reader: nothing runs
    if isinstance(loaded, Mapping) and "state_dict" in loaded and isinstance(loaded["state_dict"], Mapping):
        loaded = loaded["state_dict"]
    if not isinstance(loaded, Mapping) or not all(isinstance(v, torch.Tensor) for v in loaded.values()):
        raise CheckpointError(f"{path.name} does not hold a CLIP state dict; use the open_clip .safetensors file")
    state = {k[len("module."):] if k.startswith("module.") else k: v for k, v in loaded.items()}
    return state, False


class _ScriptObject:
    """A TorchScript module object from an archive's ``data.pkl``: only its attributes are kept."""

    def __init__(self, *args: Any):
        self.attributes: dict[str, Any] = {}

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, Mapping):
            self.attributes = dict(state)


_STORAGE_DTYPES = {
    "FloatStorage": torch.float32, "HalfStorage": torch.float16, "BFloat16Storage": torch.bfloat16,
    "DoubleStorage": torch.float64, "LongStorage": torch.int64, "IntStorage": torch.int32,
    "ShortStorage": torch.int16, "CharStorage": torch.int8, "ByteStorage": torch.uint8,
    "BoolStorage": torch.bool,
}


class _StorageType:
    def __init__(self, dtype: torch.dtype):
        self.dtype = dtype


def _rebuild_tensor(storage: torch.Tensor, offset: int, size: Sequence[int], stride: Sequence[int],
                    *_: Any) -> torch.Tensor:
    needed = offset + sum((s - 1) * st for s, st in zip(size, stride)) + 1 if all(size) else 0
    if needed > storage.numel():
        raise CheckpointError("a tensor in the TorchScript archive points outside its storage; the file is damaged")
    return storage.as_strided(tuple(size), tuple(stride), offset)


class _TorchScriptUnpickler(pickle.Unpickler):
    """Allow-listed unpickler for a TorchScript archive's ``data.pkl`` (module tree of tensors)."""

    def __init__(self, file, archive: zipfile.ZipFile, prefix: str, *, file_size: int, source: str):
        super().__init__(file)
        self._archive = archive
        self._prefix = prefix
        self._file_size = file_size
        self._source = source
        self._storages: dict[str, torch.Tensor] = {}

    def find_class(self, module: str, name: str) -> Any:
        if module.startswith("__torch__.") or module == "__torch__":
            return _ScriptObject
        if (module, name) in (("torch._utils", "_rebuild_tensor_v2"), ("torch._utils", "_rebuild_tensor")):
            return _rebuild_tensor
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(_STORAGE_DTYPES[name])
        if (module, name) == ("collections", "OrderedDict"):
            return OrderedDict
        if module == "torch.jit._pickle" and name == "restore_type_tag":
            return lambda value, _tag: value
        raise UnsafeCheckpointError(f"TorchScript archive refers to {module}.{name}, which is not allowed; "
                                    f"use the open_clip .safetensors file instead")

    def persistent_load(self, pid: Any) -> torch.Tensor:
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"
                and isinstance(pid[1], _StorageType)):
            raise CheckpointError("unexpected storage record in the TorchScript archive; the file is damaged")
        _, storage_type, key, _location, numel = pid
        if key not in self._storages:
            name = f"{self._prefix}data/{key}"
            try:
                info = self._archive.getinfo(name)
            except KeyError:
                raise CheckpointError(f"{self._source}: storage {key!r} is missing from the TorchScript "
                                      "archive; re-download the file") from None
            data = bytearray(read_zip_entry(self._archive, info, self._file_size, self._source))
            tensor = torch.frombuffer(data, dtype=storage_type.dtype) if data else \
                torch.empty(0, dtype=storage_type.dtype)
            if tensor.numel() < int(numel):
                raise CheckpointError("a storage in the TorchScript archive is truncated; re-download the file")
            self._storages[key] = tensor
        return self._storages[key]


def read_torchscript_tensors(path: str | Path) -> dict[str, torch.Tensor]:
    """Returns ``{dotted attribute name: tensor}`` of a TorchScript archive without loading its code.

    Only tensors, module objects (kept as attribute records) and ordered dicts are allowed in the
    archive's ``data.pkl``; anything else raises :class:`UnsafeCheckpointError`.
    """
    path = Path(path)
    with zipfile.ZipFile(path) as archive:
        data_names = [n for n in archive.namelist() if n.endswith("data.pkl") and n.count("/") == 1]
        if len(data_names) != 1:
            raise CheckpointError(f"{path.name} is not a TorchScript archive with one data.pkl")
        prefix = data_names[0][: -len("data.pkl")]
        size = path.stat().st_size
        data = read_zip_entry(archive, archive.getinfo(data_names[0]), size, path.name)  # stored, fits the file
        scan_pickle(data, 0, f"{path.name}:{data_names[0]}")  # length-field / memo bombs refused unread
        root = _TorchScriptUnpickler(io.BytesIO(data), archive, prefix, file_size=size, source=path.name).load()
    tensors: dict[str, torch.Tensor] = {}

    def walk(obj: Any, name: str, depth: int) -> None:
        if depth > 64:
            raise CheckpointError(f"{path.name}: module tree too deep")
        if isinstance(obj, torch.Tensor):
            tensors[name] = obj.clone()
        elif isinstance(obj, _ScriptObject):
            for key, value in obj.attributes.items():
                walk(value, f"{name}.{key}" if name else key, depth + 1)

    walk(root, "", 0)
    return tensors


def _sibling_config(path: Path) -> dict[str, Any] | None:
    config_path = path.parent / "open_clip_config.json"
    if not config_path.is_file():
        return None
    try:
        config = json.loads(config_path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise ConfigError(f"cannot read {config_path} ({error}); fix or remove it") from error
    if "model_cfg" not in config:
        raise ConfigError(f"{config_path} has no model_cfg; it is not an open_clip config")
    return config


def load_clip(path: str | Path, *, architecture: str = "auto", device: torch.device | str = "cpu") -> ClipModel:
    """Returns the CLIP model stored in ``path`` (float32, eval mode, on ``device``).

    Args:
        path: weights file (.safetensors preferred; .bin/.pt/.pth; OpenAI TorchScript .pt).
        architecture: an open_clip model name (``ViT-B-32-quickgelu`` for OpenAI weights, ``ViT-B-32``
            for LAION ones), or ``auto`` (open_clip_config.json beside the file, else the shapes of an
            OpenAI TorchScript archive).

    Raises:
        MissingFileError: no file at ``path`` (the message says what to download).
        ConfigError: the architecture cannot be determined or does not fit the weights.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"CLIP weights {path} not found; {DOWNLOAD_HINT}")
    open_clip = _open_clip()
    state, is_torchscript = _read_state_dict(path)
    for key in _NON_WEIGHT_KEYS:
        state.pop(key, None)
    if any(k.startswith(("vision_model.", "text_model.")) for k in state):
        raise ConfigError(f"{path.name} is a Hugging Face / ComfyUI CLIP file (one tower, transformers layout); "
                          f"StyleCLIP needs both towers of an open_clip or OpenAI checkpoint: {DOWNLOAD_HINT}")
    image_mean, image_std = OPENAI_MEAN, OPENAI_STD
    config = _sibling_config(path) if architecture == "auto" else None
    if architecture != "auto":
        if architecture not in open_clip.list_models():
            raise ConfigError(f"unknown CLIP architecture {architecture!r}; use one of open_clip.list_models(), "
                              f"e.g. ViT-B-32-quickgelu")
        try:
            model = open_clip.create_model(architecture, pretrained=None, load_weights=False)
        except (ImportError, RuntimeError) as error:
            raise ConfigError(f"cannot build CLIP architecture {architecture!r} ({error}); use an OpenAI-architecture "
                              f"CLIP such as ViT-B-32-quickgelu") from error
        if type(model) is not open_clip.CLIP:
            raise ConfigError(f"{architecture!r} is a {type(model).__name__}, not a plain CLIP (its text tower needs "
                              f"another tokenizer); use an OpenAI-architecture CLIP such as ViT-B-32-quickgelu")
        image_mean = tuple(model.visual.preprocess_cfg.get("mean", OPENAI_MEAN)) \
            if hasattr(model.visual, "preprocess_cfg") else OPENAI_MEAN
        image_std = tuple(model.visual.preprocess_cfg.get("std", OPENAI_STD)) \
            if hasattr(model.visual, "preprocess_cfg") else OPENAI_STD
        label = architecture
    elif config is not None:
        model = _model_from_config(config["model_cfg"])
        preprocess = config.get("preprocess_cfg", {})
        image_mean = tuple(preprocess.get("mean", OPENAI_MEAN))
        image_std = tuple(preprocess.get("std", OPENAI_STD))
        label = "open_clip_config.json"
    elif is_torchscript:
        try:
            from open_clip.model import build_model_from_openai_state_dict  # noqa: PLC0415
            weights = {k: v for k, v in state.items() if not k.endswith("attn_mask")}
            model = build_model_from_openai_state_dict(weights, quick_gelu=True, cast_dtype=None)
        except (KeyError, RuntimeError, ZeroDivisionError, AssertionError) as error:
            raise ConfigError(f"cannot infer the CLIP architecture of {path.name} ({error}); "
                              f"pass the architecture name (e.g. ViT-B-32-quickgelu)") from error
        label = "OpenAI"
    else:
        raise ConfigError(f"cannot tell the architecture of {path.name}: choose it (ViT-B-32-quickgelu for "
                          f"OpenAI weights, ViT-B-32 for LAION) or put open_clip_config.json beside the file")
    model = model.float()
    expected = model.state_dict()
    state = {k: v for k, v in state.items() if k in expected or not k.endswith("attn_mask")}
    missing = sorted(set(expected) - set(state) - {k for k in expected if k.endswith("attn_mask")})
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise ConfigError(f"{path.name} does not fit CLIP architecture {label} (missing {missing[:3]}, "
                          f"unexpected {unexpected[:3]}); choose the matching architecture")
    for key, value in state.items():
        if tuple(value.shape) != tuple(expected[key].shape):
            raise ConfigError(f"{path.name} does not fit CLIP architecture {label}: {key} is "
                              f"{list(value.shape)}, expected {list(expected[key].shape)}")
    model.load_state_dict({k: v.to(expected[k].dtype) for k, v in state.items()}, strict=False)
    clip = ClipModel(model, name=f"{label}: {path.name}", image_mean=image_mean, image_std=image_std)
    return clip.to(device)
