"""Test-only ComfyUI pack: nodes that report what the Sonic pack's compat layer sees inside a real server.

Linked into ``custom_nodes/`` by the harness next to the Sonic pack. It imports the Sonic pack a second time,
under its own name, to declare its nodes with the same compat ``io`` the real nodes use.
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
io = compat.io

_MODELS: dict[str, object] = {}


def entrypoint_node_ids() -> list[str]:
    """Node ids the pack's ``comfy_entrypoint`` lists (run on its own thread: ComfyUI may be inside a loop)."""
    async def node_ids() -> list[str]:
        extension = await sys.modules[_NAME].comfy_entrypoint()
        return [cls.GET_SCHEMA().node_id for cls in await extension.get_node_list()]

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, node_ids()).result()


class SonicProbeHidden(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(node_id="SonicProbeHidden", display_name="Sonic probe: hidden inputs",
                         category="Sonic/tests", description="test-only", inputs=[io.String.Input("tag", default="x")],
                         outputs=[io.String.Output(display_name="report")], is_output_node=True,
                         hidden=[io.Hidden.prompt, io.Hidden.unique_id])

    @classmethod
    def execute(cls, tag):
        report = json.dumps({"tag": tag, "prompt_nodes": sorted(cls.hidden.prompt or {}),
                             "unique_id": cls.hidden.unique_id, "real_io": io is not compat.standin_io,
                             "entrypoint": entrypoint_node_ids()})
        return io.NodeOutput(report, ui={"text": [report]})


class SonicProbeManaged(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(node_id="SonicProbeManaged", display_name="Sonic probe: managed model",
                         category="Sonic/tests", description="test-only",
                         inputs=[io.Combo.Input("action", options=["load", "status"], default="load")],
                         outputs=[io.String.Output(display_name="report")], is_output_node=True,
                         not_idempotent=True)

    @classmethod
    def execute(cls, action):
        import torch

        if action == "load":
            managed = _MODELS.setdefault("linear", compat.ManagedModel(torch.nn.Linear(4, 4)))
            managed.load()
        managed = _MODELS.get("linear")
        report = json.dumps({"action": action, "loaded": bool(managed and managed.is_loaded())})
        return io.NodeOutput(report, ui={"text": [report]})


class SonicProbeShared(io.ComfyNode):
    """How many bytes of the Sonic model's VAE and CLIP lie in the storages of ComfyUI's own VAE / CLIP_VISION."""

    @classmethod
    def define_schema(cls):
        return io.Schema(node_id="SonicProbeShared", display_name="Sonic probe: shared SVD weights",
                         category="Sonic/tests", description="test-only",
                         inputs=[io.Custom("SONIC_MODEL").Input("model"), io.Vae.Input("vae"),
                                 io.ClipVision.Input("clip_vision")],
                         outputs=[io.String.Output(display_name="report")], is_output_node=True)

    @classmethod
    def execute(cls, model, vae, clip_vision):
        shared = importlib.import_module("sonic_core.weights.shared")
        report = {}
        for part, ours, theirs in (("vae", model.models.vae, compat.vae_tensors(vae)),
                                   ("clip", model.models.image_encoder, compat.clip_vision_tensors(clip_vision))):
            in_owner, total = shared.shared_bytes(ours, theirs.values())
            report[part] = {"shared_bytes": in_owner, "sonic_bytes": total, "extra_bytes": total - in_owner,
                            "comfy_bytes": sum(t.numel() * t.element_size() for t in theirs.values())}
        text = json.dumps(report)
        return io.NodeOutput(text, ui={"text": [text]})


class SonicProbeHoldAfter(io.ComfyNode):
    """Writes ``marker`` (holding ``path``, the file the node before wrote), then blocks the worker until the
    server is killed: a prompt that has written its output but never reaches ComfyUI's task_done."""

    @classmethod
    def define_schema(cls):
        return io.Schema(node_id="SonicProbeHoldAfter", display_name="Sonic probe: block after an output",
                         category="Sonic/tests", description="test-only",
                         inputs=[io.String.Input("path", default=""), io.String.Input("marker", default="")],
                         outputs=[io.String.Output(display_name="report")], is_output_node=True)

    @classmethod
    def execute(cls, path, marker):
        Path(marker).write_text(path)
        threading.Event().wait()


class SonicProbeLiveTensors(io.ComfyNode):
    """Bytes of every torch tensor the server's Python still reaches after a full garbage collection (each storage
    counted once), and the largest ones' shapes: what an ended prompt left behind. Takes the Loader's model and
    PreData's inputs only to run after them (their cached outputs are counted too, the same in every call)."""

    @classmethod
    def define_schema(cls):
        return io.Schema(node_id="SonicProbeLiveTensors", display_name="Sonic probe: live tensors",
                         category="Sonic/tests", description="test-only",
                         inputs=[io.Custom("SONIC_MODEL").Input("model"), io.Custom("SONIC_PREDATA").Input("predata"),
                                 io.String.Input("tag", default="x")],
                         outputs=[io.String.Output(display_name="report")], is_output_node=True,
                         not_idempotent=True)

    @classmethod
    def execute(cls, model, predata, tag):
        import gc

        import torch

        gc.collect()
        storages = {}
        for obj in gc.get_objects():
            if issubclass(type(obj), torch.Tensor) and obj.device.type != "meta":  # type(): no dead weak proxies
                storage = obj.untyped_storage()
                storages[(storage.device.type, storage.data_ptr())] = (storage.nbytes(), list(obj.shape))
        largest = sorted(storages.values(), key=lambda item: -item[0])[:5]
        report = json.dumps({"tag": tag, "bytes": sum(size for size, _ in storages.values()),
                             "largest": largest})
        return io.NodeOutput(report, ui={"text": [report]})


class _ProbeExtension(compat.ComfyExtension):
    async def get_node_list(self):
        return [SonicProbeHidden, SonicProbeManaged, SonicProbeShared, SonicProbeHoldAfter, SonicProbeLiveTensors]


async def comfy_entrypoint():
    return _ProbeExtension()
