"""ComfyUI entry point of the Sonic node pack.

ComfyUI imports this folder as a package. The engine (``sonic_core``) is importable on its own; its folder is
appended (never prepended) to ``sys.path`` so that ``import sonic_core`` works here without shadowing ComfyUI's
own top-level ``nodes``/``server``/``utils`` modules.
"""

import os
import sys

_PACK_DIR = os.path.dirname(os.path.abspath(__file__))
if _PACK_DIR not in sys.path:
    sys.path.append(_PACK_DIR)

from . import nodes as _nodes  # noqa: E402
from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS  # noqa: E402

WEB_DIRECTORY = "./nodes/web"

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "WEB_DIRECTORY"]
if hasattr(_nodes, "comfy_entrypoint"):
    comfy_entrypoint = _nodes.comfy_entrypoint
    __all__.append("comfy_entrypoint")
