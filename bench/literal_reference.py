"""The published Sonic design followed literally, built from our own modules: the baseline of ``bench/speed_bench.py``.

The engine removes redundant work of a straightforward transcription of Sonic's inference (docs/MODEL.md §10). This
module puts that work back, on the very same modules and weights, so that the two can be timed side by side and
their outputs compared:

* UNet (:func:`literal_unet`, a context manager that swaps the transformer blocks' ``forward`` on one model):
  every temporal cross-attention repeats the frame-mean CLIP and audio contexts for every spatial position and
  projects them there (§10.5); every cross-attention attends over the single CLIP token with Q·K and a softmax
  (§10.6); every spatial cross-attention resizes the face mask again and expands it to a full
  ``[B·F, L, C]`` tensor (§10.7).
* Sampler (:func:`literal_sample_latents`): one UNet call per window (§10.8), image latents and CLIP contexts
  physically repeated over all N frames (§10.11), ``added_time_ids`` built frame by frame from device scalars
  (§10.9), and the windows' results merged frame by frame in Python.

What is kept from the published design is exact: the CFG batch of 3, window length, shift, guidance, Euler step and
the fp32 math. Nothing here is used by the engine.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

from sonic_core.conditioning import AudioConditioning, ImageConditioning
from sonic_core.models.attention import (AudioCrossAttention, BasicTransformerBlock, TemporalBasicTransformerBlock,
                                         downsample_mask)
from sonic_core.models.layers import multi_head_attention
from sonic_core.sampling import (SamplerOptions, Schedule, add_noise, euler_step, guide, scale_model_input, step_plan,
                                 window_indices)


def literal_cross_attention(attn: AudioCrossAttention, x: torch.Tensor, clip: torch.Tensor, audio: torch.Tensor,
                            mask: torch.Tensor | None = None) -> torch.Tensor:
    """``attn2`` with one context row per query row and a real attention over the single CLIP token."""
    q = attn.to_q(x)
    out = multi_head_attention(q, attn.to_k(clip), attn.to_v(clip), attn.heads)
    proc = attn.processor
    audio_out = multi_head_attention(q, proc.to_k_ip[0](audio), proc.to_v_ip[0](audio), attn.heads)
    if mask is not None:
        audio_out = audio_out * mask
    return attn.to_out[0](out + attn.ip_scale * audio_out)


def _literal_spatial_forward(self: BasicTransformerBlock, x: torch.Tensor, clip: torch.Tensor, audio: torch.Tensor,
                             face_mask: torch.Tensor | None) -> torch.Tensor:
    full_mask = None
    if face_mask is not None:  # resized again at every call from the full-resolution mask, then materialised
        full_mask = downsample_mask(face_mask, x.shape[1]).to(x.dtype).repeat(x.shape[0], 1, x.shape[2])
    x = self.attn1(self.norm1(x)) + x
    x = literal_cross_attention(self.attn2, self.norm2(x), clip, audio, full_mask) + x
    return self.ff(self.norm3(x)) + x


def _literal_temporal_forward(self: TemporalBasicTransformerBlock, x: torch.Tensor, num_frames: int,
                              clip: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
    """``clip`` and ``audio`` are the per-frame contexts ``[B·F, T, D]`` of the call."""
    bf, s, c = x.shape
    b = bf // num_frames
    x = x.reshape(b, num_frames, s, c).transpose(1, 2).reshape(b * s, num_frames, c)
    x = self.ff_in(self.norm_in(x)) + x
    x = self.attn1(self.norm1(x)) + x
    # the window's frame mean of each context, repeated for every spatial position: [b·s, T, D]
    clip_rows = clip.reshape(b, num_frames, *clip.shape[1:]).mean(dim=1).repeat_interleave(s, dim=0)
    audio_rows = audio.reshape(b, num_frames, *audio.shape[1:]).mean(dim=1).repeat_interleave(s, dim=0)
    x = literal_cross_attention(self.attn2, self.norm2(x), clip_rows, audio_rows) + x
    x = self.ff(self.norm3(x)) + x
    return x.reshape(b, s, num_frames, c).transpose(1, 2).reshape(bf, s, c)


@contextlib.contextmanager
def literal_unet(unet: nn.Module) -> Iterator[nn.Module]:
    """Within the block, ``unet``'s transformer blocks run the literal published forward (same weights)."""
    spatial = [m for m in unet.modules() if isinstance(m, BasicTransformerBlock)]
    temporal = [m for m in unet.modules() if isinstance(m, TemporalBasicTransformerBlock)]
    original_forward = unet.forward
    # the running call's own inputs: the blocks are handed the engine's derived ones (resized mask, frame means)
    call: dict[str, torch.Tensor | None] = {}

    def forward(sample, timestep, clip_embeds, audio_tokens, added_time_ids, face_mask=None, audio_index=None):
        per_frame_audio = audio_tokens if audio_index is None else audio_tokens[audio_index]
        call.update(clip=clip_embeds, audio=per_frame_audio,
                    mask=None if face_mask is None else face_mask.reshape(1, *face_mask.shape[-2:]))
        return original_forward(sample, timestep, clip_embeds, per_frame_audio, added_time_ids, face_mask)

    def spatial_forward(block: BasicTransformerBlock):
        return lambda x, clip, audio, mask, audio_index=None: _literal_spatial_forward(block, x, clip, call["audio"],
                                                                                      call["mask"])

    def temporal_forward(block: TemporalBasicTransformerBlock):
        return lambda x, num_frames, clip_mean, audio_mean: _literal_temporal_forward(
            block, x, num_frames, call["clip"], call["audio"])

    for block in spatial:
        block.forward = spatial_forward(block)
    for block in temporal:
        block.forward = temporal_forward(block)
    unet.forward = forward
    try:
        yield unet
    finally:
        for block in spatial + temporal:
            del block.forward
        del unet.forward


