"""Predicted wall-clock seconds and peak memory of one Sonic generation, before it runs.

The model follows the pipeline's real work, stage by stage (the stage names of :class:`GenerationReport`):

    seconds = Σ_stage (calls_stage · per_call_s + work_stage / throughput_stage)
    peak    = base + weights + clip latents + activation_scale · max_network(activation peak of one call)

``work`` is counted, not guessed: the FLOPs of one UNet window call, one VAE decode chunk, one RIFE pair, one
whisper piece, CLIP and the audio adapters come from :class:`torch.utils.flop_counter.FlopCounterMode` on the
*meta* device (no memory, no arithmetic), and the same pass records the peak of live activation bytes. Counts are
cached per (model, frame size). Weights bytes are exact (parameter counts of the config-built networks, whose
keys are the published checkpoints'). Throughputs, per-call overheads, the activation scale and the base memory
are coefficients fitted by ``bench/cost_bench.py`` and stored as data in ``cost_coefficients.json`` (one profile
per device / dtype / model, with the machine, torch version, date and fit residuals). Profiles marked
``"calibrated": false`` come from documented peak throughput times a stated efficiency, not from measurements.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import weakref
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves
from torch.utils.flop_counter import FlopCounterMode

from .. import timing
from ..errors import SonicInputError

COEFFICIENTS_FILE = Path(__file__).with_name("cost_coefficients.json")
COEFFICIENTS_ENV = "SONIC_COST_COEFFICIENTS"
COUNTS_CACHE_ENV = "SONIC_COST_CACHE"
DEFAULT_COUNTS_CACHE = "~/.cache/sonic/cost_counts.json"
STAGES = ("audio", "face", "conditioning", "sampling", "decode", "interpolate", "encode")
MODELS = ("sonic", "tiny")
BYTES_PER_ELEMENT = {"fp32": 4, "fp16": 2, "bf16": 2}
LOW_PRECISION = ("unet", "vae", "image_encoder")  # run in the pipeline dtype; the rest stay float32 (SPEC §2)
CFG_SLOTS = 3
WHISPER_PIECE_SECONDS = 30


@dataclass(frozen=True)
class NetworkCost:
    """FLOPs and peak live activation bytes (float32) of one call of a network, counted on the meta device."""

    flops: int
    activation_bytes: int


class _LiveBytes(TorchDispatchMode):
    """Tracks the bytes of tensors allocated under it that are still alive, and their peak.

    Every freshly allocated output gets a token whose finalizer subtracts its bytes; an output that aliases an input
    (a view, an in-place op) shares the input's token, so storage stays counted while any view of it lives.
    """

    def __init__(self) -> None:
        super().__init__()
        self.live = 0
        self.peak = 0

    def _release(self, nbytes: int) -> None:
        self.live -= nbytes

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        aliases = any(r.alias_info is not None for r in func._schema.returns)
        source = next((a for a in tree_leaves(args) if isinstance(a, torch.Tensor) and hasattr(a, "_sonic_live")),
                      None)
        for tensor in tree_leaves(out):
            if not isinstance(tensor, torch.Tensor) or hasattr(tensor, "_sonic_live"):
                continue
            if aliases:
                if source is not None:
                    tensor._sonic_live = source._sonic_live
                continue
            token = _Token()
            nbytes = tensor.untyped_storage().nbytes()
            weakref.finalize(token, self._release, nbytes)
            tensor._sonic_live = token
            self.live += nbytes
            self.peak = max(self.peak, self.live)
        return out


class _Token:
    """An object whose lifetime is that of one allocation (shared by the tensors that view it)."""


def count_cost(run: Callable[[], Any]) -> NetworkCost:
    """FLOPs and peak live bytes of ``run()`` (which must build its inputs on the meta device inside).

    On the meta device ``scaled_dot_product_attention`` would run its math fallback and materialise the attention
    matrix, which the fused kernels used on CPU and GPU never do. While counting, it is replaced by a shape-only
    stand-in that allocates what a fused kernel keeps (the output and one log-sum-exp per query) and adds the
    fused kernel's FLOPs: ``2·L_q·L_k·(d_qk + d_v)`` per batch and head.
    """
    counter, live = FlopCounterMode(display=False), _LiveBytes()
    attention_flops = [0]
    real_attention = F.scaled_dot_product_attention

    def fused_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        batch = math.prod(q.shape[:-2])
        attention_flops[0] += 2 * batch * q.shape[-2] * k.shape[-2] * (q.shape[-1] + v.shape[-1])
        q.new_empty(q.shape[:-1])  # the log-sum-exp, freed at once (the kernel's scratch)
        return q.new_empty((*q.shape[:-1], v.shape[-1]))

    F.scaled_dot_product_attention = fused_attention
    try:
        with torch.no_grad(), counter, live:
            run()
    finally:
        F.scaled_dot_product_attention = real_attention
    return NetworkCost(int(counter.get_total_flops()) + attention_flops[0], int(live.peak))


@lru_cache(maxsize=2)
def _meta_networks(model: str) -> dict[str, torch.nn.Module]:
    """Every network of ``model`` built on the meta device (float32), keyed as :class:`SonicModels` fields."""
    from ..models.audio_adapters import Audio2BucketModel, AudioProjModel
    from ..models.clip_vision import CLIPVisionConfig, CLIPVisionModelWithProjection
    from ..models.rife import IFNet
    from ..models.unet import SonicUNet
    from ..models.vae import TemporalVAE
    from ..models.whisper import WhisperEncoder, WhisperEncoderConfig

    with torch.device("meta"):
        if model == "sonic":
            nets = {"unet": SonicUNet.svd(), "vae": TemporalVAE(),
                    "image_encoder": CLIPVisionModelWithProjection(CLIPVisionConfig.vit_h14()),
                    "whisper": WhisperEncoder(WhisperEncoderConfig.tiny()),
                    "audio2token": AudioProjModel(), "audio2bucket": Audio2BucketModel()}
        else:
            from ..weights import tiny
            nets = {"unet": tiny.tiny_unet(), "vae": TemporalVAE(tiny.TINY_VAE),
                    "image_encoder": CLIPVisionModelWithProjection(CLIPVisionConfig.from_dict(tiny.TINY_CLIP)),
                    "whisper": WhisperEncoder(WhisperEncoderConfig.from_dict(tiny.TINY_WHISPER)),
                    "audio2token": AudioProjModel(**tiny.TINY_AUDIO2TOKEN),
                    "audio2bucket": Audio2BucketModel(**tiny.TINY_AUDIO2BUCKET)}
        nets["rife"] = IFNet()  # the same network for both: the real RIFE weights are small
    return {name: net.eval() for name, net in nets.items()}


def _check_model(model: str) -> str:
    if model not in MODELS:
        raise SonicInputError(f"model={model!r} is not known to the cost model: use one of {', '.join(MODELS)}")
    return model


def weights_bytes(model: str = "sonic", dtype: str = "fp16") -> int:
    """Exact bytes of every network's state dict (the checkpoints' tensors): UNet, VAE and CLIP in ``dtype``, the
    rest in float32."""
    low = BYTES_PER_ELEMENT[_check_dtype(dtype)]
    total = 0
    for name, net in _meta_networks(_check_model(model)).items():
        per = low if name in LOW_PRECISION else 4
        total += per * sum(t.numel() for t in net.state_dict().values())
    return total


def _code_fingerprint() -> str:
    """Digest of everything that shapes the counts (network code, configs, the tiny configs, torch's version)."""
    digest = hashlib.sha256(torch.__version__.encode())
    package = Path(__file__).resolve().parents[1]
    for path in sorted([*package.glob("models/*.py"), *package.glob("configs/*.json"), package / "weights" / "tiny.py",
                        Path(__file__).resolve()]):
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def _counts_cache_file() -> Path:
    return Path(os.environ.get(COUNTS_CACHE_ENV) or DEFAULT_COUNTS_CACHE).expanduser()


@lru_cache(maxsize=64)
def network_costs(model: str, height: int, width: int, frames_per_window: int = 25,
                  decode_chunk_size: int = 8) -> dict[str, NetworkCost]:
    """Cost of one call of each network for ``height × width`` frames: ``unet`` (one window, CFG batch of 3),
    ``vae_decode`` (one chunk), ``vae_encode`` (the reference), ``rife`` (one pair), ``whisper`` (one 30 s piece),
    ``image_encoder`` (one image) and ``adapters`` (audio2token + audio2bucket of one frame).

    Counting the full-size networks takes seconds, so counts are also kept in a JSON file
    (``$SONIC_COST_CACHE``, default ``~/.cache/sonic/cost_counts.json``) keyed by a digest of the network code.
    """
    key = f"{_code_fingerprint()}:{model}:{height}x{width}:{frames_per_window}:{decode_chunk_size}"
    cache_file = _counts_cache_file()
    try:
        cached = json.loads(cache_file.read_text()).get(key)
    except (OSError, ValueError, AttributeError):
        cached = None
    if isinstance(cached, dict):
        return {name: NetworkCost(int(v[0]), int(v[1])) for name, v in cached.items()}
    costs = _count_network_costs(_check_model(model), height, width, frames_per_window, decode_chunk_size)
    try:
        try:
            table = json.loads(cache_file.read_text())
        except (OSError, ValueError):
            table = {}
        table = table if isinstance(table, dict) else {}
        table[key] = {name: [c.flops, c.activation_bytes] for name, c in costs.items()}
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        scratch = cache_file.with_name(f"{cache_file.name}.{os.getpid()}.tmp")
        scratch.write_text(json.dumps(table))
        scratch.replace(cache_file)
    except OSError:
        pass  # a read-only home only costs the recount next time
    return costs


def _count_network_costs(model: str, height: int, width: int, frames_per_window: int,
                         decode_chunk_size: int) -> dict[str, NetworkCost]:
    nets = _meta_networks(model)
    unet, vae, clip = nets["unet"], nets["vae"], nets["image_encoder"]
    down = vae.config.downscale
    h, w, c = height // down, width // down, vae.config.latent_channels
    token, bucket = nets["audio2token"], nets["audio2bucket"]
    whisper = nets["whisper"].config
    token_window = (token.proj1.in_features // (whisper.encoder_layers + 1) // whisper.d_model,
                    whisper.encoder_layers + 1, whisper.d_model)
    clip_dim = clip.config.projection_dim
    bucket_window = ((bucket.proj1.in_features - clip_dim) // whisper.d_model, 1, whisper.d_model)
    f, b = frames_per_window, CFG_SLOTS

    def meta(*shape: int) -> torch.Tensor:
        return torch.empty(shape, device="meta")

    runs = {
        "unet": lambda: unet(meta(b, f, unet.conv_in.in_channels, h, w), meta(), meta(b * f, 1, clip_dim),
                             meta(b * f, token.context_tokens, token.output_dim), meta(b, 3),
                             meta(1, 1, height, width)),
        "vae_decode": lambda: vae.decode(meta(decode_chunk_size, c, h, w), decode_chunk_size),
        "vae_encode": lambda: vae.encode_mode(meta(1, 3, height, width)),
        "rife": lambda: nets["rife"].midpoint(meta(1, 3, height, width), meta(1, 3, height, width)),
        "whisper": lambda: nets["whisper"](meta(1, whisper.num_mel_bins, 2 * whisper.max_source_positions)),
        "image_encoder": lambda: clip(meta(1, 3, clip.config.image_size, clip.config.image_size)),
        "adapters": lambda: (token(meta(1, 1, *token_window)), bucket(meta(1, 1, *bucket_window), meta(1, clip_dim))),
    }
    return {name: count_cost(run) for name, run in runs.items()}


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
    for name, value in (("frames", frames), ("steps", steps)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise SonicInputError(f"{name}={value!r} must be a whole number of at least 1")
    width, height = frame_size(resolution, width, height)
    low = BYTES_PER_ELEMENT[_check_dtype(dtype)]
    costs = network_costs(_check_model(model), height, width, frames_per_window, decode_chunk_size)
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
    nets = _meta_networks(model)
    down = nets["vae"].config.downscale
    latent_elements = frames * nets["vae"].config.latent_channels * (height // down) * (width // down)
    latent_bytes = latent_elements * (3 * low + 4)  # latents, the window sums, the float32 start noise
    scale = {"unet": low / 4, "vae_decode": low / 4, "vae_encode": low / 4, "image_encoder": low / 4}
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
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < minimum:
        raise SonicInputError(f"{where} = {value!r} must be a finite number >= {minimum}: fix the coefficients file")
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
    chosen = Path(path or os.environ.get(COEFFICIENTS_ENV) or COEFFICIENTS_FILE)
    try:
        data = json.loads(chosen.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SonicInputError(f"cost coefficients file {chosen} does not exist: pass an existing JSON file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SonicInputError(f"cost coefficients file {chosen} is not valid JSON ({exc}): fix the file") from None
    return parse_coefficients(data, str(chosen))


@lru_cache(maxsize=4)
def _default_coefficients(path: str) -> CostCoefficients:
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


def predict(frames: int, resolution: int, steps: int, device: str = "cuda", dtype: str = "fp16", *,
            width: int | None = None, height: int | None = None, model: str = "sonic", interpolate: bool = True,
            coefficients: CostCoefficients | None = None) -> Prediction:
    """Predicted seconds and peak memory of generating ``frames`` frames at ``resolution`` with ``steps`` steps.

    ``device`` is ``cpu``, ``cuda`` (an A10G-class GPU unless the coefficients file says otherwise) or a named GPU
    profile (``a10g``, ``l4``, ``a100``, ``h100``). Raises :class:`SonicInputError` for bad numbers or a device,
    dtype and model with no profile.
    """
    coefficients = coefficients or _default_coefficients(os.environ.get(COEFFICIENTS_ENV) or str(COEFFICIENTS_FILE))
    profile = coefficients.profile(device, _check_dtype(dtype), _check_model(model))
    load = workload(frames, resolution, steps, width=width, height=height, model=model, dtype=dtype,
                    interpolate=interpolate)
    return predict_workload(load, profile)
