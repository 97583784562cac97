"""Restricted reading of pickled model files: data only, no code from the file ever runs.

Three containers hold pickles in the wild:

* NVIDIA ``.pkl`` network snapshots: a plain pickle whose networks are
  ``torch_utils.persistence`` objects (class name, embedded module source, ``__dict__`` state)
  and whose tensor storages are ``torch.storage._load_from_bytes`` blobs (a nested legacy
  ``torch.save`` stream).
* ``torch.save`` zip archives (``.pt``): ``<prefix>/data.pkl`` plus one raw entry per storage.
* legacy (pre-1.6) ``torch.save`` streams: magic number, protocol, system info, the object
  pickle, the storage keys, then the raw storages.

Every pickle stream first goes through :func:`scan_pickle`, which walks its opcodes without
building anything and rejects length fields that point past the end of the data and memo
indices that would make the C unpickler allocate huge tables. Then :class:`RestrictedUnpickler`
resolves globals through an allow-list only: tensor and storage rebuilders (re-implemented
here over bytes we read ourselves), ``collections.OrderedDict``, ``dnnlib.util.EasyDict`` (a
plain dict), numpy scalar/dtype/array rebuilders (as data), ``argparse.Namespace`` (a
:class:`NamespaceRecord`), and ``torch_utils.persistence._reconstruct_persistent_obj``, which
becomes a :class:`PersistentRecord` (class name + state) -- the embedded ``module_src`` is
dropped unread, never executed. Anything else raises :class:`UnsafeCheckpointError` naming the
global.
"""

from __future__ import annotations

import io
import pickle
import pickletools
import zipfile
from typing import Any, Callable, Mapping

import numpy as np
import torch

from ..errors import CheckpointError, UnsafeCheckpointError

LEGACY_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL_VERSION = 1001

_STORAGE_DTYPES = {
    "FloatStorage": torch.float32, "DoubleStorage": torch.float64, "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16, "LongStorage": torch.int64, "IntStorage": torch.int32,
    "ShortStorage": torch.int16, "CharStorage": torch.int8, "ByteStorage": torch.uint8,
    "BoolStorage": torch.bool, "UntypedStorage": torch.uint8,
}
_NUMPY_DTYPES = {"b1", "i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8", "f2", "f4", "f8", "c8", "c16"}


def one_line(text: object) -> str:
    """Returns ``str(text)`` on one line (error messages must be one line)."""
    return " ".join(str(text).split())


# ----------------------------------------------------------------------------------------------
# Data records that stand in for objects we refuse to construct.

class PersistentRecord:
    """A ``torch_utils.persistence`` object as data: ``class_name``, ``version`` and ``state``.

    ``state`` is the pickled ``__dict__`` of the original module (``_parameters``,
    ``_buffers``, ``_modules``, ``_init_kwargs``, ...). The embedded module source is not kept.
    """

    __slots__ = ("class_name", "version", "state", "module_src_chars")

    def __init__(self, class_name: str, version: Any, state: Any, module_src_chars: int):
        self.class_name = class_name
        self.version = version
        self.state = state
        self.module_src_chars = module_src_chars

    def __repr__(self) -> str:
        return f"PersistentRecord({self.class_name!r}, version={self.version!r})"


class NamespaceRecord:
    """An ``argparse.Namespace`` as data: its attributes in ``values``."""

    def __init__(self, **values: Any):
        self.values = dict(values)

    def __setstate__(self, state: Any) -> None:
        if not isinstance(state, dict):
            raise CheckpointError("malformed argparse.Namespace state")
        self.values = dict(state)

    def __repr__(self) -> str:
        return f"NamespaceRecord({self.values!r})"


class AttrDict(dict):
    """``dnnlib.util.EasyDict`` read as a plain dict (a subclass only so BUILD has somewhere to go)."""


