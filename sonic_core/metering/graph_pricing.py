"""The cost of a ComfyUI prompt (API format) before it runs: tokens per Sonic Sampler, total, tier verdict.

One function, :func:`price_graph`, serves the Token Meter node, ``POST /sonic/estimate`` and queue-time
enforcement, so the figure a user sees is the figure that is charged. It reads the graph only: no ComfyUI
import, no node runs. An input is a literal or a link ``[source_node_id, output_index]``; links to core
primitive nodes are followed to their value. Audio lengths come from the caller's ``audio_duration(file_name)``
(in ComfyUI: the file in ``input/``, measured as librosa does). When a duration cannot be known before running
(audio made by some other node), pricing fails with an error naming the node instead of guessing.

The prompt is the unit the ledger charges (one prompt id, one reservation), so the tier's per-job token cap
applies to the prompt's total as well as to every sampler; resolution and step caps apply per sampler.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any, Callable, Mapping

from ..errors import SonicError, SonicInputError
from ..node_ids import CORE_LOAD_AUDIO, DEMO_WEIGHTS, LOAD_AUDIO_DURATION, PREDATA, SAMPLERS
from ..paths import os_reason
from ..settings import SonicSettings
from ..timing import GENERATED_FPS, generated_frames
from .cost import Prediction, predict
from .tiers import Tier, price, resolve_tier

PRIMITIVES = frozenset({"PrimitiveInt", "PrimitiveFloat", "PrimitiveString", "PrimitiveStringMultiline",
                        "PrimitiveBoolean"})
NO_FILE_CHOICES = ("", "none")  # SonicLoadAudioDuration's audio_file when the AUDIO input is used
MAX_LINK_DEPTH = 64  # longest chain of links followed; far beyond any real graph

AudioDuration = Callable[[str], float]


class GraphCostError(SonicInputError):
    """The prompt cannot be priced before it runs (missing input, unknowable duration, malformed graph)."""


@dataclass(frozen=True)
class JobCost:
    """The cost of one Sonic Sampler node."""

    node_id: str
    tokens: int
    duration: float
    resolution: int
    steps: int
    dynamic_scale: float
    motion_scale: float
    frames: int
    allowed: bool
    reason: str | None
    predicted_seconds: float | None
    predicted_peak_bytes: int | None
    predicted_profile: str  # the cost profile the prediction is for (device/dtype/model), with or without one


@dataclass(frozen=True)
class GraphCost:
    """Every sampler's cost, the prompt's total and the tier's verdict on it."""

    tier: str
    metered: bool
    jobs: tuple[JobCost, ...]
    total_tokens: int
    allowed: bool
    reason: str | None
    predicted_seconds: float | None
    predicted_peak_bytes: int | None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (the body of ``POST /sonic/estimate``)."""
        return asdict(self) | {"jobs": [asdict(job) for job in self.jobs]}

    def summary(self) -> str:
        """One line for the Token Meter node and refusals."""
        jobs = len(self.jobs)
        text = f"{self.total_tokens} tokens ({jobs} Sonic Sampler{'s' if jobs != 1 else ''}), tier {self.tier}: "
        text += "allowed" if self.allowed else f"refused ({self.reason})"
        if self.predicted_seconds is not None:
            text += f", about {self.predicted_seconds:.0f} s"
        return text


class _Graph:
    """Read access to an API-format prompt with link resolution and node-naming errors."""

    def __init__(self, prompt: Mapping[str, Any], audio_duration: AudioDuration) -> None:
        if not isinstance(prompt, Mapping):
            raise GraphCostError(f"the prompt must be an API-format graph (an object of nodes), got "
                                 f"{type(prompt).__name__}: export it with 'Save (API)'")
        self.prompt = prompt
        self.audio_duration = audio_duration
        self._path: list[str] = []  # the nodes being followed, to name a cycle instead of recursing forever

    @contextmanager
    def following(self, node_id: str) -> Iterator[None]:
        """Follow a link into ``node_id``; a node already being followed means the links form a cycle."""
        if node_id in self._path:
            cycle = [*self._path[self._path.index(node_id):], node_id]
            raise GraphCostError(f"nodes {' -> '.join(cycle)} feed each other in a cycle: remove one of these links")
        if len(self._path) >= MAX_LINK_DEPTH:
            raise GraphCostError(f"node {node_id} is reached through more than {MAX_LINK_DEPTH} links: connect the "
                                 "values more directly")
        self._path.append(node_id)
        try:
            yield
        finally:
            self._path.pop()

    def node(self, node_id: str, referrer: str) -> Mapping[str, Any]:
        node = self.prompt.get(str(node_id))
        if not isinstance(node, Mapping):
            raise GraphCostError(f"{referrer} links to node {node_id!r}, which is not in the prompt: "
                                 "reconnect the input")
        self.inputs(str(node_id))
        return node

    @staticmethod
    def class_type(node: Mapping[str, Any]) -> str:
        return str(node.get("class_type", ""))

    @staticmethod
    def is_link(value: Any) -> bool:
        return isinstance(value, (list, tuple)) and len(value) == 2 and isinstance(value[1], int) \
            and not isinstance(value[1], bool)

    def inputs(self, node_id: str) -> Mapping[str, Any]:
        """The node's input values; one line naming the node when they are not an object."""
        inputs = self.prompt[node_id].get("inputs", {})
        if not isinstance(inputs, Mapping):
            raise GraphCostError(f"node {node_id} ({self.class_type(self.prompt[node_id])}) has inputs of type "
                                 f"{type(inputs).__name__}, not an object of input values: export the graph with "
                                 "'Save (API)'")
        return inputs

    def raw(self, node_id: str, name: str) -> Any:
        return self.inputs(node_id).get(name)

    def literal(self, node_id: str, name: str) -> Any:
        """The value of an input, following links to primitive nodes; ``None`` when it is not set."""
        value = self.raw(node_id, name)
        if not self.is_link(value):
            return value
        source_id = str(value[0])
        source = self.node(source_id, f"node {node_id} ({self.class_type(self.prompt[node_id])}) input {name!r}")
        if self.class_type(source) not in PRIMITIVES:
            raise GraphCostError(f"node {node_id} input {name!r} comes from node {source_id} "
                                 f"({self.class_type(source)}), whose value is only known when it runs: "
                                 f"type the value into node {node_id} or use a primitive node")
        with self.following(source_id):
            return self.literal(source_id, "value")

    def number(self, node_id: str, name: str, default: float | None = None) -> float:
        value = self.literal(node_id, name)
        if value is None and default is not None:
            return default
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise GraphCostError(f"node {node_id} ({self.class_type(self.prompt[node_id])}) input {name!r} must be "
                                 f"a number, got {value!r}: set it on the node")
        return value

    def linked_node(self, node_id: str, name: str, wanted: tuple[str, ...]) -> tuple[str, int]:
        """The ``(node id, output index)`` an input links to, checking the source's class."""
        value = self.raw(node_id, name)
        here = f"node {node_id} ({self.class_type(self.prompt[node_id])})"
        if not self.is_link(value):
            raise GraphCostError(f"{here} input {name!r} is not connected: connect it to a "
                                 f"{' or '.join(wanted)} node")
        source_id = str(value[0])
        source = self.node(source_id, f"{here} input {name!r}")
        if self.class_type(source) not in wanted:
            raise GraphCostError(f"{here} input {name!r} comes from node {source_id} ({self.class_type(source)}), "
                                 f"so its duration is only known when it runs: set the SonicPreData duration to a "
                                 f"number of seconds, or load the audio with {' or '.join(wanted)}")
        return source_id, int(value[1])

    def audio_seconds(self, node_id: str, name: str) -> float:
        """Length of the audio an AUDIO input carries, from the file its loader reads."""
        source_id, _ = self.linked_node(node_id, name, (CORE_LOAD_AUDIO, LOAD_AUDIO_DURATION))
        return self.loader_seconds(source_id)

    def loader_seconds(self, loader_id: str) -> float:
        """Length of the audio a LoadAudio or SonicLoadAudioDuration node outputs."""
        with self.following(loader_id):
            if self.class_type(self.prompt[loader_id]) == CORE_LOAD_AUDIO:
                return self.file_seconds(loader_id, "audio")
            if self.raw(loader_id, "audio") is not None:
                return self.audio_seconds(loader_id, "audio")
            return self.file_seconds(loader_id, "audio_file")

    def file_seconds(self, node_id: str, name: str) -> float:
        file_name = self.literal(node_id, name)
        here = f"node {node_id} ({self.class_type(self.prompt[node_id])})"
        if not isinstance(file_name, str) or file_name in NO_FILE_CHOICES:
            raise GraphCostError(f"{here} has no audio file in input {name!r}: choose a file")
        try:
            return float(self.audio_duration(file_name))
        except SonicInputError as exc:  # never uploaded, unreadable, outside the allowed folders: a refusal
            raise GraphCostError(f"{here} input {name!r}: {exc}") from None
        except OSError as exc:
            raise GraphCostError(f"{here} input {name!r}: audio file {file_name!r} cannot be read "
                                 f"({os_reason(exc)}): upload it to the input folder") from None


