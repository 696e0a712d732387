"""Predicted wall-clock seconds and peak memory of one Sonic generation, before it runs.

The model follows the pipeline's real work, stage by stage (the stage names of :class:`GenerationReport`):

    seconds = Σ_stage (calls_stage · per_call_s + work_stage / throughput_stage)
    peak    = base + weights + clip latents + activation_scale · max_network(activation peak of one call)

Pricing is arithmetic on data, nothing else: no torch, no network is built. ``work`` is counted, not guessed: the
FLOPs of one UNet window call, one VAE decode chunk, one RIFE pair, one whisper piece, CLIP and the audio adapters,
and the peak of live activation bytes of each call, were counted on the meta device by ``bench/network_counts.py``
and are shipped in ``network_counts.json`` as exact integer polynomials in the frame size (in 64-pixel tiles) and
the frames per call, with the exact element counts of every network's weights. Throughputs, per-call overheads, the
activation scale and the base memory are coefficients fitted by ``bench/cost_bench.py`` and stored in
``cost_coefficients.json`` (one profile per device / dtype / model, with the machine, torch version, date and fit
residuals). Profiles marked ``"calibrated": false`` come from documented peak throughput times a stated
efficiency, not from measurements.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Mapping

from .. import timing
from ..errors import SonicInputError
from ..finite import is_finite_number, shown
from ..paths import config_file, read_config

COEFFICIENTS_FILE = Path(__file__).with_name("cost_coefficients.json")
COEFFICIENTS_ENV = "SONIC_COST_COEFFICIENTS"
NETWORK_COUNTS_FILE = Path(__file__).with_name("network_counts.json")
NETWORK_COUNTS_COMMAND = "python bench/network_counts.py"
STAGES = ("audio", "face", "conditioning", "sampling", "decode", "interpolate", "encode")
MODELS = ("sonic", "tiny")
NETWORK_CALLS = ("unet", "unet_ff_streamed", "vae_decode", "vae_encode", "rife", "whisper", "image_encoder", "adapters")
WEIGHTS = ("unet", "vae", "image_encoder", "whisper", "audio2token", "audio2bucket", "rife")
BYTES_PER_ELEMENT = {"fp32": 4, "fp16": 2, "bf16": 2}
LOW_PRECISION = ("unet", "vae", "image_encoder")  # run in the pipeline dtype; the rest stay float32 (MODEL.md §2)
TILE_PIXELS = 64  # frame sizes are multiples of 64 px; the counts are polynomials in 64-pixel tiles
CFG_SLOTS = 3
WHISPER_PIECE_SECONDS = 30


@dataclass(frozen=True)
class NetworkCost:
    """FLOPs and peak live activation bytes (float32) of one call of a network."""

    flops: int
    activation_bytes: int


Polynomial = tuple[tuple[int, int, int, int], ...]  # (coefficient, i, j, k): coefficient · m^i · n^j · f^k


def _value(polynomial: Polynomial, m: int, n: int, f: int) -> int:
    return sum(c * m ** i * n ** j * f ** k for c, i, j, k in polynomial)


@dataclass(frozen=True)
class CallCounts:
    """One network call's FLOPs and live-activation totals as polynomials in m = height/64, n = width/64 and
    f = frames per call (the UNet window, the VAE decode chunk); the activation peak is the largest total."""

    flops: Polynomial
    activation_bytes: tuple[Polynomial, ...]

    def at(self, m: int, n: int, f: int) -> NetworkCost:
        return NetworkCost(_value(self.flops, m, n, f), max(_value(p, m, n, f) for p in self.activation_bytes))


@dataclass(frozen=True)
class ModelCounts:
    """The shipped counts of one model: its calls, its weights' element counts, its latent shape, and what the memory
    planner adds to the calls: the widest UNet feed-forward's inner width (one feed-forward chunk's activations
    scale with it), the audio-token elements of one frame and the whisper hidden-state elements of one piece."""

    calls: dict[str, CallCounts]
    weights_elements: dict[str, int]
    latent_channels: int
    latent_downscale: int
    feed_forward_inner: int
    frame_token_elements: int
    whisper_piece_elements: int


def _counts_error(source: str, problem: str) -> SonicInputError:
    return SonicInputError(f"network counts file {source}: {problem}: regenerate it with {NETWORK_COUNTS_COMMAND}")


def _polynomial(source: str, where: str, terms: Any) -> Polynomial:
    if not isinstance(terms, list) or not all(
            isinstance(t, list) and len(t) == 4 and all(isinstance(v, int) and not isinstance(v, bool) for v in t)
            and min(t[1:]) >= 0 for t in terms):
        raise _counts_error(source, f"{where} must be a list of [coefficient, i, j, k] integer terms")
    return tuple(tuple(t) for t in terms)


def _whole(source: str, where: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise _counts_error(source, f"{where} = {value!r} must be a positive integer")
    return value


def parse_network_counts(data: Any, source: str = "network counts") -> dict[str, ModelCounts]:
    """Validate a parsed counts file; every problem is a one-line :class:`SonicInputError`."""
    models = data.get("models") if isinstance(data, Mapping) else None
    if not isinstance(models, Mapping) or any(not isinstance(models.get(m), Mapping) for m in MODELS):
        raise _counts_error(source, f"'models' must hold {', '.join(MODELS)}")
    parsed = {}
    for model in MODELS:
        body = models[model]
        calls = body.get("calls")
        weights = body.get("weights_elements")
        if not isinstance(calls, Mapping) or any(not isinstance(calls.get(c), Mapping) for c in NETWORK_CALLS):
            raise _counts_error(source, f"{model}.calls must hold {', '.join(NETWORK_CALLS)}")
        if not isinstance(weights, Mapping) or set(weights) != set(WEIGHTS):
            raise _counts_error(source, f"{model}.weights_elements must hold exactly {', '.join(WEIGHTS)}")
        counts = {}
        for name in NETWORK_CALLS:
            peaks = calls[name].get("activation_bytes")
            if not isinstance(peaks, list) or not peaks:
                raise _counts_error(source, f"{model}.calls.{name}.activation_bytes must be a non-empty list")
            counts[name] = CallCounts(
                _polynomial(source, f"{model}.calls.{name}.flops", calls[name].get("flops")),
                tuple(_polynomial(source, f"{model}.calls.{name}.activation_bytes", p) for p in peaks))
        parsed[model] = ModelCounts(
            counts, {name: _whole(source, f"{model}.weights_elements.{name}", weights[name]) for name in WEIGHTS},
            _whole(source, f"{model}.latent_channels", body.get("latent_channels")),
            _whole(source, f"{model}.latent_downscale", body.get("latent_downscale")),
            *(_whole(source, f"{model}.{name}", body.get(name))
              for name in ("feed_forward_inner", "frame_token_elements", "whisper_piece_elements")))
    return parsed


def load_network_counts(path: str | os.PathLike = NETWORK_COUNTS_FILE) -> dict[str, ModelCounts]:
    """The counts of every model from ``path`` (default: the shipped ``network_counts.json``)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise _counts_error(str(path), "it does not exist") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise _counts_error(str(path), f"it is not valid JSON ({exc})") from None
    return parse_network_counts(data, str(path))


