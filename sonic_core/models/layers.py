"""Building blocks shared by the Sonic UNet and the SVD temporal VAE, and the multi-head attention arithmetic that
every attention module of the package (UNet, whisper, CLIP) calls.

Sub-module names follow the published checkpoints (diffusers naming), so a model assembled from these blocks has the
same state-dict keys as the official files. Video tensors move between two layouts:

* frames folded into the batch, ``[B*F, C, H, W]`` (what 2-D convolutions and attention see);
* channels-first video, ``[B, C, F, H, W]`` (what the temporal 3-D convolutions see).

Every norm is ``GroupNorm(32, ·)``; the epsilon differs between call sites, so it is always a constructor argument.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

GROUPS = 32


def multi_head_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int) -> torch.Tensor:
    """Unmasked scaled-dot-product attention with ``heads`` heads (softmax scale ``head_dim ** -0.5``).

    ``q`` is ``[G, M, C]``, ``k`` and ``v`` are ``[G, T, C]`` (already projected); the channels are split into
    ``heads`` contiguous groups, and the heads' outputs are concatenated back: ``[G, M, C]``.
    """
    def split(x: torch.Tensor) -> torch.Tensor:  # [G, L, C] -> [G, heads, L, C/heads]
        return x.unflatten(-1, (heads, -1)).transpose(1, 2)

    return F.scaled_dot_product_attention(split(q), split(k), split(v)).transpose(1, 2).flatten(2)


def timestep_embedding(timesteps: torch.Tensor, dim: int, flip_sin_to_cos: bool = True,
                       freq_shift: float = 0.0, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding ``[N] -> [N, dim]`` (float32) of scalar timesteps or micro-conditions.

    Frequencies are ``max_period ** (-i / (dim/2 - freq_shift))``; the halves are ``(sin, cos)`` or, with
    ``flip_sin_to_cos``, ``(cos, sin)``. An odd ``dim`` gets one trailing zero column.
    """
    half = dim // 2
    exponent = -math.log(max_period) * torch.arange(half, dtype=torch.float32, device=timesteps.device)
    freqs = torch.exp(exponent / (half - freq_shift))
    args = timesteps.float()[:, None] * freqs[None, :]
    sin, cos = torch.sin(args), torch.cos(args)
    emb = torch.cat([cos, sin] if flip_sin_to_cos else [sin, cos], dim=-1)
    return F.pad(emb, (0, 1)) if dim % 2 else emb


