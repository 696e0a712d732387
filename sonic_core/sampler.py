"""Noise schedule and Euler steps of SVD's scheduler (SPEC §7.1), as small pure functions (k-diffusion style).

The schedule is the Karras ramp between the config's ``sigma_min`` and ``sigma_max`` (the trained betas, spacing
and offset have no effect once both are given), v-prediction, continuous timesteps ``t = 0.25·ln σ``. The sliding
temporal windows (SPEC §7.4), the 3-way guidance (§7.3) and the per-window micro-conditions (§7.5) are small pure
functions here too; the loop that runs the UNet over them is :mod:`sonic_core.denoise`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

from .errors import SonicInputError

SVD_SCHEDULER_CONFIG = Path(__file__).resolve().parent / "configs" / "svd_scheduler_config.json"
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
        return cls.from_config(json.loads(SVD_SCHEDULER_CONFIG.read_text()))


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
    """Frame indices ``[windows, window]`` of one step's sliding windows (SPEC §7.4).

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
