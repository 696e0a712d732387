"""The memory planner: how one generation fits a device memory budget without changing a single output value.

Given a budget in bytes (``--memory-budget 8GB``, or the device's free memory), :func:`plan_memory` picks the
fastest plan whose predicted device peak fits, among knobs that are exactly equivalent to running everything at
once (checked bit for bit on the CPU in fp32 by ``tests/engine/test_memory.py`` and ``bench/memory_bench.py``):

* **feed-forward chunks** -- every UNet feed-forward runs its token rows in chunks of at most
  ``feed_forward_chunk`` inner activations (:class:`~sonic_core.models.attention.FeedForward`); each row's
  arithmetic is unchanged. The feed-forwards hold the largest activations of a UNet call (the GEGLU of the first
  level: 4·320 inner channels for every token of the 75 frames of one window);
* **offload** -- the networks idle in a stage wait in host memory (CLIP, whisper, the adapters and the VAE during
  sampling; the UNet during conditioning and decode) and move back when their stage comes;
* **latents on the host** -- the clip's latents, window sums and audio tokens (an hour at 512 px: 45 000 frames,
  ~1.5 GB of fp16 latents per copy and ~3 GB of fp16 audio tokens) stay in host memory, pinned when CUDA is
  available, and each UNet call's windows move to the device and back; whisper's features and the adapters'
  output are kept there too, and the VAE decodes chunk by chunk from there.

What the planner does not change, because it changes results: the guidance slots and windows in one UNet forward
(3 CFG slots times the caller's ``windows_per_call``: GEMMs round differently with the batch's row count) and the
VAE's ``decode_chunk_size`` (a setting: it changes the decoder's temporal mixing). Attention needs no chunking: it
runs as a fused kernel that never holds the score matrix (that is also how it is counted).

The predicted device peak of a stage is the resident weights in their dtype (exact element counts) plus the
resident latents and conditioning plus the largest activation peak of that stage's calls, all from exact tensor
sizes: the per-call live-activation polynomials of ``network_counts.json`` (:mod:`sonic_core.metering.cost`),
float32 counts scaled to the networks' dtype. A UNet call with chunked feed-forwards is its count without the
feed-forwards' inner activations (``unet_ff_streamed``) plus one chunk's (``4 · chunk`` elements: the GEGLU
projection's two halves, the gate's GELU and the product). Pure arithmetic: no torch.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from . import timing
from .errors import SonicInputError
from .metering import cost

BUDGET_FLAG = "--memory-budget"
UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
         "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}
STAGES = ("conditioning", "sampling", "decode")
# the networks each stage runs; with offloading, the others wait in host memory
STAGE_NETWORKS = {"conditioning": ("image_encoder", "whisper", "audio2token", "audio2bucket", "vae"),
                  "sampling": ("unet",), "decode": ("vae", "rife")}
GUIDANCE_SLOTS = cost.CFG_SLOTS
MIN_FEED_FORWARD_ROWS = 256  # models.attention.MIN_FEED_FORWARD_ROWS (this module imports no torch)
GEGLU_LIVE = 4  # inner-width tensors alive in one feed-forward chunk: the projection (2), GELU(gate), the product
FEED_FORWARD_HALVINGS = 12  # chunk candidates: 2^12 ... 1 times the smallest exact chunk
ADAPTER_FRAMES_PER_CALL = 256  # conditioning.ADAPTER_FRAMES_PER_CALL
WHISPER_ROWS_PER_PIECE = 1500
AUDIO_TOKEN_WINDOW = 10  # whisper rows per audio2token window (plus the padding of frame_windows)
BUCKET_WINDOW = 50
RGB, FLOAT32 = 3, 4


def parse_budget(value: str | int, what: str = BUDGET_FLAG) -> int:
    """Bytes of a budget written ``8GB`` (10⁹ bytes each), ``8GiB`` (2³⁰), ``8000MB``, ``512MiB`` or a plain number
    of bytes; anything else is a one-line :class:`SonicInputError` naming ``what``."""
    text = str(value).strip()
    match = re.fullmatch(r"(\d+(?:\.\d*)?|\.\d+)\s*([A-Za-z]*)", text)
    unit = UNITS.get(match.group(2).lower()) if match else None
    try:
        size = int(Decimal(match.group(1)) * unit) if unit else 0
    except InvalidOperation:
        size = 0
    if size < 1:
        raise SonicInputError(f"{what} {text!r} is not a memory size: write it like 8GB, 8GiB, 8000MB or a number "
                              "of bytes")
    return size


def format_bytes(size: int) -> str:
    """``size`` in decimal gigabytes, as budgets are written (``8GB``)."""
    return f"{size / 10**9:.2f} GB"


@dataclass(frozen=True)
class MemoryPlan:
    """How a generation uses the device, and its predicted device peak per stage (bytes).

    ``budget_bytes`` ``None``: no budget (everything resident, nothing chunked). ``fits`` is false when no plan
    meets the budget; ``smallest_budget`` is the peak of the most frugal plan, the smallest budget that works.
    """

    budget_bytes: int | None
    feed_forward_chunk: int | None  # inner activations per feed-forward chunk; None: all rows at once
    offload: bool
    latents_on_host: bool
    guidance_slots: int
    windows_per_call: int
    decode_chunk_size: int
    stage_peaks: dict[str, int]
    fits: bool
    smallest_budget: int

    @property
    def peak_bytes(self) -> int:
        return max(self.stage_peaks.values())

    def knobs(self) -> str:
        """What the plan does, in words."""
        parts = [f"{self.guidance_slots} guidance slots x {self.windows_per_call} window(s) per UNet call",
                 "feed-forwards whole" if self.feed_forward_chunk is None
                 else f"feed-forwards in chunks of {self.feed_forward_chunk / 2**20:g}Mi activations",
                 "idle networks offloaded to the host" if self.offload else "every network resident",
                 "latents and audio tokens in host memory" if self.latents_on_host else "latents on the device",
                 f"VAE decode chunk {self.decode_chunk_size}"]
        return ", ".join(parts)

    def summary(self) -> str:
        """One line: the budget, the plan and the predicted device peak per stage."""
        budget = "no budget" if self.budget_bytes is None else f"budget {format_bytes(self.budget_bytes)}"
        stages = ", ".join(f"{stage} {format_bytes(peak)}" for stage, peak in self.stage_peaks.items())
        return f"{budget}: {self.knobs()}; predicted device peak {format_bytes(self.peak_bytes)} ({stages})"

    def refusal(self) -> str:
        """The one line saying that no plan meets the budget and which budget would."""
        return (f"{BUDGET_FLAG} {format_bytes(self.budget_bytes or 0)} is below the smallest device peak of any plan "
                f"for this job ({format_bytes(self.smallest_budget)}): give {BUDGET_FLAG} "
                f"{math.ceil(self.smallest_budget / 10**7) / 100:.2f}GB or more, or a lower resolution")

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "peak_bytes": self.peak_bytes, "summary": self.summary(),
                "refusal": None if self.fits else self.refusal()}


@dataclass(frozen=True)
class MemoryJob:
    """What the planner needs to know about one generation (frame size in pixels, ``frames`` generated)."""

    frames: int
    width: int
    height: int
    model: str = "sonic"
    dtype: str = "fp16"
    frames_per_window: int = 25
    windows_per_call: int = 1
    decode_chunk_size: int = 8
    interpolate: bool = True

    @classmethod
    def for_duration(cls, seconds: float, resolution: int, **fields: Any) -> MemoryJob:
        """The job of ``seconds`` of audio at a square ``resolution`` (what the estimate and the meter price)."""
        return cls(timing.generated_frames(seconds), resolution, resolution, **fields)


class _Sizes:
    """The exact byte counts of one job the stage peaks add up."""

    def __init__(self, job: MemoryJob) -> None:
        counts = cost.model_counts(job.model)
        self.job, self.counts = job, counts
        self.low = cost.dtype_bytes(job.dtype)
        self.costs = cost.network_costs(job.model, job.height, job.width, job.frames_per_window,
                                        job.decode_chunk_size)
        self.weights = {name: count * (self.low if name in cost.LOW_PRECISION else FLOAT32)
                        for name, count in counts.weights_elements.items()
                        if name != "rife" or job.interpolate}
        down = counts.latent_downscale
        self.latent_frame = counts.latent_channels * (job.height // down) * (job.width // down)
        self.frame_tokens = counts.frame_token_elements
        audio_seconds = job.frames * timing.AUDIO_FRAMES_PER_VIDEO_FRAME / timing.AUDIO_FPS
        self.pieces = max(1, math.ceil(audio_seconds / cost.WHISPER_PIECE_SECONDS))
        self.piece = counts.whisper_piece_elements

    def activation(self, name: str) -> int:
        scale = self.low / FLOAT32 if name in ("unet", "unet_ff_streamed", "vae_decode", "vae_encode",
                                                "image_encoder") else 1
        return int(self.costs[name].activation_bytes * scale)

    def resident(self, stage: str, offload: bool) -> int:
        return sum(size for name, size in self.weights.items() if not offload or name in STAGE_NETWORKS[stage])

    def conditioning(self, on_host: bool) -> int:
        """Whisper's features, the windows cut from them, the audio tokens and buckets (float32) on the device, or,
        on the host, one piece's output and one adapter chunk's inputs and outputs."""
        job = self.job
        adapters = ADAPTER_FRAMES_PER_CALL * self.activation("adapters")  # a chunk's inputs, outputs, scratch
        encoders = max(self.activation(name) for name in ("whisper", "image_encoder", "vae_encode"))
        if on_host:
            return max(encoders + self.piece * FLOAT32, adapters)
        hidden = self.pieces * self.piece * FLOAT32
        row = self.piece // WHISPER_ROWS_PER_PIECE * FLOAT32
        windows = 2 * hidden + (AUDIO_TOKEN_WINDOW + BUCKET_WINDOW) * row  # padded copies of all rows, of the last
        tokens = job.frames * (self.frame_tokens + 2) * FLOAT32
        # the pieces and their concatenation, then the padded windows, the chunks and their concatenation
        return max(encoders + 2 * hidden, hidden + windows + 2 * tokens + adapters)

    def unet_call(self, feed_forward_chunk: int | None) -> int:
        """One UNet call of ``windows_per_call`` windows (a window's peak times the windows: every tensor of a
        call is either per batch row or shared, so this bounds the batched call)."""
        windows = self.job.windows_per_call
        whole = windows * self.activation("unet")
        if feed_forward_chunk is None:
            return whole
        chunk = max(feed_forward_chunk, MIN_FEED_FORWARD_ROWS * self.counts.feed_forward_inner)
        # a chunk as large as a feed-forward's rows runs it whole: never above the unchunked call
        return min(whole, windows * self.activation("unet_ff_streamed") + GEGLU_LIVE * chunk * self.low)

    def sampling(self, on_host: bool) -> int:
        """The latents on the device (latents, window sums, start noise; counts) and the audio tokens in fp32 and
        the UNet dtype; on the host, only a call's window latents and tokens, stepped and guided results and Euler
        scratch."""
        job = self.job
        window_frames = job.windows_per_call * job.frames_per_window
        scratch = window_frames * (self.latent_frame * (3 * self.low + 4 * FLOAT32) + self.frame_tokens * self.low)
        mask = job.width * job.height * self.low
        if on_host:
            return scratch + mask
        latents = job.frames * (self.latent_frame * (2 * self.low + FLOAT32) + self.low)
        tokens = job.frames * self.frame_tokens * (FLOAT32 + (self.low if self.low != FLOAT32 else 0))
        return latents + tokens + scratch + mask

    def decode(self, on_host: bool) -> int:
        """The final latents (unless on the host), the VAE's or RIFE's chunk, and a chunk of frames as the decoder
        gives them, in [0, 1] and interpolated."""
        job = self.job
        latents = 0 if on_host else job.frames * self.latent_frame * self.low
        chunk = job.decode_chunk_size
        rife = chunk * self.activation("rife") if job.interpolate else 0
        frames = 3 * chunk * RGB * job.width * job.height * FLOAT32
        return latents + max(self.activation("vae_decode") + chunk * self.latent_frame * self.low, rife) + frames

    def peaks(self, feed_forward_chunk: int | None, offload: bool, on_host: bool) -> dict[str, int]:
        return {"conditioning": self.resident("conditioning", offload) + self.conditioning(on_host),
                "sampling": self.resident("sampling", offload) + self.sampling(on_host)
                            + self.unet_call(feed_forward_chunk),
                "decode": self.resident("decode", offload) + self.decode(on_host)}


def feed_forward_chunks(inner: int) -> list[int | None]:
    """The feed-forward chunk sizes tried, fastest first: whole, then halving down to the smallest exact chunk."""
    smallest = MIN_FEED_FORWARD_ROWS * inner
    return [None, *(smallest << k for k in range(FEED_FORWARD_HALVINGS, -1, -1))]


def plan_memory(job: MemoryJob, budget: int | None = None) -> MemoryPlan:
    """The fastest plan whose predicted device peak fits ``budget`` bytes (``None``: no budget, nothing changed).

    Plans are tried from the least to the most frugal: whole feed-forwards before smaller chunks, resident networks
    before offloading, latents on the device before host memory. When none fits, the most frugal plan comes back
    with ``fits`` false (see :meth:`MemoryPlan.refusal`).
    """
    sizes = _Sizes(job)

    def plan(chunk: int | None, offload: bool, on_host: bool, fits: bool, smallest: int) -> MemoryPlan:
        return MemoryPlan(budget, chunk, offload, on_host, GUIDANCE_SLOTS, job.windows_per_call,
                          job.decode_chunk_size, sizes.peaks(chunk, offload, on_host), fits, smallest)

    chunks = feed_forward_chunks(sizes.counts.feed_forward_inner)
    frugal = (chunks[-1], True, True)
    smallest = max(sizes.peaks(*frugal).values())
    if budget is None:
        return plan(None, False, False, True, smallest)
    for on_host in (False, True):
        for offload in (False, True):
            for chunk in chunks:
                if max(sizes.peaks(chunk, offload, on_host).values()) <= budget:
                    return plan(chunk, offload, on_host, True, smallest)
    return plan(*frugal, False, smallest)