@lru_cache(maxsize=1)
def _shipped_counts() -> dict[str, ModelCounts]:
    return load_network_counts()


def _check_model(model: str) -> str:
    if model not in MODELS:
        raise SonicInputError(f"model={model!r} is not known to the cost model: use one of {', '.join(MODELS)}")
    return model


def model_counts(model: str = "sonic") -> ModelCounts:
    """The shipped counts of ``model``."""
    return _shipped_counts()[_check_model(model)]


def dtype_bytes(dtype: str) -> int:
    """Bytes per element of ``dtype`` (``fp32``, ``fp16``, ``bf16``)."""
    return BYTES_PER_ELEMENT[_check_dtype(dtype)]


def weights_bytes(model: str = "sonic", dtype: str = "fp16") -> int:
    """Exact bytes of every network's state dict (the checkpoints' tensors): UNet, VAE and CLIP in ``dtype``, the
    rest in float32."""
    low = BYTES_PER_ELEMENT[_check_dtype(dtype)]
    elements = _shipped_counts()[_check_model(model)].weights_elements
    return sum((low if name in LOW_PRECISION else 4) * count for name, count in elements.items())


def _tiles(name: str, pixels: int) -> int:
    if isinstance(pixels, bool) or not isinstance(pixels, int) or pixels <= 0 or pixels % TILE_PIXELS:
        raise SonicInputError(f"{name}={pixels!r} must be a positive multiple of {TILE_PIXELS} (the pipeline's "
                              "frame sizes)")
    return pixels // TILE_PIXELS