def _job_duration(graph: _Graph, predata_id: str) -> float:
    """Seconds of audio a SonicPreData node uses: its duration if set, else the whole audio."""
    value = graph.raw(predata_id, "duration")
    if graph.is_link(value):
        source_id, output = graph.linked_node(predata_id, "duration", (LOAD_AUDIO_DURATION, *PRIMITIVES))
        if graph.class_type(graph.prompt[source_id]) in PRIMITIVES:
            seconds = graph.number(predata_id, "duration")
        elif output != 1:
            raise GraphCostError(f"node {predata_id} ({PREDATA}) input 'duration' is linked to output {output} of "
                                 f"node {source_id}; link it to the duration output (1)")
        else:
            seconds = graph.loader_seconds(source_id)
    else:
        seconds = graph.number(predata_id, "duration", default=0.0)
    if seconds == 0:
        seconds = graph.audio_seconds(predata_id, "audio")
    return seconds


def predict_or_none(frames: int, resolution: int, steps: int, device: str, dtype: str, model: str = "sonic",
                    interpolate: bool = True) -> Prediction | None:
    """:func:`sonic_core.metering.cost.predict` for one job, or ``None`` when the cost model has no profile for
    ``device``."""
    try:
        return predict(frames, resolution, steps, device, dtype, model=model, interpolate=interpolate)
    except SonicError:
        return None