class _DTypeRecord:
    """``numpy.dtype`` as data: a numeric type code and a byte order."""

    def __init__(self, code: Any, align: Any = False, copy: Any = False):
        del align, copy
        if isinstance(code, str) and code.startswith("O"):
            raise UnsafeCheckpointError("numpy object arrays are refused (they can carry code)")
        if not isinstance(code, str) or code not in _NUMPY_DTYPES:
            raise CheckpointError(f"unsupported numpy dtype {one_line(repr(code))[:40]} in pickle")
        self.code = code
        self.byteorder = "<"

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple) and len(state) > 1 and state[1] in ("<", ">", "|", "="):
            self.byteorder = "<" if state[1] in ("|", "=") else state[1]

    def numpy(self) -> np.dtype:
        return np.dtype(self.byteorder + self.code if self.code not in ("b1", "i1", "u1") else self.code)


class _NDArrayMarker:
    """Stands for the ``numpy.ndarray`` class argument of ``numpy.core.multiarray._reconstruct``."""


class _NDArrayRecord:
    """A numpy array rebuilt from its pickled state (numeric dtypes only, size-checked)."""

    def __init__(self) -> None:
        self.array: np.ndarray | None = None

    def __setstate__(self, state: Any) -> None:
        if not (isinstance(state, tuple) and len(state) == 5):
            raise CheckpointError("malformed numpy array state in pickle")
        _, shape, dtype, fortran, raw = state
        if not isinstance(dtype, _DTypeRecord) or not isinstance(raw, (bytes, bytearray)):
            raise CheckpointError("unsupported numpy array in pickle (only numeric arrays are read)")
        if not (isinstance(shape, tuple) and all(isinstance(s, int) and s >= 0 for s in shape)):
            raise CheckpointError("malformed numpy array shape in pickle")
        np_dtype = dtype.numpy()
        count = int(np.prod(shape, dtype=np.float64))
        if count * np_dtype.itemsize != len(raw):
            raise CheckpointError("numpy array in pickle: data size does not match its shape")
        array = np.frombuffer(bytes(raw), dtype=np_dtype).reshape(shape, order="F" if fortran else "C")
        self.array = array.copy()


def _numpy_reconstruct(cls: Any, shape: Any = (0,), dtype: Any = b"b") -> _NDArrayRecord:
    if not isinstance(cls, _NDArrayMarker) and cls is not _NDArrayMarker:
        raise UnsafeCheckpointError("numpy _reconstruct called with a class other than numpy.ndarray")
    return _NDArrayRecord()


def _numpy_scalar(dtype: Any, data: Any = None) -> Any:
    if not isinstance(dtype, _DTypeRecord) or not isinstance(data, (bytes, bytearray)):
        raise CheckpointError("unsupported numpy scalar in pickle (only numeric scalars are read)")
    np_dtype = dtype.numpy()
    if len(data) != np_dtype.itemsize:
        raise CheckpointError("numpy scalar in pickle: wrong number of bytes")
    return np.frombuffer(bytes(data), dtype=np_dtype)[0].item()


def _codecs_encode(text: Any, encoding: str = "utf-8", errors: str = "strict") -> bytes:
    # Protocol-2 pickles store bytes as _codecs.encode(str, "latin1").
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1", "utf-8", "utf8") or errors != "strict":
        raise UnsafeCheckpointError("_codecs.encode used for something other than bytes literals")
    return text.encode(encoding)


def _ordered_dict(*args: Any) -> dict:
    from collections import OrderedDict

    if len(args) > 1:
        raise CheckpointError("malformed OrderedDict in pickle")
    return OrderedDict(*args)


def _reconstruct_persistent_obj(meta: Any) -> PersistentRecord:
    if not isinstance(meta, dict) or meta.get("type") != "class" or not isinstance(meta.get("class_name"), str):
        raise CheckpointError("malformed torch_utils.persistence object in pickle")
    source = meta.get("module_src")
    return PersistentRecord(meta["class_name"], meta.get("version"), meta.get("state"),
                            len(source) if isinstance(source, str) else 0)


# ----------------------------------------------------------------------------------------------
# Storages and tensors, rebuilt over bytes we read ourselves.

