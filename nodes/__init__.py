"""ComfyUI node classes of the pack, registered by the pack's top-level ``__init__``.

One module per concern (audio, sonic, post, cost, video) declares its nodes with :mod:`.schema` and lists the
built classes in ``NODES``. Registration:

* ``NODE_CLASS_MAPPINGS`` / ``NODE_DISPLAY_NAME_MAPPINGS`` always: every ComfyUI reads them, and accepts V3
  ``io.ComfyNode`` classes in them (ComfyUI ignores ``comfy_entrypoint`` in a module that has these mappings).
* ``comfy_entrypoint`` (a V3 ``ComfyExtension`` listing the same classes) where the running ComfyUI has the V3
  API, for loaders that ask for it.
"""

from __future__ import annotations

from typing import Any

from . import audio, cost, post, sonic, video
from .comfy_compat import comfy_extension_type, prompt_server

NODE_CLASSES: list[type] = [*audio.NODES, *sonic.NODES, *post.NODES, *cost.NODES, *video.NODES]

NODE_CLASS_MAPPINGS: dict[str, type] = {cls.SONIC_SPEC.node_id: cls for cls in NODE_CLASSES}
NODE_DISPLAY_NAME_MAPPINGS: dict[str, str] = {cls.SONIC_SPEC.node_id: cls.SONIC_SPEC.display_name
                                              for cls in NODE_CLASSES}

_EXTENSION_BASE = comfy_extension_type()
if _EXTENSION_BASE is not None:
    class SonicExtension(_EXTENSION_BASE):
        """The V3 registration of the pack: the same node classes as the V1 mappings."""

        async def get_node_list(self) -> list[type]:
            return list(NODE_CLASSES)

    async def comfy_entrypoint() -> Any:
        return SonicExtension()

if prompt_server() is not None:  # inside a running ComfyUI server: /sonic/estimate, /sonic/metrics, enforcement
    from .server_hooks import register as _register_metering

    METER = _register_metering(prompt_server())
