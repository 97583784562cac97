"""Latent editing directions: read every common file format, discover directions from the model
itself (SeFa, GANSpace), learn them from examples, and apply them to latents.

Conventions (also in ``directions/README.md``):

* A :class:`Direction` holds ``vectors`` ``[K, L, w_dim]``: ``K`` components (1 for a single
  direction, more for a component set such as GANSpace's PCA basis or SeFa's eigenvectors) and
  ``L`` rows, 1 (the same offset for every layer) or ``num_ws`` (a per-layer direction such as
  e4e's ``pose.pt``). Every accepted file shape is brought to this form when read.
* An edit adds ``strength * d`` to the latent's rows ``[start, end)`` only; rows outside the range
  are bit-identical to the input. Several edits compose by summing their offsets
  (``w' = w + sum_i s_i d_i``), each computed from the unedited latent.
* GANSpace "set" edits (``mode="set"``) move the latent's coordinate along component ``k`` to
  ``sigma * std_k`` on the chosen rows (the reference named edits, e.g. smile = (46, 4, 5, -6)).
* Files are read without executing anything: the pack's restricted ``torch.save`` reader
  (:mod:`pti_core.generators.unpickler`) and ``numpy.load(allow_pickle=False)``. The pack writes directions as safetensors only.

Examples:
    >>> d = Direction(torch.ones(1, 1, 4) / 2, name="toy")
    >>> ws = torch.zeros(1, 6, 4)
    >>> out = apply_directions(ws, [(d, 2.0)], layers=(0, 3))
    >>> out[0, :, 0].tolist()
    [1.0, 1.0, 1.0, 0.0, 0.0, 0.0]
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence, Union

import numpy as np
import torch

from .fileio import atomic_write
from .errors import ConfigError, DirectionError, LatentError, MissingFileError, OutputExistsError, UnsafeCheckpointError

SPACES = ("w", "s")          # "s" (StyleSpace, per-layer style offsets) lives in ``Direction.styles``
KINDS = ("direction", "components")
PRESETS = ("all", "coarse", "middle", "fine")
MODES = ("add", "set")
EXTENSIONS = (".pt", ".pth", ".npy", ".npz", ".safetensors")
FILE_FORMAT = "pti_direction"
FILE_VERSION = "1"
MANIFEST_PATH = Path(__file__).resolve().parent.parent / "directions" / "manifest.json"

# Row ranges of the presets for a 1024 px StyleGAN2 (18 ws); other num_ws scale proportionally.
_PRESET_BOUNDS_18 = (4, 8)

LayerSpec = Union[None, str, Sequence[int]]


# ----------------------------------------------------------------------------- the Direction type

@dataclass(frozen=True, eq=False)
class Direction:
    """One editing direction or a set of components, in W (or StyleSpace, ``space="s"``).

    Attributes:
        vectors: ``[K, L, w_dim]`` float32 CPU; ``L`` is 1 (all layers) or ``num_ws`` (per layer).
            ``None`` only for StyleSpace directions.
        space: ``"w"`` (offsets of ws rows) or ``"s"`` (StyleSpace offsets in ``styles``).
        name: short name ("age", "sefa[0]").
        source: where it came from (file path or URL, or the method and its parameters).
        kind: ``"direction"`` (apply as is) or ``"components"`` (a basis; pick one with
            :meth:`component`).
        model: what it fits, in words ("FFHQ 1024 StyleGAN2 (stylegan2-ada-pytorch ffhq.pkl)").
        model_hash: fingerprint of the mapping network it was computed from (see
            :func:`model_fingerprint`), or None when unknown; informational.
        layers: default row range ``(start, end)`` to edit, or None (all rows).
        strength_range: useful strengths ``(low, high)``, or None.
        eigenvalues: ``[K]`` SeFa eigenvalues / PCA variances (descending), or None.
        std: ``[K]`` standard deviation of sampled w along each component (GANSpace), or None.
        mean: ``[w_dim]`` mean w of the PCA (GANSpace), or None.
        styles: StyleSpace payload ``{layer name: [K, C]}`` when ``space == "s"``, else None.
        info: JSON-able extra facts (method parameters, sha256 of the file, fit accuracy).
    """

    vectors: torch.Tensor | None
    space: str = "w"
    name: str = ""
    source: str = ""
    kind: str = "direction"
    model: str = ""
    model_hash: str | None = None
    layers: tuple[int, int] | None = None
    strength_range: tuple[float, float] | None = None
    eigenvalues: torch.Tensor | None = None
    std: torch.Tensor | None = None
    mean: torch.Tensor | None = None
    styles: Mapping[str, torch.Tensor] | None = None
    info: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        label = self.name or "direction"
        if self.space not in SPACES:
            raise DirectionError(f"{label}: space must be one of {', '.join(SPACES)}, got {self.space!r}")
        if self.kind not in KINDS:
            raise DirectionError(f"{label}: kind must be one of {', '.join(KINDS)}, got {self.kind!r}")
        if self.space == "s":
            if not self.styles:
                raise DirectionError(f"{label}: a StyleSpace direction needs a non-empty styles payload")
            object.__setattr__(self, "styles", {k: _float_cpu(v) for k, v in self.styles.items()})
        if self.vectors is None:
            if self.space == "w":
                raise DirectionError(f"{label}: a W direction needs vectors [K, L, w_dim]")
        else:
            vectors = _float_cpu(self.vectors)
            if vectors.ndim != 3 or 0 in vectors.shape:
                raise DirectionError(f"{label}: vectors must be [K, L, w_dim], got {list(vectors.shape)}")
            if not torch.isfinite(vectors).all():
                raise DirectionError(f"{label}: the direction contains NaN or infinite values; the file is damaged")
            if bool((vectors.flatten(1).abs().amax(1) == 0).any()):
                raise DirectionError(f"{label}: a direction vector is all zeros; nothing to edit with")
            object.__setattr__(self, "vectors", vectors)
        k = self.num_components
        for attr in ("eigenvalues", "std"):
            value = getattr(self, attr)
            if value is not None:
                value = _float_cpu(value).reshape(-1)
                if value.numel() != k:
                    raise DirectionError(f"{label}: {attr} has {value.numel()} entries for {k} components")
                object.__setattr__(self, attr, value)
        if self.mean is not None:
            mean = _float_cpu(self.mean).reshape(-1)
            if self.vectors is not None and mean.numel() != self.w_dim:
                raise DirectionError(f"{label}: mean has width {mean.numel()} but the vectors have {self.w_dim}")
            object.__setattr__(self, "mean", mean)
        if self.layers is not None:
            start, end = (int(x) for x in self.layers)
            if not 0 <= start < end:
                raise DirectionError(f"{label}: default layers must be (start, end) with 0 <= start < end, "
                                     f"got {tuple(self.layers)}")
            object.__setattr__(self, "layers", (start, end))
        if self.strength_range is not None:
            low, high = (float(x) for x in self.strength_range)
            object.__setattr__(self, "strength_range", (low, high))
        object.__setattr__(self, "info", dict(self.info))

    # -- shape facts
    @property
    def num_components(self) -> int:
        """Returns K, the number of components (1 for a single direction)."""
        if self.vectors is not None:
            return int(self.vectors.shape[0])
        return int(next(iter(self.styles.values())).shape[0])

    @property
    def w_dim(self) -> int:
        """Returns the width of each vector (the generator's w_dim it fits)."""
        if self.vectors is None:
            raise DirectionError(f"{self.name or 'direction'}: a StyleSpace direction has no w_dim")
        return int(self.vectors.shape[-1])

    @property
    def num_layers(self) -> int:
        """Returns L: 1 for a layer-independent direction, num_ws for a per-layer one."""
        return 1 if self.vectors is None else int(self.vectors.shape[1])

    @property
    def is_component_set(self) -> bool:
        """Returns True when a component must be picked before applying (K > 1 or kind components)."""
        return self.kind == "components" or self.num_components > 1

    def component(self, index: int) -> Direction:
        """Returns component ``index`` as a single direction (keeps its eigenvalue, std and the mean).

        Raises:
            DirectionError: ``index`` out of range.
        """
        k = self.num_components
        if not -k <= int(index) < k:
            raise DirectionError(f"{self.name or 'direction'} has {k} components; component index {index} "
                                 f"is out of range (use 0..{k - 1})")
        i = int(index) % k
        pick = (lambda t: None if t is None else t[i:i + 1])
        styles = None if self.styles is None else {n: t[i:i + 1] for n, t in self.styles.items()}
        base = self.name or "direction"
        return replace(self, vectors=pick(self.vectors), kind="direction", name=f"{base}[{i}]",
                       eigenvalues=pick(self.eigenvalues), std=pick(self.std), styles=styles,
                       info={**self.info, "component": i})

    def check_fits(self, G: Any = None, *, num_ws: int | None = None, w_dim: int | None = None) -> Direction:
        """Returns ``self`` after checking it fits generator ``G`` (or the given num_ws / w_dim).

        Raises:
            DirectionError: wrong width or a per-layer direction with another number of rows.
        """
        if G is not None:
            num_ws, w_dim = int(G.num_ws), int(G.w_dim)
        if self.space != "w":
            return self
        label = f"direction {self.name!r}" if self.name else "the direction"
        made_for = f" (it was made for {self.model})" if self.model else ""
        if w_dim is not None and self.w_dim != w_dim:
            raise DirectionError(
                f"{label} has width {self.w_dim} but the model's w_dim is {w_dim}{made_for}; use a direction "
                "made for this model, or discover one from it (PTI_DiscoverDirections / sefa / ganspace)")
        if num_ws is not None and self.num_layers not in (1, num_ws):
            raise DirectionError(
                f"{label} has {self.num_layers} per-layer rows but the model has num_ws={num_ws}{made_for}; "
                "use a [1, w_dim] direction or one made for this model")
        return self

    def __repr__(self) -> str:
        return f"Direction({self.describe()})"

    def describe(self) -> str:
        """Returns a one-line summary (name, kind, shape, model)."""
        if self.vectors is None:
            shape = f"StyleSpace, {len(self.styles)} layers, K={self.num_components}"
        else:
            shape = "x".join(str(s) for s in self.vectors.shape)
        what = "components" if self.is_component_set else "direction"
        fits = f", fits {self.model}" if self.model else ""
        return f"{self.name or 'direction'}: {what} [{shape}] in {self.space}{fits}"


DirectionLike = Union[Direction, torch.Tensor, np.ndarray]


@dataclass(frozen=True, eq=False)
class Edit:
    """One edit: a direction, a strength and where to apply it.

    Attributes:
        direction: a :class:`Direction` (single, or a set with ``component`` given) or a tensor
            of any accepted shape.
        strength: ``s`` in ``w + s * d`` (mode "add"), or the target coordinate in standard
            deviations ``sigma`` (mode "set", GANSpace).
        layers: row range ``(start, end)`` (end exclusive), a preset ("all", "coarse", "middle",
            "fine") or None (the ``layers`` argument of :func:`apply_directions`, else the
            direction's default, else all rows).
        component: which component of a component set, or None for a single direction.
        mode: "add" (``w + s * d``) or "set" (coordinate along the component := ``s * std_k``).
        condition: directions to project out of this one first (InterFaceGAN conditional
            manipulation: edit age without changing, e.g., eyeglasses).
    """

    direction: DirectionLike
    strength: float = 1.0
    layers: LayerSpec = None
    component: int | None = None
    mode: str = "add"
    condition: tuple[DirectionLike, ...] = ()

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ConfigError(f"edit mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if not np.isfinite(float(self.strength)):
            raise ConfigError(f"edit strength must be a finite number, got {self.strength!r}")
        condition = self.condition
        if isinstance(condition, (Direction, torch.Tensor, np.ndarray)):
            condition = (condition,)
        object.__setattr__(self, "condition", tuple(condition or ()))


def _float_cpu(tensor: Any) -> torch.Tensor:
    if isinstance(tensor, np.ndarray):
        tensor = torch.from_numpy(np.ascontiguousarray(tensor))
    if not isinstance(tensor, torch.Tensor):
        raise DirectionError(f"expected a tensor, got {type(tensor).__name__}")
    if not (tensor.is_floating_point() or tensor.dtype in (torch.int32, torch.int64)):
        raise DirectionError(f"expected a float tensor, got {tensor.dtype}")
    return tensor.detach().to("cpu", torch.float32).contiguous()


# ----------------------------------------------------------------------------- shapes

def vectors_from_array(array: Any, *, name: str = "direction") -> tuple[torch.Tensor, str]:
    """Returns ``(vectors [K, L, w_dim], kind)`` for an array of any accepted shape.

    Accepted: ``[w_dim]``, ``[1, w_dim]`` (one direction), ``[num_ws, w_dim]`` and
    ``[1, num_ws, w_dim]`` (one per-layer direction), ``[K, 1, w_dim]`` and ``[K, num_ws, w_dim]``
    (component sets). A 2-D array with several rows is read as per-layer, never as components.

    Raises:
        DirectionError: any other shape.
    """
    tensor = _float_cpu(array)
    shape = list(tensor.shape)
    if tensor.ndim == 1:
        return tensor[None, None], "direction"
    if tensor.ndim == 2:
        return tensor[None], "direction"
    if tensor.ndim == 3:
        return tensor, ("direction" if shape[0] == 1 else "components")
    if tensor.ndim == 4 and shape[0] == 1:
        return tensor[0], ("direction" if shape[1] == 1 else "components")
    raise DirectionError(f"{name}: unsupported direction shape {shape}; expected [w_dim], [1, w_dim], "
                         "[num_ws, w_dim], [1, num_ws, w_dim] or a component set [K, 1, w_dim]")


def _as_direction(value: DirectionLike, *, name: str = "direction") -> Direction:
    if isinstance(value, Direction):
        return value
    vectors, kind = vectors_from_array(value, name=name)
    return Direction(vectors, name=name, kind=kind, source="tensor")


# ----------------------------------------------------------------------------- manifest

@lru_cache(maxsize=4)
def _manifest_cached(path: str, mtime: float) -> tuple[dict, ...]:
    del mtime
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    return tuple(data.get("directions", []))


def manifest_entries(path: str | os.PathLike | None = None) -> list[dict]:
    """Returns the well-known public direction files declared in ``directions/manifest.json``.

    Each entry has name, file, method, model, w_dim, num_ws, shape, url, licence, sha256 (or
    None), layers, strength_range and notes. Returns [] when the manifest is not installed.
    """
    path = Path(path) if path is not None else MANIFEST_PATH
    if not path.is_file():
        return []
    return [dict(entry) for entry in _manifest_cached(str(path), path.stat().st_mtime)]


def find_manifest_entry(*, filename: str | None = None, sha256: str | None = None) -> dict | None:
    """Returns the manifest entry whose sha256 (preferred) or file name matches, or None."""
    entries = manifest_entries()
    if sha256:
        for entry in entries:
            if entry.get("sha256") and entry["sha256"].lower() == sha256.lower():
                return entry
    if filename:
        base = Path(filename).name.lower()
        for entry in entries:
            if entry.get("file", "").lower() == base:
                return entry
    return None


def missing_file_hint(filename: str) -> str:
    """Returns where to get a well-known direction file (from the manifest), or a generic hint."""
    entry = find_manifest_entry(filename=filename)
    if entry is None:
        return ("put the file into models/stylegan_directions, or discover directions from the model "
                "(PTI_DiscoverDirections)")
    return (f"{entry['file']} is the public '{entry['name']}' direction for {entry['model']}; download it "
            f"from {entry['url']} ({entry.get('licence', 'see source')}) into models/stylegan_directions")


def file_sha256(path: str | os.PathLike) -> str:
    """Returns the hex sha256 of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


# ----------------------------------------------------------------------------- loading and saving

def load_direction(path: str | os.PathLike, *, G: Any = None, component: int | None = None) -> Direction:
    """Returns the direction (or component set) stored in ``path``; never executes file content.

    Formats: ``.pt``/``.pth`` (a tensor, or a dict such as GANSpace's ``{mean, comp, std}``, read
    with the pack's restricted reader), ``.npy`` (InterFaceGAN boundaries, float64
    ``(1, 512)``), ``.npz`` (GANSpace ``lat_comp``/``lat_mean``/``lat_stdev``), ``.safetensors``
    (the pack's own, with metadata, or a single tensor). NVIDIA's ``projected_w.npz`` (key ``w``)
    holds a latent, not a direction: it is refused with a pointer to ``PTI_LoadLatent``.

    A file listed in ``directions/manifest.json`` (matched by sha256) gets its name, model, default
    layers and strength range from the manifest.

    Args:
        path: the file.
        G: when given, the direction is checked to fit it (w_dim and per-layer rows).
        component: pick this component of a component set (returns a single direction); None or
            a negative value keeps the whole set.

    Raises:
        MissingFileError: no such file (says where well-known files come from).
        UnsafeCheckpointError: the file needs unpickling of arbitrary objects; refused.
        DirectionError: unreadable, unsupported shape/keys, or it does not fit ``G``.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"direction file {str(path)!r} not found; {missing_file_hint(path.name)}")
    suffix = path.suffix.lower()
    readers = {".pt": _read_torch, ".pth": _read_torch, ".npy": _read_npy, ".npz": _read_npz,
               ".safetensors": _read_safetensors}
    if suffix not in readers:
        raise DirectionError(f"{path.name}: unsupported direction file type {suffix!r}; "
                             f"use {', '.join(EXTENSIONS)}")
    try:
        direction = readers[suffix](path)
    except (DirectionError, UnsafeCheckpointError, MissingFileError):
        raise
    except pickle.UnpicklingError as error:
        raise UnsafeCheckpointError(
            f"{path.name}: refused, it asks to unpickle more than plain tensors ({_first_line(error)}); "
            "re-save the direction as a plain tensor or .safetensors") from None
    except ValueError as error:
        if "allow_pickle" in str(error) or "pickle" in str(error).lower():
            raise UnsafeCheckpointError(f"{path.name}: refused, it holds pickled objects; "
                                        "save the direction as a plain numeric array") from None
        raise DirectionError(f"{path.name}: not a readable direction file ({_first_line(error)})") from None
    except Exception as error:  # noqa: BLE001  (any corrupt file -> one line)
        raise DirectionError(f"{path.name}: not a readable direction file "
                             f"({type(error).__name__}: {_first_line(error)})") from None
    sha = file_sha256(path)
    entry = find_manifest_entry(sha256=sha)
    updates: dict[str, Any] = {"info": {**direction.info, "sha256": sha, "file": path.name},
                               "source": direction.source or str(path)}
    if entry is not None:
        updates["name"] = direction.name if direction.info.get("format") == FILE_FORMAT else entry["name"]
        updates["model"] = direction.model or entry.get("model", "")
        updates["source"] = entry.get("url") or updates["source"]
        if direction.layers is None and entry.get("layers"):
            updates["layers"] = tuple(entry["layers"])
        if direction.strength_range is None and entry.get("strength_range"):
            updates["strength_range"] = tuple(entry["strength_range"])
    elif not direction.name:
        updates["name"] = path.stem
    direction = replace(direction, **updates)
    if component is not None and int(component) >= 0:
        direction = direction.component(int(component))
    if G is not None:
        direction.check_fits(G)
    return direction


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0][:200] if text else type(error).__name__


def _latent_refusal(path: Path) -> DirectionError:
    return DirectionError(f"{path.name} holds a latent (key 'w', e.g. NVIDIA projected_w.npz), not a direction; "
                          "load it with PTI_LoadLatent, or make a direction from two latents with "
                          "PTI_DirectionFromLatents")


def _from_mapping(data: Mapping[str, Any], path: Path) -> Direction:
    """Builds a direction from a dict of arrays (GANSpace keys, a single tensor, ...)."""
    keys = sorted(data)
    if "comp" in data:      # GANSpace as saved by PTI / e4e: mean [1, C], comp [K, 1, C], std [K]
        return _components(data["comp"], data.get("std"), data.get("mean"), path)
    if "lat_comp" in data:  # GANSpace's own cache: lat_comp [K, 1, C], lat_mean [1, C], lat_stdev [K]
        return _components(data["lat_comp"], data.get("lat_stdev"), data.get("lat_mean"), path)
    if set(keys) & {"w", "ws"} and not set(keys) & {"direction", "boundary", "vectors"}:
        raise _latent_refusal(path)
    for key in ("vectors", "direction", "boundary"):
        if key in data:
            vectors, kind = vectors_from_array(data[key], name=path.name)
            return Direction(vectors, kind=kind)
    arrays = [k for k in keys if isinstance(data[k], (torch.Tensor, np.ndarray))]
    if len(arrays) == 1:
        vectors, kind = vectors_from_array(data[arrays[0]], name=path.name)
        return Direction(vectors, kind=kind)
    raise DirectionError(f"{path.name}: no direction found among keys {keys}; expected a single tensor, "
                         "GANSpace mean/comp/std or lat_comp/lat_mean/lat_stdev")


def _components(comp: Any, std: Any, mean: Any, path: Path) -> Direction:
    comp = _float_cpu(comp)
    if comp.ndim == 2:
        comp = comp[:, None]                                    # [K, C] -> [K, 1, C]
    if comp.ndim != 3:
        raise DirectionError(f"{path.name}: GANSpace components must be [K, 1, w_dim], got {list(comp.shape)}")
    return Direction(comp, kind="components", std=None if std is None else _float_cpu(std),
                     mean=None if mean is None else _float_cpu(mean).reshape(-1),
                     info={"method": "ganspace"})


def _read_torch(path: Path) -> Direction:
    from .generators.unpickler import load_torch_file  # noqa: PLC0415

    data = load_torch_file(str(path), source=path.name)  # the pack's restricted reader: nothing runs
    if isinstance(data, torch.Tensor):
        vectors, kind = vectors_from_array(data, name=path.name)
        return Direction(vectors, kind=kind)
    if isinstance(data, Mapping):
        return _from_mapping(dict(data), path)
    if isinstance(data, (list, tuple)) and len(data) == 1 and isinstance(data[0], torch.Tensor):
        vectors, kind = vectors_from_array(data[0], name=path.name)
        return Direction(vectors, kind=kind)
    raise DirectionError(f"{path.name}: holds a {type(data).__name__}, not a direction tensor or dict")


def _read_npy(path: Path) -> Direction:
    array = np.load(path, allow_pickle=False)
    vectors, kind = vectors_from_array(np.asarray(array, dtype=np.float32), name=path.name)
    return Direction(vectors, kind=kind)


def _read_npz(path: Path) -> Direction:
    with np.load(path, allow_pickle=False) as data:
        arrays = {key: np.asarray(data[key]) for key in data.files}
    return _from_mapping(arrays, path)


def _read_safetensors(path: Path) -> Direction:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        metadata = dict(handle.metadata() or {})
        tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    if metadata.get("format") != FILE_FORMAT:
        return _from_mapping(tensors, path)
    styles = {k[len("styles."):]: v for k, v in tensors.items() if k.startswith("styles.")}
    layers = json.loads(metadata.get("layers") or "null")
    strength_range = json.loads(metadata.get("strength_range") or "null")
    info = json.loads(metadata.get("info") or "{}")
    return Direction(tensors.get("vectors"), space=metadata.get("space", "w"), name=metadata.get("name", ""),
                     source=metadata.get("source", ""), kind=metadata.get("kind", "direction"),
                     model=metadata.get("model", ""), model_hash=metadata.get("model_hash") or None,
                     layers=None if layers is None else tuple(layers),
                     strength_range=None if strength_range is None else tuple(strength_range),
                     eigenvalues=tensors.get("eigenvalues"), std=tensors.get("std"), mean=tensors.get("mean"),
                     styles=styles or None, info={**info, "format": FILE_FORMAT})


def save_direction(direction: Direction, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Writes ``direction`` as the pack's safetensors format (atomically); returns the path.

    Tensors: ``vectors``, ``eigenvalues``, ``std``, ``mean``, ``styles.<layer>`` (those present);
    metadata: format, version, name, source, space, kind, model, model_hash, layers,
    strength_range, info (JSON). :func:`load_direction` reads it back bit-exactly.

    Raises:
        OutputExistsError: ``path`` exists and ``overwrite`` is False.
    """
    from safetensors.torch import save_file

    path = Path(path)
    if path.suffix.lower() != ".safetensors":
        raise ConfigError(f"directions are saved as .safetensors, got {path.name!r}")
    if path.exists() and not overwrite:
        raise OutputExistsError(f"{path} exists; choose another name or pass overwrite=True (--force)")
    tensors: dict[str, torch.Tensor] = {}
    for key in ("vectors", "eigenvalues", "std", "mean"):
        value = getattr(direction, key)
        if value is not None:
            tensors[key] = value.contiguous()
    for layer, value in (direction.styles or {}).items():
        tensors[f"styles.{layer}"] = value.contiguous()
    info = {k: v for k, v in direction.info.items() if k not in ("format", "sha256", "file")}
    metadata = {
        "format": FILE_FORMAT, "version": FILE_VERSION, "name": direction.name, "source": direction.source,
        "space": direction.space, "kind": direction.kind, "model": direction.model,
        "model_hash": direction.model_hash or "",
        "layers": json.dumps(list(direction.layers) if direction.layers else None),
        "strength_range": json.dumps(list(direction.strength_range) if direction.strength_range else None),
        "info": json.dumps(info, sort_keys=True, default=str),
    }
    return atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=metadata), overwrite=True)


# ----------------------------------------------------------------------------- layer ranges

def layer_presets(num_ws: int) -> dict[str, tuple[int, int]]:
    """Returns the row ranges of "all", "coarse", "middle" and "fine" for a generator with ``num_ws`` rows.

    For 18 rows (1024 px StyleGAN2) they are coarse [0, 4), middle [4, 8), fine [8, 18); other
    sizes scale the bounds proportionally (rounded, each range at least one row).

    Examples:
        >>> layer_presets(18)["middle"]
        (4, 8)
        >>> layer_presets(8)
        {'all': (0, 8), 'coarse': (0, 2), 'middle': (2, 4), 'fine': (4, 8)}
    """
    num_ws = int(num_ws)
    if num_ws < 3:
        raise ConfigError(f"layer presets need at least 3 ws rows, the generator has {num_ws}")
    coarse = max(1, int(num_ws * _PRESET_BOUNDS_18[0] / 18 + 0.5))
    middle = min(num_ws - 1, max(coarse + 1, int(num_ws * _PRESET_BOUNDS_18[1] / 18 + 0.5)))
    return {"all": (0, num_ws), "coarse": (0, coarse), "middle": (coarse, middle), "fine": (middle, num_ws)}


def resolve_layers(layers: LayerSpec, num_ws: int) -> tuple[int, int]:
    """Returns ``(start, end)`` rows for a preset name, a ``(start, end)`` pair or None (all rows).

    ``end`` may be None or -1 (up to the last row). Raises ConfigError for an empty or out-of-range
    range.
    """
    num_ws = int(num_ws)
    if layers is None:
        return 0, num_ws
    if isinstance(layers, str):
        if layers == "all":
            return 0, num_ws
        if layers not in PRESETS:
            raise ConfigError(f"layer preset must be one of {', '.join(PRESETS)}, got {layers!r}")
        return layer_presets(num_ws)[layers]
    try:
        start, end = layers
    except (TypeError, ValueError):
        raise ConfigError(f"layers must be a preset or (start, end), got {layers!r}") from None
    start = int(start)
    end = num_ws if end is None or int(end) == -1 else int(end)
    if not 0 <= start < end <= num_ws:
        raise ConfigError(f"layer range [{start}, {end}) is empty or outside 0..{num_ws} "
                          f"(this generator has {num_ws} ws rows)")
    return start, end


# ----------------------------------------------------------------------------- discovery from the model

def model_fingerprint(G: Any) -> str:
    """Returns ``"mapping:<16 hex>"``, a sha256 of the mapping network's tensors and (num_ws, w_dim).

    Pivotal tuning leaves the mapping network unchanged, so a tuned generator keeps the fingerprint
    of the model it was tuned from; informational only.
    """
    digest = hashlib.sha256(f"{int(G.num_ws)}x{int(G.w_dim)}".encode())
    for key, tensor in sorted(G.mapping.state_dict().items()):
        digest.update(key.encode())
        digest.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return "mapping:" + digest.hexdigest()[:16]


def _fix_signs(vectors: torch.Tensor) -> torch.Tensor:
    """Makes each row's largest-magnitude entry positive (eigenvectors are defined up to sign)."""
    index = vectors.abs().argmax(dim=1, keepdim=True)
    signs = torch.sign(torch.gather(vectors, 1, index))
    signs[signs == 0] = 1
    return vectors * signs


def sefa_layers(G: Any, layers: LayerSpec | Sequence[str] = None) -> list[tuple[str, int, Any]]:
    """Returns the ``[(name, ws index, affine)]`` style layers SeFa factorises for ``layers``.

    ``None`` (default) takes one affine per ws row, the synthesis convolutions plus the final
    ToRGB (the official SeFa choice); ``"all"`` every style layer including every ToRGB; a preset
    or ``(start, end)`` the default set restricted to those rows; a list of names exactly those
    (see ``G.synthesis.style_layers()``).
    """
    every = list(G.synthesis.style_layers())
    if layers == "all":
        return every
    if isinstance(layers, (list, tuple)) and layers and all(isinstance(x, str) for x in layers):
        by_name = {name: (name, idx, affine) for name, idx, affine in every}
        unknown = [x for x in layers if x not in by_name]
        if unknown:
            raise ConfigError(f"unknown style layers {unknown}; this generator has {', '.join(by_name)}")
        return [by_name[x] for x in layers]
    per_row: dict[int, tuple[str, int, Any]] = {}
    for name, idx, affine in every:
        if idx not in per_row or (per_row[idx][0].endswith("torgb") and not name.endswith("torgb")):
            per_row[idx] = (name, idx, affine)
    start, end = resolve_layers(None if layers is None else layers, int(G.num_ws))
    chosen = [per_row[i] for i in sorted(per_row) if start <= i < end]
    if not chosen:
        raise ConfigError(f"no style layers in rows [{start}, {end})")
    return chosen


def sefa(G: Any, *, layers: LayerSpec | Sequence[str] = None, num_components: int | None = None,
         normalize_rows: bool = True) -> Direction:
    """Returns SeFa's closed-form directions of ``G`` as a component set (no data needed).

    Stacks the style affine weights ``A`` (``[sum C, w_dim]``) of the chosen layers and returns the
    eigenvectors of ``A^T A`` sorted by eigenvalue, largest first: the unit directions in W that
    change the styles of those layers the most. As in the official SeFa each output row of ``A``
    is normalised first (``normalize_rows``). The affines' ``weight_gain`` (``1/sqrt(w_dim)``, the
    same scalar for every affine) only scales the eigenvalues, so raw weights are used.

    Args:
        G: a StyleGAN generator with ``G.synthesis.style_layers()``.
        layers: which affines (see :func:`sefa_layers`); also the direction's default edit rows.
        num_components: keep the first K (default all ``w_dim``).
        normalize_rows: normalise each output channel's weight row (official SeFa) or not.

    Returns:
        A :class:`Direction` of kind "components", ``vectors [K, 1, w_dim]`` orthonormal, with
        ``eigenvalues [K]`` non-increasing.
    """
    chosen = sefa_layers(G, layers)
    weight = torch.cat([affine.weight.detach().to("cpu", torch.float64) for _, _, affine in chosen])  # [sum C, w_dim]
    if normalize_rows:
        weight = weight / weight.norm(dim=1, keepdim=True).clamp_min(1e-12)
    eigenvalues, eigenvectors = torch.linalg.eigh(weight.T @ weight)         # ascending
    order = torch.argsort(eigenvalues, descending=True)
    w_dim = weight.shape[1]
    k = w_dim if num_components is None else int(num_components)
    if not 1 <= k <= w_dim:
        raise ConfigError(f"num_components must be in 1..{w_dim}, got {num_components}")
    vectors = _fix_signs(eigenvectors[:, order].T[:k])                      # [K, w_dim]
    rows = sorted({idx for _, idx, _ in chosen})
    names = [name for name, _, _ in chosen]
    default_rows = None if layers is None or layers == "all" else (rows[0], rows[-1] + 1)
    return Direction(vectors[:, None].to(torch.float32), name="sefa", kind="components",
                     source=f"sefa(layers={names if len(names) <= 6 else str(len(names)) + ' layers'})",
                     model_hash=model_fingerprint(G), eigenvalues=eigenvalues[order][:k].to(torch.float32),
                     layers=default_rows, strength_range=(-10.0, 10.0),
                     info={"method": "sefa", "layers": names, "normalize_rows": bool(normalize_rows)})


def sample_ws(G: Any, *, num_samples: int, seed: int = 0, truncation_psi: float = 1.0,
              batch_size: int = 1024) -> torch.Tensor:
    """Returns ``[num_samples, w_dim]`` float32 CPU: w = mapping(z) for seeded z (random one-hot c
    for conditional models); the same seed gives the same samples on every device."""
    rng = torch.Generator().manual_seed(int(seed))
    device = next(iter(G.parameters())).device
    out = []
    with torch.no_grad():
        for start in range(0, int(num_samples), int(batch_size)):
            n = min(int(batch_size), int(num_samples) - start)
            z = torch.randn(n, int(G.z_dim), generator=rng)                  # [n, z_dim]
            c = None
            if int(getattr(G, "c_dim", 0)) > 0:
                labels = torch.randint(0, int(G.c_dim), (n,), generator=rng)
                c = torch.nn.functional.one_hot(labels, int(G.c_dim)).to(device, torch.float32)
            ws = G.mapping(z.to(device), c, truncation_psi=truncation_psi)     # [n, num_ws, w_dim]
            out.append(ws[:, 0].to("cpu", torch.float32))
    return torch.cat(out)


def ganspace(G: Any, *, num_samples: int = 10_000, num_components: int | None = None, seed: int = 0,
             layers: LayerSpec = None, truncation_psi: float = 1.0) -> Direction:
    """Returns GANSpace's principal directions of W for ``G`` (PCA of sampled w, seeded).

    Args:
        G: a StyleGAN generator.
        num_samples: how many w to sample (more than ``w_dim`` for a full basis).
        num_components: keep the first K (default all ``w_dim``).
        seed: seed of the sampled z (the result is reproducible).
        layers: default edit rows recorded in the direction (GANSpace edits are per row range).
        truncation_psi: truncation of the sampled w.

    Returns:
        A :class:`Direction` of kind "components": ``vectors [K, 1, w_dim]`` orthonormal, sorted by
        variance; ``std [K]`` (standard deviation of w along each), ``mean [w_dim]``,
        ``eigenvalues [K]`` (variances).
    """
    if int(num_samples) < 2:
        raise ConfigError(f"GANSpace needs at least 2 samples, got {num_samples}")
    w = sample_ws(G, num_samples=int(num_samples), seed=seed, truncation_psi=truncation_psi).double()
    mean = w.mean(0)
    centred = w - mean                                                           # [N, w_dim]
    covariance = centred.T @ centred / (centred.shape[0] - 1)
    variances, eigenvectors = torch.linalg.eigh(covariance)
    order = torch.argsort(variances, descending=True)
    w_dim = w.shape[1]
    k = min(w_dim, int(num_samples) - 1) if num_components is None else int(num_components)
    if not 1 <= k <= w_dim:
        raise ConfigError(f"num_components must be in 1..{w_dim}, got {num_components}")
    vectors = _fix_signs(eigenvectors[:, order].T[:k])                       # [K, w_dim]
    std = (centred @ vectors.T).std(dim=0)                                    # [K]
    default_rows = None if layers is None else resolve_layers(layers, int(G.num_ws))
    return Direction(vectors[:, None].to(torch.float32), name="ganspace", kind="components",
                     source=f"ganspace(num_samples={int(num_samples)}, seed={int(seed)})",
                     model_hash=model_fingerprint(G), eigenvalues=variances[order][:k].clamp_min(0).float(),
                     std=std.float(), mean=mean.float(), layers=default_rows, strength_range=(-5.0, 5.0),
                     info={"method": "ganspace", "num_samples": int(num_samples), "seed": int(seed),
                           "truncation_psi": float(truncation_psi)})


# ----------------------------------------------------------------------------- directions from examples

def _as_ws(value: Any, name: str) -> torch.Tensor:
    tensor = value["ws"] if isinstance(value, Mapping) else value
    if isinstance(tensor, np.ndarray):
        tensor = torch.from_numpy(tensor)
    if not isinstance(tensor, torch.Tensor) or tensor.ndim not in (2, 3) or tensor.shape[0] == 0:
        shape = list(tensor.shape) if isinstance(tensor, torch.Tensor) else type(tensor).__name__
        raise LatentError(f"{name}: expected latents [N, w_dim] or [N, num_ws, w_dim], got {shape}")
    tensor = tensor.detach().to("cpu", torch.float64)
    return tensor[:, None] if tensor.ndim == 2 else tensor                   # [N, L, C]


def _unit_rows(vectors: torch.Tensor, *, per_layer: bool) -> torch.Tensor:
    """[L, C] -> unit norm (one row) or rows with root-mean-square norm 1 (per layer)."""
    norm = vectors.norm(dim=-1).pow(2).mean().sqrt() if per_layer else vectors.norm()
    if float(norm) <= 1e-12:
        raise DirectionError("the two groups have the same mean latent; there is no direction between them")
    return vectors / norm


def direction_from_latents(ws_from: Any, ws_to: Any, *, per_layer: bool = False,
                           name: str = "from_latents") -> Direction:
    """Returns the normalised mean difference ``mean(ws_to) - mean(ws_from)`` as a direction.

    E.g. ``ws_from`` = inverted neutral photos, ``ws_to`` = the same people smiling: positive
    strengths then add a smile.

    Args:
        ws_from, ws_to: latents ``[N, num_ws, w_dim]`` or ``[N, w_dim]`` (or STYLEGAN_LATENT dicts).
        per_layer: keep one row per layer (``[num_ws, w_dim]``, rows with RMS norm 1) instead of
            averaging the rows into one unit ``[1, w_dim]`` direction.

    Raises:
        LatentError: the two groups have different shapes.
    """
    a, b = _as_ws(ws_from, "ws_from"), _as_ws(ws_to, "ws_to")
    if a.shape[-1] != b.shape[-1]:
        raise LatentError(f"the two latent groups have different widths ({a.shape[-1]} vs {b.shape[-1]}); "
                          "use latents from the same model")
    if per_layer:
        if a.shape[1] != b.shape[1]:
            raise LatentError(f"per-layer needs both groups with the same rows, got {a.shape[1]} and {b.shape[1]}")
        diff = b.mean(0) - a.mean(0)                                            # [L, C]
        vectors = _unit_rows(diff, per_layer=True)
    else:
        diff = b.mean((0, 1)) - a.mean((0, 1))                                  # [C]
        vectors = _unit_rows(diff[None], per_layer=False)
    return Direction(vectors[None].float(), name=name, source="mean latent difference",
                     strength_range=(-3.0, 3.0),
                     info={"method": "mean_difference", "num_from": int(a.shape[0]), "num_to": int(b.shape[0]),
                           "raw_norm": float(diff.norm())})


LEARN_METHODS = ("ridge", "logistic")
LEARN_UNITS = ("std", "unit")


def _fit_logistic(x: torch.Tensor, y: torch.Tensor, *, weight_decay: float, max_iterations: int):
    """L2-regularised logistic regression (full-batch L-BFGS, float64); returns ``(normal, bias)``."""
    num_pos, num_neg = int((y == 1).sum()), int((y == 0).sum())
    with torch.inference_mode(False), torch.enable_grad():                     # works inside ComfyUI too
        x, y = x.clone(), y.clone()
        normal = torch.zeros(x.shape[1], dtype=torch.float64, requires_grad=True)
        bias = torch.zeros((), dtype=torch.float64, requires_grad=True)
        pos_weight = torch.tensor(num_neg / num_pos, dtype=torch.float64)       # balance the classes
        optimiser = torch.optim.LBFGS([normal, bias], max_iter=int(max_iterations),
                                      line_search_fn="strong_wolfe")

        def closure():
            optimiser.zero_grad()
            logits = x @ normal + bias
            loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, y, pos_weight=pos_weight)
            loss = loss + weight_decay * normal.pow(2).sum()
            loss.backward()
            return loss

        optimiser.step(closure)
    return normal.detach(), bias.detach()


def direction_from_labels(ws: Any, labels: Any, *, method: str = "logistic", score_fraction: float = 0.2,
                          weight_decay: float = 1e-3, ridge_alpha: float = 0.5, max_iterations: int = 200,
                          unit: str = "std", condition: Sequence[Any] = (), name: str = "learned") -> Direction:
    """Returns an InterFaceGAN-style boundary normal in W fitted to labelled latents.

    Two fits (no scikit-learn), both on w centred and divided by one scalar (the mean per-dimension
    standard deviation, so the geometry of W is kept):

    * ``"logistic"``: L2-regularised logistic regression (full-batch L-BFGS, float64) on binary
      labels; continuous scores are first cut into their top and bottom ``score_fraction``
      (InterFaceGAN's recipe).
    * ``"ridge"``: ridge regression of continuous scores on all samples,
      ``normal = (X^T X + ridge_alpha * N * I)^-1 X^T (y - mean y)``. Uses every sample rather
      than the extremes; the penalty pulls the normal towards W's high-variance directions, where
      moving stays on the generator's manifold. On the embedded 64 px model's mouth labels
      (3,600 samples) the held-out correlation of the projection with the labels was 0.80
      (logistic, extremes) vs 0.85 (ridge); a 3-std edit on 24 samples moved the mean label
      0.068 -> 0.133 (logistic) vs 0.048 -> 0.174 (ridge, alpha 0.5); alpha 0.05 overfits
      (0.064 -> 0.142), alpha -> infinity (the label-weighted mean of w) follows W's largest
      components and changes lighting and identity more than the mouth.

    The normal is signed so that positive strengths give more of the label.

    Args:
        ws: ``[N, w_dim]`` or ``[N, num_ws, w_dim]`` (rows are averaged: use W latents).
        labels: ``[N]`` binary (0/1, bool) or continuous scores (``"ridge"`` needs scores that are
            not all equal; binary labels work too).
        method: ``"logistic"`` or ``"ridge"``.
        score_fraction: logistic on scores: fraction taken from each end (0 < f <= 0.5).
        weight_decay: logistic: L2 penalty on the normal.
        ridge_alpha: ridge: penalty per sample (> 0), in the scaled coordinates.
        max_iterations: logistic: L-BFGS iterations.
        condition: directions (single W :class:`Direction` or ``[w_dim]`` vectors) projected out of
            the fitted normal (InterFaceGAN's conditional manipulation, fixed into the file): the
            edit then moves no sample along them. On the embedded model the mouth normal had cosine
            -0.25 with the yaw normal and a 3-std mouth edit turned the head by 0.1 (yaw label);
            conditioned on yaw, by 0.02.
        unit: what strength 1 means. ``"std"`` (default): one standard deviation of the samples'
            w projected on the normal (the vector is the unit normal times that std, so strengths
            mean the same on every model, like GANSpace's sigmas); ``"unit"``: a unit-norm vector
            (strength = distance in W, the published InterFaceGAN files' convention).
        name: the direction's name.

    Returns:
        A single :class:`Direction` ``[1, 1, w_dim]``; ``info`` has the method, the sample counts,
        the training accuracy (logistic) or correlation (ridge), ``label_correlation`` (of all
        samples' projection on the final normal with their labels), ``projection_std`` (std of the
        samples' w along the unit normal), ``label_std`` (std of the labels given) and ``unit``.

    Raises:
        ConfigError: fewer than two samples of each class, mismatched lengths, or a bad option.
    """
    if method not in LEARN_METHODS:
        raise ConfigError(f"unknown method {method!r}; choose one of {', '.join(LEARN_METHODS)}")
    if unit not in LEARN_UNITS:
        raise ConfigError(f"unknown unit {unit!r}; choose one of {', '.join(LEARN_UNITS)}")
    w_all = _as_ws(ws, "ws").mean(1)                                              # [N, C]
    y = labels if isinstance(labels, torch.Tensor) else torch.as_tensor(np.asarray(labels))
    y = y.detach().to("cpu", torch.float64).reshape(-1)
    if y.numel() != w_all.shape[0]:
        raise ConfigError(f"got {w_all.shape[0]} latents but {y.numel()} labels")
    if not torch.isfinite(y).all():
        raise ConfigError("labels contain NaN or infinite values")
    label_std = float(y.std()) if y.numel() > 1 else 0.0
    labels_all = y
    binary = bool(((y == 0) | (y == 1)).all())
    info: dict[str, Any] = {"binary_labels": binary, "label_std": label_std}
    w = w_all
    if method == "ridge":
        if not ridge_alpha > 0:
            raise ConfigError(f"ridge_alpha must be > 0, got {ridge_alpha}")
        if y.numel() < 3 or label_std <= 0:
            raise ConfigError(f"ridge needs at least 3 samples with different labels, got {y.numel()} "
                              f"with std {label_std:.3g}")
        centred = w - w.mean(0)
        x = centred / centred.std(0).mean().clamp_min(1e-12)                    # one scalar keeps the geometry
        yc = y - y.mean()
        gram = x.T @ x + float(ridge_alpha) * x.shape[0] * torch.eye(x.shape[1], dtype=torch.float64)
        normal = torch.linalg.solve(gram, x.T @ yc)
        if float(normal.norm()) <= 1e-12:
            raise DirectionError("the labels do not vary linearly with W at all; no direction was found")
        fitted = x @ normal
        correlation = float(torch.corrcoef(torch.stack([fitted, yc]))[0, 1])
        unit_normal = normal / normal.norm()                                     # positive: more of the label
        info.update(method="interfacegan_ridge", ridge_alpha=float(ridge_alpha), num_samples=int(y.numel()),
                    correlation=correlation)
    else:
        if not binary:
            if not 0 < score_fraction <= 0.5:
                raise ConfigError(f"score_fraction must be in (0, 0.5], got {score_fraction}")
            n = max(2, int(round(y.numel() * score_fraction)))
            order = torch.argsort(y)
            keep = torch.cat([order[:n], order[-n:]])
            w, y = w[keep], torch.cat([torch.zeros(n, dtype=torch.float64), torch.ones(n, dtype=torch.float64)])
        num_pos, num_neg = int((y == 1).sum()), int((y == 0).sum())
        if min(num_pos, num_neg) < 2:
            raise ConfigError(f"need at least 2 positive and 2 negative samples, got {num_pos} and {num_neg}")
        centred = w - w.mean(0)
        x = centred / centred.std(0).mean().clamp_min(1e-12)
        normal, bias = _fit_logistic(x, y, weight_decay=weight_decay, max_iterations=max_iterations)
        if float(normal.norm()) <= 1e-12:
            raise DirectionError("the labels are not linearly separable in W at all; no direction was found")
        accuracy = float((((x @ normal + bias) > 0).double() == y).double().mean())
        unit_normal = normal / normal.norm()
        if float((x[y == 1] @ unit_normal).mean() - (x[y == 0] @ unit_normal).mean()) < 0:
            unit_normal = -unit_normal
        info.update(method="interfacegan_logistic", accuracy=accuracy, num_positive=num_pos, num_negative=num_neg,
                    weight_decay=float(weight_decay), score_fraction=float(score_fraction))
    if condition:
        names, basis = [], []
        for item in condition:
            cond = _as_direction(item, name="condition")
            if cond.space != "w" or cond.is_component_set:
                raise DirectionError("a conditioning direction must be a single W direction")
            if cond.w_dim != unit_normal.shape[0]:
                raise DirectionError(f"conditioning direction {cond.name or '?'} has w_dim {cond.w_dim}, "
                                     f"the latents {unit_normal.shape[0]}")
            basis.append(cond.vectors[0].double().mean(0))
            names.append(cond.name or "direction")
        kept = project_out(unit_normal[None], [b[None] for b in basis])[0]
        unit_normal = kept / kept.norm()
        info["condition"] = names
    centred_all = w_all - w_all.mean(0)
    if w_all.shape[0] > 2 and label_std > 0:
        info["label_correlation"] = float(torch.corrcoef(torch.stack([centred_all @ unit_normal,
                                                                      labels_all]))[0, 1])
    projection_std = float((centred_all @ unit_normal).std()) if w_all.shape[0] > 1 else 1.0
    if unit == "std" and not projection_std > 1e-12:
        raise DirectionError("the samples do not spread along the fitted normal; use unit='unit'")
    vector = unit_normal * (projection_std if unit == "std" else 1.0)
    info.update(projection_std=projection_std, unit=unit)
    return Direction(vector[None, None].float(), name=name,
                     source=f"{'ridge regression' if method == 'ridge' else 'logistic boundary'} on labelled latents",
                     strength_range=(-3.0, 3.0), info=info)


# ----------------------------------------------------------------------------- applying

def project_out(vectors: torch.Tensor, conditions: Iterable[torch.Tensor]) -> torch.Tensor:
    """Returns ``vectors`` ``[L, C]`` with the span of ``conditions`` (each ``[1 or L, C]``) removed,
    each row rescaled to its original norm (InterFaceGAN conditional manipulation).

    Raises:
        DirectionError: a row lies (almost) inside the span of the conditions.
    """
    conditions = list(conditions)
    if not conditions:
        return vectors
    rows = vectors.shape[0]
    stacked = [c.expand(rows, -1) if c.shape[0] == 1 else c for c in conditions]
    out = torch.empty_like(vectors)
    for row in range(rows):
        basis = torch.stack([c[row] for c in stacked], dim=1).double()             # [C, M]
        q, _ = torch.linalg.qr(basis)
        v = vectors[row].double()
        projected = v - q @ (q.T @ v)
        if float(projected.norm()) <= 1e-6 * float(v.norm()):
            raise DirectionError("the direction lies inside the conditioning directions; nothing is left "
                                 "after projecting them out")
        out[row] = (projected * (v.norm() / projected.norm())).to(vectors.dtype)
    return out


def _normalise_edits(edits: Any) -> list[Edit]:
    if isinstance(edits, (Edit, Direction, torch.Tensor, np.ndarray)):
        edits = [edits]
    out = []
    for item in edits:
        if isinstance(item, Edit):
            out.append(item)
        elif isinstance(item, (Direction, torch.Tensor, np.ndarray)):
            out.append(Edit(item, 1.0))
        elif isinstance(item, (tuple, list)) and 2 <= len(item) <= 3:
            out.append(Edit(item[0], float(item[1]), *(item[2:])))
        else:
            raise ConfigError(f"an edit must be an Edit, a direction, or (direction, strength[, layers]); "
                              f"got {type(item).__name__}")
    return out


def _edit_delta(ws: torch.Tensor, edit: Edit, *, layers: LayerSpec,
                condition: Sequence[DirectionLike]) -> tuple[torch.Tensor, int, int]:
    """Returns (delta [B, end-start, C], start, end) of one edit against the unedited ``ws``."""
    num_ws, w_dim = ws.shape[1], ws.shape[2]
    direction = _as_direction(edit.direction)
    if direction.space != "w":
        raise DirectionError(f"{direction.name or 'direction'} is a StyleSpace direction; it edits styles, "
                             "not ws; apply it with the StyleSpace edit path")
    if edit.component is not None:
        direction = direction.component(edit.component)
    elif direction.is_component_set:
        raise DirectionError(f"{direction.name or 'direction'} is a set of {direction.num_components} components; "
                             "pick one (component index) before applying it")
    direction.check_fits(num_ws=num_ws, w_dim=w_dim)
    vector = direction.vectors[0].to(ws.device, ws.dtype)                          # [1 or num_ws, C]
    conditions = [_as_direction(c, name="condition") for c in (*condition, *edit.condition)]
    if conditions:
        cond_vectors = []
        for c in conditions:
            if c.space != "w":
                raise DirectionError("a conditioning direction must be a W direction, not a StyleSpace one")
            if c.is_component_set:
                raise DirectionError("a conditioning direction must be a single direction, not a component set")
            c.check_fits(num_ws=num_ws, w_dim=w_dim)
            cond_vectors.append(c.vectors[0].to(ws.device, ws.dtype))
        if vector.shape[0] == 1 and any(c.shape[0] > 1 for c in cond_vectors):
            vector = vector.expand(num_ws, -1)
        vector = project_out(vector, cond_vectors)
    spec = edit.layers if edit.layers is not None else (layers if layers is not None else direction.layers)
    start, end = resolve_layers(spec, num_ws)
    rows = vector if vector.shape[0] == 1 else vector[start:end]                   # [1 or n, C]
    if edit.mode == "add":
        delta = float(edit.strength) * rows[None].expand(ws.shape[0], end - start, w_dim)
        return delta, start, end
    if direction.std is None:
        raise DirectionError(f"{direction.name or 'direction'}: mode 'set' needs a GANSpace component with a "
                             "per-component std (e.g. ffhq_pca.pt or ganspace()); use mode 'add'")
    mean = (direction.mean if direction.mean is not None else torch.zeros(w_dim)).to(ws.device, ws.dtype)
    unit = rows / rows.norm(dim=-1, keepdim=True)                                  # [1 or n, C]
    coordinate = ((ws[:, start:end] - mean) * unit).sum(-1, keepdim=True)         # [B, n, 1]
    target = float(edit.strength) * float(direction.std[0])
    return (target - coordinate) * unit, start, end


def apply_directions(ws: torch.Tensor, edits: Any, *, layers: LayerSpec = None,
                     condition: Sequence[DirectionLike] = ()) -> torch.Tensor:
    """Returns ``ws`` with the edits applied: ``w' = w + sum_i s_i d_i`` on each edit's rows only.

    Rows outside every edit's range are bit-identical to the input; ``ws`` itself is not modified.

    Args:
        ws: latents ``[B, num_ws, w_dim]``.
        edits: an :class:`Edit`, a direction (strength 1), ``(direction, strength[, layers])``, or
            a list of those. A component set needs ``Edit(..., component=k)``.
        layers: default rows for edits that name none: ``(start, end)`` or a preset ("all",
            "coarse", "middle", "fine"); when None too, the direction's own default, else all.
        condition: directions projected out of every edit (InterFaceGAN conditional manipulation).

    Raises:
        LatentError: ``ws`` is not ``[B, num_ws, w_dim]``.
        DirectionError: a direction does not fit, or a component set without a component.
        ConfigError: a bad layer range or mode.
    """
    if not isinstance(ws, torch.Tensor) or ws.ndim != 3 or 0 in ws.shape:
        shape = list(ws.shape) if isinstance(ws, torch.Tensor) else type(ws).__name__
        raise LatentError(f"ws must be [B, num_ws, w_dim], got {shape}")
    if not ws.is_floating_point():
        raise LatentError(f"ws must be a float tensor, got {ws.dtype}")
    deltas = [_edit_delta(ws, edit, layers=layers, condition=condition) for edit in _normalise_edits(edits)]
    out = ws.clone()
    for delta, start, end in deltas:
        out[:, start:end] += delta
    return out


# Reference named edits for GANSpace's FFHQ PCA (ffhq_pca.pt): (component, start, end, sigma), mode "set".
GANSPACE_FFHQ_EDITS = {
    "eye_openness": (54, 7, 8, 5.0),
    "smile": (46, 4, 5, -6.0),
    "trimmed_beard": (58, 7, 9, 7.0),
}


def named_edit(components: Direction, name: str, *, sigma: float | None = None,
               table: Mapping[str, tuple[int, int, int, float]] = GANSPACE_FFHQ_EDITS) -> Edit:
    """Returns the GANSpace named edit ``name`` (``table[name] = (component, start, end, sigma)``) as a
    mode "set" :class:`Edit` on ``components``; ``sigma`` overrides the table's strength.

    Examples:
        >>> pca = Direction(torch.eye(64)[:60, None], kind="components", std=torch.ones(60))
        >>> edit = named_edit(pca, "smile")
        >>> (edit.component, edit.layers, edit.strength, edit.mode)
        (46, (4, 5), -6.0, 'set')
    """
    if name not in table:
        raise ConfigError(f"unknown named edit {name!r}; known: {', '.join(sorted(table))}")
    component, start, end, strength = table[name]
    return Edit(components, float(strength if sigma is None else sigma), (int(start), int(end)),
                component=int(component), mode="set")


def sweep(ws: torch.Tensor, direction: DirectionLike, strengths: Sequence[float], *, layers: LayerSpec = None,
          component: int | None = None, mode: str = "add", condition: Sequence[DirectionLike] = (),
          extra_edits: Sequence[Any] = ()) -> torch.Tensor:
    """Returns ``[S * B, num_ws, w_dim]``: ``ws`` edited with each strength in turn (animation frames).

    Frame ``i * B + b`` is latent ``b`` at ``strengths[i]``; ``extra_edits`` are applied to every
    frame at their own fixed strengths.
    """
    strengths = [float(s) for s in strengths]
    if not strengths:
        raise ConfigError("a sweep needs at least one strength")
    extra = _normalise_edits(extra_edits) if extra_edits else []
    frames = [apply_directions(ws, [Edit(direction, s, None, component, mode), *extra], layers=layers,
                               condition=condition) for s in strengths]
    return torch.cat(frames)


def sweep_strengths(start: float, stop: float, frames: int) -> list[float]:
    """Returns ``frames`` evenly spaced strengths from ``start`` to ``stop`` inclusive."""
    frames = int(frames)
    if frames < 1:
        raise ConfigError(f"frames must be >= 1, got {frames}")
    if frames == 1:
        return [float(start)]
    return [float(x) for x in torch.linspace(float(start), float(stop), frames, dtype=torch.float64)]


__all__ = [
    "Direction", "Edit", "EXTENSIONS", "GANSPACE_FFHQ_EDITS", "named_edit", "PRESETS", "MODES", "SPACES", "apply_directions", "direction_from_labels",
    "direction_from_latents", "file_sha256", "find_manifest_entry", "ganspace", "layer_presets", "load_direction",
    "manifest_entries", "missing_file_hint", "model_fingerprint", "project_out", "resolve_layers", "sample_ws",
    "save_direction", "sefa", "sefa_layers", "sweep", "sweep_strengths", "vectors_from_array",
]
