"""Attention and transformer blocks of the Sonic UNet (MODEL.md §6.3–§6.5), with diffusers' state-dict names.

Every cross-attention (``attn2``) carries the audio branch of Sonic: besides the CLIP image context (one token per
frame) it attends over the audio tokens with its own projections ``processor.to_k_ip.0`` / ``processor.to_v_ip.0``
and adds the result, optionally weighted by the face mask. Because the CLIP context is a single token, its softmax
is identically 1 and the main branch reduces to ``to_v(clip)`` broadcast over the queries: no Q·K is computed.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .layers import AlphaBlender, TimestepEmbedding, multi_head_attention, timestep_embedding


class GEGLU(nn.Module):
    """``a · gelu(b)`` where ``(a, b)`` are the two halves of one projection."""

    def __init__(self, dim: int, inner_dim: int) -> None:
        super().__init__()
        self.proj = nn.Linear(dim, inner_dim * 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, gate = self.proj(x).chunk(2, dim=-1)
        return x * F.gelu(gate)


MIN_FEED_FORWARD_ROWS = 256  # a chunk's rows: GEMMs of 1-2 rows round differently from the same rows in a big one


class FeedForward(nn.Module):
    """GEGLU feed-forward ``net.0`` (4× width) then ``net.2``; ``net.1`` is the (inactive) dropout slot.

    ``chunk_elements`` (set by the memory planner, :mod:`sonic_core.memory`; ``None`` runs all rows at once) bounds
    the inner activations alive at once: the token rows run in equal chunks of at most ``chunk_elements / inner``
    rows (never fewer than :data:`MIN_FEED_FORWARD_ROWS`) written into one output. Each row's arithmetic is the
    same GEMM work on the same weights, so the result is identical (checked bit for bit on the CPU in fp32).
    """

    def __init__(self, dim: int, dim_out: int | None = None, mult: int = 4) -> None:
        super().__init__()
        self.net = nn.ModuleList([GEGLU(dim, dim * mult), nn.Identity(), nn.Linear(dim * mult, dim_out or dim)])
        self.chunk_elements: int | None = None

    @property
    def inner(self) -> int:
        """Width of the gated activation (the GEGLU output)."""
        return self.net[2].in_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.shape[:-1].numel()
        chunk_rows = None if self.chunk_elements is None else max(MIN_FEED_FORWARD_ROWS,
                                                                  self.chunk_elements // self.inner)
        if chunk_rows is None or rows <= chunk_rows or torch.is_grad_enabled():  # chunks are for inference
            return self._rows(x)
        flat = x.reshape(rows, x.shape[-1])
        out = flat.new_empty(rows, self.net[2].out_features)
        chunks = -(-rows // chunk_rows)
        for part, target in zip(flat.tensor_split(chunks), out.tensor_split(chunks)):
            target.copy_(self._rows(part))
        return out.reshape(*x.shape[:-1], out.shape[-1])

    def _rows(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.net:
            x = layer(x)
        return x


class SelfAttention(nn.Module):
    """The UNet's multi-head self-attention (``attn1``), diffusers layout: bias-free ``to_q``/``to_k``/``to_v`` from
    ``dim`` to ``heads · head_dim``, output projection ``to_out.0`` with bias (whisper and CLIP use
    :class:`~.transformer_encoder.TransformerSelfAttention`, whose keys and biases differ)."""

    def __init__(self, dim: int, heads: int, head_dim: int) -> None:
        super().__init__()
        inner = heads * head_dim
        self.heads = heads
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_k = nn.Linear(dim, inner, bias=False)
        self.to_v = nn.Linear(dim, inner, bias=False)
        self.to_out = nn.ModuleList([nn.Linear(inner, dim)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.to_out[0](multi_head_attention(self.to_q(x), self.to_k(x), self.to_v(x), self.heads))


class AudioProjections(nn.Module):
    """The audio branch's key/value projections; registered as ``attn2.processor`` to match checkpoint keys."""

    def __init__(self, inner_dim: int, context_dim: int) -> None:
        super().__init__()
        self.to_k_ip = nn.ModuleList([nn.Linear(context_dim, inner_dim, bias=False)])
        self.to_v_ip = nn.ModuleList([nn.Linear(context_dim, inner_dim, bias=False)])


