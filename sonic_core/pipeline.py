"""SonicPipeline: portrait + speech -> lip-synced frames, streamed into an MP4 with flat host memory.

Stages (each a method, so the ComfyUI nodes and the golden tests can call them one by one):
``encode_audio`` (whisper features -> per-frame tokens and motion buckets), ``encode_image`` (CLIP embedding,
reference latents), ``sample`` (sliding-window 3-way-guided Euler sampling, :mod:`sonic_core.denoise`) and
``decode`` (chunked temporal VAE decode). :meth:`SonicPipeline.generate` runs them all: the latents of the whole
clip stay in memory, decoded frames never do; they go chunk by chunk through RIFE into the video encoder.
"""

from __future__ import annotations

import os
import resource
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from . import conditioning, sampling, timing
from .conditioning import AudioConditioning, ImageConditioning
from .sampling import ProgressCallback, SamplerOptions, StopCheck, sample_latents
from .errors import SonicInterrupted
from .models.bundle import SonicModels
from .device import parse_dtype
from .settings import SonicSettings

if TYPE_CHECKING:
    from .post.chain import PostOptions


def draw_noise(seed: int, image_shape: tuple[int, ...],
               latent_shape: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """The two random draws of a generation, in the official order, from a CPU generator seeded with ``seed``:
    pixel noise for the conditioning image, then the start noise of the latents (float32, on the CPU)."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(image_shape, generator=generator), torch.randn(latent_shape, generator=generator)


def to_unit_range(decoded: torch.Tensor) -> torch.Tensor:
    """VAE output in about [-1, 1] -> float32 frames in [0, 1]."""
    return (decoded.float() * 0.5 + 0.5).clamp(0, 1)


def peak_host_mb() -> float:
    """Peak resident memory of this process in MiB.

    Linux's ``VmHWM`` where available: ``ru_maxrss`` carries the parent's peak over fork+exec, so a small job
    started from a big process (a test runner, a ComfyUI worker) would report the parent's figure.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux, bytes on macOS


@dataclass
class GenerationReport:
    """What :meth:`SonicPipeline.generate` did: frame counts, size, rate, seconds per stage, peak memory."""

    output: str
    frames_generated: int
    frames_written: int
    width: int
    height: int
    fps: float
    audio_seconds: float
    face_box: tuple[float, float, float, float]  # (x1, y1, width, height) in the original portrait
    expand_ratio: float
    seconds: dict[str, float] = field(default_factory=dict)
    peak_host_mb: float = 0.0
    peak_device_mb: float | None = None
    post: dict[str, Any] = field(default_factory=dict)  # what post-processing measured and applied

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class GenerationInputs:
    """A generation's preprocessed inputs: 16 kHz mono ``samples``, their log-mel ``mel`` ``[K, n_mels, 3000]``,
    the prepared portrait (:class:`sonic_core.face.Reference`), the audio to mux (a path or ``(samples, rate)``)
    and the seconds spent preparing them."""

    samples: np.ndarray
    mel: torch.Tensor
    reference: Any
    mux_audio: Any
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def audio_len(self) -> int:
        return timing.audio_frames(len(self.samples))

    @property
    def num_frames(self) -> int:
        return conditioning.generated_frame_count(self.audio_len, timing.AUDIO_FRAMES_PER_VIDEO_FRAME)


class _StageClock:
    """Seconds spent per named stage (stages may be entered repeatedly, e.g. once per streamed chunk)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def add(self, stage: str, since: float) -> float:
        now = time.perf_counter()
        self.seconds[stage] = self.seconds.get(stage, 0.0) + now - since
        return now


class SonicPipeline:
    """The Sonic networks on one device. UNet, VAE and CLIP run in ``dtype``; whisper, the adapters and RIFE in
    float32. ``schedule`` defaults to SVD-xt's."""

    def __init__(self, models: SonicModels, device: str | torch.device = "cpu",
                 dtype: str | torch.dtype = torch.float32, schedule: sampling.Schedule | None = None) -> None:
        self.device, self.dtype = torch.device(device), parse_dtype(dtype)
        self.models = models.to(self.device, self.dtype)
        self.schedule = schedule or sampling.Schedule.svd()

    @torch.no_grad()
    def encode_clip(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """CLIP image embeds ``[1, P]`` (in ``dtype``) of preprocessed pixels ``[3, S, S]``; computed once per run
        and shared by audio2bucket and the UNet (SPEC §10.2)."""
        return self.models.image_encoder(pixel_values.reshape(1, *pixel_values.shape[-3:]).to(self.device,
                                                                                              self.dtype))

    @torch.no_grad()
    def encode_audio(self, mel_pieces: torch.Tensor, audio_len: int, image_embeds: torch.Tensor,
                     step: int = timing.AUDIO_FRAMES_PER_VIDEO_FRAME) -> AudioConditioning:
        """Per-frame conditions from log-mel ``[K, n_mels, 3000]`` of ``audio_len`` 25 fps audio frames."""
        hidden, last = conditioning.whisper_features(self.models.whisper, mel_pieces.to(self.device, torch.float32))
        return conditioning.encode_audio(hidden, last, audio_len, step, self.models.audio2token,
                                         self.models.audio2bucket, image_embeds)

    def encode_image(self, image_embeds: torch.Tensor, ref_image: torch.Tensor, face_mask: torch.Tensor,
                     noise_aug_strength: float, image_noise: torch.Tensor) -> ImageConditioning:
        """Reference latents and mask (see :func:`sonic_core.conditioning.encode_image`)."""
        return conditioning.encode_image(self.models.vae, image_embeds, ref_image, face_mask, noise_aug_strength,
                                         image_noise)

    def sample(self, audio: AudioConditioning, image: ImageConditioning, latent_noise: torch.Tensor,
               options: SamplerOptions, on_step: ProgressCallback | None = None,
               should_stop: StopCheck | None = None) -> torch.Tensor:
        """Final averaged latents ``[N, C, h, w]`` (see :func:`sonic_core.denoise.sample_latents`)."""
        noise = latent_noise.reshape(audio.num_frames, *latent_noise.shape[-3:])
        return sample_latents(self.models.unet, audio, image, noise, options, self.schedule, on_step, should_stop)

    @torch.no_grad()
    def decode_raw(self, latents: torch.Tensor, chunk_size: int) -> Iterator[torch.Tensor]:
        """VAE output ``[n, 3, H, W]`` (about [-1, 1], on the device) per chunk of ``chunk_size`` frames."""
        yield from self.models.vae.decode_chunks(latents.to(self.device, self.dtype), chunk_size)

    def decode(self, latents: torch.Tensor, chunk_size: int) -> Iterator[torch.Tensor]:
        """Frames ``[n, 3, H, W]`` in [0, 1] (float32, on the device), one decode chunk at a time."""
        for chunk in self.decode_raw(latents, chunk_size):
            yield to_unit_range(chunk)

    def latent_shape(self, num_frames: int, height: int, width: int) -> tuple[int, int, int, int, int]:
        """Shape ``[1, N, C, h, w]`` of the start noise for ``N`` frames of ``height × width`` pixels."""
        vae = self.models.vae.config
        return 1, num_frames, vae.latent_channels, height // vae.downscale, width // vae.downscale

    def prepare(self, image: Any, audio: str | os.PathLike, settings: SonicSettings, detector: Any,
                fit: str = "error") -> GenerationInputs:
        """Read the speech (checked against ``settings.duration`` unless ``fit`` is ``"trim"``/``"pad"``), compute
        its log-mel, and detect, crop, mask and resize the portrait ``image`` (PIL image or path)."""
        from PIL import Image

        from .audio import load_audio, log_mel_pieces
        from .face.crop import prepare_reference

        clock = _StageClock()
        tick = time.perf_counter()
        samples = load_audio(audio, duration=settings.duration, fit=fit)
        mel = log_mel_pieces(samples, n_mels=self.models.whisper.config.num_mel_bins)
        tick = clock.add("audio", tick)
        portrait = image if isinstance(image, Image.Image) else Image.open(image)
        reference = prepare_reference(portrait.convert("RGB"), detector, settings.min_resolution,
                                      settings.expand_ratio, settings.face_area)
        clock.add("face", tick)
        mux_audio = audio if settings.duration is None else (samples, timing.SAMPLE_RATE)
        return GenerationInputs(samples, mel, reference, mux_audio, clock.seconds)

    def condition(self, inputs: GenerationInputs,
                  settings: SonicSettings) -> tuple[AudioConditioning, ImageConditioning, torch.Tensor]:
        """Everything the sampler needs from prepared inputs: the seeded noise draws (official order), the CLIP
        embedding (once), the audio and the image conditioning -> (audio, image, latent noise)."""
        from .models.clip_vision import preprocess_clip_image

        reference = inputs.reference
        height, width = reference.ref_image.shape[-2:]
        image_noise, latent_noise = draw_noise(settings.seed, (1, 3, height, width),
                                               self.latent_shape(inputs.num_frames, height, width))
        clip_size = self.models.image_encoder.config.image_size
        embeds = self.encode_clip(preprocess_clip_image(reference.clip_source, size=clip_size))
        audio_cond = self.encode_audio(torch.as_tensor(inputs.mel), inputs.audio_len, embeds)
        image_cond = self.encode_image(embeds, reference.ref_image, reference.face_mask,
                                       settings.noise_aug_strength, image_noise)
        return audio_cond, image_cond, latent_noise

    def render(self, inputs: GenerationInputs, out: str | os.PathLike, settings: SonicSettings, *,
               windows_per_call: int = 1, on_step: ProgressCallback | None = None,
               should_stop: StopCheck | None = None, post: PostOptions | None = None) -> GenerationReport:
        """Condition, sample, then stream decode -> RIFE -> encoder into ``out`` (see :meth:`generate`).

        With ``post`` (Lip-Sync Align / Motion Smooth, :mod:`sonic_core.post.chain`) the clip's frames are
        gathered first, post-processed, then encoded with the (possibly shifted) audio: those steps need the
        whole clip, so only runs without post-processing have host memory flat in audio length.
        """
        clock, tick = _StageClock(), time.perf_counter()
        clock.seconds.update(inputs.seconds)
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        reference, num_frames = inputs.reference, inputs.num_frames
        height, width = reference.ref_image.shape[-2:]
        audio_cond, image_cond, latent_noise = self.condition(inputs, settings)
        tick = clock.add("conditioning", tick)

        self.models.unet.ip_scale = settings.ip_audio_scale
        latents = self.sample(audio_cond, image_cond, latent_noise,
                              SamplerOptions.from_settings(settings, windows_per_call), on_step, should_stop)
        clock.add("sampling", tick)

        interpolator = self._interpolator(settings)
        fps = timing.GENERATED_FPS * (2 if interpolator is not None else 1)
        frames_out = 2 * num_frames - 1 if interpolator is not None else num_frames
        chunks = self._frame_chunks(latents, settings, interpolator, clock, should_stop)
        post_report: dict[str, Any] = {}
        mux_audio = inputs.mux_audio
        if post is not None and post.active:
            from .post.chain import apply_post

            frames = torch.cat([chunk.cpu() for chunk in chunks])
            tick = time.perf_counter()
            frames, samples, post_report = apply_post(frames, inputs.samples, fps, post)
            clock.add("post", tick)
            chunks, mux_audio = iter([frames]), (samples, timing.SAMPLE_RATE)
        written = self._encode(chunks, out, width, height, fps, mux_audio, settings.crf, frames_out, clock)

        peak_device = (torch.cuda.max_memory_allocated(self.device) / 2**20
                       if self.device.type == "cuda" else None)
        box = reference.face_box
        return GenerationReport(str(Path(out)), num_frames, written, width, height, fps,
                                len(inputs.samples) / timing.SAMPLE_RATE, (box.x1, box.y1, box.width, box.height),
                                reference.expand_ratio, clock.seconds, peak_host_mb(), peak_device, post_report)

    def _frame_chunks(self, latents: torch.Tensor, settings: SonicSettings, interpolator: Any, clock: _StageClock,
                      should_stop: StopCheck | None) -> Iterator[torch.Tensor]:
        """Output frames ``[n, 3, H, W]`` in [0, 1], one decode chunk (through RIFE when on) at a time."""
        tick = time.perf_counter()
        for frames in self.decode(latents, settings.decode_chunk_size):
            tick = clock.add("decode", tick)
            if should_stop is not None and should_stop():
                raise SonicInterrupted("generation cancelled by the user: nothing was written")
            if interpolator is not None:
                frames = interpolator.push(frames)
                tick = clock.add("interpolate", tick)
            yield frames
            tick = time.perf_counter()
        if interpolator is not None:
            yield interpolator.finish()

    @staticmethod
    def _encode(chunks: Iterator[torch.Tensor], out: str | os.PathLike, width: int, height: int, fps: float,
                audio: Any, crf: int, frames: int, clock: _StageClock) -> int:
        """Write the chunks to ``out`` (temporary file, renamed when complete); returns the frames written."""
        from .video import VideoWriter

        with VideoWriter(out, width, height, fps, audio=audio, crf=crf, frames=frames) as writer:
            for chunk in chunks:
                tick = time.perf_counter()
                writer.write(chunk.cpu())
                clock.add("encode", tick)
            return writer.frames_written

    def generate(self, image: Any, audio: str | os.PathLike, out: str | os.PathLike,
                 settings: SonicSettings | None = None, detector: Any = None, *, fit: str = "error",
                 windows_per_call: int = 1, on_step: ProgressCallback | None = None,
                 should_stop: StopCheck | None = None, post: PostOptions | None = None) -> GenerationReport:
        """Animate the portrait ``image`` (PIL image or path) with the speech in ``audio`` and write ``out`` (MP4,
        h264 + aac, the speech muxed in): :meth:`prepare` then :meth:`render`. ``detector`` finds the face
        (:func:`sonic_core.face.load_detector`). The video is written to a temporary file and renamed at the end,
        so an error or a cancellation (``should_stop`` -> :class:`SonicInterrupted`) leaves no output behind.
        ``post`` adds Lip-Sync Align / Motion Smooth on the whole clip (see :meth:`render`).
        """
        settings = settings or SonicSettings()
        inputs = self.prepare(image, audio, settings, detector, fit)
        return self.render(inputs, out, settings, windows_per_call=windows_per_call, on_step=on_step,
                           should_stop=should_stop, post=post)

    def _interpolator(self, settings: SonicSettings):
        if not settings.interpolate or self.models.rife is None:
            return None
        from .interpolation import Rife2x

        return Rife2x(self.models.rife, batch_size=settings.decode_chunk_size)