class StorageType:
    """Stands for a ``torch.<X>Storage`` class in a persistent id."""

    __slots__ = ("name", "dtype")

    def __init__(self, name: str, dtype: torch.dtype):
        self.name, self.dtype = name, dtype


class Storage:
    """A flat tensor of ``numel`` elements that tensors in the pickle are views of."""

    __slots__ = ("dtype", "data")

    def __init__(self, dtype: torch.dtype, data: torch.Tensor):
        self.dtype, self.data = dtype, data

    @property
    def numel(self) -> int:
        return self.data.numel()


def _element_size(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()


def _fill(target: torch.Tensor, raw: bytes | memoryview, offset: int, nbytes: int, little_endian: bool) -> None:
    """Copies ``raw[offset:offset + nbytes]`` into the contiguous tensor ``target`` (byte-swapping if needed)."""
    if nbytes == 0:
        return
    as_bytes = target.view(torch.uint8) if target.dtype != torch.uint8 else target
    as_bytes.numpy()[:] = np.frombuffer(raw, dtype=np.uint8, count=nbytes, offset=offset)
    size = target.element_size()
    if not little_endian and size > 1:
        swapped = as_bytes.view(-1, size).flip(1).reshape(-1).clone()
        as_bytes.copy_(swapped)


def _rebuild_tensor(storage: Any, storage_offset: Any, size: Any, stride: Any, requires_grad: Any = False,
                    backward_hooks: Any = None, metadata: Any = None) -> torch.Tensor:
    del requires_grad, backward_hooks, metadata
    if not isinstance(storage, Storage):
        raise CheckpointError("tensor in pickle does not refer to a storage")
    if not (isinstance(size, (tuple, list)) and isinstance(stride, (tuple, list)) and len(size) == len(stride)
            and all(isinstance(v, int) and v >= 0 for v in (*size, *stride))
            and isinstance(storage_offset, int) and storage_offset >= 0 and len(size) <= 16):
        raise CheckpointError("malformed tensor shape/stride in pickle")
    numel = 1
    for s in size:
        numel *= s
    if numel == 0:
        return torch.empty(tuple(size), dtype=storage.dtype)
    extent = storage_offset + sum((s - 1) * st for s, st in zip(size, stride)) + 1
    if extent > storage.numel or numel > storage.numel:
        raise CheckpointError(f"tensor of shape {list(size)} does not fit in its storage of {storage.numel} elements")
    return storage.data.as_strided(tuple(size), tuple(stride), storage_offset)


def _rebuild_parameter(data: Any, requires_grad: Any = False, backward_hooks: Any = None, *extra: Any) -> torch.Tensor:
    if not isinstance(data, torch.Tensor):
        raise CheckpointError("parameter in pickle does not hold a tensor")
    return data


# ----------------------------------------------------------------------------------------------
# The unpickler.

def scan_pickle(data: bytes | memoryview, start: int, source: str) -> int:
    """Walks one pickle stream without building it; returns the offset just past its STOP.

    Raises:
        CheckpointError: not a pickle, truncated, a length field reaching past the end of the
            data, or memo indices that would make the unpickler allocate a huge table.
    """
    stream = io.BytesIO(data)
    stream.seek(start)
    total = len(data)
    count = 0
    try:
        for opcode, arg, pos in pickletools.genops(stream):
            count += 1
            name = opcode.name
            if name == "FRAME" and arg > total - (pos or 0):
                raise CheckpointError(f"{source}: truncated or corrupt pickle (a frame claims {arg} bytes, "
                                      f"the file has {total}); re-download or re-export the file")
            if name in ("PUT", "BINPUT", "LONG_BINPUT") and int(arg) > count:
                raise CheckpointError(f"{source}: corrupt pickle (memo index {arg} out of range); "
                                      "the file is damaged or crafted")
    except CheckpointError:
        raise
    except Exception as error:  # ValueError from genops: unknown opcode, bytes missing, ...
        detail = one_line(error)
        if "remain" in detail or "not enough" in detail or "EOF" in detail or "no data" in detail \
                or "exhausted" in detail or "truncated" in detail:
            reason = f"truncated pickle ({detail[:160]})"
        else:
            reason = f"not a valid pickle ({detail[:160]})"
        raise CheckpointError(f"{source}: {reason}; the file is damaged, incomplete or not a model file") from None
    if count == 0:
        raise CheckpointError(f"{source}: empty pickle stream")
    return stream.tell()


def _load_build(self: "RestrictedUnpickler") -> None:
    """BUILD (``obj.__setstate__(state)``), allowed only on the record types above and on dicts.

    Refusing it elsewhere keeps a crafted pickle from calling ``__setstate__`` of real objects
    (``torch.Tensor.__setstate__`` would let it alias or resize storages).
    """
    state = self.stack.pop()
    inst = self.stack[-1]
    if isinstance(inst, (_DTypeRecord, _NDArrayRecord, NamespaceRecord)):
        inst.__setstate__(state)
        return
    if isinstance(inst, dict) and type(inst) is not dict:  # OrderedDict / EasyDict: attributes like _metadata
        if isinstance(state, tuple) and len(state) == 2:
            state = state[0]
        if isinstance(state, dict):
            for key, value in state.items():
                if isinstance(key, str) and not key.startswith("__"):
                    setattr(inst, key, value)
        return
    raise UnsafeCheckpointError(f"{self._source}: refused to set the state of a {type(inst).__name__} "
                                "(only data records may be built); the file was not loaded")


def _refuse_extension(self: "RestrictedUnpickler") -> None:
    raise UnsafeCheckpointError(f"{self._source}: refused a pickle extension-registry reference; "
                                "the file was not loaded")


class RestrictedUnpickler(pickle._Unpickler):
    """``pickle.Unpickler`` whose ``find_class`` only returns allow-listed stand-ins.

    Built on Python's reference (pure-Python) unpickler so that ``BUILD`` can be restricted too
    (see :func:`_load_build`) and extension-registry opcodes refused; it also never
    pre-allocates what a length field claims. Streams are validated by :func:`scan_pickle`
    first.

    Args:
        file: binary stream positioned at the pickle.
        source: the file name used in error messages.
        allowed: ``{(module, name): object}``; anything else is refused.
        persistent_load: handler for persistent ids (torch storages); ``None`` refuses them.
    """

    dispatch = dict(pickle._Unpickler.dispatch)
    dispatch[pickle.BUILD[0]] = _load_build
    for _opcode in (pickle.EXT1, pickle.EXT2, pickle.EXT4):
        dispatch[_opcode[0]] = _refuse_extension
    del _opcode

    def __init__(self, file: io.BufferedIOBase, *, source: str, allowed: Mapping[tuple[str, str], Any],
                 persistent_load: Callable[[Any], Any] | None = None):
        super().__init__(file, encoding="latin1")
        self._source = source
        self._allowed = allowed
        self._persistent = persistent_load

    def find_class(self, module: str, name: str) -> Any:
        key = (module, name)
        if key in self._allowed:
            return self._allowed[key]
        raise UnsafeCheckpointError(
            f"{self._source}: refused global {one_line(module)[:80]}.{one_line(name)[:80]} (not on the "
            "allow-list of tensor/array rebuilders); the file may try to run code and was not loaded")

    def persistent_load(self, pid: Any) -> Any:
        if self._persistent is None:
            raise UnsafeCheckpointError(f"{self._source}: unexpected persistent id in a plain pickle; "
                                        "the file was not loaded")
        return self._persistent(pid)


def restricted_load(data: bytes | memoryview, *, source: str, start: int = 0,
                    allowed: Mapping[tuple[str, str], Any],
                    persistent_load: Callable[[Any], Any] | None = None) -> tuple[Any, int]:
    """Scans then unpickles the stream at ``data[start:]``; returns ``(object, end offset)``."""
    end = scan_pickle(data, start, source)
    stream = io.BytesIO(data)
    stream.seek(start)
    try:
        obj = RestrictedUnpickler(stream, source=source, allowed=allowed, persistent_load=persistent_load).load()
    except CheckpointError as error:
        if str(error).startswith(source):
            raise
        raise type(error)(f"{source}: {error}") from None
    except RecursionError:
        raise CheckpointError(f"{source}: pickle nests too deeply; the file is damaged or crafted") from None
    except Exception as error:
        raise CheckpointError(f"{source}: cannot read pickle ({type(error).__name__}: "
                              f"{one_line(error)[:160]}); the file is damaged or not a model file") from None
    return obj, end


def _storage_types() -> dict[tuple[str, str], Any]:
    allowed = {("torch", name): StorageType(name, dtype) for name, dtype in _STORAGE_DTYPES.items()}
    allowed[("torch.storage", "UntypedStorage")] = StorageType("UntypedStorage", torch.uint8)
    return allowed


def _base_allow_list() -> dict[tuple[str, str], Any]:
    allowed: dict[tuple[str, str], Any] = {
        ("collections", "OrderedDict"): _ordered_dict,
        ("builtins", "set"): set, ("__builtin__", "set"): set,
        ("builtins", "frozenset"): frozenset, ("__builtin__", "frozenset"): frozenset,
        ("_codecs", "encode"): _codecs_encode,
        ("numpy", "dtype"): _DTypeRecord,
        ("numpy", "ndarray"): _NDArrayMarker,
        ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
        ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
        ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
        ("dnnlib.util", "EasyDict"): AttrDict,
        ("argparse", "Namespace"): NamespaceRecord,
        ("torch_utils.persistence", "_reconstruct_persistent_obj"): _reconstruct_persistent_obj,
    }
    for numpy_core in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allowed[(numpy_core, "scalar")] = _numpy_scalar
        allowed[(numpy_core, "_reconstruct")] = _numpy_reconstruct
    allowed.update(_storage_types())
    return allowed


# ----------------------------------------------------------------------------------------------
# Legacy torch.save streams (also the storage blobs inside NVIDIA pickles).

def read_legacy_torch(data: bytes | memoryview, *, source: str, start: int = 0,
                      allowed: Mapping[tuple[str, str], Any] | None = None) -> tuple[Any, int]:
    """Reads a legacy (non-zip) ``torch.save`` stream at ``data[start:]``; returns ``(object, end)``.

    Layout: pickled magic number, protocol version and system info; the object pickle (storages
    as persistent ids ``('storage', type, key, location, numel, view)``); the pickled list of
    storage keys; then per key an int64 element count and the raw bytes. Storages are allocated
    only after their declared size has been checked against the bytes actually present.
    """
    magic, pos = restricted_load(data, source=source, start=start, allowed={})
    if magic != LEGACY_MAGIC_NUMBER:
        raise CheckpointError(f"{source}: not a torch.save stream (bad magic number)")
    protocol, pos = restricted_load(data, source=source, start=pos, allowed={})
    if protocol != LEGACY_PROTOCOL_VERSION:
        raise CheckpointError(f"{source}: unsupported legacy torch.save protocol {one_line(protocol)[:20]}")
    sys_info, pos = restricted_load(data, source=source, start=pos, allowed={})
    if not isinstance(sys_info, dict):
        raise CheckpointError(f"{source}: malformed torch.save header")
    little_endian = bool(sys_info.get("little_endian", True))
    total = len(data)
    budget = [total - pos]  # storages can never hold more bytes than the stream has left
    storages: dict[str, Storage] = {}

    def persistent_load(pid: Any) -> Storage:
        if not (isinstance(pid, tuple) and len(pid) == 6 and pid[0] == "storage"):
            raise CheckpointError(f"{source}: unsupported persistent id in torch.save stream")
        _, storage_type, key, _location, numel, view = pid
        if not isinstance(storage_type, StorageType) or not isinstance(key, str) or not isinstance(numel, int) \
                or numel < 0:
            raise CheckpointError(f"{source}: malformed storage record in torch.save stream")
        if key not in storages:
            nbytes = numel * _element_size(storage_type.dtype)
            if nbytes > budget[0]:
                raise CheckpointError(f"{source}: a storage claims {nbytes} bytes but the file holds only "
                                      f"{total} bytes; the file is truncated or crafted")
            budget[0] -= nbytes
            storages[key] = Storage(storage_type.dtype, torch.empty(numel, dtype=storage_type.dtype))
        root = storages[key]
        if view is None:
            return root
        if not (isinstance(view, tuple) and len(view) == 3 and all(isinstance(v, int) for v in view[1:])):
            raise CheckpointError(f"{source}: malformed storage view in torch.save stream")
        _, offset, size = view
        if offset < 0 or size < 0 or offset + size > root.numel:
            raise CheckpointError(f"{source}: storage view outside its storage")
        return Storage(root.dtype, root.data[offset:offset + size])

    obj_allowed = allowed if allowed is not None else _base_allow_list()
    obj, pos = restricted_load(data, source=source, start=pos, allowed=obj_allowed,
                               persistent_load=persistent_load)
    keys, pos = restricted_load(data, source=source, start=pos, allowed={})
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        raise CheckpointError(f"{source}: malformed storage key list in torch.save stream")
    for key in keys:
        if key not in storages:
            raise CheckpointError(f"{source}: torch.save stream lists an unknown storage {key[:40]!r}")
        storage = storages[key]
        if pos + 8 > total:
            raise CheckpointError(f"{source}: truncated torch.save stream (storage data missing)")
        numel = int.from_bytes(bytes(data[pos:pos + 8]), "little" if little_endian else "big", signed=True)
        pos += 8
        nbytes = numel * storage.data.element_size()
        if numel != storage.numel or pos + nbytes > total:
            raise CheckpointError(f"{source}: storage {key[:40]!r} claims {numel} elements, which does not match "
                                  "its record or the bytes present; the file is truncated or crafted")
        _fill(storage.data, data, pos, nbytes, little_endian)
        pos += nbytes
    return obj, pos


def _load_from_bytes_factory(source: str) -> Callable[[Any], Storage]:
    storage_only = _storage_types()

    def load_from_bytes(blob: Any) -> Storage:
        if not isinstance(blob, (bytes, bytearray)):
            raise CheckpointError(f"{source}: malformed storage blob")
        obj, _ = read_legacy_torch(bytes(blob), source=f"{source} (embedded storage)", allowed=storage_only)
        if not isinstance(obj, Storage):
            raise UnsafeCheckpointError(f"{source}: an embedded storage blob holds something other than a storage; "
                                        "refused")
        return obj

    return load_from_bytes


def nvidia_allow_list(source: str) -> dict[tuple[str, str], Any]:
    """The allow-list for user pickles: the base list plus ``torch.storage._load_from_bytes`` (our reader)."""
    allowed = _base_allow_list()
    allowed[("torch.storage", "_load_from_bytes")] = _load_from_bytes_factory(source)
    return allowed


def load_pickle_file(data: bytes, *, source: str) -> Any:
    """Returns the object in a plain (NVIDIA-style) pickle, read with the restricted unpickler."""
    obj, _ = restricted_load(data, source=source, allowed=nvidia_allow_list(source))
    return obj


def load_legacy_torch_file(data: bytes, *, source: str) -> Any:
    """Returns the object in a legacy (pre-1.6) ``torch.save`` file."""
    obj, _ = read_legacy_torch(data, source=source, allowed=nvidia_allow_list(source))
    return obj


def is_legacy_torch(head: bytes) -> bool:
    """Whether ``head`` starts a legacy ``torch.save`` stream (pickled magic number)."""
    return head.startswith(b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19")


def load_torch_zip(path: str, *, source: str) -> Any:
    """Returns the object in a ``torch.save`` zip archive (``<prefix>/data.pkl`` + ``<prefix>/data/<key>``)."""
    import os

    file_size = os.path.getsize(path)
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, ValueError) as error:
        raise CheckpointError(f"{source}: not a readable torch zip archive ({one_line(error)[:120]})") from None
    with archive:
        infos = {info.filename: info for info in archive.infolist()}
        pickles = [name for name in infos if name.endswith("/data.pkl") and name.count("/") == 1]
        if len(pickles) != 1:
            raise CheckpointError(f"{source}: zip archive is not a torch.save file (no single <name>/data.pkl)")
        prefix = pickles[0][: -len("data.pkl")]
        little_endian = True
        if prefix + "byteorder" in infos:
            little_endian = read_zip_entry(archive, infos[prefix + "byteorder"], file_size, source).strip() != b"big"
        cache: dict[str, Storage] = {}

        def persistent_load(pid: Any) -> Storage:
            if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
                raise CheckpointError(f"{source}: unsupported persistent id in data.pkl")
            _, storage_type, key, _location, numel = pid
            if not isinstance(storage_type, StorageType) or not isinstance(key, str) or not isinstance(numel, int) \
                    or numel < 0:
                raise CheckpointError(f"{source}: malformed storage record in data.pkl")
            if key not in cache:
                info = infos.get(f"{prefix}data/{key}")
                if info is None:
                    raise CheckpointError(f"{source}: storage {key[:40]!r} is missing from the archive")
                nbytes = numel * _element_size(storage_type.dtype)
                if info.file_size != nbytes or nbytes > file_size:
                    raise CheckpointError(f"{source}: storage {key[:40]!r} claims {nbytes} bytes but its entry "
                                          f"holds {info.file_size}; the file is truncated or crafted")
                raw = read_zip_entry(archive, info, file_size, source)
                storage = Storage(storage_type.dtype, torch.empty(numel, dtype=storage_type.dtype))
                _fill(storage.data, raw, 0, nbytes, little_endian)
                cache[key] = storage
            return cache[key]

        data = read_zip_entry(archive, infos[pickles[0]], file_size, source)
        obj, _ = restricted_load(data, source=source, allowed=nvidia_allow_list(source),
                                 persistent_load=persistent_load)
    return obj


def read_zip_entry(archive: zipfile.ZipFile, info: zipfile.ZipInfo, file_size: int, source: str) -> bytes:
    """Returns one stored (uncompressed) zip entry, refusing compressed, oversized or truncated ones."""
    if info.compress_type != zipfile.ZIP_STORED or info.file_size > file_size:
        raise CheckpointError(f"{source}: zip entry {info.filename[:60]!r} is compressed or larger than the file; "
                              "torch.save archives are never compressed")
    try:
        raw = archive.read(info)
    except Exception as error:
        raise CheckpointError(f"{source}: cannot read zip entry {info.filename[:60]!r} "
                              f"({one_line(error)[:120]}); the file is truncated or damaged") from None
    if len(raw) != info.file_size:
        raise CheckpointError(f"{source}: zip entry {info.filename[:60]!r} is truncated")
    return raw


def load_torch_file(path: str, *, source: str | None = None) -> Any:
    """Returns the object in a ``torch.save`` file (zip or legacy format), read with the restricted reader.

    Tensors come back on the CPU whatever device they were saved from; a dict of tensors stays a
    dict. For data files such as PTI's direction ``.pt`` files; nothing in the file is executed.

    Raises:
        CheckpointError: not a ``torch.save`` file, malformed, or refers to a global outside the
            allow-list (:class:`UnsafeCheckpointError`).
    """
    import os

    source = source or str(path)
    if not os.path.isfile(path):
        from ..errors import MissingFileError

        raise MissingFileError(f"{source}: no such file")
    with open(path, "rb") as handle:
        head = handle.read(16)
    if head.startswith(b"PK\x03\x04"):
        return load_torch_zip(str(path), source=source)
    if is_legacy_torch(head):
        with open(path, "rb") as handle:
            return load_legacy_torch_file(handle.read(), source=source)
    raise CheckpointError(f"{source}: not a torch.save file (neither a zip archive nor a legacy stream)")
