"""Loading and saving generator files, safely.

Reads every generator file users actually have, without ever running code stored in it:

==========================  ========================================================================
format tag                  what it is
==========================  ========================================================================
``nvidia-pkl``              NVIDIA ``network-snapshot-*.pkl`` / ``stylegan2-*.pkl`` /
                            ``stylegan3-*.pkl`` (a dict holding ``G_ema``, or a bare network)
``pti-pt``                  ``torch.save(G)`` of a persistence ``Generator`` (PTI's tuned
                            ``model_<run>_<image>.pt``; any ``torch.save`` archive of such objects)
``rosinality-pt``           rosinality/stylegan2-pytorch ``.pt`` (``{"g_ema", "latent_avg"}`` or a
                            training checkpoint with ``g``, ``d``, optimisers, ``args``)
``pti-safetensors``         this pack's files: weights + JSON metadata (architecture, init_kwargs)
``safetensors-state-dict``  a bare NVIDIA-named state dict; needs ``config=`` (init_kwargs)
``rosinality-safetensors``  a bare rosinality-named state dict (the layout is derived from shapes)
``torch-state-dict``        a ``torch.save`` of a bare NVIDIA-named state dict; needs ``config=``
==========================  ========================================================================

Pickles go through :mod:`.unpickler` (allow-list, persistence objects as data, storages read
by our own code); ``pickle.load``/``torch.load(weights_only=False)`` are never used. The pack
writes safetensors only (:func:`save_generator`).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Mapping, NamedTuple

import numpy as np
import torch
from torch import nn

from ..fileio import atomic_write
from ..errors import CheckpointError, ConfigError, MissingFileError, OutputExistsError, PTIError
from . import ARCHITECTURES, build_generator
from . import unpickler
from .unpickler import AttrDict, NamespaceRecord, PersistentRecord, one_line

FORMAT_TAG = "pti_core.generator"
FORMAT_VERSION = "1"
RESERVED_METADATA = ("format", "format_version", "architecture", "init_kwargs", "pti_core_version")

# Positional constructor arguments of NVIDIA's Generator classes, in order.
_NVIDIA_POSITIONAL = ("z_dim", "c_dim", "w_dim", "img_resolution", "img_channels", "mapping_kwargs",
                      "synthesis_kwargs")
_SG3_CLASS_NAMES = {"SynthesisInput"}
_MAX_MODULE_DEPTH = 32
_PROTOCOL0_STARTS = {bytes([b]) for b in b"(}]c)NIFLSVdlt"}  # opcodes a protocol 0/1 pickle starts with
_MAX_TEXT_PICKLE_BYTES = 1 << 30


class Checkpoint(NamedTuple):
    """What a generator file holds, before any module is built.

    Attributes:
        format: the format tag (see the module docstring).
        architecture: ``"stylegan2"`` or ``"stylegan3"``.
        init_kwargs: NVIDIA-style constructor arguments (JSON-serialisable).
        state_dict: tensors under NVIDIA's state-dict names (parameters and persistent buffers).
    """

    format: str
    architecture: str
    init_kwargs: dict
    state_dict: dict


@dataclass(frozen=True)
class CheckpointInfo:
    """Description of a generator file (``python -m pti_core info``).

    Attributes:
        format: the format tag (see :mod:`pti_core.generators.checkpoints`).
        architecture: ``"stylegan2"`` or ``"stylegan3"``.
        resolution, num_ws, w_dim, z_dim, c_dim: the generator's sizes.
        params: number of trainable parameter elements.
        sha256: hex digest of the file.
        path: the file.
    """

    format: str
    architecture: str
    resolution: int
    num_ws: int
    w_dim: int
    z_dim: int
    c_dim: int
    params: int
    sha256: str
    path: str

    def to_dict(self) -> dict:
        """Returns the fields as a JSON-serialisable dict."""
        return asdict(self)


# ----------------------------------------------------------------------------------------------
# Public API

def read_checkpoint(path: str | os.PathLike, *, config: Mapping[str, Any] | str | os.PathLike | None = None
                    ) -> Checkpoint:
    """Returns ``(format, architecture, init_kwargs, state_dict)`` of a generator file, building nothing.

    Args:
        path: the file (``.pkl``, ``.pt``, ``.safetensors``; recognised by content, not name).
        config: constructor arguments for files that do not carry them (bare state dicts): a
            dict of NVIDIA ``init_kwargs`` or the path of a JSON file holding them (either the
            dict itself or ``{"init_kwargs": {...}, "architecture": ...}``). Ignored for files
            that describe themselves.

    Raises:
        MissingFileError: the file does not exist.
        UnsafeCheckpointError: the file asks for a global outside the allow-list.
        CheckpointError: anything else wrong with the file; the message names the file and why.
    """
    path = Path(path)
    source = str(path)
    try:
        return _read(path, source, config)
    except PTIError:
        raise
    except RecursionError:
        raise CheckpointError(f"{source}: the file nests too deeply; it is damaged or crafted") from None
    except Exception as error:  # anything unforeseen in a malformed file: still one clear line
        raise CheckpointError(f"{source}: malformed model file ({type(error).__name__}: "
                              f"{one_line(error)[:160]})") from None


def _read(path: Path, source: str, config: Any) -> Checkpoint:
    if not path.is_file():
        raise MissingFileError(f"{source}: no such file; check the path (or the ComfyUI models folder)")
    size = path.stat().st_size
    if size == 0:
        raise CheckpointError(f"{source}: the file is empty; re-download or re-export it")
    with open(path, "rb") as handle:
        head = handle.read(16)
    if head.startswith(b"PK\x03\x04"):
        return _interpret(unpickler.load_torch_zip(str(path), source=source), "zip", source, config)
    if head.startswith(b"\x89PNG"):
        raise CheckpointError(f"{source}: this is a PNG image, not a generator file; pick the model file")
    if head[:1] == b"\x80" and len(head) > 1 and 2 <= head[1] <= 5:
        data = path.read_bytes()
        if unpickler.is_legacy_torch(head):
            return _interpret(unpickler.load_legacy_torch_file(data, source=source), "legacy", source, config)
        return _interpret(unpickler.load_pickle_file(data, source=source), "pkl", source, config)
    if len(head) >= 9 and head[8:9] == b"{":
        return _read_safetensors(path, size, source, config)
    if head[:1] in _PROTOCOL0_STARTS and size <= _MAX_TEXT_PICKLE_BYTES:
        data = path.read_bytes()  # an old text-protocol pickle? (NVIDIA's files are protocol 4)
        try:
            unpickler.scan_pickle(data, 0, source)
        except CheckpointError:
            pass
        else:
            return _interpret(unpickler.load_pickle_file(data, source=source), "pkl", source, config)
    raise CheckpointError(f"{source}: unknown file format (not a pickle, a torch.save archive or safetensors); "
                          "expected a StyleGAN .pkl, .pt or .safetensors file")


def load_generator(path: str | os.PathLike, *, config: Mapping[str, Any] | str | os.PathLike | None = None,
                   device: str | torch.device = "cpu") -> nn.Module:
    """Returns the generator stored in ``path`` (eval mode, on ``device``), loaded with strict key checking.

    Reads NVIDIA pickles, PTI tuned ``.pt`` files, rosinality checkpoints, this pack's
    safetensors and bare state dicts (with ``config``); see :func:`read_checkpoint`. The file's
    code, if any, is never executed.

    Examples:
        >>> G = load_generator("stylegan2-ffhq-config-f.pkl")  # doctest: +SKIP
        >>> G.num_ws, G.img_resolution  # doctest: +SKIP
        (18, 1024)
    """
    checkpoint = read_checkpoint(path, config=config)
    with torch.inference_mode(False):  # normal tensors even when called under inference mode (ComfyUI)
        G = instantiate(checkpoint, source=str(path))
        template = _stored_face_template(path) if checkpoint.format == "pti-safetensors" else None
        if template is not None:
            G.face_template = template  # kept by copies (tuned generators) and written back by save_generator
        return G.to(device)


FACE_TEMPLATE_KEY = "face_template"


def _stored_face_template(path: str | os.PathLike) -> dict | None:
    """Returns the alignment template (a FaceTemplate dict) in a pack safetensors file's metadata, if any."""
    from safetensors import safe_open  # noqa: PLC0415

    with safe_open(str(path), framework="pt") as handle:
        text = (handle.metadata() or {}).get(FACE_TEMPLATE_KEY)
    try:
        return json.loads(text) if text else None
    except json.JSONDecodeError:
        raise CheckpointError(f"{path}: its face_template metadata is not valid JSON; re-save the file") from None