def network_costs(model: str, height: int, width: int, frames_per_window: int = 25,
                  decode_chunk_size: int = 8) -> dict[str, NetworkCost]:
    """Cost of one call of each network for ``height × width`` frames: ``unet`` (one window, CFG batch of 3; and
    ``unet_ff_streamed``, the same call without the feed-forwards' inner activations), ``vae_decode`` (one chunk), ``vae_encode`` (the reference), ``rife`` (one pair), ``whisper`` (one 30 s piece),
    ``image_encoder`` (one image) and ``adapters`` (audio2token + audio2bucket of one frame)."""
    calls = _shipped_counts()[_check_model(model)].calls
    m, n = _tiles("height", height), _tiles("width", width)
    frames = {"unet": frames_per_window, "unet_ff_streamed": frames_per_window, "vae_decode": decode_chunk_size}
    return {name: counts.at(m, n, frames.get(name, 1)) for name, counts in calls.items()}


@dataclass(frozen=True)
class StageWork:
    """``calls`` of a stage and its ``work`` (FLOPs, or encoded pixels for ``encode``, audio seconds for ``audio``)."""

    calls: int
    work: float


@dataclass(frozen=True)
class Workload:
    """Everything one generation does, counted from the pipeline's structure; independent of the machine."""

    model: str
    frames: int
    width: int
    height: int
    steps: int
    unet_calls: int
    stages: dict[str, StageWork]
    weights_bytes: int
    latent_bytes: int
    activation_bytes: int  # the largest single-call activation peak over the networks, in the pipeline dtype


def frame_size(resolution: int, width: int | None = None, height: int | None = None) -> tuple[int, int]:
    """(width, height) of the generated frames: both given, else a square of ``resolution`` (a square portrait)."""
    if (width is None) != (height is None):
        raise SonicInputError("give both width and height, or neither (a square frame of the resolution)")
    width, height = (width, height) if width is not None else (resolution, resolution)
    for name, value in (("resolution", resolution), ("width", width), ("height", height)):
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0 or value % 64:
            raise SonicInputError(f"{name}={value!r} must be a positive multiple of 64 (the pipeline's frame sizes)")
    return width, height


def _check_dtype(dtype: str) -> str:
    if dtype not in BYTES_PER_ELEMENT:
        raise SonicInputError(f"dtype={dtype!r} is not known to the cost model: use one of "
                              f"{', '.join(BYTES_PER_ELEMENT)}")
    return dtype


