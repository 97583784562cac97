"""Hostile model files: no payload ever runs, malformed files are refused with one clear line naming the file.

Every payload, if it ran, would create ``marker``; each test asserts it does not exist. Nothing
here calls ``pickle.load`` or ``torch.load(weights_only=False)``.
"""

from __future__ import annotations

import io
import os
import pickle
import subprocess
import time
import zipfile
from collections import OrderedDict

import numpy as np
import psutil
import pytest
import torch
from PIL import Image

from _checkpoint_writers import nvidia_init_kwargs, record, write_nvidia_pickle, write_torch_save
from helpers import golden_dir, tiny_generator
from pti_core.errors import CheckpointError, MissingFileError, UnsafeCheckpointError
from pti_core.generators.checkpoints import inspect_checkpoint, load_generator, read_checkpoint

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C


class Reduce:
    """Pickles as ``function(*args)``: the classic pickle payload."""

    def __init__(self, function, *args):
        self.function, self.args = function, args

    def __reduce__(self):
        return (self.function, self.args)


def _shell_payloads(marker):
    command = f"touch {marker}"
    return {
        "os.system": Reduce(os.system, command),
        "eval": Reduce(eval, f"__import__('os').system({command!r})"),
        "exec": Reduce(exec, f"import os; os.system({command!r})"),
        "subprocess.Popen": Reduce(subprocess.Popen, ["touch", str(marker)]),
        "getattr-chain": Reduce(getattr, Reduce(__import__, "os"), "system"),
    }


def _refused(path, marker, error_type=CheckpointError, match=None):
    """Loads ``path``; asserts a one-line ``error_type`` naming the file, fast, and no payload ran."""
    start = time.perf_counter()
    with pytest.raises(error_type) as error:
        load_generator(path)
    elapsed = time.perf_counter() - start
    message = str(error.value)
    assert str(path) in message, message
    assert "\n" not in message, message
    if match is not None:
        assert match in message, message
    assert not marker.exists(), "payload ran"
    assert elapsed < 20, f"took {elapsed:.1f} s"
    return message


def _legacy_stream(obj_pickle: bytes, keys=(), data: bytes = b"") -> bytes:
    sys_info = {"protocol_version": 1001, "little_endian": True, "type_sizes": {"short": 2, "int": 4, "long": 4}}
    head = b"".join(pickle.dumps(x, protocol=2) for x in (LEGACY_MAGIC, 1001, sys_info))
    return head + obj_pickle + pickle.dumps(list(keys), protocol=2) + data


class _StorageFromBlob:
    def __init__(self, blob):
        self.blob = blob

    def __reduce__(self):
        return (torch.storage._load_from_bytes, (self.blob,))


class _TensorOver:
    """Pickles as ``torch._utils._rebuild_tensor_v2(storage, 0, size, stride, False, OrderedDict())``."""

    def __init__(self, storage, size=(1,), stride=(1,)):
        self.storage, self.size, self.stride = storage, size, stride

    def __reduce__(self):
        return (torch._utils._rebuild_tensor_v2, (self.storage, 0, self.size, self.stride, False, OrderedDict()))


@pytest.fixture
def marker(tmp_path):
    path = tmp_path / "PAYLOAD_RAN"
    yield path
    assert not path.exists(), "payload ran"


# ---------------------------------------------------------------------------------------------
# Payloads

@pytest.mark.parametrize("protocol", [0, 2, 4])
@pytest.mark.parametrize("payload", ["os.system", "eval", "exec", "subprocess.Popen", "getattr-chain"])
def test_reduce_payloads_are_refused_and_never_run(tmp_path, marker, payload, protocol):
    path = tmp_path / "network-snapshot.pkl"
    path.write_bytes(pickle.dumps({"G_ema": _shell_payloads(marker)[payload]}, protocol=protocol))
    message = _refused(path, marker, UnsafeCheckpointError, match="refused global")
    assert "allow-list" in message