class TimestepEmbedding(nn.Module):
    """Two-layer MLP ``linear_1 -> SiLU -> linear_2`` that lifts a sinusoidal embedding to the model width."""

    def __init__(self, in_channels: int, time_embed_dim: int, out_dim: int | None = None) -> None:
        super().__init__()
        self.linear_1 = nn.Linear(in_channels, time_embed_dim)
        self.linear_2 = nn.Linear(time_embed_dim, out_dim or time_embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear_2(F.silu(self.linear_1(x)))


class ResnetBlock2D(nn.Module):
    """Pre-norm residual block: ``x + conv2(SiLU(norm2(conv1(SiLU(norm1(x))) + proj(SiLU(temb)))))``.

    ``temb_channels=None`` builds the block without ``time_emb_proj`` (VAE); a 1x1 ``conv_shortcut`` appears when the
    channel count changes.
    """

    def __init__(self, in_channels: int, out_channels: int | None = None, temb_channels: int | None = None,
                 eps: float = 1e-6) -> None:
        super().__init__()
        out_channels = out_channels or in_channels
        self.norm1 = nn.GroupNorm(GROUPS, in_channels, eps=eps)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.time_emb_proj = nn.Linear(temb_channels, out_channels) if temb_channels is not None else None
        self.norm2 = nn.GroupNorm(GROUPS, out_channels, eps=eps)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.conv_shortcut = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else None

    def forward(self, x: torch.Tensor, temb: torch.Tensor | None = None) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        if self.time_emb_proj is not None and temb is not None:
            h = h + self.time_emb_proj(F.silu(temb))[:, :, None, None]
        h = self.conv2(F.silu(self.norm2(h)))
        return (self.conv_shortcut(x) if self.conv_shortcut is not None else x) + h


class TemporalResnetBlock(nn.Module):
    """Residual block over time on ``[B, C, F, H, W]``: 3-D convs with kernel (3, 1, 1) mix neighbouring frames only.

    ``temb`` is per frame, ``[B, F, temb_channels]``. Input and output channels are equal in every Sonic model.
    """

    def __init__(self, in_channels: int, out_channels: int | None = None, temb_channels: int | None = None,
                 eps: float = 1e-6) -> None:
        super().__init__()
        out_channels = out_channels or in_channels
        self.norm1 = nn.GroupNorm(GROUPS, in_channels, eps=eps)
        self.conv1 = nn.Conv3d(in_channels, out_channels, (3, 1, 1), padding=(1, 0, 0))
        self.time_emb_proj = nn.Linear(temb_channels, out_channels) if temb_channels is not None else None
        self.norm2 = nn.GroupNorm(GROUPS, out_channels, eps=eps)
        self.conv2 = nn.Conv3d(out_channels, out_channels, (3, 1, 1), padding=(1, 0, 0))

    def forward(self, x: torch.Tensor, temb: torch.Tensor | None = None) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        if self.time_emb_proj is not None and temb is not None:
            h = h + self.time_emb_proj(F.silu(temb)).permute(0, 2, 1)[:, :, :, None, None]
        h = self.conv2(F.silu(self.norm2(h)))
        return x + h


class AlphaBlender(nn.Module):
    """Learned blend ``a * x_spatial + (1 - a) * x_temporal`` with ``a = sigmoid(mix_factor)``.

    ``switch_spatial_to_temporal_mix`` swaps the roles (``a -> 1 - a``; the VAE decoder uses it).
    ``"learned_with_images"`` (UNet) additionally forces ``a = 1`` where ``image_only`` is true: pass a boolean tensor
    broadcastable to the inputs, or ``None`` when every frame is part of a video (always the case in Sonic, where the
    two strategies then coincide).
    """

    def __init__(self, alpha: float, merge_strategy: str = "learned_with_images",
                 switch_spatial_to_temporal_mix: bool = False) -> None:
        super().__init__()
        if merge_strategy not in ("learned", "learned_with_images"):
            raise ValueError(f"merge_strategy {merge_strategy!r}: use 'learned' or 'learned_with_images'")
        self.merge_strategy = merge_strategy
        self.switch = switch_spatial_to_temporal_mix
        self.mix_factor = nn.Parameter(torch.tensor([float(alpha)]))

    def forward(self, x_spatial: torch.Tensor, x_temporal: torch.Tensor,
                image_only: torch.Tensor | None = None) -> torch.Tensor:
        alpha = torch.sigmoid(self.mix_factor).to(x_spatial.dtype)
        if self.merge_strategy == "learned_with_images" and image_only is not None:
            alpha = torch.where(image_only, torch.ones_like(alpha), alpha)
        if self.switch:
            alpha = 1.0 - alpha
        return alpha * x_spatial + (1.0 - alpha) * x_temporal


class SpatioTemporalResBlock(nn.Module):
    """A 2-D resnet per frame followed by a temporal resnet across frames, blended by a learned ``time_mixer``.

    Works on frames folded into the batch, ``[B*F, C, H, W]`` with ``temb`` ``[B*F, temb_channels]`` (or ``None``).
    """

    def __init__(self, in_channels: int, out_channels: int | None = None, temb_channels: int | None = None,
                 eps: float = 1e-6, temporal_eps: float | None = None, merge_factor: float = 0.5,
                 merge_strategy: str = "learned_with_images", switch_spatial_to_temporal_mix: bool = False) -> None:
        super().__init__()
        out_channels = out_channels or in_channels
        self.spatial_res_block = ResnetBlock2D(in_channels, out_channels, temb_channels, eps)
        self.temporal_res_block = TemporalResnetBlock(out_channels, out_channels, temb_channels,
                                                      temporal_eps if temporal_eps is not None else eps)
        self.time_mixer = AlphaBlender(merge_factor, merge_strategy, switch_spatial_to_temporal_mix)

    def forward(self, x: torch.Tensor, temb: torch.Tensor | None, num_frames: int) -> torch.Tensor:
        x = self.spatial_res_block(x, temb)
        bf, c, h, w = x.shape
        video = x.reshape(bf // num_frames, num_frames, c, h, w).permute(0, 2, 1, 3, 4)
        temb_video = temb.reshape(bf // num_frames, num_frames, -1) if temb is not None else None
        mixed = self.time_mixer(video, self.temporal_res_block(video, temb_video))
        return mixed.permute(0, 2, 1, 3, 4).reshape(bf, c, h, w)


class Downsample2D(nn.Module):
    """Stride-2 3x3 convolution. ``padding=0`` pads one zero row/column at the bottom/right first (VAE encoder)."""

    def __init__(self, channels: int, out_channels: int | None = None, padding: int = 1) -> None:
        super().__init__()
        self.padding = padding
        self.conv = nn.Conv2d(channels, out_channels or channels, 3, stride=2, padding=padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.padding == 0:
            x = F.pad(x, (0, 1, 0, 1))
        return self.conv(x)


class Upsample2D(nn.Module):
    """Nearest-neighbour x2 upsampling followed by a 3x3 convolution."""

    def __init__(self, channels: int, out_channels: int | None = None) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, out_channels or channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))