def instantiate(checkpoint: Checkpoint, *, source: str = "checkpoint") -> nn.Module:
    """Returns the generator (CPU, eval mode) built from ``checkpoint`` with strict key and shape checks."""
    _check_shapes(checkpoint, source)
    with torch.inference_mode(False):
        G = _build(checkpoint.architecture, checkpoint.init_kwargs, source)
        try:
            G.load_state_dict(checkpoint.state_dict, strict=True)
        except RuntimeError as error:
            raise CheckpointError(f"{source}: weights do not fit a {checkpoint.architecture} generator with these "
                                  f"constructor arguments ({one_line(error)[:300]})") from None
    return G.eval()


def save_generator(G: nn.Module, path: str | os.PathLike, *, force: bool = False,
                   metadata: Mapping[str, Any] | None = None) -> Path:
    """Writes ``G`` as this pack's safetensors file (atomically) and returns its path.

    The file holds every parameter and persistent buffer (float32 as in ``G``) and metadata:
    the format tag, ``architecture`` (``G.architecture_name``), ``init_kwargs`` (JSON) and the
    pack version, so :func:`load_generator` rebuilds it with no side file.

    Args:
        G: a pack generator (has ``architecture_name`` and ``init_kwargs``).
        path: destination, normally ``*.safetensors``.
        force: overwrite an existing file.
        metadata: extra string metadata (non-strings are stored as JSON); may not use the
            reserved keys.

    Raises:
        OutputExistsError: ``path`` exists and ``force`` is false.
        ConfigError: ``G`` is not a pack generator, or ``metadata`` uses a reserved key.
    """
    from safetensors.torch import save_file

    from .. import __version__

    path = Path(path)
    architecture = getattr(G, "architecture_name", None)
    init_kwargs = getattr(G, "init_kwargs", None)
    if architecture not in ARCHITECTURES or not isinstance(init_kwargs, dict):
        raise ConfigError("save_generator needs a pti_core generator (with architecture_name and init_kwargs)")
    meta = {"format": FORMAT_TAG, "format_version": FORMAT_VERSION, "architecture": architecture,
            "init_kwargs": json.dumps(init_kwargs, sort_keys=True), "pti_core_version": __version__}
    template = getattr(G, "face_template", None)
    if template is not None and FACE_TEMPLATE_KEY not in (metadata or {}):
        meta[FACE_TEMPLATE_KEY] = json.dumps(template, sort_keys=True)
    for key, value in (metadata or {}).items():
        if key in RESERVED_METADATA:
            raise ConfigError(f"metadata key {key!r} is reserved; use another name")
        meta[str(key)] = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    if path.exists() and not force:
        raise OutputExistsError(f"{path}: already exists; pass force=True (--force) to overwrite")
    tensors = {name: tensor.detach().to("cpu").contiguous().clone() for name, tensor in G.state_dict().items()}
    try:
        return atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=meta), overwrite=force)
    except OSError as error:
        raise ConfigError(f"{path}: cannot write the file ({one_line(error)[:120]})") from None


