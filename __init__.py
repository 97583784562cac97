"""ComfyUI entry point of the PTI node pack.

Exports the node mappings. Imports nothing heavy: node modules import ``pti_core`` and its
dependencies inside their ``execute`` methods. Our ``nodes/`` package is always imported relative to
this pack (ComfyUI has its own top-level ``nodes`` module).
"""

from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
