"""Sonic's audio adapters (MODEL.md §5): whisper feature windows -> UNet audio tokens, and -> motion buckets.

Both take ``[batch, frames, seq_len, blocks, channels]`` windows (one per generated frame), fold batch and frames,
flatten each window row-major (time, layer, channel) and run a three-layer MLP.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class AudioProjModel(nn.Module):
    """audio2token: a window of whisper hidden states -> ``context_tokens`` LayerNorm-ed tokens of ``output_dim``."""

    def __init__(self, seq_len: int = 10, blocks: int = 5, channels: int = 384, intermediate_dim: int = 1024,
                 output_dim: int = 1024, context_tokens: int = 32) -> None:
        super().__init__()
        self.context_tokens, self.output_dim = context_tokens, output_dim
        self.proj1 = nn.Linear(seq_len * blocks * channels, intermediate_dim)
        self.proj2 = nn.Linear(intermediate_dim, intermediate_dim)
        self.proj3 = nn.Linear(intermediate_dim, context_tokens * output_dim)
        self.norm = nn.LayerNorm(output_dim)

    def forward(self, audio_embeds: torch.Tensor) -> torch.Tensor:
        """``[B, F, seq_len, blocks, channels] -> [B, F, context_tokens, output_dim]``."""
        b, f = audio_embeds.shape[:2]
        x = audio_embeds.reshape(b * f, -1)
        x = F.relu(self.proj2(F.relu(self.proj1(x))))
        tokens = self.proj3(x).reshape(b * f, self.context_tokens, self.output_dim)
        return self.norm(tokens).reshape(b, f, self.context_tokens, self.output_dim)


class Audio2BucketModel(nn.Module):
    """audio2bucket: a long whisper window plus the CLIP image embedding -> ``context_tokens`` motion values.

    The pipeline maps the raw output ``o`` to motion buckets ``16·o + 16`` (see :func:`to_motion_buckets`).
    """

    def __init__(self, seq_len: int = 50, blocks: int = 1, channels: int = 384, clip_channels: int = 1024,
                 intermediate_dim: int = 1024, output_dim: int = 1, context_tokens: int = 2) -> None:
        super().__init__()
        self.context_tokens, self.output_dim = context_tokens, output_dim
        self.proj1 = nn.Linear(seq_len * blocks * channels + clip_channels, intermediate_dim)
        self.proj2 = nn.Linear(intermediate_dim, intermediate_dim)
        self.proj3 = nn.Linear(intermediate_dim, context_tokens * output_dim)

    def forward(self, audio_embeds: torch.Tensor, clip_embeds: torch.Tensor) -> torch.Tensor:
        """``[B, F, seq_len, blocks, channels]`` and ``[B·F, clip_channels] -> [B, F, context_tokens, output_dim]``.

        Each (batch, frame) row is the flattened audio window followed by its CLIP embedding row.
        """
        b, f = audio_embeds.shape[:2]
        x = torch.cat([audio_embeds.reshape(b * f, -1), clip_embeds.reshape(b * f, -1)], dim=-1)
        x = F.silu(self.proj2(F.silu(self.proj1(x))))
        return self.proj3(x).reshape(b, f, self.context_tokens, self.output_dim)


def to_motion_buckets(raw: torch.Tensor) -> torch.Tensor:
    """Map audio2bucket outputs to the UNet's motion-bucket micro-conditions: ``16·raw + 16``."""
    return raw * 16 + 16
