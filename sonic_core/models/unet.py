"""The Sonic UNet: SVD's spatio-temporal UNet with an audio branch in every cross-attention (MODEL.md §6).

Config-driven (the constructor takes the diffusers-style ``unet/config.json`` kwargs); ``state_dict()`` keys equal
those of ``Sonic/unet.pth``, so loading is a strict ``load_state_dict`` (:mod:`sonic_core.weights` reads and checks
the file).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..configs import bundled_config
from .attention import FeedForward, SiteContext, TransformerSpatioTemporalModel
from .layers import Downsample2D, SpatioTemporalResBlock, TimestepEmbedding, Upsample2D, timestep_embedding

SVD_UNET_CONFIG = "svd_unet_config.json"  # bundled in sonic_core/configs

# GroupNorm epsilons of the resnets, as in SVD: 1e-6 next to attention and in the up path, 1e-5 elsewhere.
EPS_ATTN_DOWN, EPS_PLAIN_DOWN, EPS_MID, EPS_UP = 1e-6, 1e-5, 1e-5, 1e-6


class DownBlock(nn.Module):
    """``layers`` spatio-temporal resnets (each followed by an attention site when ``cross_attention``), then an
    optional stride-2 downsampler. Returns the output and every intermediate state for the skip connections."""

    def __init__(self, in_channels: int, out_channels: int, temb_channels: int, layers: int, cross_attention: bool,
                 heads: int, context_dim: int, add_downsample: bool, transformer_layers: int = 1) -> None:
        super().__init__()
        eps = EPS_ATTN_DOWN if cross_attention else EPS_PLAIN_DOWN
        if cross_attention:  # registered before the resnets: the checkpoint lists keys in this order
            self.attentions = nn.ModuleList([
                TransformerSpatioTemporalModel(heads, out_channels // heads, out_channels, context_dim,
                                               transformer_layers) for _ in range(layers)])
        self.resnets = nn.ModuleList([SpatioTemporalResBlock(in_channels if i == 0 else out_channels, out_channels,
                                                             temb_channels, eps=eps) for i in range(layers)])
        self.downsamplers = nn.ModuleList([Downsample2D(out_channels)]) if add_downsample else None

    def forward(self, x: torch.Tensor, temb: torch.Tensor, num_frames: int,
                context: SiteContext) -> tuple[torch.Tensor, list[torch.Tensor]]:
        states = []
        attentions = getattr(self, "attentions", None)
        for i, resnet in enumerate(self.resnets):
            x = resnet(x, temb, num_frames)
            if attentions is not None:
                x = attentions[i](x, num_frames, context)
            states.append(x)
        if self.downsamplers is not None:
            x = self.downsamplers[0](x)
            states.append(x)
        return x, states


class MidBlock(nn.Module):
    """resnet, attention site, resnet at the lowest resolution."""

    def __init__(self, channels: int, temb_channels: int, heads: int, context_dim: int,
                 transformer_layers: int = 1) -> None:
        super().__init__()
        self.attentions = nn.ModuleList([TransformerSpatioTemporalModel(heads, channels // heads, channels,
                                                                        context_dim, transformer_layers)])
        self.resnets = nn.ModuleList([SpatioTemporalResBlock(channels, channels, temb_channels, eps=EPS_MID)
                                      for _ in range(2)])

    def forward(self, x: torch.Tensor, temb: torch.Tensor, num_frames: int, context: SiteContext) -> torch.Tensor:
        x = self.resnets[0](x, temb, num_frames)
        x = self.attentions[0](x, num_frames, context)
        return self.resnets[1](x, temb, num_frames)


class UpBlock(nn.Module):
    """``layers`` resnets on (input ⧺ skip) channels, each optionally followed by an attention site, then an
    optional nearest-x2 upsampler."""

    def __init__(self, in_channels: int, prev_channels: int, out_channels: int, temb_channels: int, layers: int,
                 cross_attention: bool, heads: int, context_dim: int, add_upsample: bool,
                 transformer_layers: int = 1) -> None:
        super().__init__()
        resnets = []
        for i in range(layers):
            skip = in_channels if i == layers - 1 else out_channels
            first = prev_channels if i == 0 else out_channels
            resnets.append(SpatioTemporalResBlock(first + skip, out_channels, temb_channels, eps=EPS_UP))
        if cross_attention:
            self.attentions = nn.ModuleList([
                TransformerSpatioTemporalModel(heads, out_channels // heads, out_channels, context_dim,
                                               transformer_layers) for _ in range(layers)])
        self.resnets = nn.ModuleList(resnets)
        self.upsamplers = nn.ModuleList([Upsample2D(out_channels)]) if add_upsample else None

    def forward(self, x: torch.Tensor, skips: list[torch.Tensor], temb: torch.Tensor, num_frames: int,
                context: SiteContext) -> torch.Tensor:
        attentions = getattr(self, "attentions", None)
        for i, resnet in enumerate(self.resnets):
            x = resnet(torch.cat([x, skips.pop()], dim=1), temb, num_frames)
            if attentions is not None:
                x = attentions[i](x, num_frames, context)
        if self.upsamplers is not None:
            x = self.upsamplers[0](x)
        return x


def _per_level(value: int | Sequence[int], levels: int) -> list[int]:
    return [value] * levels if isinstance(value, int) else list(value)


class SonicUNet(nn.Module):
    """SVD's UNetSpatioTemporalConditionModel with Sonic's audio conditioning.

    Keyword arguments are the diffusers config fields; ``num_frames`` and ``sample_size`` are accepted for
    compatibility but unused (the window length comes from the input). ``ip_scale`` weights the audio branch
    (the ``ip_audio_scale`` setting).
    """

    def __init__(self, *, in_channels: int = 8, out_channels: int = 4,
                 down_block_types: Sequence[str] = ("CrossAttnDownBlockSpatioTemporal",) * 3
                 + ("DownBlockSpatioTemporal",),
                 up_block_types: Sequence[str] = ("UpBlockSpatioTemporal",) + ("CrossAttnUpBlockSpatioTemporal",) * 3,
                 block_out_channels: Sequence[int] = (320, 640, 1280, 1280), addition_time_embed_dim: int = 256,
                 projection_class_embeddings_input_dim: int = 768, layers_per_block: int | Sequence[int] = 2,
                 cross_attention_dim: int = 1024, transformer_layers_per_block: int | Sequence[int] = 1,
                 num_attention_heads: int | Sequence[int] = (5, 10, 20, 20), num_frames: int = 25,
                 sample_size: int | None = None, ip_scale: float = 1.0) -> None:
        super().__init__()
        levels = len(block_out_channels)
        if len(down_block_types) != levels or len(up_block_types) != levels:
            raise ValueError("down_block_types, up_block_types and block_out_channels need the same length")
        heads = _per_level(num_attention_heads, levels)
        layers = _per_level(layers_per_block, levels)
        transformer_layers = _per_level(transformer_layers_per_block, levels)
        temb_channels = block_out_channels[0] * 4
        self.addition_time_embed_dim = addition_time_embed_dim

        self.conv_in = nn.Conv2d(in_channels, block_out_channels[0], 3, padding=1)
        self.time_embedding = TimestepEmbedding(block_out_channels[0], temb_channels)
        self.add_embedding = TimestepEmbedding(projection_class_embeddings_input_dim, temb_channels)

        self.down_blocks = nn.ModuleList()
        channels = block_out_channels[0]
        for i, kind in enumerate(down_block_types):
            out = block_out_channels[i]
            self.down_blocks.append(DownBlock(
                channels, out, temb_channels, layers[i], kind.startswith("CrossAttn"), heads[i], cross_attention_dim,
                add_downsample=i < levels - 1, transformer_layers=transformer_layers[i]))
            channels = out

        rev_channels, rev_heads = list(reversed(block_out_channels)), list(reversed(heads))
        rev_layers, rev_tlayers = list(reversed(layers)), list(reversed(transformer_layers))
        self.up_blocks = nn.ModuleList()
        prev = rev_channels[0]
        for i, kind in enumerate(up_block_types):
            out = rev_channels[i]
            skip_in = rev_channels[min(i + 1, levels - 1)]
            self.up_blocks.append(UpBlock(
                skip_in, prev, out, temb_channels, rev_layers[i] + 1, kind.startswith("CrossAttn"), rev_heads[i],
                cross_attention_dim, add_upsample=i < levels - 1, transformer_layers=rev_tlayers[i]))
            prev = out

        # registered after the up path: the checkpoint lists the mid block's keys there
        self.mid_block = MidBlock(block_out_channels[-1], temb_channels, heads[-1], cross_attention_dim,
                                  transformer_layers[-1])
        self.conv_norm_out = nn.GroupNorm(32, block_out_channels[0], eps=1e-5)
        self.conv_out = nn.Conv2d(block_out_channels[0], out_channels, 3, padding=1)
        self.ip_scale = ip_scale

    @classmethod
    def from_config(cls, config: Mapping, **overrides) -> SonicUNet:
        """Build from a diffusers ``config.json`` mapping (private ``_*`` fields are ignored)."""
        return cls(**{k: v for k, v in config.items() if not k.startswith("_")}, **overrides)

    @classmethod
    def svd(cls, **overrides) -> SonicUNet:
        """The full-size Sonic UNet (SVD-xt config)."""
        return cls.from_config(bundled_config(SVD_UNET_CONFIG), **overrides)

    @property
    def ip_scale(self) -> float:
        return self._ip_scale

    @ip_scale.setter
    def ip_scale(self, value: float) -> None:
        self._ip_scale = float(value)
        for module in self.modules():
            if hasattr(module, "processor"):
                module.ip_scale = self._ip_scale

    def chunk_feed_forwards(self, elements: int | None) -> None:
        """Run every feed-forward with at most ``elements`` inner activations at once (``None``: all rows at once);
        same result, less memory (:class:`~.attention.FeedForward`)."""
        for module in self.modules():
            if isinstance(module, FeedForward):
                module.chunk_elements = elements

    @property
    def feed_forward_inner(self) -> int:
        """The widest feed-forward's inner width."""
        return max(module.inner for module in self.modules() if isinstance(module, FeedForward))

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor | float, clip_embeds: torch.Tensor,
                audio_tokens: torch.Tensor, added_time_ids: torch.Tensor, face_mask: torch.Tensor | None = None,
                audio_index: torch.Tensor | None = None) -> torch.Tensor:
        """Predict v for a batch of windows.

        sample ``[B, F, Cin, h, w]``; timestep scalar (or ``[B]``); clip_embeds ``[B·F, 1, D]``; audio_tokens
        ``[B·F, T, D]``; added_time_ids ``[B, 3]`` = (fps, bucket0, bucket1); face_mask ``[1, 1, H, W]`` in [0, 1]
        weighting the audio branch of the spatial cross-attentions, or ``None``. Returns ``[B, F, Cout, h, w]``.
        With ``audio_index`` ``[B·F]``, ``audio_tokens`` are distinct token sets ``[U, T, D]`` and frame row ``i``
        uses ``audio_tokens[audio_index[i]]``: the same result, with each set's keys and values projected once.
        """
        b, f = sample.shape[:2]
        timestep = torch.as_tensor(timestep, device=sample.device).reshape(-1).expand(b)
        emb = self.time_embedding(timestep_embedding(timestep, self.conv_in.out_channels).to(sample.dtype))
        time_ids = timestep_embedding(added_time_ids.reshape(-1), self.addition_time_embed_dim)
        emb = emb + self.add_embedding(time_ids.reshape(b, -1).to(sample.dtype))
        emb = emb.repeat_interleave(f, dim=0)

        context = SiteContext(clip_embeds, audio_tokens, f, face_mask, audio_index)
        x = self.conv_in(sample.flatten(0, 1))
        skips = [x]
        for block in self.down_blocks:
            x, states = block(x, emb, f, context)
            skips.extend(states)
        x = self.mid_block(x, emb, f, context)
        for block in self.up_blocks:
            n = len(block.resnets)
            x = block(x, skips[-n:], emb, f, context)
            del skips[-n:]
        x = self.conv_out(F.silu(self.conv_norm_out(x)))
        return x.reshape(b, f, *x.shape[1:])
