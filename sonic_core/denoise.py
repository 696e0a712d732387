"""The Sonic sampling loop: sliding temporal windows, a CFG batch of 3 per window, Euler steps (SPEC §7).

Every step reads the previous latents of all ``N`` frames, runs the UNet on each window of ``frames_per_window``
frames (several windows per call when ``windows_per_call`` > 1), guides, takes one Euler step per window and
averages the windows' results per frame. Window starts rotate by ``shift_offset`` frames per step so that window
borders move. CFG slots are ordered (uncond, drop-audio, cond) with contexts (0, e, e) for CLIP, (u, u, c) for audio
and (0, z, z) for the image latents; those constant contexts are broadcast, never repeated over all ``N`` frames.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from . import sampler, timing
from .conditioning import AudioConditioning, ImageConditioning
from .errors import SonicInputError, SonicInterrupted
from .settings import SonicSettings

ProgressCallback = Callable[[int, int], None]
StopCheck = Callable[[], bool]


@dataclass(frozen=True)
class SamplerOptions:
    """The numbers of one sampling run. Guidance pairs are (first step, last step) of a linear ramp."""

    steps: int = 25
    frames_per_window: int = 25
    overlap: int = 0
    shift_offset: int = 7
    fps: float = timing.GENERATED_FPS
    appearance_guidance: tuple[float, float] = (2.0, 2.0)
    audio_guidance: tuple[float, float] = (7.5, 7.5)
    i2i_strength: float = 1.0
    dynamic_scale: float = 1.0
    motion_scale: float = 1.0
    windows_per_call: int = 1

    def __post_init__(self) -> None:
        if self.windows_per_call < 1:
            raise SonicInputError(f"windows_per_call={self.windows_per_call}: use 1 or more")

    @classmethod
    def from_settings(cls, settings: SonicSettings, windows_per_call: int = 1) -> SamplerOptions:
        return cls(steps=settings.steps, frames_per_window=settings.frames_per_window,
                   overlap=settings.window_overlap, shift_offset=settings.shift_offset,
                   appearance_guidance=(settings.appearance_guidance,) * 2,
                   audio_guidance=(settings.audio_guidance,) * 2, dynamic_scale=settings.dynamic_scale,
                   motion_scale=settings.motion_scale, windows_per_call=windows_per_call)


def calls_per_step(num_frames: int, options: SamplerOptions) -> int:
    """UNet calls per sampler step for a clip of ``num_frames`` generated frames."""
    windows = len(range(0, num_frames, options.frames_per_window - options.overlap))
    return -(-windows // options.windows_per_call)


def cfg_batch(latents: torch.Tensor, windows: torch.Tensor, sigma: torch.Tensor, audio_tokens: torch.Tensor,
               uncond_tokens: torch.Tensor, image_slots: torch.Tensor, clip_slots: torch.Tensor):
    """UNet inputs for ``g`` windows ``[g, f]``: batch ``3·g`` ordered window-major, then CFG slot."""
    g, f = windows.shape
    noisy = sampler.scale_model_input(latents[windows], sigma)  # [g, f, C, h, w]
    noisy = noisy[:, None].expand(g, 3, *noisy.shape[1:])
    image = image_slots[None, :, None].expand(g, 3, f, *image_slots.shape[1:])
    sample = torch.cat([noisy, image], dim=3).flatten(0, 1)
    clip = clip_slots[None, :, None].expand(g, 3, f, *clip_slots.shape[1:]).reshape(3 * g * f, 1, -1)
    uncond = uncond_tokens.expand(g, f, *uncond_tokens.shape)
    audio = torch.stack([uncond, uncond, audio_tokens[windows]], dim=1).reshape(3 * g * f, *uncond_tokens.shape)
    return sample, clip, audio


@torch.no_grad()
def sample_latents(unet: torch.nn.Module, audio: AudioConditioning, image: ImageConditioning,
                   latent_noise: torch.Tensor, options: SamplerOptions, schedule: sampler.Schedule,
                   on_step: ProgressCallback | None = None, should_stop: StopCheck | None = None) -> torch.Tensor:
    """Denoised latents ``[N, C, h, w]`` (scaled, in the UNet's dtype) for ``N`` = ``audio.num_frames`` frames.

    ``latent_noise`` ``[N, C, h, w]`` is the start noise (any dtype; it is cast). ``on_step(done, total)`` is called
    after every UNet call; ``should_stop()`` is checked before each one and a true answer raises
    :class:`SonicInterrupted`.
    """
    param = next(unet.parameters())
    device, dtype = param.device, param.dtype
    n = audio.num_frames
    if latent_noise.shape[0] != n:
        raise SonicInputError(f"latent noise has {latent_noise.shape[0]} frames for {n} audio frames: "
                              "draw it for the clip's generated frame count")
    sigmas = sampler.karras_sigmas(options.steps, schedule)
    timesteps = sampler.sigmas_to_timesteps(sigmas)
    start = sampler.i2i_start_index(options.steps, options.i2i_strength)
    steps_run = options.steps - start
    appearance = sampler.guidance_ramp(*options.appearance_guidance, steps_run).to(device, dtype)
    audio_scale = sampler.guidance_ramp(*options.audio_guidance, steps_run).to(device, dtype)

    cond_tokens = audio.cond_tokens.to(device, dtype)
    uncond_tokens = audio.uncond_tokens.to(device, dtype)
    buckets = audio.buckets.to(device)
    z_cond = image.cond_latents.to(device, dtype)[0]
    image_slots = torch.stack([torch.zeros_like(z_cond), z_cond, z_cond])
    clip = image.image_embeds.to(device, dtype).reshape(1, -1)
    clip_slots = torch.cat([torch.zeros_like(clip), clip, clip])[:, None]  # [3, 1, P]
    face_mask = image.face_mask.to(device, dtype)

    latents = sampler.add_noise(image.ref_latents.to(device, dtype), latent_noise.to(device, dtype),
                                sigmas[start].to(dtype))
    total, done = steps_run * calls_per_step(n, options), 0
    for k in range(steps_run):
        sigma, sigma_next, t = sigmas[start + k], sigmas[start + k + 1], timesteps[start + k]
        windows = sampler.window_indices(n, options.frames_per_window, options.overlap,
                                         k * options.shift_offset).to(device)
        time_ids = sampler.window_time_ids(buckets, windows, options.fps, options.dynamic_scale,
                                           options.motion_scale, dtype)
        summed = torch.zeros_like(latents)
        counts = latents.new_zeros(n)
        for first in range(0, windows.shape[0], options.windows_per_call):
            if should_stop is not None and should_stop():
                raise SonicInterrupted("generation cancelled by the user: nothing was written")
            group = windows[first:first + options.windows_per_call]
            sample, clip_ctx, audio_ctx = cfg_batch(latents, group, sigma, cond_tokens, uncond_tokens,
                                                     image_slots, clip_slots)
            ids = time_ids[first:first + group.shape[0]].repeat_interleave(3, dim=0)
            out = unet(sample, t, clip_ctx, audio_ctx, ids, face_mask).unflatten(0, (-1, 3))
            guided = sampler.guide(out[:, 0], out[:, 1], out[:, 2], appearance[k], audio_scale[k])
            stepped = sampler.euler_step(latents[group], guided, sigma, sigma_next)
            for frames, window_latents in zip(group, stepped):  # window order, as the official fp16 sums
                summed.index_add_(0, frames, window_latents)
                counts.index_add_(0, frames, counts.new_ones(frames.shape[0]))
            done += 1
            if on_step is not None:
                on_step(done, total)
        latents = summed / counts[:, None, None, None]
    return latents