def loader_target(graph: _Graph, sampler_id: str, device: str, dtype: str) -> tuple[str, str, str]:
    """``(device, dtype, model)`` the sampler's Sonic Loader will run: the demo choice is the tiny model, unless a
    core VAE or CLIP_VISION is connected (SVD's full-size networks then run: priced as the real model, an upper
    bound); its device widget ``cpu`` is the CPU, ``auto`` or ``cuda[:N]`` the server's own device (``device``);
    fp16 runs as fp32 on a CPU, as the Loader does."""
    model, link = "sonic", graph.raw(sampler_id, "model")
    if graph.is_link(link) and isinstance(graph.prompt.get(str(link[0])), Mapping):
        loader_id = str(link[0])
        shares_svd = any(graph.is_link(graph.raw(loader_id, name)) for name in ("vae", "clip_vision"))
        model = "tiny" if graph.raw(loader_id, "weights") == DEMO_WEIGHTS and not shares_svd else "sonic"
        chosen = str(graph.raw(loader_id, "device") or "auto")
        if chosen != "auto" and not chosen.startswith("cuda"):  # cpu, mps...: that device; else the server's GPU
            device = chosen
        dtype = _text_or(graph.raw(loader_id, "dtype"), dtype)
    if device == "cpu" and dtype == "fp16":
        dtype = "fp32"
    return device, dtype, model


