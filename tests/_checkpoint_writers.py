"""Writers of NVIDIA-style files for tests: persistence pickles and ``torch.save`` archives.

They reproduce the byte-level structure of NVIDIA's ``torch_utils.persistence`` pickles (each
network ``_reconstruct_persistent_obj(meta)`` with ``meta = {type, version, module_src,
class_name, state}``; tensors over ``torch.storage._load_from_bytes`` blobs) from one of our
generators, with a chosen ``module_src`` and with the fewer ``nn.Module.__dict__`` keys of torch
1.7-1.9. Written by our own code; nothing is copied from NVIDIA's. Only for writing: the fake
``torch_utils``/``dnnlib`` modules exist in ``sys.modules`` just while pickling.
"""

from __future__ import annotations

import contextlib
import pickle
import sys
import types
from collections import OrderedDict
from typing import Any

import numpy as np
import torch
from torch import nn


def _reconstruct_persistent_obj(meta):  # pragma: no cover - only its name is pickled
    raise RuntimeError("test stand-in: never called")


class EasyDict(dict):
    """Pickles as ``dnnlib.util.EasyDict``."""


_reconstruct_persistent_obj.__module__ = "torch_utils.persistence"
EasyDict.__module__ = "dnnlib.util"
EasyDict.__qualname__ = "EasyDict"


@contextlib.contextmanager
def fake_nvidia_modules():
    """Temporarily registers ``torch_utils.persistence`` and ``dnnlib.util`` so pickle can name them."""
    persistence = types.ModuleType("torch_utils.persistence")
    persistence._reconstruct_persistent_obj = _reconstruct_persistent_obj
    util = types.ModuleType("dnnlib.util")
    util.EasyDict = EasyDict
    modules = {"torch_utils": types.ModuleType("torch_utils"), "torch_utils.persistence": persistence,
               "dnnlib": types.ModuleType("dnnlib"), "dnnlib.util": util}
    saved = {name: sys.modules.get(name) for name in modules}
    sys.modules.update(modules)
    try:
        yield
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module


class Persistent:
    """Pickles as ``torch_utils.persistence._reconstruct_persistent_obj(meta)``."""

    def __init__(self, meta: dict):
        self.meta = meta

    def __reduce__(self):
        return (_reconstruct_persistent_obj, (self.meta,))


def record(module: nn.Module, *, init_kwargs: dict | None = None, module_src: str = "# no source",
           old_torch: bool = False, extra_state: dict | None = None) -> Persistent:
    """Returns the persistence record of ``module`` (recursively), as NVIDIA's pickles hold it."""
    state: dict[str, Any] = {"training": False}
    state["_parameters"] = OrderedDict((n, None if p is None else nn.Parameter(p.detach().clone()))
                                       for n, p in module._parameters.items())
    state["_buffers"] = OrderedDict((n, None if b is None else b.detach().clone())
                                    for n, b in module._buffers.items())
    state["_non_persistent_buffers_set"] = set()
    for hooks in ("_backward_hooks", "_forward_hooks", "_forward_pre_hooks", "_state_dict_hooks",
                  "_load_state_dict_pre_hooks"):
        state[hooks] = OrderedDict()
    if not old_torch:  # keys nn.Module gained after torch 1.9
        for hooks in ("_backward_pre_hooks", "_forward_hooks_with_kwargs", "_forward_hooks_always_called",
                      "_forward_pre_hooks_with_kwargs", "_state_dict_pre_hooks", "_load_state_dict_post_hooks"):
            state[hooks] = OrderedDict()
        state["_is_full_backward_hook"] = None
    state["_modules"] = OrderedDict((n, record(m, module_src=module_src, old_torch=old_torch))
                                    for n, m in module._modules.items())
    state["_init_args"] = ()
    state["_init_kwargs"] = init_kwargs if init_kwargs is not None else {}
    state.update(extra_state or {})
    return Persistent({"type": "class", "version": 6, "module_src": module_src,
                       "class_name": type(module).__name__, "state": state})


def nvidia_init_kwargs(G: nn.Module) -> dict:
    """Returns ``G.init_kwargs`` with the nested dicts as EasyDict (as NVIDIA's training code stores them)."""
    kwargs = dict(getattr(G, "init_kwargs", {}))
    for key in ("mapping_kwargs", "synthesis_kwargs"):
        if key in kwargs:
            kwargs[key] = EasyDict(kwargs[key])
    return kwargs


def write_nvidia_pickle(G: nn.Module, path, *, module_src: str = "# no source", old_torch: bool = False,
                        snapshot: bool = True, protocol: int = 4) -> None:
    """Writes ``G`` as an NVIDIA persistence pickle: a training snapshot dict, or the bare network."""
    extra = {"numpy_gain": np.float32(1.5), "numpy_size": np.asarray([4, 4], dtype=np.int64)}
    with fake_nvidia_modules():
        network = record(G, init_kwargs=nvidia_init_kwargs(G), module_src=module_src, old_torch=old_torch,
                         extra_state=extra)
        data = dict(G=network, G_ema=network, D=None, augment_pipe=None,
                    training_set_kwargs=EasyDict(path="data.zip", resolution=64)) if snapshot else network
        with open(path, "wb") as handle:
            pickle.dump(data, handle, protocol=protocol)


def write_torch_save(obj_factory, path) -> None:
    """``torch.save(obj_factory(), path)`` (zip format) with the fake NVIDIA modules registered."""
    with fake_nvidia_modules():
        torch.save(obj_factory(), path)
