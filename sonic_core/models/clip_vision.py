"""The CLIP vision tower with projection (``CLIPVisionModelWithProjection`` behaviour): image -> ``image_embeds``.

Sonic uses SVD's ViT-H/14 encoder for one embedding per portrait (MODEL.md §3.4): the projected, *not*
L2-normalised, post-LayerNorm class token. State-dict keys equal ``clip_vision.tsv`` (``vision_model.*`` +
``visual_projection``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from torch import nn

from ..configs import bundled_config
from ..errors import SonicInputError
from .config_fields import FromConfigDict
from .transformer_encoder import TransformerSelfAttention, activation

VIT_H14_CONFIG = "clip_vit_h14_vision_config.json"  # bundled in sonic_core/configs
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass(frozen=True)
class CLIPVisionConfig(FromConfigDict):
    """The fields of a transformers ``CLIPVisionConfig`` that shape the network (others are ignored).

    Defaults are transformers' (ViT-B/32, quick_gelu) so that a config dict missing a field means what it means
    there; Sonic's encoder is :meth:`vit_h14`.
    """

    hidden_size: int = 768
    intermediate_size: int = 3072
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    image_size: int = 224
    patch_size: int = 32
    projection_dim: int = 512
    layer_norm_eps: float = 1e-5
    hidden_act: str = "quick_gelu"
    num_channels: int = 3

    @classmethod
    def vit_h14(cls) -> CLIPVisionConfig:
        """SVD's ``image_encoder/config.json``: ViT-H/14, width 1280, 32 layers, 1024-d projection."""
        return cls.from_dict(bundled_config(VIT_H14_CONFIG))

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2


class CLIPVisionEmbeddings(nn.Module):
    """Non-overlapping patches projected to ``hidden_size``, a learned class token in front, learned positions."""

    def __init__(self, config: CLIPVisionConfig) -> None:
        super().__init__()
        # initialised (not torch.empty) so that models built from a seed, like the embedded demo model, are
        # deterministic; checkpoints overwrite it
        self.class_embedding = nn.Parameter(torch.randn(config.hidden_size) * config.hidden_size ** -0.5)
        self.patch_embedding = nn.Conv2d(config.num_channels, config.hidden_size, config.patch_size,
                                         stride=config.patch_size, bias=False)
        self.position_embedding = nn.Embedding(config.num_patches + 1, config.hidden_size)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        patches = self.patch_embedding(pixel_values.to(self.patch_embedding.weight.dtype)).flatten(2).transpose(1, 2)
        cls = self.class_embedding.expand(patches.shape[0], 1, -1)
        return torch.cat([cls, patches], dim=1) + self.position_embedding.weight


class CLIPMLP(nn.Module):
    def __init__(self, config: CLIPVisionConfig) -> None:
        super().__init__()
        self.act = activation(config.hidden_act)
        self.fc1 = nn.Linear(config.hidden_size, config.intermediate_size)
        self.fc2 = nn.Linear(config.intermediate_size, config.hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class CLIPEncoderLayer(nn.Module):
    """Pre-LayerNorm transformer block: ``x + attn(ln1(x))`` then ``x + mlp(ln2(x))``."""

    def __init__(self, config: CLIPVisionConfig) -> None:
        super().__init__()
        self.self_attn = TransformerSelfAttention(config.hidden_size, config.num_attention_heads)
        self.layer_norm1 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.mlp = CLIPMLP(config)
        self.layer_norm2 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.self_attn(self.layer_norm1(x))
        return x + self.mlp(self.layer_norm2(x))


class CLIPEncoder(nn.Module):
    def __init__(self, config: CLIPVisionConfig) -> None:
        super().__init__()
        self.layers = nn.ModuleList(CLIPEncoderLayer(config) for _ in range(config.num_hidden_layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return x


class CLIPVisionTransformer(nn.Module):
    """Embeddings, ``pre_layrnorm`` (the checkpoints' spelling), the encoder, the class token's ``post_layernorm``."""

    def __init__(self, config: CLIPVisionConfig) -> None:
        super().__init__()
        self.embeddings = CLIPVisionEmbeddings(config)
        self.pre_layrnorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.encoder = CLIPEncoder(config)
        self.post_layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """``[B, C, S, S] -> [B, hidden_size]`` pooled output (post-LayerNorm class token)."""
        hidden = self.encoder(self.pre_layrnorm(self.embeddings(pixel_values)))
        return self.post_layernorm(hidden[:, 0])


class CLIPVisionModelWithProjection(nn.Module):
    """Image -> ``image_embeds`` ``[B, projection_dim]``: the pooled output through the bias-free projection."""

    def __init__(self, config: CLIPVisionConfig | None = None) -> None:
        super().__init__()
        self.config = config or CLIPVisionConfig.vit_h14()
        self.vision_model = CLIPVisionTransformer(self.config)
        self.visual_projection = nn.Linear(self.config.hidden_size, self.config.projection_dim, bias=False)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        c, s = self.config.num_channels, self.config.image_size
        if pixel_values.ndim != 4 or tuple(pixel_values.shape[1:]) != (c, s, s):
            raise SonicInputError(f"CLIP pixel_values have shape {tuple(pixel_values.shape)}: expected "
                                  f"[B, {c}, {s}, {s}] (use preprocess_clip_image(image, size={s}))")
        return self.visual_projection(self.vision_model(pixel_values))


def preprocess_clip_image(image: Image.Image, size: int = 224) -> torch.Tensor:
    """MODEL.md §3.4: squash (aspect ignored) to ``size``×``size`` with PIL LANCZOS, scale to [0, 1], normalise with
    the CLIP mean/std. Returns ``[3, size, size]`` float32."""
    squashed = image.convert("RGB").resize((size, size), Image.LANCZOS)
    pixels = (np.asarray(squashed, dtype=np.float64) / 255.0).astype(np.float32)
    pixels = (pixels - np.asarray(CLIP_MEAN, dtype=np.float32)) / np.asarray(CLIP_STD, dtype=np.float32)
    return torch.from_numpy(np.ascontiguousarray(pixels.transpose(2, 0, 1)))