def test_persistence_module_src_payload_is_kept_as_data_never_executed(tmp_path, marker):
    G = tiny_generator(1)
    source = f"import os\nos.system('touch {marker}')\nraise SystemExit\n"
    pkl = tmp_path / "snapshot.pkl"
    write_nvidia_pickle(G, pkl, module_src=source)
    pt = tmp_path / "model_tuned.pt"
    write_torch_save(lambda: record(G, init_kwargs=nvidia_init_kwargs(G), module_src=source), pt)
    for path in (pkl, pt):
        assert source.encode() in path.read_bytes() or path.suffix == ".pt"
        loaded = load_generator(path)  # the network's data is fine; its code is ignored
        assert not marker.exists()
        for name, tensor in G.state_dict().items():
            assert torch.equal(loaded.state_dict()[name], tensor), name


def test_payload_inside_a_storage_blob_is_refused(tmp_path, marker):
    blob = _legacy_stream(pickle.dumps(Reduce(os.system, f"touch {marker}"), protocol=2))
    path = tmp_path / "blob.pkl"
    path.write_bytes(pickle.dumps({"G_ema": _TensorOver(_StorageFromBlob(blob))}, protocol=4))
    message = _refused(path, marker, UnsafeCheckpointError, match="posix.system")
    assert "embedded storage" in message


def test_storage_blob_that_nests_another_blob_or_holds_a_non_storage_is_refused(tmp_path, marker):
    inner = _legacy_stream(pickle.dumps(Reduce(os.system, f"touch {marker}"), protocol=2))
    nested = _legacy_stream(pickle.dumps(_StorageFromBlob(inner), protocol=2))
    path = tmp_path / "nested.pkl"
    path.write_bytes(pickle.dumps({"G_ema": _TensorOver(_StorageFromBlob(nested))}, protocol=4))
    _refused(path, marker, UnsafeCheckpointError, match="_load_from_bytes")
    not_storage = _legacy_stream(pickle.dumps({"a": 1}, protocol=2))
    path2 = tmp_path / "not_storage.pkl"
    path2.write_bytes(pickle.dumps({"G_ema": _TensorOver(_StorageFromBlob(not_storage))}, protocol=4))
    _refused(path2, marker, UnsafeCheckpointError, match="other than a storage")


def _zip_pt(path, data_pkl: bytes, entries=None):
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as archive:
        archive.writestr("archive/data.pkl", data_pkl)
        archive.writestr("archive/byteorder", "little")
        archive.writestr("archive/version", "3\n")
        for name, data in (entries or {}).items():
            archive.writestr(name, data)


@pytest.mark.parametrize("payload", ["os.system", "eval", "subprocess.Popen"])
def test_zip_pt_with_malicious_data_pkl_is_refused(tmp_path, marker, payload):
    path = tmp_path / "model_evil.pt"
    _zip_pt(path, pickle.dumps({"g_ema": _shell_payloads(marker)[payload]}, protocol=2))
    _refused(path, marker, UnsafeCheckpointError, match="refused global")


def test_numpy_object_arrays_are_refused(tmp_path, marker):
    path = tmp_path / "objects.pkl"
    path.write_bytes(pickle.dumps({"G_ema": np.array([Reduce(os.system, f"touch {marker}")], dtype=object)},
                                  protocol=4))
    _refused(path, marker, UnsafeCheckpointError)


# ---------------------------------------------------------------------------------------------
# Malformed files

def test_random_bytes(tmp_path, marker):
    rng = np.random.default_rng(0)
    path = tmp_path / "random.pkl"
    path.write_bytes(rng.integers(0, 256, 4096, dtype=np.uint8).tobytes().replace(b"\x80", b"\x81"))
    _refused(path, marker, match="unknown file format")
    pickle_like = tmp_path / "random_pickle.pkl"
    pickle_like.write_bytes(b"\x80\x04" + rng.integers(0, 256, 4096, dtype=np.uint8).tobytes())
    _refused(pickle_like, marker)


