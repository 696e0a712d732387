"""Parts shared by the two transformers-style encoders, the CLIP vision tower and the whisper encoder: their
self-attention (``q_proj``/``k_proj``/``v_proj``/``out_proj``, transformers naming) and feed-forward activations."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .layers import multi_head_attention


def activation(name: str):
    """The feed-forward nonlinearity named in a transformers config: exact ``gelu`` or CLIP's ``quick_gelu``."""
    if name == "gelu":
        return F.gelu
    if name == "quick_gelu":
        return lambda x: x * torch.sigmoid(1.702 * x)
    raise ValueError(f"activation {name!r} is not supported: use 'gelu' or 'quick_gelu'")


class TransformerSelfAttention(nn.Module):
    """Unmasked self-attention over ``[B, L, dim]`` with ``heads`` heads, transformers layout: every projection is
    ``dim -> dim`` with a bias, except whisper's key projection (``key_bias=False``). Submodules are registered in
    the checkpoints' key order (k, v, q, out). The UNet's attention is :class:`~.attention.SelfAttention` (diffusers
    names, bias-free projections, an inner width of its own)."""

    def __init__(self, dim: int, heads: int, key_bias: bool = True) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"hidden size {dim} is not divisible by {heads} attention heads")
        self.heads = heads
        self.k_proj = nn.Linear(dim, dim, bias=key_bias)
        self.v_proj = nn.Linear(dim, dim)
        self.q_proj = nn.Linear(dim, dim)
        self.out_proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out_proj(multi_head_attention(self.q_proj(x), self.k_proj(x), self.v_proj(x), self.heads))