def workload(frames: int, resolution: int, steps: int, *, width: int | None = None, height: int | None = None,
             model: str = "sonic", dtype: str = "fp16", frames_per_window: int = 25, overlap: int = 0,
             decode_chunk_size: int = 8, interpolate: bool = True) -> Workload:
    """The work of generating ``frames`` frames (12.5 fps) at ``resolution`` (short side) with ``steps`` steps."""
    for name, value in (("frames", frames), ("steps", steps), ("frames_per_window", frames_per_window),
                        ("decode_chunk_size", decode_chunk_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise SonicInputError(f"{name}={value!r} must be a whole number of at least 1")
    if isinstance(overlap, bool) or not isinstance(overlap, int) or not 0 <= overlap < frames_per_window:
        raise SonicInputError(f"overlap={overlap!r} must be a whole number from 0 to frames_per_window - 1 "
                              f"({frames_per_window - 1})")
    width, height = frame_size(resolution, width, height)
    low = BYTES_PER_ELEMENT[_check_dtype(dtype)]
    counts = _shipped_counts()[_check_model(model)]
    costs = network_costs(model, height, width, frames_per_window, decode_chunk_size)
    windows = math.ceil(frames / (frames_per_window - overlap))
    unet_calls = steps * windows
    audio_seconds = frames * timing.AUDIO_FRAMES_PER_VIDEO_FRAME / timing.AUDIO_FPS
    pieces = max(1, math.ceil(audio_seconds / WHISPER_PIECE_SECONDS))
    chunks = math.ceil(frames / decode_chunk_size)
    pairs = frames - 1 if interpolate else 0
    out_frames = frames + pairs
    conditioning = (costs["image_encoder"].flops + pieces * costs["whisper"].flops
                    + frames * costs["adapters"].flops + costs["vae_encode"].flops)
    stages = {
        "audio": StageWork(1, audio_seconds),
        "face": StageWork(1, 0.0),
        "conditioning": StageWork(pieces + 2, float(conditioning)),
        "sampling": StageWork(unet_calls, float(unet_calls * costs["unet"].flops)),
        "decode": StageWork(chunks, float(costs["vae_decode"].flops * frames / decode_chunk_size)),
        "interpolate": StageWork(math.ceil(pairs / decode_chunk_size), float(pairs * costs["rife"].flops)),
        "encode": StageWork(1, float(out_frames * width * height)),
    }
    down = counts.latent_downscale
    latent_elements = frames * counts.latent_channels * (height // down) * (width // down)
    latent_bytes = latent_elements * (3 * low + 4)  # latents, the window sums, the float32 start noise
    scale = {name: low / 4 for name in ("unet", "unet_ff_streamed", "vae_decode", "vae_encode", "image_encoder")}
    activation = max(int(cost.activation_bytes * scale.get(name, 1.0)) for name, cost in costs.items())
    if interpolate:
        activation = max(activation, decode_chunk_size * costs["rife"].activation_bytes)
    return Workload(model, frames, width, height, steps, unet_calls, stages, weights_bytes(model, dtype),
                    latent_bytes, activation)


@dataclass(frozen=True)
class StageCoefficients:
    """Seconds of one stage = ``calls · per_call_s + work / throughput`` (a throughput of 0 means no work term)."""

    per_call_s: float
    throughput: float

    def seconds(self, stage: StageWork) -> float:
        work = stage.work / self.throughput if self.throughput else 0.0
        return stage.calls * self.per_call_s + work


@dataclass(frozen=True)
class Profile:
    """Coefficients of one (device, dtype, model)."""

    key: str
    calibrated: bool
    stages: dict[str, StageCoefficients]
    base_bytes: int
    activation_scale: float
    info: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class CostCoefficients:
    """Every profile of the coefficients file, and the device names that stand for others (``cuda`` -> a GPU)."""

    profiles: dict[str, Profile]
    aliases: dict[str, str]
    source: str

    def profile(self, device: str, dtype: str, model: str) -> Profile:
        name = device.lower()
        name = self.aliases.get(name, name)
        key = f"{name}/{dtype}/{model}"
        if key not in self.profiles:
            raise SonicInputError(f"no cost profile for device={device!r} dtype={dtype!r} model={model!r} in "
                                  f"{self.source}; known: {', '.join(sorted(self.profiles))} "
                                  f"(run bench/cost_bench.py on that machine to add one)")
        return self.profiles[key]


def _number(where: str, value: Any, minimum: float = 0.0) -> float:
    if not is_finite_number(value) or value < minimum:
        raise SonicInputError(f"{where} = {shown(value)} must be a finite number >= {minimum}: "
                              "fix the coefficients file")
    return float(value)


def parse_coefficients(data: Mapping[str, Any], source: str = "coefficients") -> CostCoefficients:
    """Validate a parsed coefficients file; every problem is a one-line :class:`SonicInputError`."""
    profiles_data = data.get("profiles")
    if not isinstance(profiles_data, Mapping) or not profiles_data:
        raise SonicInputError(f"{source}: 'profiles' must be a non-empty table of device/dtype/model profiles")
    profiles = {}
    for key, body in profiles_data.items():
        parts = key.split("/")
        if len(parts) != 3 or parts[1] not in BYTES_PER_ELEMENT or parts[2] not in MODELS:
            raise SonicInputError(f"{source}: profile {key!r} must be named DEVICE/DTYPE/MODEL "
                                  f"(dtype in {sorted(BYTES_PER_ELEMENT)}, model in {list(MODELS)})")
        stages_data = body.get("stages", {})
        missing = [s for s in STAGES if s not in stages_data]
        if missing:
            raise SonicInputError(f"{source}: profile {key!r} lacks stages {missing}")
        stages = {s: StageCoefficients(_number(f"{key}.{s}.per_call_s", stages_data[s].get("per_call_s")),
                                       _number(f"{key}.{s}.throughput", stages_data[s].get("throughput")))
                  for s in STAGES}
        memory = body.get("memory", {})
        if not isinstance(body.get("calibrated"), bool):
            raise SonicInputError(f"{source}: profile {key!r} must say \"calibrated\": true or false")
        profiles[key] = Profile(key, body["calibrated"], stages,
                                int(_number(f"{key}.memory.base_bytes", memory.get("base_bytes"))),
                                _number(f"{key}.memory.activation_scale", memory.get("activation_scale")),
                                {k: v for k, v in body.items() if k not in ("stages", "memory", "calibrated")})
    aliases = dict(data.get("aliases", {}))
    for alias, target in aliases.items():
        if not any(key.startswith(f"{target}/") for key in profiles):
            raise SonicInputError(f"{source}: alias {alias!r} -> {target!r} names no profile's device")
    return CostCoefficients(profiles, aliases, source)


def load_coefficients(path: str | os.PathLike | None = None) -> CostCoefficients:
    """Coefficients from ``path``, else ``$SONIC_COST_COEFFICIENTS``, else the bundled file."""
    chosen = config_file(path, COEFFICIENTS_ENV, COEFFICIENTS_FILE)
    return parse_coefficients(read_config(chosen, "cost coefficients file", "json", "pass an existing JSON file"),
                              str(chosen))


@lru_cache(maxsize=4)
def _cached_coefficients(path: str) -> CostCoefficients:
    return load_coefficients(path)


@dataclass(frozen=True)
class Prediction:
    """Predicted wall-clock ``seconds`` and ``peak_bytes`` of one job (host RSS on the CPU, allocated memory on a
    GPU), the seconds per stage, and whether the profile was calibrated from measurements."""

    seconds: float
    peak_bytes: int
    stages: dict[str, float]
    profile: str
    calibrated: bool


def predict_workload(load: Workload, profile: Profile) -> Prediction:
    """Seconds and peak memory of a counted workload under one profile's coefficients."""
    stages = {name: profile.stages[name].seconds(work) for name, work in load.stages.items()}
    peak = (profile.base_bytes + load.weights_bytes + load.latent_bytes
            + profile.activation_scale * load.activation_bytes)
    return Prediction(sum(stages.values()), int(peak), stages, profile.key, profile.calibrated)


GPU_PROFILES = (("H100", "h100"), ("H200", "h100"), ("A100", "a100"), ("L4", "l4"), ("A10", "a10g"))
GIB = 1024 ** 3


def gpu_profile(name: str) -> str:
    """The cost profile of a GPU from its name (``torch.cuda.get_device_name``); an unknown GPU is priced as
    ``cuda``, an A10G-class card. The H200 shares the H100's compute, so its profile is the H100's."""
    upper = name.upper()
    return next((profile for marker, profile in GPU_PROFILES if marker in upper), "cuda")


@dataclass(frozen=True)
class GpuClass:
    """A GPU the cost model has a profile for, by the properties an unknown card is compared on."""

    profile: str
    label: str
    compute: tuple[int, int]  # CUDA compute capability (major, minor)
    sms: int  # streaming multiprocessors


GPU_CLASSES = (GpuClass("h100", "H100", (9, 0), 132), GpuClass("a100", "A100", (8, 0), 108),
               GpuClass("a10g", "A10G", (8, 6), 80), GpuClass("l4", "L4", (8, 9), 58))
DEFAULT_GPU_CLASS = GPU_CLASSES[2]  # what ``cuda`` stands for in the coefficients file


@dataclass(frozen=True)
class GpuProperties:
    """What ``torch.cuda.get_device_properties`` says about a card (memory in bytes)."""

    name: str
    total_memory: int
    multi_processor_count: int
    major: int
    minor: int


@dataclass(frozen=True)
class DevicePricing:
    """The profile a device is priced with and one line saying how it was chosen (shown on the Token Meter)."""

    profile: str
    note: str


def gpu_class_from_properties(gpu: GpuProperties) -> GpuClass:
    """The profiled GPU closest to an unknown card: same architecture generation (compute capability major),
    then the nearest SM count (by ratio); a newer generation than Hopper is H100-class, an older one A10G-class."""
    if gpu.major > GPU_CLASSES[0].compute[0]:
        return GPU_CLASSES[0]
    same_generation = [known for known in GPU_CLASSES if known.compute[0] == gpu.major]
    if not same_generation:
        return DEFAULT_GPU_CLASS
    sms = max(gpu.multi_processor_count, 1)
    return min(same_generation, key=lambda known: abs(math.log(sms / known.sms)))


def gpu_pricing(gpu: GpuProperties) -> DevicePricing:
    """Price a GPU by its name when the cost model knows it, else from its properties, and say which."""
    facts = (f"compute {gpu.major}.{gpu.minor}, {gpu.multi_processor_count} SMs, "
             f"{gpu.total_memory / GIB:.0f} GiB")
    by_name = gpu_profile(gpu.name)
    if by_name != "cuda":
        return DevicePricing(by_name, f"{gpu.name} ({facts}): its own {by_name} profile")
    chosen = gpu_class_from_properties(gpu)
    return DevicePricing(chosen.profile, f"{gpu.name} is not in the cost model: priced as {chosen.label}-class "
                                         f"from its properties ({facts})")


def predict(frames: int, resolution: int, steps: int, device: str = "cuda", dtype: str = "fp16", *,
            width: int | None = None, height: int | None = None, model: str = "sonic", interpolate: bool = True,
            coefficients: CostCoefficients | None = None) -> Prediction:
    """Predicted seconds and peak memory of generating ``frames`` frames at ``resolution`` with ``steps`` steps.

    ``device`` is ``cpu``, ``cuda`` (an A10G-class GPU unless the coefficients file says otherwise) or a named GPU
    profile (``a10g``, ``l4``, ``a100``, ``h100``). Raises :class:`SonicInputError` for bad numbers or a device,
    dtype and model with no profile.
    """
    coefficients = coefficients or _cached_coefficients(str(config_file(None, COEFFICIENTS_ENV, COEFFICIENTS_FILE)))
    profile = coefficients.profile(device, _check_dtype(dtype), _check_model(model))
    load = workload(frames, resolution, steps, width=width, height=height, model=model, dtype=dtype,
                    interpolate=interpolate)
    return predict_workload(load, profile)
