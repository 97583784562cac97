"""Node classes of the PTI pack, one module per node family, merged into ComfyUI's V1 mappings.

Node ids (the mapping keys), type names and widget order are public contracts: saved workflows
depend on them. Never rename; add widgets only at the end.
"""

from __future__ import annotations

from importlib import import_module

from . import _common

# One module per node family; each defines NODE_CLASS_MAPPINGS and NODE_DISPLAY_NAME_MAPPINGS.
_FAMILIES: tuple[str, ...] = ("models", "latents", "pti", "align", "directions", "styleclip")

NODE_CLASS_MAPPINGS: dict[str, type] = {}
NODE_DISPLAY_NAME_MAPPINGS: dict[str, str] = {}

_common.register_model_folders()

for _family in _FAMILIES:
    _module = import_module(f".{_family}", __name__)
    for _node_id, _cls in _module.NODE_CLASS_MAPPINGS.items():
        if _node_id in NODE_CLASS_MAPPINGS:
            raise RuntimeError(f"duplicate PTI node id {_node_id}")
        NODE_CLASS_MAPPINGS[_node_id] = _cls
    NODE_DISPLAY_NAME_MAPPINGS.update(_module.NODE_DISPLAY_NAME_MAPPINGS)
