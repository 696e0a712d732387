"""Test-only ComfyUI pack: nodes that report what the Sonic pack's compat layer sees inside a real server.

Linked into ``custom_nodes/`` by the harness next to the Sonic pack. It imports the Sonic pack a second time,
under its own name, to build nodes with the same ``nodes.schema`` builder the real nodes use.
"""

import asyncio
import concurrent.futures
import importlib.util
import json
import sys
import threading
from pathlib import Path

_REPO = Path(__file__).resolve().parents[3]  # tests/comfyui/comfy_probe_pack/__init__.py -> the repo
_NAME = "sonic_pack_for_probe"
if _NAME not in sys.modules:
    _spec = importlib.util.spec_from_file_location(_NAME, _REPO / "__init__.py",
                                                   submodule_search_locations=[str(_REPO)])
    sys.modules[_NAME] = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(sys.modules[_NAME])

compat = importlib.import_module(f"{_NAME}.nodes.comfy_compat")
schema = importlib.import_module(f"{_NAME}.nodes.schema")

_MODELS: dict[str, object] = {}


def entrypoint_node_ids() -> list[str] | None:
    """Node ids the pack's V3 ``comfy_entrypoint`` lists (run on its own thread: ComfyUI may be inside a loop)."""
    entrypoint = getattr(sys.modules[_NAME], "comfy_entrypoint", None)
    if entrypoint is None:
        return None

    async def node_ids() -> list[str]:
        extension = await entrypoint()
        return [cls.SONIC_SPEC.node_id for cls in await extension.get_node_list()]

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, node_ids()).result()


def hidden_inputs(tag: str, prompt: dict | None = None, unique_id: str | None = None) -> object:
    report = json.dumps({"tag": tag, "prompt_nodes": sorted(prompt or {}), "unique_id": unique_id,
                         "v3": schema.use_v3(), "entrypoint": entrypoint_node_ids()})
    return schema.NodeResult((report,), ui={"text": [report]})


def managed_model(action: str) -> object:
    import torch

    if action == "load":
        managed = _MODELS.setdefault("linear", compat.ManagedModel(torch.nn.Linear(4, 4)))
        managed.load()
    managed = _MODELS.get("linear")
    report = json.dumps({"action": action, "loaded": bool(managed and managed.is_loaded())})
    return schema.NodeResult((report,), ui={"text": [report]})


def hold_after(path: str, marker: str) -> object:
    """Write ``marker`` (holding ``path``, the file the node before wrote), then block the worker until the server
    is killed: a prompt that has written its output but never reaches ComfyUI's task_done."""
    Path(marker).write_text(path)
    threading.Event().wait()


_HIDDEN = schema.NodeSpec("SonicProbeHidden", "Sonic probe: hidden inputs", "Sonic/tests", "test-only",
                          (schema.Param("tag", "STRING", default="x"),), (schema.Result("report", "STRING"),),
                          output_node=True, hidden=("prompt", "unique_id"))
_MANAGED = schema.NodeSpec("SonicProbeManaged", "Sonic probe: managed model", "Sonic/tests", "test-only",
                           (schema.Param("action", "COMBO", default="load", options=("load", "status")),),
                           (schema.Result("report", "STRING"),), output_node=True, not_idempotent=True)

_HOLD = schema.NodeSpec("SonicProbeHoldAfter", "Sonic probe: block after an output", "Sonic/tests", "test-only",
                        (schema.Param("path", "STRING", default=""), schema.Param("marker", "STRING", default="")),
                        (schema.Result("report", "STRING"),), output_node=True)

NODE_CLASS_MAPPINGS = {"SonicProbeHidden": schema.build_node(_HIDDEN, hidden_inputs),
                       "SonicProbeManaged": schema.build_node(_MANAGED, managed_model),
                       "SonicProbeHoldAfter": schema.build_node(_HOLD, hold_after)}
