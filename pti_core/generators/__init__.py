"""Generator implementations and the registry that rebuilds one from (architecture, init_kwargs)."""

from __future__ import annotations

import importlib
from typing import Any, Mapping

from torch import nn

from ..errors import CheckpointError

# architecture tag -> "module:Class"; the tag is what saved files record.
ARCHITECTURES = {
    "stylegan2": "pti_core.generators.stylegan2:Generator",
    "stylegan3": "pti_core.generators.stylegan3:Generator",
}


def generator_class(architecture: str) -> type[nn.Module]:
    """Returns the generator class registered for ``architecture`` ("stylegan2" or "stylegan3")."""
    if architecture not in ARCHITECTURES:
        raise CheckpointError(f"unknown generator architecture {architecture!r}; "
                              f"supported: {', '.join(sorted(ARCHITECTURES))}")
    module_name, class_name = ARCHITECTURES[architecture].split(":")
    module_name = __name__ + module_name[len("pti_core.generators"):]  # works under any parent package
    return getattr(importlib.import_module(module_name), class_name)


def build_generator(architecture: str, init_kwargs: Mapping[str, Any]) -> nn.Module:
    """Returns a new (randomly initialised) generator of ``architecture`` built from NVIDIA-style ``init_kwargs``."""
    cls = generator_class(architecture)
    try:
        return cls(**dict(init_kwargs))
    except TypeError as error:
        raise CheckpointError(f"cannot build a {architecture} generator from these arguments: {error}") from None