def test_truncated_files(tmp_path, marker):
    for name in ("sg2ada_small/standin.pkl", "pti_tuned_tiny/model_tuned.pt", "rosinality_small/rosinality.pt"):
        data = (golden_dir(name.split("/")[0]) / name.split("/")[1]).read_bytes()
        path = tmp_path / ("truncated_" + name.split("/")[1])
        path.write_bytes(data[: len(data) // 2])
        message = _refused(path, marker)
        if name.endswith(".pkl"):
            assert "truncated" in message
    legacy = tmp_path / "legacy.pt"
    torch.save({"w": torch.randn(64)}, legacy, _use_new_zipfile_serialization=False)
    legacy.write_bytes(legacy.read_bytes()[:-100])
    _refused(legacy, marker, match="truncated")


def _rss() -> int:
    return psutil.Process().memory_info().rss


@pytest.mark.parametrize("case", ["binbytes8", "binunicode8", "frame", "memo_index", "legacy_numel",
                                  "blob_numel", "zip_numel", "safetensors_header", "tensor_size"])
def test_length_fields_claiming_a_tebibyte_allocate_nothing(tmp_path, marker, case):
    tib = 1 << 40
    path = tmp_path / f"{case}.pkl"
    if case == "binbytes8":
        path.write_bytes(b"\x80\x04\x8e" + tib.to_bytes(8, "little") + b"x" * 64 + b".")
    elif case == "binunicode8":
        path.write_bytes(b"\x80\x04\x8d" + tib.to_bytes(8, "little") + b"x" * 64 + b".")
    elif case == "frame":
        path.write_bytes(b"\x80\x04\x95" + tib.to_bytes(8, "little") + b"N.")
    elif case == "memo_index":  # LONG_BINPUT 2**32-1 would make the C unpickler allocate a 64 GiB memo
        path.write_bytes(b"\x80\x02N" + b"r\xff\xff\xff\xff" + b".")
    elif case == "legacy_numel":  # a whole legacy torch.save file whose storage claims 2**30 floats
        path = tmp_path / "legacy.pt"
        real = io.BytesIO()
        torch.save(torch.zeros(4), real, _use_new_zipfile_serialization=False)
        data = real.getvalue().replace(b"K\x04", b"J" + (1 << 30).to_bytes(4, "little"))
        assert data != real.getvalue()
        path.write_bytes(data)
    elif case == "blob_numel":
        real = io.BytesIO()
        torch.save(torch.zeros(4).untyped_storage(), real, _use_new_zipfile_serialization=False)
        blob = real.getvalue().replace(b"K\x10", b"J" + (1 << 30).to_bytes(4, "little"))
        assert blob != real.getvalue()
        path.write_bytes(pickle.dumps({"G_ema": _TensorOver(_StorageFromBlob(blob))}, protocol=4))
    elif case == "zip_numel":
        path = tmp_path / "zip_numel.pt"
        buffer = io.BytesIO()
        torch.save({"w": torch.zeros(4)}, buffer)
        with zipfile.ZipFile(io.BytesIO(buffer.getvalue())) as archive:
            name = [n for n in archive.namelist() if n.endswith("data.pkl")][0]
            data_pkl = archive.read(name).replace(b"K\x04", b"J" + (1 << 30).to_bytes(4, "little"))
            entries = {n.replace(n.split("/")[0], "archive", 1): archive.read(n) for n in archive.namelist()
                       if "/data/" in n}
        _zip_pt(path, data_pkl, entries)
    elif case == "safetensors_header":
        path = tmp_path / "header.safetensors"
        path.write_bytes(tib.to_bytes(8, "little") + b'{"a": 1}' + b" " * 64)
    elif case == "tensor_size":  # a tensor whose shape claims far more elements than its storage
        storage = torch.zeros(4).untyped_storage()
        path.write_bytes(pickle.dumps({"G_ema": _TensorOver(storage, size=(1 << 20, 1 << 20), stride=(0, 0))},
                                      protocol=4))
    before = _rss()
    message = _refused(path, marker)
    assert _rss() - before < 256 << 20, "memory grew by more than 256 MiB"
    assert any(word in message for word in ("truncated", "claims", "corrupt", "does not fit", "not a valid",
                                            "cannot read", "unknown")), message


def test_png_renamed_pkl(tmp_path, marker):
    path = tmp_path / "face.pkl"
    Image.new("RGB", (8, 8), (200, 100, 50)).save(path, format="PNG")
    _refused(path, marker, match="PNG image")


def test_empty_and_missing_files(tmp_path, marker):
    path = tmp_path / "empty.pkl"
    path.write_bytes(b"")
    _refused(path, marker, match="empty")
    with pytest.raises(MissingFileError, match="no such file"):
        load_generator(tmp_path / "absent.pkl")


def test_well_formed_but_wrong_content_is_a_clear_error(tmp_path, marker):
    G = tiny_generator(2)
    not_generator = tmp_path / "discriminator.pkl"
    write_nvidia_pickle(G.synthesis, not_generator, snapshot=False)  # a network, but not a Generator
    _refused(not_generator, marker, match="not a Generator")
    no_g_ema = tmp_path / "dict.pkl"
    no_g_ema.write_bytes(pickle.dumps({"D": None, "augment_pipe": None}, protocol=4))
    _refused(no_g_ema, marker, match="G_ema")
    text = tmp_path / "notes.pt"
    text.write_text("hello")
    _refused(text, marker, match="unknown file format")
    bad_metadata = tmp_path / "bad.safetensors"
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(1)}, bad_metadata, metadata={"format": "pti_core.generator", "architecture": "sg9",
                                                             "init_kwargs": "{}"})
    _refused(bad_metadata, marker, match="unknown generator architecture")
    with pytest.raises(CheckpointError, match=str(bad_metadata)):
        inspect_checkpoint(bad_metadata)