def inspect_checkpoint(path: str | os.PathLike, *, config: Mapping[str, Any] | str | os.PathLike | None = None
                       ) -> CheckpointInfo:
    """Returns a :class:`CheckpointInfo` (format, architecture, sizes, parameter count, sha256) for ``path``."""
    checkpoint = read_checkpoint(path, config=config)
    _check_shapes(checkpoint, str(path))
    G = _build(checkpoint.architecture, checkpoint.init_kwargs, str(path), meta=True)
    return CheckpointInfo(
        format=checkpoint.format, architecture=checkpoint.architecture, resolution=int(G.img_resolution),
        num_ws=int(G.num_ws), w_dim=int(G.w_dim), z_dim=int(G.z_dim), c_dim=int(G.c_dim),
        params=sum(p.numel() for p in G.parameters()), sha256=file_sha256(path), path=str(Path(path)))


def file_sha256(path: str | os.PathLike) -> str:
    """Returns the hex SHA-256 of a file (read in 1 MiB chunks)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


# ----------------------------------------------------------------------------------------------
# Building

def _build(architecture: str, init_kwargs: Mapping[str, Any], source: str, *, meta: bool = False) -> nn.Module:
    """Builds a generator; ``meta=True`` tries the meta device first (no memory), falling back to CPU."""
    try:
        if meta:
            try:
                with torch.device("meta"):
                    return build_generator(architecture, init_kwargs)
            except CheckpointError:
                raise
            except Exception:  # an architecture whose constructor needs real tensors
                pass
        return build_generator(architecture, init_kwargs)
    except CheckpointError as error:
        raise CheckpointError(f"{source}: {error}") from None
    except (ValueError, AssertionError, KeyError, ZeroDivisionError) as error:
        raise CheckpointError(f"{source}: cannot build a {architecture} generator from the file's constructor "
                              f"arguments ({one_line(error)[:200]})") from None


def _check_shapes(checkpoint: Checkpoint, source: str) -> None:
    """Compares the file's tensors with a generator built on the meta device (no memory allocated).

    Catches wrong or crafted constructor arguments (which could otherwise allocate a huge
    network) before anything real is built. Skipped for architectures that cannot be built on
    the meta device; strict ``load_state_dict`` still checks keys then.
    """
    try:
        with torch.device("meta"):
            expected = build_generator(checkpoint.architecture, checkpoint.init_kwargs)
    except CheckpointError as error:
        raise CheckpointError(f"{source}: {error}") from None
    except TypeError as error:
        raise CheckpointError(f"{source}: unsupported constructor arguments ({one_line(error)[:200]})") from None
    except Exception:
        return
    expected_shapes = {name: tuple(t.shape) for name, t in expected.state_dict().items()}
    actual = checkpoint.state_dict
    missing = sorted(set(expected_shapes) - set(actual))
    unexpected = sorted(set(actual) - set(expected_shapes))
    wrong = sorted(name for name in set(expected_shapes) & set(actual)
                   if tuple(actual[name].shape) != expected_shapes[name])
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} (e.g. {', '.join(missing[:3])})")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)} (e.g. {', '.join(unexpected[:3])})")
        if wrong:
            name = wrong[0]
            parts.append(f"{len(wrong)} with wrong shape (e.g. {name}: file {list(actual[name].shape)}, "
                         f"expected {list(expected_shapes[name])})")
        raise CheckpointError(f"{source}: weights do not fit a {checkpoint.architecture} generator with these "
                              f"constructor arguments: {'; '.join(parts)}; check the config / the file")


# ----------------------------------------------------------------------------------------------
# Interpreting what was unpickled

def _interpret(obj: Any, container: str, source: str, config: Any) -> Checkpoint:
    if container == "pkl":
        record = obj
        if isinstance(obj, dict):
            if "G_ema" not in obj:
                keys = ", ".join(sorted(str(k) for k in obj)[:8])
                raise CheckpointError(f"{source}: pickle holds a dict without 'G_ema' (keys: {keys}); "
                                      "expected an NVIDIA network snapshot")
            record = obj["G_ema"]
        if not isinstance(record, PersistentRecord):
            raise CheckpointError(f"{source}: pickle holds {type(record).__name__}, not an NVIDIA network; "
                                  "expected a StyleGAN2/3 .pkl")
        return _from_persistent(record, "nvidia-pkl", source)
    # torch.save archive (zip or legacy)
    if isinstance(obj, PersistentRecord):
        return _from_persistent(obj, "pti-pt", source)
    if isinstance(obj, dict):
        if isinstance(obj.get("G_ema"), PersistentRecord):
            return _from_persistent(obj["G_ema"], "pti-pt", source)
        if "g_ema" in obj:
            if not _is_tensor_dict(obj["g_ema"]):
                raise CheckpointError(f"{source}: 'g_ema' is not a state dict; expected a rosinality checkpoint")
            init_kwargs, state_dict = rosinality_to_nvidia(obj["g_ema"], obj.get("latent_avg"), source=source)
            return Checkpoint("rosinality-pt", "stylegan2", init_kwargs, state_dict)
        if _is_tensor_dict(obj):
            if _is_rosinality(obj):
                init_kwargs, state_dict = rosinality_to_nvidia(obj, None, source=source)
                return Checkpoint("rosinality-pt", "stylegan2", init_kwargs, state_dict)
            if _is_nvidia_named(obj):
                return _bare_state_dict(dict(obj), "torch-state-dict", source, config)
        if "g" in obj:
            raise CheckpointError(f"{source}: rosinality checkpoint without 'g_ema'; the pack uses g_ema "
                                  "(the averaged generator) only")
        keys = ", ".join(sorted(str(k) for k in obj)[:8])
        raise CheckpointError(f"{source}: torch.save archive holds a dict the pack does not know (keys: {keys})")
    if isinstance(obj, NamespaceRecord):
        raise CheckpointError(f"{source}: holds only training arguments, no generator")
    raise CheckpointError(f"{source}: torch.save archive holds {type(obj).__name__}, not a generator")


def _is_tensor_dict(obj: Any) -> bool:
    return isinstance(obj, dict) and bool(obj) and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())


def _is_nvidia_named(state_dict: Mapping[str, Any]) -> bool:
    return any(k.startswith("mapping.") for k in state_dict) and any(k.startswith("synthesis.") for k in state_dict)


def _is_rosinality(state_dict: Mapping[str, Any]) -> bool:
    return "style.1.weight" in state_dict and "conv1.conv.weight" in state_dict


def _from_persistent(record: PersistentRecord, fmt: str, source: str) -> Checkpoint:
    if record.class_name != "Generator":
        raise CheckpointError(f"{source}: holds a {one_line(record.class_name)[:60]}, not a Generator")
    state = record.state
    if not isinstance(state, dict):
        raise CheckpointError(f"{source}: malformed network record (state is not a dict)")
    state_dict: dict[str, torch.Tensor] = {}
    class_names: set[str] = set()
    _collect(record, "", state_dict, class_names, source, 0)
    init_kwargs = _nvidia_init_kwargs(state, source)
    stylegan3 = bool(class_names & _SG3_CLASS_NAMES) or "synthesis.input.freqs" in state_dict
    return Checkpoint(fmt, "stylegan3" if stylegan3 else "stylegan2", init_kwargs, state_dict)


def _collect(record: PersistentRecord, prefix: str, out: dict, class_names: set, source: str, depth: int) -> None:
    """Adds the parameters and persistent buffers of ``record`` and its submodules to ``out`` (NVIDIA names)."""
    if depth > _MAX_MODULE_DEPTH:
        raise CheckpointError(f"{source}: network nests too deeply (or refers to itself)")
    class_names.add(record.class_name)
    state = record.state
    if not isinstance(state, dict):
        raise CheckpointError(f"{source}: malformed record for {prefix or 'the generator'} (state is not a dict)")
    non_persistent = state.get("_non_persistent_buffers_set") or set()
    for group in ("_parameters", "_buffers"):
        tensors = state.get(group) or {}
        if not isinstance(tensors, dict):
            raise CheckpointError(f"{source}: malformed {group} in {prefix or 'the generator'}")
        for name, tensor in tensors.items():
            if tensor is None or (group == "_buffers" and name in non_persistent):
                continue
            if not isinstance(name, str) or not isinstance(tensor, torch.Tensor):
                raise CheckpointError(f"{source}: {prefix}{one_line(name)[:40]} is not a tensor")
            out[prefix + name] = tensor
    modules = state.get("_modules") or {}
    if not isinstance(modules, dict):
        raise CheckpointError(f"{source}: malformed _modules in {prefix or 'the generator'}")
    for name, sub in modules.items():
        if sub is None:
            continue
        if not isinstance(sub, PersistentRecord) or not isinstance(name, str):
            raise CheckpointError(f"{source}: submodule {prefix}{one_line(name)[:40]} is not a network record "
                                  "the pack can read")
        _collect(sub, f"{prefix}{name}.", out, class_names, source, depth + 1)


def _plain(value: Any, source: str, depth: int = 0) -> Any:
    """Returns ``value`` as JSON-compatible data (dicts, lists, numbers, strings, None)."""
    if depth > 16:
        raise CheckpointError(f"{source}: constructor arguments nest too deeply")
    if isinstance(value, (dict, AttrDict)):
        return {str(k): _plain(v, source, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v, source, depth + 1) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, unpickler._NDArrayRecord) and value.array is not None:
        return value.array.tolist()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise CheckpointError(f"{source}: unsupported value of type {type(value).__name__} in the constructor arguments")


def _nvidia_init_kwargs(state: dict, source: str) -> dict:
    kwargs = state.get("_init_kwargs", state.get("init_kwargs"))
    args = state.get("_init_args", state.get("init_args")) or ()
    if kwargs is None and not args:
        raise CheckpointError(f"{source}: the network record has no constructor arguments (_init_kwargs); "
                              "it was not saved by NVIDIA's persistence code")
    kwargs = _plain(kwargs or {}, source)
    if not isinstance(kwargs, dict):
        raise CheckpointError(f"{source}: malformed constructor arguments in the network record")
    args = _plain(list(args) if isinstance(args, (list, tuple)) else [], source)
    if len(args) > len(_NVIDIA_POSITIONAL):
        raise CheckpointError(f"{source}: too many positional constructor arguments in the network record")
    for name, value in zip(_NVIDIA_POSITIONAL, args):
        kwargs.setdefault(name, value)
    return kwargs


# ----------------------------------------------------------------------------------------------
# safetensors and bare state dicts

def _read_safetensors(path: Path, size: int, source: str, config: Any) -> Checkpoint:
    from safetensors import safe_open

    with open(path, "rb") as handle:
        header_len = int.from_bytes(handle.read(8), "little")
    if header_len > size - 8:
        raise CheckpointError(f"{source}: truncated safetensors file (header claims {header_len} bytes, file has "
                              f"{size}); re-download or re-export it")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            metadata = dict(handle.metadata() or {})
            state_dict = {name: handle.get_tensor(name) for name in handle.keys()}
    except Exception as error:
        raise CheckpointError(f"{source}: not a readable safetensors file ({one_line(error)[:160]})") from None
    if metadata.get("format") == FORMAT_TAG:
        architecture = metadata.get("architecture", "")
        if architecture not in ARCHITECTURES:
            raise CheckpointError(f"{source}: unknown generator architecture {architecture[:40]!r} in the metadata; "
                                  f"supported: {', '.join(sorted(ARCHITECTURES))}")
        try:
            init_kwargs = json.loads(metadata.get("init_kwargs", ""))
        except json.JSONDecodeError:
            init_kwargs = None
        if not isinstance(init_kwargs, dict):
            raise CheckpointError(f"{source}: malformed init_kwargs in the metadata")
        return Checkpoint("pti-safetensors", architecture, init_kwargs, state_dict)
    if not state_dict:
        raise CheckpointError(f"{source}: the safetensors file holds no tensors")
    if _is_rosinality(state_dict):
        init_kwargs, nvidia = rosinality_to_nvidia(state_dict, state_dict.get("latent_avg"), source=source)
        return Checkpoint("rosinality-safetensors", "stylegan2", init_kwargs, nvidia)
    if not _is_nvidia_named(state_dict):
        names = ", ".join(sorted(state_dict)[:4])
        raise CheckpointError(f"{source}: the safetensors file does not hold generator weights the pack knows "
                              f"(tensors: {names}); expected NVIDIA or rosinality StyleGAN names")
    return _bare_state_dict(state_dict, "safetensors-state-dict", source, config)


def _bare_state_dict(state_dict: dict, fmt: str, source: str, config: Any) -> Checkpoint:
    if config is None:
        raise CheckpointError(f"{source}: a bare state dict carries no constructor arguments; pass config= "
                              "(a dict or JSON file with the NVIDIA init_kwargs), e.g. --config config.json")
    init_kwargs, architecture = _parse_config(config, source)
    if architecture is None:
        architecture = "stylegan3" if "synthesis.input.freqs" in state_dict else "stylegan2"
    return Checkpoint(fmt, architecture, init_kwargs, state_dict)


def _parse_config(config: Any, source: str) -> tuple[dict, str | None]:
    """Returns ``(init_kwargs, architecture or None)`` from a dict or a JSON file path."""
    if isinstance(config, (str, os.PathLike)):
        config_path = Path(config)
        try:
            config = json.loads(config_path.read_text())
        except FileNotFoundError:
            raise MissingFileError(f"{config_path}: config file not found") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise ConfigError(f"{config_path}: not a readable JSON config ({one_line(error)[:120]})") from None
    if not isinstance(config, Mapping):
        raise ConfigError(f"config for {source} must be a dict of init_kwargs or a JSON file path")
    config = dict(config)
    architecture = config.get("architecture")
    class_name = str(config.get("class_name", ""))
    if "init_kwargs" in config:
        config = config["init_kwargs"]
        if not isinstance(config, Mapping):
            raise ConfigError(f"config for {source}: init_kwargs must be a dict")
        config = dict(config)
    else:
        config.pop("architecture", None)
    if architecture is None and "stylegan3" in class_name:
        architecture = "stylegan3"
    if architecture is not None and architecture not in ARCHITECTURES:
        raise ConfigError(f"config for {source}: unknown architecture {architecture!r}; "
                          f"supported: {', '.join(sorted(ARCHITECTURES))}")
    return config, architecture


# ----------------------------------------------------------------------------------------------
# rosinality -> NVIDIA

def _channel_base_max(channels: Mapping[int, int], source: str) -> tuple[int, int]:
    """Returns ``(channel_base, channel_max)`` with ``min(base // res, max) == channels[res]`` for every res."""
    channel_max = max(channels.values())
    low, high = 1, 1 << 40
    for res, ch in channels.items():
        if ch == channel_max:
            low = max(low, ch * res)  # base // res >= channel_max
        else:
            low, high = max(low, ch * res), min(high, (ch + 1) * res - 1)
    if low > high or any(min(low // res, channel_max) != ch for res, ch in channels.items()):
        table = ", ".join(f"{r}:{c}" for r, c in sorted(channels.items()))
        raise CheckpointError(f"{source}: the rosinality channel table ({table}) cannot be expressed by "
                              "channel_base/channel_max; this layout is not supported")
    return low, channel_max


def rosinality_to_nvidia(state: Mapping[str, torch.Tensor], latent_avg: Any, *, source: str = "checkpoint"
                         ) -> tuple[dict, dict]:
    """Returns ``(init_kwargs, state_dict)`` under NVIDIA's names for a rosinality ``g_ema`` state dict.

    The mapping is one-to-one (rosinality's equalised-lr conventions equal NVIDIA's; up-convs
    need no kernel flip): ``style.{i+1}`` -> ``mapping.fc{i}``, ``input.input`` ->
    ``synthesis.b4.const``, ``conv1``/``to_rgb1`` -> ``b4.conv1``/``b4.torgb``,
    ``convs.{2k}``/``convs.{2k+1}``/``to_rgbs.{k}`` -> ``b{8*2^k}.conv0``/``conv1``/``torgb``,
    ``noises.noise_i`` -> the layers' ``noise_const``, ``latent_avg`` -> ``mapping.w_avg``.
    rosinality's blur kernels become the ``resample_filter`` buffers. The channel table is
    expressed as ``channel_base``/``channel_max``; the mapping network's lr multiplier is
    rosinality's default 0.01. Without ``latent_avg`` (a bare ``g_ema`` state dict), ``w_avg`` is
    the mean W of 10,000 z drawn from a fixed seed.
    """
    state = {name: tensor for name, tensor in state.items() if isinstance(tensor, torch.Tensor)}
    used: set[str] = set()

    def take(name: str) -> torch.Tensor:
        if name not in state:
            raise CheckpointError(f"{source}: rosinality state dict lacks {name!r}; the file is incomplete")
        used.add(name)
        return state[name].to(torch.float32)

    n_mlp = len([k for k in state if re.fullmatch(r"style\.\d+\.weight", k)])
    num_blocks = len([k for k in state if re.fullmatch(r"to_rgbs\.\d+\.conv\.weight", k)])
    if n_mlp == 0:
        raise CheckpointError(f"{source}: not a rosinality generator (no style.* mapping layers)")
    resolution = 4 * 2 ** num_blocks
    out: dict[str, torch.Tensor] = {}
    for i in range(n_mlp):
        out[f"mapping.fc{i}.weight"] = take(f"style.{i + 1}.weight")
        out[f"mapping.fc{i}.bias"] = take(f"style.{i + 1}.bias")
    z_dim = out["mapping.fc0.weight"].shape[1]
    w_dim = out[f"mapping.fc{n_mlp - 1}.weight"].shape[0]
    const = take("input.input")
    out["synthesis.b4.const"] = const.reshape(const.shape[1:])

    def styled_conv(src: str, dst: str, noise: str) -> int:
        weight = take(f"{src}.conv.weight")
        out[f"{dst}.weight"] = weight.reshape(weight.shape[1:])
        out[f"{dst}.affine.weight"] = take(f"{src}.conv.modulation.weight")
        out[f"{dst}.affine.bias"] = take(f"{src}.conv.modulation.bias")
        out[f"{dst}.noise_strength"] = take(f"{src}.noise.weight").reshape([])
        out[f"{dst}.bias"] = take(f"{src}.activate.bias").reshape(-1)
        noise_const = take(noise)
        out[f"{dst}.noise_const"] = noise_const.reshape(noise_const.shape[-2:])
        return weight.shape[1]

    def to_rgb(src: str, dst: str) -> int:
        weight = take(f"{src}.conv.weight")
        out[f"{dst}.weight"] = weight.reshape(weight.shape[1:])
        out[f"{dst}.affine.weight"] = take(f"{src}.conv.modulation.weight")
        out[f"{dst}.affine.bias"] = take(f"{src}.conv.modulation.bias")
        out[f"{dst}.bias"] = take(f"{src}.bias").reshape(-1)
        return weight.shape[1]

    channels = {4: styled_conv("conv1", "synthesis.b4.conv1", "noises.noise_0")}
    img_channels = to_rgb("to_rgb1", "synthesis.b4.torgb")
    for k in range(num_blocks):
        res = 8 * 2 ** k
        channels[res] = styled_conv(f"convs.{2 * k}", f"synthesis.b{res}.conv0", f"noises.noise_{1 + 2 * k}")
        styled_conv(f"convs.{2 * k + 1}", f"synthesis.b{res}.conv1", f"noises.noise_{2 + 2 * k}")
        to_rgb(f"to_rgbs.{k}", f"synthesis.b{res}.torgb")

    # FIR filters: rosinality stores them pre-multiplied by the up factor^2; NVIDIA normalised.
    kernels = [name for name in state if name.endswith(("blur.kernel", "upsample.kernel"))]
    used.update(kernels)
    taps = [1.0, 3.0, 3.0, 1.0]
    if kernels:
        kernel = state[kernels[0]].to(torch.float64)
        if kernel.ndim != 2 or kernel.shape[0] != kernel.shape[1]:
            raise CheckpointError(f"{source}: unexpected blur kernel shape {list(kernel.shape)}")
        row = kernel.sum(dim=0)
        taps = (row / row[0]).tolist() if row[0] != 0 else row.tolist()
    fir = torch.outer(torch.tensor(taps, dtype=torch.float32), torch.tensor(taps, dtype=torch.float32))
    fir = fir / fir.sum()
    for res in channels:
        out[f"synthesis.b{res}.resample_filter"] = fir.clone()
        for layer in ("conv0", "conv1"):
            if f"synthesis.b{res}.{layer}.weight" in out:
                out[f"synthesis.b{res}.{layer}.resample_filter"] = fir.clone()

    unexpected = sorted(set(state) - used - {"latent_avg"})
    if unexpected:
        raise CheckpointError(f"{source}: unexpected tensors in the rosinality state dict "
                              f"(e.g. {', '.join(unexpected[:3])}); not a generator the pack knows")
    channel_base, channel_max = _channel_base_max(channels, source)
    synthesis_kwargs: dict[str, Any] = {"channel_base": channel_base, "channel_max": channel_max,
                                        "num_fp16_res": 0, "conv_clamp": None, "architecture": "skip"}
    if [round(t, 6) for t in taps] != [1.0, 3.0, 3.0, 1.0]:
        synthesis_kwargs["resample_filter"] = taps
    init_kwargs = {"z_dim": int(z_dim), "c_dim": 0, "w_dim": int(w_dim), "img_resolution": resolution,
                   "img_channels": int(img_channels),
                   "mapping_kwargs": {"num_layers": n_mlp, "lr_multiplier": 0.01},
                   "synthesis_kwargs": synthesis_kwargs}
    if isinstance(latent_avg, torch.Tensor):
        if latent_avg.numel() != w_dim:
            raise CheckpointError(f"{source}: latent_avg has {latent_avg.numel()} values, expected {w_dim}")
        out["mapping.w_avg"] = latent_avg.reshape(-1).to(torch.float32).clone()
    else:
        out["mapping.w_avg"] = _mean_w(init_kwargs, out, source)
    return init_kwargs, out


def _mean_w(init_kwargs: dict, state_dict: dict, source: str) -> torch.Tensor:
    """Returns the mean W of 10,000 z (seed 0), for rosinality files without ``latent_avg``."""
    from .stylegan2 import MappingNetwork

    mapping_state = {k[len("mapping."):]: v for k, v in state_dict.items() if k.startswith("mapping.")}
    mapping = MappingNetwork(z_dim=init_kwargs["z_dim"], c_dim=0, w_dim=init_kwargs["w_dim"], num_ws=None,
                             **init_kwargs["mapping_kwargs"])
    try:
        mapping.load_state_dict(mapping_state, strict=True)
    except RuntimeError as error:
        raise CheckpointError(f"{source}: malformed mapping network ({one_line(error)[:200]})") from None
    z = torch.randn(10_000, init_kwargs["z_dim"], generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return mapping(z).mean(dim=0)
