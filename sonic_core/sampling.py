"""Sampling: the SVD noise schedule, Sonic's sliding temporal windows, 3-way guidance and the Euler loop, as small
pure functions and one loop over them (k-diffusion style). MODEL.md §7.

Schedule (§7.1): the Karras ramp between the config's ``sigma_min`` and ``sigma_max`` (the trained betas, spacing
and offset have no effect once both are given), v-prediction, continuous timesteps ``t = 0.25·ln σ``.

Loop (:func:`sample_latents`): every step reads the previous latents of all ``N`` frames, runs the UNet on each
window of ``frames_per_window`` frames (several windows per call when ``windows_per_call`` > 1), guides, takes one
Euler step per window and averages the windows' results per frame. Window starts rotate by ``shift_offset`` frames
per step so that window borders move (§7.4). CFG slots are ordered (uncond, drop-audio, cond) with contexts
(0, e, e) for CLIP, (u, u, c) for audio and (0, z, z) for the image latents (§7.3); those constant contexts are
broadcast, never repeated over all ``N`` frames.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch

from . import timing
from .conditioning import AudioConditioning, ImageConditioning
from .configs import bundled_config
from .distributed import RankGroup
from .errors import ProgressCallback, SonicInputError, StopCheck, stop_if_asked
from .settings import SonicSettings

SVD_SCHEDULER_CONFIG = "svd_scheduler_config.json"
KARRAS_RHO = 7.0



@dataclass(frozen=True)
class Schedule:
    """The numbers of a v-prediction Euler/Karras schedule, taken from a diffusers scheduler config."""

    sigma_min: float
    sigma_max: float
    rho: float = KARRAS_RHO

    @classmethod
    def from_config(cls, config: Mapping) -> Schedule:
        """Accept SVD-style configs only: v-prediction, Karras sigmas with explicit bounds, continuous timesteps."""
        expected = {"prediction_type": "v_prediction", "use_karras_sigmas": True, "timestep_type": "continuous"}
        for key, value in expected.items():
            if config.get(key) != value:
                raise SonicInputError(f"scheduler config {key}={config.get(key)!r} is not supported: "
                                      f"use the SVD scheduler config ({key}={value!r})")
        if config.get("sigma_min") is None or config.get("sigma_max") is None:
            raise SonicInputError("scheduler config needs sigma_min and sigma_max: use the SVD scheduler config")
        return cls(float(config["sigma_min"]), float(config["sigma_max"]))

    @classmethod
    def svd(cls) -> Schedule:
        """The schedule of the bundled SVD-xt ``scheduler_config.json``."""
        return cls.from_config(bundled_config(SVD_SCHEDULER_CONFIG))


def karras_sigmas(steps: int, schedule: Schedule) -> torch.Tensor:
    """``[steps + 1]`` float32 noise levels from ``sigma_max`` down to ``sigma_min``, then a final 0.

    Computed in float64: ``σ_k = (σmax^(1/ρ) + k/(n−1)·(σmin^(1/ρ) − σmax^(1/ρ)))^ρ`` (one step gives ``σmax``).
    """
    if steps < 1:
        raise SonicInputError(f"steps={steps}: use at least 1 sampling step")
    hi, lo = schedule.sigma_max ** (1 / schedule.rho), schedule.sigma_min ** (1 / schedule.rho)
    ramp = torch.linspace(0, 1, steps, dtype=torch.float64)
    sigmas = (hi + ramp * (lo - hi)) ** schedule.rho
    return torch.cat([sigmas, sigmas.new_zeros(1)]).float()


def sigmas_to_timesteps(sigmas: torch.Tensor) -> torch.Tensor:
    """Continuous model timesteps ``0.25·ln σ`` (float32) of the non-zero sigmas."""
    return 0.25 * torch.log(sigmas[sigmas > 0].float())


def scale_model_input(sample: torch.Tensor, sigma: float | torch.Tensor) -> torch.Tensor:
    """The UNet input at noise level σ: ``x / √(σ² + 1)``."""
    return sample / ((sigma ** 2 + 1) ** 0.5)


def euler_step(sample: torch.Tensor, model_output: torch.Tensor, sigma: float | torch.Tensor,
               sigma_next: float | torch.Tensor) -> torch.Tensor:
    """One Euler step of a v-prediction model from σ to σ_next (no churn), in float32, cast back to the input dtype.

    ``x0 = v·(−σ/√(σ²+1)) + x/(σ²+1)``, ``d = (x − x0)/σ``, ``x_next = x + d·(σ_next − σ)``.
    """
    x = sample.float()
    denoised = model_output * (-sigma / ((sigma ** 2 + 1) ** 0.5)) + x / (sigma ** 2 + 1)
    derivative = (x - denoised) / sigma
    return (x + derivative * (sigma_next - sigma)).to(sample.dtype)


def add_noise(clean: torch.Tensor, noise: torch.Tensor, sigma: float | torch.Tensor) -> torch.Tensor:
    """Noisy start ``x0 + σ·ε`` (``clean`` broadcasts over ``noise``, e.g. one reference latent over all frames)."""
    return clean + noise * sigma


def i2i_start_index(steps: int, strength: float) -> int:
    """First schedule index run for an image-to-image strength in [0, 1] (1.0 runs all steps)."""
    if not 0.0 <= strength <= 1.0:  # also rejects NaN
        raise SonicInputError(f"i2i strength={strength}: use a value between 0 and 1")
    return steps - min(int(steps * strength), steps)


def window_indices(num_frames: int, window: int, overlap: int, shift: int) -> torch.Tensor:
    """Frame indices ``[windows, window]`` of one step's sliding windows (MODEL.md §7.4).

    Windows start at ``range(0, num_frames, window − overlap)`` minus ``shift`` and cover ``window`` consecutive
    frames modulo ``num_frames`` (so short clips wrap and repeat frames inside one window).
    """
    if not 0 <= overlap < window:
        raise SonicInputError(f"window overlap={overlap} with {window}-frame windows: use 0 <= overlap < window")
    starts = torch.arange(0, num_frames, window - overlap) - shift
    return (starts[:, None] + torch.arange(window)).remainder(num_frames)


def guidance_ramp(low: float, high: float, steps: int) -> torch.Tensor:
    """Per-step guidance scales ``linspace(low, high, steps)`` (float32)."""
    return torch.linspace(low, high, steps)


def guide(uncond: torch.Tensor, drop_audio: torch.Tensor, cond: torch.Tensor, appearance: torch.Tensor,
          audio: torch.Tensor) -> torch.Tensor:
    """3-way guidance ``e0 + g1·(e1 − e0) + g2·(e2 − e1)``, evaluated left to right in the inputs' dtype."""
    return uncond + appearance * (drop_audio - uncond) + audio * (cond - drop_audio)


