"""ComfyUI node classes of the pack, registered by the pack's top-level ``__init__`` through ``comfy_entrypoint``.

One module per concern (audio, sonic, post, cost, video) defines its nodes as named ``io.ComfyNode`` classes and
lists them in ``NODES``. ComfyUI (0.3.75 and later) calls the root package's ``comfy_entrypoint`` and registers
every class :meth:`SonicExtension.get_node_list` returns, under its schema's ``node_id``.
"""

from __future__ import annotations

from . import audio, cost, post, sonic, video
from .comfy_compat import ComfyExtension, io, prompt_server

NODE_CLASSES: list[type[io.ComfyNode]] = [*audio.NODES, *sonic.NODES, *post.NODES, *cost.NODES, *video.NODES]


class SonicExtension(ComfyExtension):
    """The pack's V3 registration: every node class of the pack."""

    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return list(NODE_CLASSES)


async def comfy_entrypoint() -> SonicExtension:
    return SonicExtension()


if prompt_server() is not None:  # inside a running ComfyUI server: /sonic/estimate, /sonic/metrics, enforcement
    from .server_hooks import register as _register_metering

    METER = _register_metering(prompt_server())
