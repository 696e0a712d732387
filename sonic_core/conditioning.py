"""Audio and image conditioning of the Sonic sampler (MODEL.md §4.2–§4.3, §5, §7.2), batched over frames.

Audio: whisper runs once per 3000-frame log-mel piece and one pass gives both feature sets (every hidden state for
audio2token, the last one for audio2bucket, MODEL.md §10.1). The features are cut to ``2·audio_len`` rows, zero-padded
and sliced into one window per generated frame with ``unfold`` (views, no per-frame loop); the adapters run on
chunks of frames. The unconditional tokens are audio2token of an all-zero window, computed once (§10.4).

Image: one VAE encode of the reference when ``noise_aug_strength`` is 0 (§10.3); the caller still draws the
pixel noise so the latent noise that follows is the official draw.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from .errors import SonicAudioError
from .models.audio_adapters import Audio2BucketModel, AudioProjModel, to_motion_buckets
from .timing import generated_frame_count

WHISPER_FRAMES_PER_AUDIO_FRAME = 2  # whisper runs at 50 Hz, audio frames at 25 fps
MEL_FRAMES_PER_PIECE = 3000  # the whisper encoder takes exactly 30 s of log-mel
ADAPTER_FRAMES_PER_CALL = 256  # frames per audio-adapter call: bounds the [frames, 19200] activations


@dataclass
class AudioConditioning:
    """Per generated frame audio conditions: ``cond_tokens`` ``[N, T, D]``, one ``uncond_tokens`` ``[T, D]`` shared
    by every frame, and motion ``buckets`` ``[N, 2]`` (``16·audio2bucket + 16``, before any scale). All fp32."""

    cond_tokens: torch.Tensor
    uncond_tokens: torch.Tensor
    buckets: torch.Tensor

    @property
    def num_frames(self) -> int:
        return self.cond_tokens.shape[0]


@dataclass
class ImageConditioning:
    """Reference-image conditions: CLIP ``image_embeds`` ``[1, P]``, ``ref_latents`` (scaled mode, the start of the
    noisy latents) and ``cond_latents`` (unscaled mode of the possibly noise-augmented image), both ``[1, C, h, w]``,
    and the ``face_mask`` ``[1, 1, H, W]`` in [0, 1]."""

    image_embeds: torch.Tensor
    ref_latents: torch.Tensor
    cond_latents: torch.Tensor
    face_mask: torch.Tensor


def whisper_features(encoder: Callable[[torch.Tensor], torch.Tensor],
                     mel_pieces: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Run the whisper encoder once per piece of ``[K, n_mels, 3000]`` log-mel.

    ``encoder(mel [1, n_mels, 3000]) -> [1, 1500, L+1, d]`` (stacked hidden states, the last after the final
    LayerNorm). Returns every hidden state ``[K·1500, L+1, d]`` and the last one ``[K·1500, d]``, in time order.
    """
    if mel_pieces.ndim != 3 or mel_pieces.shape[-1] != MEL_FRAMES_PER_PIECE:
        raise SonicAudioError(f"log-mel pieces of shape {tuple(mel_pieces.shape)}: expected "
                              f"[pieces, n_mels, {MEL_FRAMES_PER_PIECE}] from audio.log_mel_pieces")
    hidden = torch.cat([encoder(piece[None])[0] for piece in mel_pieces])
    return hidden, hidden[:, -1]


def frame_windows(features: torch.Tensor, num_frames: int, stride: int, seq_len: int) -> torch.Tensor:
    """``[N, seq_len, ...]`` windows of ``features`` ``[T, ...]`` centred on rows ``stride·i``, zeros outside.

    Window ``i`` covers rows ``stride·i − (seq_len/2 − 1)`` to ``stride·i + seq_len/2`` (the official 4/6 padding
    for 10-row windows, 24/26 for 50). The result is a view of one padded copy.
    """
    before = seq_len // 2 - 1
    after = seq_len - before
    padded = features.new_zeros((before + features.shape[0] + after, *features.shape[1:]))
    padded[before:before + features.shape[0]] = features
    windows = padded.unfold(0, seq_len, stride)[:num_frames]  # [N, ..., seq_len]
    return windows.movedim(-1, 1)