def window_time_ids(buckets: torch.Tensor, indices: torch.Tensor, fps: float, dynamic_scale: float,
                    motion_scale: float, dtype: torch.dtype) -> torch.Tensor:
    """``added_time_ids`` ``[windows, 3]`` = ``[fps, mean(b0·λ), mean(b1·λ·μ)]`` for every window at once (§7.5).

    ``buckets`` ``[N, 2]`` are the per-frame motion buckets, ``indices`` ``[windows, window]`` the windows' frames;
    λ = ``dynamic_scale`` scales both buckets (the official ``motion_bucket_scale``) and μ = ``motion_scale`` only
    bucket 1, the head-motion bucket. Means in float32, then rounded to ``dtype`` like the official pipeline.
    """
    scaled = buckets.float()[indices] * dynamic_scale
    if motion_scale != 1.0:
        scaled[..., 1] = scaled[..., 1] * motion_scale
    means = scaled.mean(dim=1)
    fps_column = means.new_full((means.shape[0], 1), fps)
    return torch.cat([fps_column, means], dim=1).to(dtype)


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
    latents_on_host: bool = False  # the memory planner's choice: see sample_latents

    def __post_init__(self) -> None:
        if self.windows_per_call < 1:
            raise SonicInputError(f"windows_per_call={self.windows_per_call}: use 1 or more")

    @classmethod
    def from_settings(cls, settings: SonicSettings, windows_per_call: int = 1,
                      latents_on_host: bool = False) -> SamplerOptions:
        return cls(steps=settings.steps, frames_per_window=settings.frames_per_window,
                   overlap=settings.window_overlap, shift_offset=settings.shift_offset,
                   appearance_guidance=(settings.appearance_guidance,) * 2,
                   audio_guidance=(settings.audio_guidance,) * 2, dynamic_scale=settings.dynamic_scale,
                   motion_scale=settings.motion_scale, windows_per_call=windows_per_call,
                   latents_on_host=latents_on_host)