def _price_sampler(graph: _Graph, node_id: str, tier: Tier, device: str, dtype: str) -> JobCost:
    predata_id, _ = graph.linked_node(node_id, "predata", (PREDATA,))
    device, dtype, model = loader_target(graph, node_id, device, dtype)
    duration = _job_duration(graph, predata_id)
    values = {"min_resolution": graph.number(predata_id, "min_resolution"),
              "steps": graph.number(node_id, "steps"),
              "dynamic_scale": graph.number(node_id, "dynamic_scale", default=1.0),
              "motion_scale": graph.number(node_id, "motion_scale", default=1.0)}
    try:
        settings = SonicSettings(**values)
        verdict = price(settings, tier, duration)
    except SonicInputError as exc:
        raise GraphCostError(f"{graph.class_type(graph.prompt[node_id])} node {node_id}: {exc}") from None
    frames = generated_frames(duration)
    try:
        fps = graph.literal(node_id, "fps")
    except GraphCostError:  # a rate only known when the graph runs: priced with RIFE on, the common case
        fps = None
    prediction = predict_or_none(frames, settings.min_resolution, settings.steps, device, dtype, model,
                                 interpolate=fps != GENERATED_FPS)
    return JobCost(node_id=node_id, tokens=verdict.tokens, duration=duration, resolution=settings.min_resolution,
                   steps=settings.steps, dynamic_scale=settings.dynamic_scale, motion_scale=settings.motion_scale,
                   frames=frames, allowed=verdict.allowed,
                   reason=None if verdict.allowed else f"node {node_id}: {verdict.reason}",
                   predicted_seconds=prediction.seconds if prediction else None,
                   predicted_peak_bytes=prediction.peak_bytes if prediction else None,
                   predicted_profile=f"{device}/{dtype}/{model}")


def _text_or(value: Any, default: str) -> str:
    return value if isinstance(value, str) and value and value != "auto" else default


def price_graph(prompt: Mapping[str, Any], *, tier: Tier | str, tiers: Mapping[str, Tier] | None = None,
                audio_duration: AudioDuration, device: str = "cpu", dtype: str = "fp32") -> GraphCost:
    """Price every Sonic Sampler (either kind, ``node_ids.SAMPLERS``) of an API-format prompt and judge the total
    against ``tier``.

    ``device``/``dtype`` are used for the time and memory prediction unless the sampler's model loader names
    them. Raises :class:`GraphCostError` (naming the node) when a cost cannot be known before running.
    """
    chosen = resolve_tier(tier, tiers)
    graph = _Graph(prompt, audio_duration)
    sampler_ids = sorted((str(node_id) for node_id, node in prompt.items()
                          if isinstance(node, Mapping) and node.get("class_type") in SAMPLERS), key=_node_order)
    jobs = tuple(_price_sampler(graph, node_id, chosen, device, dtype) for node_id in sampler_ids)
    total = sum(job.tokens for job in jobs)
    reasons = [job.reason for job in jobs if job.reason]
    cap = chosen.max_tokens_per_job
    if cap is not None and len(jobs) > 1 and total > cap:
        reasons.append(f"the prompt's {total} tokens exceed the tier's cap of {cap} per job")
    seconds = [job.predicted_seconds for job in jobs]
    peaks = [job.predicted_peak_bytes for job in jobs]
    known = bool(jobs) and None not in seconds
    return GraphCost(tier=chosen.name, metered=chosen.metered, jobs=jobs, total_tokens=total,
                     allowed=not reasons, reason="; ".join(reasons) or None,
                     predicted_seconds=sum(seconds) if known else None,
                     predicted_peak_bytes=max(peaks) if known else None)


def _node_order(node_id: str) -> tuple[int, str]:
    """Numeric ids in numeric order (ComfyUI's ids are numbers as strings), others after them."""
    return (int(node_id), "") if node_id.isdigit() else (2**63, node_id)
