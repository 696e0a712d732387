"""ComfyUI entry point of the Sonic node pack.

ComfyUI imports this folder as a package and registers the nodes that ``comfy_entrypoint`` lists (ComfyUI's V3
extension API; a package exporting ``NODE_CLASS_MAPPINGS`` would be read the V1 way instead, so it exports none).
The engine (``sonic_core``) is importable on its own; its folder is appended (never prepended) to ``sys.path`` so
that ``import sonic_core`` works here without shadowing ComfyUI's own top-level ``nodes``/``server``/``utils``
modules.
"""

import os
import sys

_PACK_DIR = os.path.dirname(os.path.abspath(__file__))
if _PACK_DIR not in sys.path:
    sys.path.append(_PACK_DIR)

from .nodes import comfy_entrypoint  # noqa: E402

WEB_DIRECTORY = "./nodes/web"

__all__ = ["WEB_DIRECTORY", "comfy_entrypoint"]