def test_allow_listed_helpers_reject_misuse(tmp_path, marker):
    """Allow-listed names used with unexpected arguments are refused, not trusted."""
    import codecs

    path = tmp_path / "codecs.pt"
    _zip_pt(path, pickle.dumps({"g_ema": Reduce(codecs.encode, "x", "rot13")}, protocol=2))
    _refused(path, marker, UnsafeCheckpointError)
    path2 = tmp_path / "tensor.pkl"
    path2.write_bytes(pickle.dumps({"G_ema": _TensorOver("not a storage")}, protocol=4))
    _refused(path2, marker, match="storage")


class _ReduceWithState:
    def __init__(self, function, args, state):
        self.function, self.args, self.state = function, args, state

    def __reduce__(self):
        return (self.function, self.args, self.state)


def test_build_on_real_objects_and_extension_opcodes_are_refused(tmp_path, marker):
    """``BUILD`` (``__setstate__``) on a tensor could alias or resize storages: refused; so are EXT opcodes."""
    storage = torch.zeros(4).untyped_storage()
    tensor = _ReduceWithState(torch._utils._rebuild_tensor_v2, (storage, 0, (1,), (1,), False, OrderedDict()),
                              (torch.zeros(1), 0, (1 << 30,), (1,)))
    path = tmp_path / "setstate.pkl"
    path.write_bytes(pickle.dumps({"G_ema": tensor}, protocol=4))
    _refused(path, marker, UnsafeCheckpointError, match="refused to set the state of a Tensor")
    ext = tmp_path / "ext.pkl"
    ext.write_bytes(b"\x80\x02\x82\x01.")
    _refused(ext, marker, UnsafeCheckpointError, match="extension")


def test_read_checkpoint_never_uses_plain_unpickling(monkeypatch, tmp_path):
    """The loaders work with pickle.load / torch.load disabled (so they cannot be what reads user files)."""
    def forbidden(*args, **kwargs):
        raise AssertionError("plain unpickling was used")

    monkeypatch.setattr(pickle, "load", forbidden)
    monkeypatch.setattr(pickle, "loads", forbidden)
    monkeypatch.setattr(torch, "load", forbidden)
    for name in ("sg2ada_small/standin.pkl", "pti_tuned_tiny/model_tuned.pt", "rosinality_small/rosinality.pt"):
        folder, file = name.split("/")
        assert read_checkpoint(golden_dir(folder) / file).state_dict
