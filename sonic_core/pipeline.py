"""SonicPipeline: prepared inputs -> frame chunks at the output rate. One path for the CLI, the ComfyUI Sampler
and the library (diffusers style: numbered steps in one ``__call__``).

1. condition: the seeded noise draws, CLIP embedding, audio tokens + motion buckets, reference latents
2. sample: sliding-window 3-way-guided Euler sampling (:mod:`sonic_core.sampling`)
3. decode: chunked temporal VAE decode
4. interpolate: to the output rate (:func:`sonic_core.interpolation.retime_chunks`; RIFE ×2 for 25 fps)

The latents of the whole clip stay in memory; decoded frames never do: they are yielded chunk by chunk (except
for output rates other than 12.5 and 25 fps, which retime the whole clip). The stage methods are public so the
golden parity tests can drive them one by one.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator

import torch

from . import conditioning, sampling, timing
from .audio import log_mel_pieces
from .conditioning import AudioConditioning, ImageConditioning
from .device import parse_dtype
from .distributed import RankGroup
from .errors import ProgressCallback, StopCheck, stop_if_asked
from .inputs import PreparedInputs
from .interpolation import output_frame_count, retime_chunks
from .memory import STAGE_NETWORKS, MemoryJob, MemoryPlan
from .models.bundle import SonicModels
from .models.clip_vision import preprocess_clip_image
from .sampling import HOST, SamplerOptions, sample_latents
from .settings import SonicSettings


def draw_noise(seed: int, image_shape: tuple[int, ...], latent_shape: tuple[int, ...],
               device: torch.device | None = None,
               dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """The two random draws of a generation, in the official order: pixel noise for the conditioning image, then
    the start noise of the latents, from one generator seeded with ``seed``.

    Portable (the default, ``device`` None): a CPU generator in float32, so a seed gives the same video on every
    device. Device noise (``device`` and ``dtype`` given): the generator of that device, drawing in that dtype, as
    the official code does with its global generator after ``torch.manual_seed(seed)`` (on CUDA in fp16): the
    same seed then reproduces the official video on the same kind of GPU, but draws differ between devices.
    """
    generator = torch.Generator(device if device is not None else "cpu").manual_seed(seed)
    where = {} if device is None else {"device": device, "dtype": dtype}
    return (torch.randn(image_shape, generator=generator, **where),
            torch.randn(latent_shape, generator=generator, **where))


def to_unit_range(decoded: torch.Tensor) -> torch.Tensor:
    """VAE output in about [-1, 1] -> float32 frames in [0, 1]."""
    return (decoded.float() * 0.5 + 0.5).clamp(0, 1)


def memory_job(inputs: PreparedInputs, settings: SonicSettings, dtype: str | torch.dtype, model: str = "sonic",
               windows_per_call: int = 1) -> MemoryJob:
    """What the memory planner needs to know about generating ``inputs`` with networks in ``dtype``; ``model``
    names their counts (``sonic`` or ``tiny``)."""
    height, width = inputs.reference.ref_image.shape[-2:]
    name = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}[parse_dtype(dtype)]
    return MemoryJob(inputs.num_frames, width, height, model, name, settings.frames_per_window, windows_per_call,
                     settings.decode_chunk_size, settings.interpolate)


def compiled_unet(unet: torch.nn.Module) -> torch.nn.Module:
    """``unet`` under ``torch.compile`` (inductor, static shapes): the same parameters and the same results in fp32
    (within 1e-4 relative, ``bench/speed_bench.py --compile`` measures both), compiled on its first call and again
    for each new window shape (a clip's windows share one). The forward traces as one graph (a test keeps it so)."""
    return torch.compile(unet, dynamic=False)


class StageClock:
    """Seconds spent per named stage (a stage may be entered repeatedly, e.g. once per streamed chunk)."""

    def __init__(self, seconds: dict[str, float] | None = None) -> None:
        self.seconds: dict[str, float] = dict(seconds or {})

    def add(self, stage: str, since: float) -> float:
        now = time.perf_counter()
        self.seconds[stage] = self.seconds.get(stage, 0.0) + now - since
        return now

    def timed(self, stage: str, chunks: Iterable[torch.Tensor]) -> Iterator[torch.Tensor]:
        """``chunks`` with the time spent producing each one added to ``stage``, less the time that other timed
        stages nested inside it took (decode runs inside interpolation's pulls)."""
        iterator = iter(chunks)
        while True:
            tick, before = time.perf_counter(), sum(self.seconds.values())
            chunk = next(iterator, None)
            nested = sum(self.seconds.values()) - before
            self.seconds[stage] = self.seconds.get(stage, 0.0) + time.perf_counter() - tick - nested
            if chunk is None:
                return
            yield chunk


class SonicPipeline:
    """The Sonic networks on one device. UNet, VAE and CLIP run in ``dtype``; whisper, the adapters and RIFE in
    float32. ``schedule`` defaults to SVD-xt's. With ``ranks`` this device is one of several sampling the clip
    together (:mod:`sonic_core.distributed`): each conditions on its own (the same inputs and seed give the same
    tensors) and runs its share of the windows; only rank 0 goes on to decode (:meth:`latents` is the others' part).
    ``compile`` samples with :func:`compiled_unet` (minutes of compilation on the first call; opt-in).
    """

    def __init__(self, models: SonicModels, device: str | torch.device = "cpu",
                 dtype: str | torch.dtype = torch.float32, schedule: sampling.Schedule | None = None,
                 ranks: RankGroup | None = None, compile: bool = False) -> None:
        self.device, self.dtype = torch.device(device), parse_dtype(dtype)
        self.models = models.to(self.device, self.dtype)
        self.unet = compiled_unet(self.models.unet) if compile else self.models.unet
        self.schedule = schedule or sampling.Schedule.svd()
        self.ranks = ranks

    def __call__(self, inputs: PreparedInputs, settings: SonicSettings, *, windows_per_call: int = 1,
                 memory: MemoryPlan | None = None, on_step: ProgressCallback | None = None,
                 should_stop: StopCheck | None = None, clock: StageClock | None = None,
                 on_decode: ProgressCallback | None = None) -> Iterator[torch.Tensor]:
        """Frames ``[n, 3, H, W]`` in [0, 1] (float32, on the device) at :meth:`output_fps`, chunk by chunk.

        ``memory`` is the plan of :func:`sonic_core.memory.plan_memory` (``None``: every network resident, nothing
        chunked, the latents on the device); no plan changes a value of the result. ``on_step(done, total)``
        follows the sampler's UNet calls; ``should_stop()`` is asked before each UNet call and each decoded chunk,
        and a true answer raises :class:`SonicInterrupted`; ``on_decode(done, total)`` follows the decoded chunks.
        ``clock`` collects the seconds of each stage.
        """
        clock = clock or StageClock()
        latents = self.latents(inputs, settings, windows_per_call=windows_per_call, memory=memory, on_step=on_step,
                               should_stop=should_stop, clock=clock)
        # 3. decode
        self._place("decode", memory)
        decoded = clock.timed("decode", self._checked(self.decode(latents, settings.decode_chunk_size),
                                                      should_stop, on_decode,
                                                      -(-len(latents) // settings.decode_chunk_size)))
        # 4. interpolate
        yield from clock.timed("interpolate", retime_chunks(decoded, self.output_fps(settings), self.models.rife,
                                                            settings.decode_chunk_size))

    def latents(self, inputs: PreparedInputs, settings: SonicSettings, *, windows_per_call: int = 1,
                memory: MemoryPlan | None = None, on_step: ProgressCallback | None = None,
                should_stop: StopCheck | None = None, clock: StageClock | None = None) -> torch.Tensor:
        """Steps 1 and 2 of :meth:`__call__`: the sampled latents ``[N, C, h, w]`` of the clip."""
        clock = clock or StageClock()
        tick = time.perf_counter()
        on_host = memory is not None and memory.latents_on_host
        self.models.unet.chunk_feed_forwards(memory.feed_forward_chunk if memory is not None else None)
        # 1. condition
        self._place("conditioning", memory)
        audio, image, latent_noise = self.condition(inputs, settings, keep_on_host=on_host)
        tick = clock.add("conditioning", tick)
        # 2. sample
        self._place("sampling", memory)
        self.models.unet.ip_scale = settings.ip_audio_scale
        latents = self.sample(audio, image, latent_noise,
                              SamplerOptions.from_settings(settings, windows_per_call, on_host), on_step, should_stop)
        del audio, image, latent_noise  # the decode stage holds only the latents
        clock.add("sampling", tick)
        return latents

    def _place(self, stage: str, memory: MemoryPlan | None) -> None:
        """The networks on the device for ``stage``: all of them, or with an offloading plan only the stage's own
        (the others wait in host memory)."""
        offload = memory is not None and memory.offload
        self.models.place(self.device, STAGE_NETWORKS[stage] if offload else tuple(self.models.modules()), HOST)

    def output_fps(self, settings: SonicSettings) -> float:
        """The rate of the frames :meth:`__call__` yields: ``settings.fps``, or the generated 12.5 fps when
        interpolation is off."""
        return settings.fps if settings.interpolate else timing.GENERATED_FPS

    def output_frames(self, inputs: PreparedInputs, settings: SonicSettings) -> int:
        """How many frames :meth:`__call__` yields for ``inputs``."""
        return output_frame_count(inputs.num_frames, self.output_fps(settings), self.models.rife)

    @staticmethod
    def _checked(chunks: Iterator[torch.Tensor], should_stop: StopCheck | None, on_decode: ProgressCallback | None,
                 total: int) -> Iterator[torch.Tensor]:
        for done, chunk in enumerate(chunks, 1):
            if on_decode is not None:
                on_decode(done, total)
            stop_if_asked(should_stop)
            yield chunk

    def condition(self, inputs: PreparedInputs, settings: SonicSettings,
                  keep_on_host: bool = False) -> tuple[AudioConditioning, ImageConditioning, torch.Tensor]:
        """Everything the sampler needs from prepared inputs: the seeded noise draws (official order), the CLIP
        embedding (once), the audio and the image conditioning -> (audio, image, latent noise). ``keep_on_host``
        keeps the audio conditioning in host memory (see :meth:`encode_audio`)."""
        reference = inputs.reference
        height, width = reference.ref_image.shape[-2:]
        image_noise, latent_noise = draw_noise(settings.seed, (1, 3, height, width),
                                               self.latent_shape(inputs.num_frames, height, width),
                                               *((self.device, self.dtype) if settings.device_noise else ()))
        clip_size = self.models.image_encoder.config.image_size
        embeds = self.encode_clip(preprocess_clip_image(reference.clip_source, size=clip_size))
        mel = log_mel_pieces(inputs.speech.samples, n_mels=self.models.whisper.config.num_mel_bins)
        audio = self.encode_audio(mel, inputs.audio_frames, embeds, keep_on_host=keep_on_host)
        image = self.encode_image(embeds, reference.ref_image, reference.face_mask, settings.noise_aug_strength,
                                  image_noise)
        return audio, image, latent_noise

    @torch.no_grad()
    def encode_clip(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """CLIP image embeds ``[1, P]`` (in ``dtype``) of preprocessed pixels ``[3, S, S]``; computed once per run
        and shared by audio2bucket and the UNet (MODEL.md §10.2)."""
        pixels = pixel_values.reshape(1, *pixel_values.shape[-3:]).to(self.device, self.dtype)
        return self.models.image_encoder(pixels).to(self.dtype)  # a shared encoder may hold another dtype

    @torch.no_grad()
    def encode_audio(self, mel_pieces: torch.Tensor, audio_len: int, image_embeds: torch.Tensor,
                     step: int = timing.AUDIO_FRAMES_PER_VIDEO_FRAME, keep_on_host: bool = False) -> AudioConditioning:
        """Per-frame conditions from log-mel ``[K, n_mels, 3000]`` of ``audio_len`` 25 fps audio frames.
        ``keep_on_host``: whisper's features and the conditions are kept in host memory, each piece and each chunk
        of frames computed on the device (the same values)."""
        whisper = self.models.whisper
        encoder = (lambda piece: whisper(piece).to(HOST)) if keep_on_host else whisper
        hidden, last = conditioning.whisper_features(encoder, mel_pieces.to(self.device, torch.float32))
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
        """Final averaged latents ``[N, C, h, w]`` (see :func:`sonic_core.sampling.sample_latents`)."""
        noise = latent_noise.reshape(audio.num_frames, *latent_noise.shape[-3:])
        return sample_latents(self.unet, audio, image, noise, options, self.schedule, on_step, should_stop,
                              self.ranks)

    @torch.no_grad()
    def decode_raw(self, latents: torch.Tensor, chunk_size: int) -> Iterator[torch.Tensor]:
        """VAE output ``[n, 3, H, W]`` (about [-1, 1], on the device) per chunk of ``chunk_size`` frames."""
        vae_dtype = next(self.models.vae.parameters()).dtype  # the pipeline's, or a shared VAE's own
        for start in range(0, latents.shape[0], chunk_size):  # latents kept in host memory move a chunk at a time
            yield from self.models.vae.decode_chunks(latents[start:start + chunk_size].to(self.device, vae_dtype),
                                                     chunk_size)

    def decode(self, latents: torch.Tensor, chunk_size: int) -> Iterator[torch.Tensor]:
        """Frames ``[n, 3, H, W]`` in [0, 1] (float32, on the device), one decode chunk at a time."""
        for chunk in self.decode_raw(latents, chunk_size):
            yield to_unit_range(chunk)

    def latent_shape(self, num_frames: int, height: int, width: int) -> tuple[int, int, int, int, int]:
        """Shape ``[1, N, C, h, w]`` of the start noise for ``N`` frames of ``height × width`` pixels."""
        vae = self.models.vae.config
        return 1, num_frames, vae.latent_channels, height // vae.downscale, width // vae.downscale