class AudioCrossAttention(nn.Module):
    """``attn2``: CLIP cross-attention plus the scaled (and optionally face-masked) audio attention.

    Queries ``x`` are ``[G, M, C]``; contexts are per group ``g``: ``clip`` ``[G, Tc, D]`` (Tc is 1 in Sonic) and
    ``audio`` ``[G, T, D]``. Callers group queries so that all those sharing a context sit in one row, which is how
    the temporal blocks reuse one K/V per batch element for every spatial position.
    """

    def __init__(self, dim: int, context_dim: int, heads: int, head_dim: int, ip_scale: float = 1.0) -> None:
        super().__init__()
        inner = heads * head_dim
        self.heads, self.ip_scale = heads, ip_scale
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_k = nn.Linear(context_dim, inner, bias=False)
        self.to_v = nn.Linear(context_dim, inner, bias=False)
        self.to_out = nn.ModuleList([nn.Linear(inner, dim)])
        self.processor = AudioProjections(inner, context_dim)

    def forward(self, x: torch.Tensor, clip: torch.Tensor, audio: torch.Tensor, mask: torch.Tensor | None = None,
                audio_index: torch.Tensor | None = None) -> torch.Tensor:
        """``mask`` (optional) is ``[1, M, 1]`` and weights the audio branch per query. With ``audio_index``
        ``[G]``, ``audio`` holds distinct token sets ``[U, T, D]`` and group ``g`` attends to ``audio[index[g]]``:
        their keys and values are projected once per distinct set (the guidance slots share the unconditional
        tokens) and gathered."""
        q = self.to_q(x)
        if clip.shape[1] == 1:
            out = self.to_v(clip).expand_as(q)
        else:
            out = multi_head_attention(q, self.to_k(clip), self.to_v(clip), self.heads)
        proc = self.processor
        keys, values = proc.to_k_ip[0](audio), proc.to_v_ip[0](audio)
        if audio_index is not None:
            keys, values = keys[audio_index], values[audio_index]
        audio_out = multi_head_attention(q, keys, values, self.heads)
        if mask is not None:
            audio_out = audio_out * mask
        return self.to_out[0](out + self.ip_scale * audio_out)


