"""The SVD temporal VAE (``AutoencoderKLTemporalDecoder`` behaviour): a per-image KL encoder and a decoder that mixes
neighbouring frames, with state-dict keys equal to ``vae_temporal.tsv``.

Sonic only needs the encoder's distribution *mode* (the mean) for the reference image, and the decoder for the
final latents, decoded in chunks whose length changes the temporal mixing (MODEL.md §8.1).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from .layers import GROUPS, Downsample2D, ResnetBlock2D, SpatioTemporalResBlock, Upsample2D

SPATIAL_EPS = 1e-6
TEMPORAL_EPS = 1e-5  # the decoder's temporal resnets normalise with a larger epsilon than everything else


@dataclass(frozen=True)
class VAEConfig:
    """The fields of the diffusers ``vae/config.json`` that shape the network (others are accepted and ignored)."""

    in_channels: int = 3
    out_channels: int = 3
    block_out_channels: tuple[int, ...] = (128, 256, 512, 512)
    layers_per_block: int = 2
    latent_channels: int = 4
    scaling_factor: float = 0.18215

    @classmethod
    def from_dict(cls, config: dict) -> "VAEConfig":
        known = {k: v for k, v in config.items() if k in cls.__dataclass_fields__}
        if "block_out_channels" in known:
            known["block_out_channels"] = tuple(known["block_out_channels"])
        return cls(**known)

    @property
    def downscale(self) -> int:
        """Pixels per latent pixel along each side: 2 ** (levels - 1)."""
        return 2 ** (len(self.block_out_channels) - 1)


class MidAttention(nn.Module):
    """Single-head self-attention over all pixels with a GroupNorm in front and a residual connection."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.group_norm = nn.GroupNorm(GROUPS, channels, eps=SPATIAL_EPS)
        self.to_q = nn.Linear(channels, channels)
        self.to_k = nn.Linear(channels, channels)
        self.to_v = nn.Linear(channels, channels)
        self.to_out = nn.ModuleList([nn.Linear(channels, channels)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        tokens = self.group_norm(x).flatten(2).transpose(1, 2)
        q, k, v = (proj(tokens)[:, None] for proj in (self.to_q, self.to_k, self.to_v))
        out = F.scaled_dot_product_attention(q, k, v)[:, 0]
        out = self.to_out[0](out).transpose(1, 2).reshape(b, c, h, w)
        return x + out


class EncoderDownBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, layers: int, downsample: bool) -> None:
        super().__init__()
        self.resnets = nn.ModuleList(
            ResnetBlock2D(in_channels if i == 0 else out_channels, out_channels, eps=SPATIAL_EPS) for i in range(layers))
        self.downsamplers = nn.ModuleList([Downsample2D(out_channels, padding=0)]) if downsample else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for resnet in self.resnets:
            x = resnet(x)
        return self.downsamplers[0](x) if self.downsamplers is not None else x


class EncoderMidBlock(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.attentions = nn.ModuleList([MidAttention(channels)])
        self.resnets = nn.ModuleList([ResnetBlock2D(channels, eps=SPATIAL_EPS) for _ in range(2)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.resnets[1](self.attentions[0](self.resnets[0](x)))


class Encoder(nn.Module):
    def __init__(self, cfg: VAEConfig) -> None:
        super().__init__()
        ch = cfg.block_out_channels
        self.conv_in = nn.Conv2d(cfg.in_channels, ch[0], 3, padding=1)
        self.down_blocks = nn.ModuleList(
            EncoderDownBlock(ch[max(i - 1, 0)], ch[i], cfg.layers_per_block, downsample=i < len(ch) - 1)
            for i in range(len(ch)))
        self.mid_block = EncoderMidBlock(ch[-1])
        self.conv_norm_out = nn.GroupNorm(GROUPS, ch[-1], eps=SPATIAL_EPS)
        self.conv_out = nn.Conv2d(ch[-1], 2 * cfg.latent_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv_in(x)
        for block in self.down_blocks:
            x = block(x)
        x = self.mid_block(x)
        return self.conv_out(F.silu(self.conv_norm_out(x)))


def _temporal_resnet(in_channels: int, out_channels: int) -> SpatioTemporalResBlock:
    return SpatioTemporalResBlock(in_channels, out_channels, eps=SPATIAL_EPS, temporal_eps=TEMPORAL_EPS,
                                  merge_factor=0.0, merge_strategy="learned", switch_spatial_to_temporal_mix=True)


class DecoderMidBlock(nn.Module):
    """``layers`` temporal resnets with the attention after the first one.

    The attention is applied only when a second resnet follows it: with ``layers=1`` (tiny test VAEs) the reference
    implementation builds the attention but never runs it, and so does this one.
    """

    def __init__(self, channels: int, layers: int) -> None:
        super().__init__()
        self.resnets = nn.ModuleList([_temporal_resnet(channels, channels) for _ in range(layers)])
        self.attentions = nn.ModuleList([MidAttention(channels)])

    def forward(self, x: torch.Tensor, num_frames: int) -> torch.Tensor:
        x = self.resnets[0](x, None, num_frames)
        for attention, resnet in zip(self.attentions, self.resnets[1:]):
            x = resnet(attention(x), None, num_frames)
        return x


class DecoderUpBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, layers: int, upsample: bool) -> None:
        super().__init__()
        self.resnets = nn.ModuleList(
            _temporal_resnet(in_channels if i == 0 else out_channels, out_channels) for i in range(layers))
        self.upsamplers = nn.ModuleList([Upsample2D(out_channels)]) if upsample else None

    def forward(self, x: torch.Tensor, num_frames: int) -> torch.Tensor:
        for resnet in self.resnets:
            x = resnet(x, None, num_frames)
        return self.upsamplers[0](x) if self.upsamplers is not None else x


class TemporalDecoder(nn.Module):
    def __init__(self, cfg: VAEConfig) -> None:
        super().__init__()
        ch = tuple(reversed(cfg.block_out_channels))
        self.conv_in = nn.Conv2d(cfg.latent_channels, ch[0], 3, padding=1)
        self.mid_block = DecoderMidBlock(ch[0], cfg.layers_per_block)
        self.up_blocks = nn.ModuleList(
            DecoderUpBlock(ch[max(i - 1, 0)], ch[i], cfg.layers_per_block + 1, upsample=i < len(ch) - 1)
            for i in range(len(ch)))
        self.conv_norm_out = nn.GroupNorm(GROUPS, ch[-1], eps=SPATIAL_EPS)
        self.conv_out = nn.Conv2d(ch[-1], cfg.out_channels, 3, padding=1)
        self.time_conv_out = nn.Conv3d(cfg.out_channels, cfg.out_channels, (3, 1, 1), padding=(1, 0, 0))

    def forward(self, z: torch.Tensor, num_frames: int) -> torch.Tensor:
        """``[B*F, latent, h, w]`` -> ``[B*F, out, H, W]``; frames of one video are consecutive in the batch."""
        x = self.mid_block(self.conv_in(z), num_frames)
        for block in self.up_blocks:
            x = block(x, num_frames)
        x = self.conv_out(F.silu(self.conv_norm_out(x)))
        bf, c, h, w = x.shape
        video = x.reshape(bf // num_frames, num_frames, c, h, w).permute(0, 2, 1, 3, 4)
        return self.time_conv_out(video).permute(0, 2, 1, 3, 4).reshape(bf, c, h, w)


class TemporalVAE(nn.Module):
    """Encoder + quant_conv + temporal decoder; keys ``encoder.*``, ``quant_conv.*``, ``decoder.*``."""

    def __init__(self, config: VAEConfig | dict | None = None) -> None:
        super().__init__()
        self.config = config if isinstance(config, VAEConfig) else VAEConfig.from_dict(config or {})
        self.encoder = Encoder(self.config)
        self.quant_conv = nn.Conv2d(2 * self.config.latent_channels, 2 * self.config.latent_channels, 1)
        self.decoder = TemporalDecoder(self.config)

    def encode_mode(self, images: torch.Tensor) -> torch.Tensor:
        """Mean of the latent distribution of images ``[N, 3, H, W]`` in [-1, 1]; unscaled ``[N, latent, h, w]``."""
        moments = self.quant_conv(self.encoder(images))
        return moments[:, : self.config.latent_channels]

    def decode(self, latents: torch.Tensor, num_frames: int) -> torch.Tensor:
        """Decode unscaled latents ``[B*F, latent, h, w]`` of ``num_frames``-frame clips to pixels in about [-1, 1]."""
        return self.decoder(latents, num_frames)

    def decode_chunks(self, latents: torch.Tensor, chunk_size: int) -> Iterator[torch.Tensor]:
        """Decode one clip's *scaled* latents ``[F, latent, h, w]`` chunk by chunk (the temporal decoder mixes only
        within a chunk), yielding ``[chunk, out, H, W]`` so that callers can stream frames with flat memory."""
        inv_scale = 1.0 / self.config.scaling_factor
        for start in range(0, latents.shape[0], chunk_size):
            chunk = latents[start:start + chunk_size]
            yield self.decode(chunk * inv_scale, num_frames=chunk.shape[0])