@torch.no_grad()
def encode_audio(hidden: torch.Tensor, last: torch.Tensor, audio_len: int, step: int,
                 audio2token: AudioProjModel, audio2bucket: Audio2BucketModel,
                 image_embeds: torch.Tensor) -> AudioConditioning:
    """Per-frame audio tokens and motion buckets from whisper features (see :func:`whisper_features`).

    ``audio_len`` counts 25 fps audio frames; one video frame is generated per ``step`` of them. The features are
    truncated to ``2·audio_len`` rows (real encoder frames beyond are replaced by the zero padding). The results
    live where ``hidden`` does (host memory, when the memory planner keeps a long clip's conditioning off the
    device); each chunk of frames goes to the adapters' device and back.
    """
    home, device = hidden.device, next(audio2token.parameters()).device
    num_frames = generated_frame_count(audio_len, step)
    rows = WHISPER_FRAMES_PER_AUDIO_FRAME * audio_len
    if hidden.shape[0] < rows:
        raise SonicAudioError(f"whisper features have {hidden.shape[0]} rows for {audio_len} audio frames: "
                              f"pass log-mel pieces covering the whole audio")
    stride = WHISPER_FRAMES_PER_AUDIO_FRAME * step
    token_len = audio2token.proj1.in_features // hidden[0].numel()
    bucket_len = (audio2bucket.proj1.in_features - image_embeds.shape[-1]) // last[0].numel()
    token_windows = frame_windows(hidden[:rows], num_frames, stride, token_len)
    bucket_windows = frame_windows(last[:rows, None], num_frames, stride, bucket_len)
    clip = image_embeds.reshape(1, -1).float()

    cond, raw = [], []
    for start in range(0, num_frames, ADAPTER_FRAMES_PER_CALL):
        tokens = token_windows[start:start + ADAPTER_FRAMES_PER_CALL]
        cond.append(audio2token(tokens[None].to(device))[0].to(home))
        buckets = bucket_windows[start:start + ADAPTER_FRAMES_PER_CALL]
        raw.append(audio2bucket(buckets[None].to(device), clip.expand(buckets.shape[0], -1))[0].to(home))
    uncond = audio2token(token_windows.new_zeros((1, 1, *token_windows.shape[1:])).to(device))[0, 0].to(home)
    buckets = to_motion_buckets(torch.cat(raw)).reshape(num_frames, -1)
    return AudioConditioning(torch.cat(cond), uncond, buckets)


@torch.no_grad()
def encode_image(vae, image_embeds: torch.Tensor, ref_image: torch.Tensor, face_mask: torch.Tensor,
                 noise_aug_strength: float, image_noise: torch.Tensor) -> ImageConditioning:
    """Latents of the reference image ``[3, H, W]`` in [-1, 1] with the VAE's dtype and device (MODEL.md §7.2).

    ``ref_latents = scaling_factor · mode(ref)``; ``cond_latents = mode(ref + noise_aug_strength · image_noise)``,
    unscaled, which is the same encode when the strength is 0. ``face_mask`` ``[C, H, W]``: channel 0 is used.
    """
    param = next(vae.parameters())
    ref = ref_image.reshape(1, *ref_image.shape[-3:]).to(param.device, param.dtype)
    mode = vae.encode_mode(ref)
    if noise_aug_strength:
        noise = image_noise.reshape(ref.shape).to(param.device, param.dtype)
        cond = vae.encode_mode(ref + noise_aug_strength * noise)
    else:
        cond = mode
    mask = face_mask.reshape(-1, *face_mask.shape[-2:])[:1][None].to(param.device, param.dtype)
    return ImageConditioning(image_embeds.reshape(1, -1).to(param.device, param.dtype),
                             vae.config.scaling_factor * mode, cond, mask)
