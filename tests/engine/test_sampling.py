"""Schedule functions against the numbers MODEL.md §7.1/§13 derives for SVD-xt, plus their edge cases.
(Bit-level parity with diffusers' scheduler is the ``scheduler`` golden fixture.)"""

from __future__ import annotations

import math

import pytest
import torch

from sonic_core import sampling
from sonic_core.errors import SonicInputError

SPEC_SIGMAS_25 = [700, 545.73, 421.57, 322.45, 244.02, 182.55, 134.85, 98.27, 70.54, 49.81, 34.54, 23.47, 15.59,
                  10.10, 6.354, 3.870, 2.269, 1.273, 0.6781, 0.3394, 0.1574, 0.06640, 0.02480, 0.007882, 0.002, 0]


def test_svd_schedule_25_steps() -> None:
    sigmas = sampling.karras_sigmas(25, sampling.Schedule.svd())
    assert sigmas.dtype == torch.float32 and sigmas.shape == (26,)
    assert torch.allclose(sigmas, torch.tensor(SPEC_SIGMAS_25), rtol=1e-3, atol=0)
    timesteps = sampling.sigmas_to_timesteps(sigmas)
    assert timesteps.shape == (25,)
    assert timesteps[0].item() == pytest.approx(1.63777, abs=1e-5)
    assert timesteps[-1].item() == pytest.approx(-1.55365, abs=1e-5)
    assert sampling.scale_model_input(torch.ones(1), sigmas[0]).item() == pytest.approx(1 / math.sqrt(700**2 + 1))


def test_single_step_is_sigma_max() -> None:
    assert sampling.karras_sigmas(1, sampling.Schedule(0.002, 700.0)).tolist() == [700.0, 0.0]


def test_euler_step_to_zero_returns_the_denoised_estimate() -> None:
    gen = torch.Generator().manual_seed(0)
    x, v, sigma = torch.randn(2, 3, generator=gen), torch.randn(2, 3, generator=gen), 3.5
    x0 = v * (-sigma / math.sqrt(sigma**2 + 1)) + x / (sigma**2 + 1)
    assert torch.allclose(sampling.euler_step(x, v, sigma, 0.0), x0, atol=1e-6)


def test_euler_step_keeps_dtype() -> None:
    x = torch.randn(4, dtype=torch.float16)
    assert sampling.euler_step(x, torch.randn(4, dtype=torch.float16), 10.0, 5.0).dtype == torch.float16


def test_add_noise_broadcasts_the_clean_latent_over_frames() -> None:
    clean, noise = torch.randn(1, 1, 4, 2, 2), torch.randn(1, 5, 4, 2, 2)
    out = sampling.add_noise(clean, noise, 700.0)
    assert out.shape == noise.shape and torch.allclose(out[:, 3], clean[:, 0] + 700.0 * noise[:, 3])


@pytest.mark.parametrize("steps,strength,start", [(25, 1.0, 0), (25, 0.5, 13), (25, 0.0, 25), (4, 0.9, 1)])
def test_i2i_start_index(steps: int, strength: float, start: int) -> None:
    assert sampling.i2i_start_index(steps, strength) == start


@pytest.mark.parametrize("strength", [-0.1, 1.5, float("nan")])
def test_i2i_strength_out_of_range(strength: float) -> None:
    with pytest.raises(SonicInputError, match="strength"):
        sampling.i2i_start_index(25, strength)


def test_zero_steps_rejected() -> None:
    with pytest.raises(SonicInputError, match="steps=0"):
        sampling.karras_sigmas(0, sampling.Schedule.svd())


@pytest.mark.parametrize("field,value", [("prediction_type", "epsilon"), ("use_karras_sigmas", False),
                                         ("timestep_type", "discrete"), ("sigma_min", None)])
def test_unsupported_scheduler_config(field: str, value) -> None:
    config = {"prediction_type": "v_prediction", "use_karras_sigmas": True, "timestep_type": "continuous",
              "sigma_min": 0.002, "sigma_max": 700.0, field: value}
    with pytest.raises(SonicInputError, match="scheduler config"):
        sampling.Schedule.from_config(config)
