"""Sonic Token Meter: the tokens of the whole prompt (every Sonic Sampler), its tier verdict and predicted time.

The node, ``POST /sonic/estimate`` and queue-time enforcement all price with
:func:`sonic_core.metering.graph_pricing.price_graph`, so the figure on the node is the figure that is charged. The figure
is shown on the node by ``web/sonic_token_meter.js``: before queueing (from the estimate route, on every graph
change) and after a run (from the node's ``ui`` payload).
"""

from __future__ import annotations

from functools import lru_cache

from sonic_core import node_ids
from sonic_core.audio import audio_duration
from sonic_core.errors import SonicInputError
from sonic_core.memory import MemoryJob, plan_memory
from sonic_core.metering.cost import DevicePricing, GpuProperties, gpu_pricing
from sonic_core.metering.graph_pricing import GraphCost, JobCost, price_graph
from sonic_core.metering.tiers import load_tiers
from sonic_core.paths import inside

from .comfy_compat import folder_paths, free_memory, io, torch_device

UI_KEY = "sonic_cost"  # key of the node's ui payload, read by web/sonic_token_meter.js


def input_audio_seconds(name: str) -> float:
    """Length of an audio file named as ComfyUI's loaders name it (``input/``, or annotated ``[output]``...).

    The estimate route prices graphs sent by clients, so a name that leaves ComfyUI's folders is refused.
    """
    path = folder_paths.get_annotated_filepath(name)
    roots = [folder_paths.get_input_directory(), folder_paths.get_output_directory(), folder_paths.get_temp_directory()]
    if not inside(path, roots):
        raise SonicInputError(f"audio file {name!r} is outside ComfyUI's input, output and temp folders: "
                              "pick a file from the input folder")
    return audio_duration(path)


@lru_cache(maxsize=1)
def server_pricing() -> tuple[DevicePricing, str]:
    """How ComfyUI's own device is priced, and its dtype, which the predictions assume unless the graph's loader
    names the CPU: a GPU by its own profile, or (unknown to the cost model) from its properties; else the CPU."""
    device = torch_device()
    if device.type != "cuda":
        return DevicePricing(device.type, f"this server's {device.type.upper()}"), "fp32"
    import torch

    props = torch.cuda.get_device_properties(device)
    gpu = GpuProperties(props.name, props.total_memory, props.multi_processor_count, props.major, props.minor)
    return gpu_pricing(gpu), "fp16"


def prediction_device() -> tuple[str, str]:
    """The cost profile and dtype of ComfyUI's own device (see :func:`server_pricing`)."""
    pricing, dtype = server_pricing()
    return pricing.profile, dtype


def device_note() -> str:
    """One line on how this server's device is priced, shown on the Token Meter."""
    return server_pricing()[0].note


def price_prompt(prompt: dict, tier: str) -> GraphCost:
    """Price an API-format prompt for ``tier`` with the files in ComfyUI's input folder."""
    device, dtype = prediction_device()
    return price_graph(prompt, tier=tier, audio_duration=input_audio_seconds, device=device, dtype=dtype)


def memory_plan(job: JobCost, budget: int | None) -> str:
    """One line: the memory plan of a priced Sampler under ``budget`` (ComfyUI's free memory), as the Sampler will
    choose it, or why none meets it."""
    device, dtype, model = job.predicted_profile.split("/")
    if job.frames < 1:
        return f"node {job.node_id}: no frames to plan"
    plan = plan_memory(MemoryJob(job.frames, job.resolution, job.resolution, model, dtype), budget)
    return f"node {job.node_id} memory: {plan.summary() if plan.fits else plan.refusal()}"


def tier_names() -> list[str]:
    return sorted(load_tiers())


class SonicTokenMeter(io.ComfyNode):
    """Sonic Token Meter: the tokens of the whole prompt, the tier's verdict and the predicted time."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=node_ids.TOKEN_METER, display_name="Sonic Token Meter", category="Sonic/cost",
            description="Tokens of every Sonic Sampler in this graph (the published token formula: audio seconds, "
                        "resolution and steps), the tier's verdict (allowed, or over which limit) and the "
                        "predicted seconds on this server. Shown on the node before queueing and after the run; "
                        "the same figure is charged.",
            inputs=[io.Combo.Input("tier", options=tier_names(), default="standard",
                                   tooltip="pricing tier to judge the graph by (its token and duration limits)")],
            outputs=[io.Int.Output(display_name="tokens", tooltip="tokens of the whole prompt"),
                     io.String.Output(display_name="report",
                                      tooltip="tokens per Sampler, the tier's verdict and the predicted time")],
            hidden=[io.Hidden.prompt], is_output_node=True,
        )

    @classmethod
    def execute(cls, tier: str) -> io.NodeOutput:
        cost = price_prompt(cls.hidden.prompt, tier)
        budget = free_memory()
        plans = [memory_plan(job, budget) for job in cost.jobs]
        report = "\n".join([cost.summary(), *plans])
        shown = cost.to_dict() | {"summary": report, "device": device_note(), "memory_plans": plans}
        return io.NodeOutput(cost.total_tokens, report, ui={UI_KEY: [shown]})


NODES = [SonicTokenMeter]