@dataclass(frozen=True)
class StepPlan:
    """The per-step numbers of a run, built once on the device: ``sigmas`` ``[steps + 1]`` and model ``timesteps``
    (float32), the first schedule index run (image-to-image), and the guidance scales of each step run (in the
    UNet's dtype)."""

    sigmas: torch.Tensor
    timesteps: torch.Tensor
    start: int
    appearance: torch.Tensor
    audio: torch.Tensor

    @property
    def steps_run(self) -> int:
        return self.appearance.shape[0]


def step_plan(options: SamplerOptions, schedule: Schedule, device: torch.device, dtype: torch.dtype) -> StepPlan:
    """The :class:`StepPlan` of ``options`` on ``schedule``."""
    sigmas = karras_sigmas(options.steps, schedule)
    start = i2i_start_index(options.steps, options.i2i_strength)
    steps_run = options.steps - start
    return StepPlan(sigmas.to(device), sigmas_to_timesteps(sigmas).to(device), start,
                    guidance_ramp(*options.appearance_guidance, steps_run).to(device, dtype),
                    guidance_ramp(*options.audio_guidance, steps_run).to(device, dtype))


def step_windows(num_frames: int, options: SamplerOptions, steps_run: int, device: torch.device) -> torch.Tensor:
    """Frame indices ``[steps_run, windows, window]`` of every step run (:func:`window_indices` of each step's shift),
    built once on ``device``."""
    return torch.stack([window_indices(num_frames, options.frames_per_window, options.overlap,
                                       k * options.shift_offset) for k in range(steps_run)]).to(device)