def literal_time_ids(buckets: torch.Tensor, frames: list[int], options: SamplerOptions) -> torch.Tensor:
    """``added_time_ids`` of one window, read frame by frame from the per-frame buckets (one device sync each)."""
    dynamic = [float(buckets[i, 0]) * options.dynamic_scale for i in frames]
    head = [float(buckets[i, 1]) * options.dynamic_scale * options.motion_scale for i in frames]
    return torch.tensor([options.fps, sum(dynamic) / len(frames), sum(head) / len(frames)])


@torch.no_grad()
def literal_sample_latents(unet: nn.Module, audio: AudioConditioning, image: ImageConditioning,
                           latent_noise: torch.Tensor, options: SamplerOptions, schedule: Schedule) -> torch.Tensor:
    """The sampler loop as published: one UNet call per window, contexts repeated over all frames, per-frame merge.

    Same arguments and result as :func:`sonic_core.sampling.sample_latents` (``windows_per_call`` is ignored).
    """
    param = next(unet.parameters())
    device, dtype = param.device, param.dtype
    n = audio.num_frames
    plan = step_plan(options, schedule, device, dtype)
    sigmas, timesteps, start = plan.sigmas, plan.timesteps, plan.start

    cond_tokens = audio.cond_tokens.to(device, dtype)
    uncond_tokens = audio.uncond_tokens.to(device, dtype).expand_as(cond_tokens)
    audio_slots = torch.stack([uncond_tokens, uncond_tokens, cond_tokens])  # [3, N, T, D], physically repeated
    z_cond = image.cond_latents.to(device, dtype)[0]
    image_slots = torch.stack([torch.zeros_like(z_cond), z_cond, z_cond])[:, None].repeat(1, n, 1, 1, 1)
    clip = image.image_embeds.to(device, dtype).reshape(1, 1, -1)
    clip_slots = torch.stack([torch.zeros_like(clip), clip, clip]).repeat(1, n, 1, 1)  # [3, N, 1, P]
    buckets = audio.buckets.to(device)
    face_mask = image.face_mask.to(device, dtype)
    latents = add_noise(image.ref_latents.to(device, dtype), latent_noise.to(device, dtype), sigmas[start].to(dtype))

    for k in range(plan.steps_run):
        sigma, sigma_next, t = sigmas[start + k], sigmas[start + k + 1], timesteps[start + k]
        windows = window_indices(n, options.frames_per_window, options.overlap, k * options.shift_offset)
        summed = torch.zeros_like(latents)
        counts = latents.new_zeros(n)
        for frames in windows.tolist():
            window_latents = torch.stack([latents[i] for i in frames])[None]
            noisy = scale_model_input(window_latents, sigma).repeat(3, 1, 1, 1, 1)
            sample = torch.cat([noisy, image_slots[:, frames]], dim=2)
            clip_ctx = clip_slots[:, frames].flatten(0, 1)
            audio_ctx = audio_slots[:, frames].flatten(0, 1)
            ids = literal_time_ids(buckets, frames, options).to(device, dtype)
            out = unet(sample, t, clip_ctx, audio_ctx, ids[None].repeat(3, 1), face_mask)
            guided = guide(out[0:1], out[1:2], out[2:3], plan.appearance[k], plan.audio[k])
            stepped = euler_step(window_latents, guided, sigma, sigma_next)[0]
            for m, i in enumerate(frames):
                summed[i] += stepped[m]
                counts[i] += 1
        latents = summed / counts[:, None, None, None]
    return latents
