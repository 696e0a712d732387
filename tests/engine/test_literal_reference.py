"""The engine's fast paths against the published design followed literally (``bench/literal_reference.py``).

Every speed-up of the UNet and the sampler must leave the result equal in fp32 (≤ 1e-4 relative); these tests run
both on the tiny model with a face mask, several windows, a wrap-around window and a shift, so a fast path that
changes the math fails here. They also keep the benchmark's baseline honest: it must compute the same thing.
"""

from __future__ import annotations

import torch

from bench.literal_reference import literal_sample_latents, literal_time_ids, literal_unet
from sonic_core.conditioning import AudioConditioning, ImageConditioning
from sonic_core.sampling import SamplerOptions, Schedule, sample_latents, window_indices, window_time_ids
from sonic_core.weights.tiny import tiny_models

TOLERANCE = 1e-4


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return float((actual - expected).abs().max() / expected.abs().max())


def conditioning(frames: int, seed: int = 0) -> tuple[AudioConditioning, ImageConditioning, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    models = tiny_models(seed)
    tokens, dim = models.audio2token.context_tokens, models.audio2token.output_dim
    audio = AudioConditioning(torch.randn(frames, tokens, dim, generator=gen), torch.randn(tokens, dim, generator=gen),
                              16 + 8 * torch.rand(frames, 2, generator=gen))
    latent = (models.vae.config.latent_channels, 4, 4)
    mask = torch.zeros(1, 1, 32, 32)
    mask[..., 8:24, 10:22] = 1.0
    image = ImageConditioning(torch.randn(1, models.image_encoder.config.projection_dim, generator=gen),
                              torch.randn(1, *latent, generator=gen), torch.randn(1, *latent, generator=gen), mask)
    return audio, image, torch.randn(frames, *latent, generator=gen)


def test_unet_equals_the_literal_forward() -> None:
    unet = tiny_models(1).unet
    gen = torch.Generator().manual_seed(3)
    b, f = 3, 5
    sample = torch.randn(b, f, 8, 8, 8, generator=gen)
    clip = torch.randn(b * f, 1, 32, generator=gen)
    audio = torch.randn(b * f, 4, 32, generator=gen)
    ids = torch.tensor([[12.5, 20.0, 30.0]]).repeat(b, 1)
    mask = torch.rand(1, 1, 64, 64, generator=gen)
    with torch.no_grad():
        ours = unet(sample, 0.3, clip, audio, ids, mask)
        with literal_unet(unet) as literal:
            reference = literal(sample, 0.3, clip, audio, ids, mask)
        again = unet(sample, 0.3, clip, audio, ids, mask)
    assert relative_error(ours, reference) <= TOLERANCE
    assert torch.equal(again, ours), "the literal forward must be gone once its block ends"


def test_sampler_equals_the_literal_loop() -> None:
    unet = tiny_models(2).unet
    audio, image, noise = conditioning(frames=13)
    options = SamplerOptions(steps=3, frames_per_window=5, overlap=1, shift_offset=2, dynamic_scale=1.1,
                             motion_scale=1.2, appearance_guidance=(1.5, 2.5), audio_guidance=(4.0, 6.0))
    for windows_per_call in (1, 3):
        ours = sample_latents(unet, audio, image, noise,
                              SamplerOptions(**{**options.__dict__, "windows_per_call": windows_per_call}),
                              Schedule.svd())
        with literal_unet(unet) as literal:
            reference = literal_sample_latents(literal, audio, image, noise, options, Schedule.svd())
        assert relative_error(ours, reference) <= TOLERANCE, f"windows_per_call={windows_per_call}"


def test_time_ids_equal_the_literal_per_frame_means() -> None:
    """The sampler's time ids barely move the tiny model's output, so they are compared directly."""
    buckets = 16 + 8 * torch.rand(13, 2, generator=torch.Generator().manual_seed(4))
    options = SamplerOptions(frames_per_window=5, overlap=1, dynamic_scale=1.1, motion_scale=1.3)
    windows = window_indices(13, 5, 1, 9)
    ours = window_time_ids(buckets, windows, options.fps, options.dynamic_scale, options.motion_scale, torch.float32)
    reference = torch.stack([literal_time_ids(buckets, frames, options) for frames in windows.tolist()])
    assert relative_error(ours, reference) <= 1e-6