def calls_per_step(num_frames: int, options: SamplerOptions) -> int:
    """UNet calls per sampler step for a clip of ``num_frames`` generated frames."""
    windows = len(range(0, num_frames, options.frames_per_window - options.overlap))
    return -(-windows // options.windows_per_call)


def cfg_batch(latents: torch.Tensor, windows: torch.Tensor, sigma: torch.Tensor, audio_tokens: torch.Tensor,
              uncond_tokens: torch.Tensor, image_slots: torch.Tensor, clip_slots: torch.Tensor):
    """UNet inputs for ``g`` windows ``[g, f]``: batch ``3·g`` ordered window-major, then CFG slot.

    Returns ``(sample, clip, audio, audio_index)``: the audio is given as its distinct token sets (the shared
    unconditional tokens first, then each window frame's) and the index of the set every frame row uses, so the
    UNet projects the unconditional tokens once instead of for two slots of every frame.
    """
    g, f = windows.shape
    noisy = scale_model_input(latents[windows], sigma)  # [g, f, C, h, w]
    noisy = noisy[:, None].expand(g, 3, *noisy.shape[1:])
    image = image_slots[None, :, None].expand(g, 3, f, *image_slots.shape[1:])
    sample = torch.cat([noisy, image], dim=3).flatten(0, 1)
    clip = clip_slots[None, :, None].expand(g, 3, f, *clip_slots.shape[1:]).reshape(3 * g * f, 1, -1)
    audio = torch.cat([uncond_tokens[None], audio_tokens[windows.flatten()]])
    cond_rows = 1 + torch.arange(g * f, device=windows.device).reshape(g, 1, f)
    audio_index = torch.cat([cond_rows.new_zeros(g, 2, f), cond_rows], dim=1).flatten()
    return sample, clip, audio, audio_index


HOST = torch.device("cpu")


def pinned(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` in page-locked memory when it is in host memory and CUDA is available (windows then copy to the
    device without a staging buffer); otherwise itself."""
    if tensor.device == HOST and torch.cuda.is_available() and not tensor.is_pinned():
        return tensor.pin_memory()
    return tensor


@torch.no_grad()
def sample_latents(unet: torch.nn.Module, audio: AudioConditioning, image: ImageConditioning,
                   latent_noise: torch.Tensor, options: SamplerOptions, schedule: Schedule,
                   on_step: ProgressCallback | None = None, should_stop: StopCheck | None = None,
                   ranks: RankGroup | None = None) -> torch.Tensor:
    """Denoised latents ``[N, C, h, w]`` (scaled, in the UNet's dtype) for ``N`` = ``audio.num_frames`` frames.

    ``latent_noise`` ``[N, C, h, w]`` is the start noise (any dtype; it is cast). ``on_step(done, total)`` is called
    after every UNet call; ``should_stop()`` is checked before each one and a true answer raises
    :class:`SonicInterrupted`. With ``ranks``, this process runs only its share of each step's window groups (and
    ``on_step`` counts those) and the per-frame sums are added across ranks before the average
    (:mod:`sonic_core.distributed`); every rank returns the same latents.

    The clip's latents, window sums and audio tokens live on the UNet's device, or with ``options.latents_on_host``
    in host memory (pinned when CUDA is available): each call's windows are gathered there and moved to the device,
    where their CFG batch, guidance and Euler step are computed, and the stepped windows move back to be summed.
    The same operations on the same values, so the same result.
    """
    param = next(unet.parameters())
    device, dtype = param.device, param.dtype
    n = audio.num_frames
    if latent_noise.shape[0] != n:
        raise SonicInputError(f"latent noise has {latent_noise.shape[0]} frames for {n} audio frames: "
                              "draw it for the clip's generated frame count")
    plan = step_plan(options, schedule, device, dtype)
    sigmas, timesteps, start, steps_run = plan.sigmas, plan.timesteps, plan.start, plan.steps_run

    home = HOST if options.latents_on_host else device
    cond_tokens = pinned(audio.cond_tokens.to(home, dtype))
    uncond_tokens = audio.uncond_tokens.to(device, dtype)
    buckets = audio.buckets.to(home)
    z_cond = image.cond_latents.to(device, dtype)[0]
    image_slots = torch.stack([torch.zeros_like(z_cond), z_cond, z_cond])
    clip = image.image_embeds.to(device, dtype).reshape(1, -1)
    clip_slots = torch.cat([torch.zeros_like(clip), clip, clip])[:, None]  # [3, 1, P]
    face_mask = image.face_mask.to(device, dtype)

    latents = pinned(add_noise(image.ref_latents.to(home, dtype), latent_noise.to(home, dtype),
                               sigmas[start].to(home, dtype)))
    summed = pinned(torch.empty_like(latents))  # the two clip-sized buffers trade places every step
    groups = calls_per_step(n, options)
    total, done = steps_run * (groups if ranks is None else ranks.share(groups)), 0
    all_windows = step_windows(n, options, steps_run, home)
    all_time_ids = window_time_ids(buckets, all_windows.flatten(0, 1), options.fps, options.dynamic_scale,
                                   options.motion_scale, dtype).repeat_interleave(3, dim=0).to(device)
    all_time_ids = all_time_ids.unflatten(0, (steps_run, -1))  # [steps, 3 · windows, 3]: a row per CFG slot
    # built once for a full group of windows; a short last group takes their first rows
    rows = torch.arange(options.windows_per_call * options.frames_per_window, device=device)
    rows = rows.reshape(options.windows_per_call, options.frames_per_window)  # a group's windows, gathered
    ones = latents.new_ones(rows.numel())  # a count per frame row (integers: exact in any order)
    for k in range(steps_run):
        sigma, sigma_next, t = sigmas[start + k], sigmas[start + k + 1], timesteps[start + k]
        windows, time_ids = all_windows[k], all_time_ids[k]
        summed.zero_()
        counts = latents.new_zeros(n)
        for group_index, first in enumerate(range(0, windows.shape[0], options.windows_per_call)):
            if ranks is not None and not ranks.owns(group_index):
                continue
            stop_if_asked(should_stop)
            group = windows[first:first + options.windows_per_call]
            window_latents = latents[group].to(device)
            sample, clip_ctx, audio_ctx, audio_index = cfg_batch(
                window_latents.flatten(0, 1), rows[:group.shape[0]], sigma, cond_tokens[group.flatten()].to(device),
                uncond_tokens, image_slots, clip_slots)
            ids = time_ids[3 * first:3 * (first + group.shape[0])]
            out = unet(sample, t, clip_ctx, audio_ctx, ids, face_mask, audio_index).unflatten(0, (-1, 3))
            guided = guide(out[:, 0], out[:, 1], out[:, 2], plan.appearance[k], plan.audio[k])
            stepped = euler_step(window_latents, guided, sigma, sigma_next).to(home)
            for frames, window_latents in zip(group, stepped):  # window order, as the official fp16 sums
                summed.index_add_(0, frames, window_latents)
            counts.index_add_(0, group.flatten(), ones[:group.numel()])
            done += 1
            if on_step is not None:
                on_step(done, total)
        if ranks is not None:
            ranks.sum_(summed, counts)
        latents, summed = summed.div_(counts[:, None, None, None]), latents
    return latents
