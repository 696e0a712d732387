"""Multi-head self-attention with the ``k_proj``/``v_proj``/``q_proj``/``out_proj`` layout shared by the CLIP
vision tower and the whisper encoder, plus their feed-forward activations."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def activation(name: str):
    """The feed-forward nonlinearity named in a transformers config: exact ``gelu`` or CLIP's ``quick_gelu``."""
    if name == "gelu":
        return F.gelu
    if name == "quick_gelu":
        return lambda x: x * torch.sigmoid(1.702 * x)
    raise ValueError(f"activation {name!r} is not supported: use 'gelu' or 'quick_gelu'")


class SelfAttention(nn.Module):
    """Unmasked self-attention over ``[B, L, dim]`` with ``heads`` heads, softmax scale ``head_dim ** -0.5``.

    ``key_bias=False`` gives whisper's bias-free key projection. Submodules are registered in the checkpoints'
    key order (k, v, q, out).
    """

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
        b, length, dim = x.shape
        q, k, v = (proj(x).reshape(b, length, self.heads, dim // self.heads).transpose(1, 2)
                   for proj in (self.q_proj, self.k_proj, self.v_proj))
        out = F.scaled_dot_product_attention(q, k, v)
        return self.out_proj(out.transpose(1, 2).reshape(b, length, dim))
