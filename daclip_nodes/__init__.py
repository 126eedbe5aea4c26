"""ComfyUI nodes for DA-CLIP (V1 node definitions, so every ComfyUI version loads them).

ComfyUI imports the repository root, whose `__init__` re-exports the names below. The pack also imports
without ComfyUI (tests, scripts): everything ComfyUI-specific goes through `comfy_adapter`.
"""
from . import comfy_adapter
from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

# `models/daclip/` in ComfyUI's model registry (a no-op outside ComfyUI).
comfy_adapter.register_model_folder()

# The small front-end extension that shows the detection report on the node. ComfyUI resolves this
# against the folder of the module it imported, i.e. the repository root.
WEB_DIRECTORY = "./daclip_nodes/web"

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "WEB_DIRECTORY"]