class BasicTransformerBlock(nn.Module):
    """Spatial block over the tokens of each frame: self-attention, audio cross-attention, GEGLU feed-forward."""

    def __init__(self, dim: int, heads: int, head_dim: int, context_dim: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn1 = SelfAttention(dim, heads, head_dim)
        self.norm2 = nn.LayerNorm(dim)
        self.attn2 = AudioCrossAttention(dim, context_dim, heads, head_dim)
        self.norm3 = nn.LayerNorm(dim)
        self.ff = FeedForward(dim)

    def forward(self, x: torch.Tensor, clip: torch.Tensor, audio: torch.Tensor, mask: torch.Tensor | None,
                audio_index: torch.Tensor | None = None) -> torch.Tensor:
        x = self.attn1(self.norm1(x)) + x
        x = self.attn2(self.norm2(x), clip, audio, mask, audio_index) + x
        return self.ff(self.norm3(x)) + x


class TemporalBasicTransformerBlock(nn.Module):
    """Temporal block: each spatial position attends over the frames of its clip.

    Input and output ``[B·F, S, C]``; the contexts are the frame means per batch element, ``[B, T, D]``
    (MODEL.md §6.5), and the audio branch is never masked here.
    """

    def __init__(self, dim: int, heads: int, head_dim: int, context_dim: int) -> None:
        super().__init__()
        self.norm_in = nn.LayerNorm(dim)
        self.ff_in = FeedForward(dim)
        self.norm1 = nn.LayerNorm(dim)
        self.attn1 = SelfAttention(dim, heads, head_dim)
        self.norm2 = nn.LayerNorm(dim)
        self.attn2 = AudioCrossAttention(dim, context_dim, heads, head_dim)
        self.norm3 = nn.LayerNorm(dim)
        self.ff = FeedForward(dim)

    def forward(self, x: torch.Tensor, num_frames: int, clip_mean: torch.Tensor,
                audio_mean: torch.Tensor) -> torch.Tensor:
        bf, s, c = x.shape
        b = bf // num_frames
        x = x.reshape(b, num_frames, s, c).transpose(1, 2).reshape(b * s, num_frames, c)
        x = self.ff_in(self.norm_in(x)) + x
        x = self.attn1(self.norm1(x)) + x
        grouped = self.norm2(x).reshape(b, s * num_frames, c)
        x = self.attn2(grouped, clip_mean, audio_mean).reshape(b * s, num_frames, c) + x
        x = self.ff(self.norm3(x)) + x
        return x.reshape(b, s, num_frames, c).transpose(1, 2).reshape(bf, s, c)


class TransformerSpatioTemporalModel(nn.Module):
    """One attention site: GroupNorm, ``proj_in``, spatial + temporal blocks blended by ``time_mixer``, ``proj_out``,
    residual. The temporal branch sees a learned embedding of the frame position 0..F−1 (``time_pos_embed``).
    """

    def __init__(self, heads: int, head_dim: int, in_channels: int, context_dim: int, num_layers: int = 1) -> None:
        super().__init__()
        inner = heads * head_dim
        self.norm = nn.GroupNorm(32, in_channels, eps=1e-6)
        self.proj_in = nn.Linear(in_channels, inner)
        self.transformer_blocks = nn.ModuleList(
            [BasicTransformerBlock(inner, heads, head_dim, context_dim) for _ in range(num_layers)])
        self.temporal_transformer_blocks = nn.ModuleList(
            [TemporalBasicTransformerBlock(inner, heads, head_dim, context_dim) for _ in range(num_layers)])
        self.time_pos_embed = TimestepEmbedding(in_channels, in_channels * 4, out_dim=in_channels)
        self.time_mixer = AlphaBlender(0.5, "learned_with_images")
        self.proj_out = nn.Linear(inner, in_channels)

    def forward(self, x: torch.Tensor, num_frames: int, context: SiteContext) -> torch.Tensor:
        bf, c, h, w = x.shape
        residual = x
        x = self.proj_in(self.norm(x).permute(0, 2, 3, 1).reshape(bf, h * w, c))
        # embedded for every (batch, frame) row, not once per frame: GEMM rounding depends on the row count, and
        # this keeps the result bit-identical to the reference for a negligible cost
        positions = torch.arange(num_frames, device=x.device).repeat(bf // num_frames)
        frame_emb = self.time_pos_embed(timestep_embedding(positions, c).to(x.dtype))[:, None, :]
        mask = context.mask_for(h * w, x.dtype)
        for block, temporal in zip(self.transformer_blocks, self.temporal_transformer_blocks):
            x = block(x, context.clip, context.audio, mask, context.audio_index)
            mixed = temporal(x + frame_emb, num_frames, context.clip_mean, context.audio_mean)
            x = self.time_mixer(x, mixed)
        x = self.proj_out(x)
        # residual first: the sum takes its (contiguous) layout; the permuted tokens first would hand channels-last
        # tensors to every later convolution and GroupNorm, which are slower on them (same values either way)
        return residual + x.reshape(bf, h, w, c).permute(0, 3, 1, 2)


@torch.compiler.assume_constant_result  # ints of ints: torch.compile folds it instead of breaking the graph on .item()
def mask_grid(height: int, width: int, num_queries: int) -> tuple[int, int]:
    """Token grid ``(rows, cols)`` onto which a ``height × width`` mask is resized for ``num_queries`` tokens.

    ``rows = ⌊√(L/ρ)⌋`` (ρ = width/height, float32), plus one if it does not divide L; ``cols = ⌊L/rows⌋``. The
    grid has exactly L cells for latent grids of a multiple-of-64 image; otherwise it is approximate.
    """
    rows = int(torch.tensor(num_queries / (width / height), dtype=torch.float32).sqrt())
    rows += int(num_queries % rows != 0)
    return rows, num_queries // rows


def downsample_mask(mask: torch.Tensor, num_queries: int) -> torch.Tensor:
    """Resize a ``[1, H, W]`` face mask to ``num_queries`` tokens -> ``[1, num_queries, 1]`` (MODEL.md §6.4).

    Bicubic resize to :func:`mask_grid` (align_corners False, no antialias), flattened row-major, zero-padded or
    truncated when the grid is not exactly ``num_queries`` cells.
    """
    mask_h, mask_w = mask_grid(mask.shape[-2], mask.shape[-1], num_queries)
    small = F.interpolate(mask[None], size=(mask_h, mask_w), mode="bicubic", align_corners=False).reshape(-1)
    if small.numel() < num_queries:
        small = F.pad(small, (0, num_queries - small.numel()))
    return small[:num_queries].reshape(1, num_queries, 1)


class SiteContext:
    """The conditioning shared by every attention site of one UNet call.

    Holds the per-frame contexts ``clip`` ``[B·F, 1, D]`` and ``audio`` ``[B·F, T, D]`` (or, with
    ``audio_index`` ``[B·F]``, the distinct token sets ``[U, T, D]`` each frame picks from), their frame means
    ``[B, ·, D]`` for the temporal blocks, and the face mask resized lazily once per token-grid size.
    """

    def __init__(self, clip: torch.Tensor, audio: torch.Tensor, num_frames: int,
                 face_mask: torch.Tensor | None = None, audio_index: torch.Tensor | None = None) -> None:
        self.clip, self.audio, self.audio_index = clip, audio, audio_index
        per_frame_audio = audio if audio_index is None else audio[audio_index]
        self.clip_mean = clip.unflatten(0, (-1, num_frames)).mean(dim=1)
        self.audio_mean = per_frame_audio.unflatten(0, (-1, num_frames)).mean(dim=1)
        self.face_mask = face_mask.reshape(1, *face_mask.shape[-2:]) if face_mask is not None else None
        self._masks: dict[int, torch.Tensor] = {}

    def mask_for(self, num_queries: int, dtype: torch.dtype) -> torch.Tensor | None:
        if self.face_mask is None:
            return None
        if num_queries not in self._masks:
            self._masks[num_queries] = downsample_mask(self.face_mask, num_queries).to(dtype)
        return self._masks[num_queries]


__all__ = ["AudioCrossAttention", "BasicTransformerBlock", "FeedForward", "MIN_FEED_FORWARD_ROWS", "SelfAttention",
           "SiteContext", "TemporalBasicTransformerBlock", "TransformerSpatioTemporalModel", "downsample_mask",
           "mask_grid"]
