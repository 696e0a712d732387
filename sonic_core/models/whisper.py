"""The whisper encoder (transformers ``WhisperEncoder`` behaviour) that turns 30 s of log-mel features into Sonic's
audio features (MODEL.md §4.2).

One forward pass returns every hidden state stacked on a layer axis: the conv stem + positions, then each layer's
output, the last one after the final LayerNorm. That last entry *is* the encoder's last hidden state, so the
"all-layers" and "last" features need no second pass. State-dict keys equal ``whisper_tiny_encoder.tsv``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..configs import bundled_config
from ..errors import SonicAudioError
from .config_fields import FromConfigDict
from .transformer_encoder import TransformerSelfAttention, activation

WHISPER_TINY_CONFIG = "whisper_tiny_config.json"  # bundled in sonic_core/configs


@dataclass(frozen=True)
class WhisperEncoderConfig(FromConfigDict):
    """The encoder fields of a transformers ``WhisperConfig`` (decoder and generation fields are ignored)."""

    num_mel_bins: int = 80
    d_model: int = 384
    encoder_layers: int = 4
    encoder_attention_heads: int = 6
    encoder_ffn_dim: int = 1536
    max_source_positions: int = 1500
    activation_function: str = "gelu"

    @classmethod
    def tiny(cls) -> WhisperEncoderConfig:
        """openai/whisper-tiny: 80 mel bins, width 384, 4 layers of 6 heads."""
        return cls.from_dict(bundled_config(WHISPER_TINY_CONFIG))

    @property
    def input_frames(self) -> int:
        """Mel frames per call: the stride-2 stem halves them to ``max_source_positions`` (3000 for 30 s)."""
        return 2 * self.max_source_positions


class WhisperEncoderLayer(nn.Module):
    """Pre-LayerNorm transformer block: ``x + attn(ln(x))`` then ``x + fc2(act(fc1(ln(x))))``."""

    def __init__(self, config: WhisperEncoderConfig) -> None:
        super().__init__()
        self.self_attn = TransformerSelfAttention(config.d_model, config.encoder_attention_heads, key_bias=False)
        self.self_attn_layer_norm = nn.LayerNorm(config.d_model)
        self.act = activation(config.activation_function)
        self.fc1 = nn.Linear(config.d_model, config.encoder_ffn_dim)
        self.fc2 = nn.Linear(config.encoder_ffn_dim, config.d_model)
        self.final_layer_norm = nn.LayerNorm(config.d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.self_attn(self.self_attn_layer_norm(x))
        return x + self.fc2(self.act(self.fc1(self.final_layer_norm(x))))


class WhisperEncoderStack(nn.Module):
    """The ``encoder.*`` module: conv stem (stride 1, then 2), position table, layers, final LayerNorm."""

    def __init__(self, config: WhisperEncoderConfig) -> None:
        super().__init__()
        self.act = activation(config.activation_function)
        self.conv1 = nn.Conv1d(config.num_mel_bins, config.d_model, 3, padding=1)
        self.conv2 = nn.Conv1d(config.d_model, config.d_model, 3, stride=2, padding=1)
        self.embed_positions = nn.Embedding(config.max_source_positions, config.d_model)
        self.layers = nn.ModuleList(WhisperEncoderLayer(config) for _ in range(config.encoder_layers))
        self.layer_norm = nn.LayerNorm(config.d_model)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        x = self.act(self.conv2(self.act(self.conv1(mel.to(self.conv1.weight.dtype)))))
        x = x.transpose(1, 2) + self.embed_positions.weight
        states = [x]
        for layer in self.layers:
            x = layer(x)
            states.append(x)
        states[-1] = self.layer_norm(x)
        return torch.stack(states, dim=2)


class WhisperEncoder(nn.Module):
    """Log-mel ``[B, num_mel_bins, 3000]`` -> hidden states ``[B, 1500, encoder_layers + 1, d_model]``."""

    def __init__(self, config: WhisperEncoderConfig | None = None) -> None:
        super().__init__()
        self.config = config or WhisperEncoderConfig.tiny()
        self.encoder = WhisperEncoderStack(self.config)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        """Index ``[..., -1, :]`` of the result is the encoder's last hidden state."""
        want = (self.config.num_mel_bins, self.config.input_frames)
        if mel.ndim != 3 or tuple(mel.shape[1:]) != want:
            raise SonicAudioError(f"whisper input has shape {tuple(mel.shape)}: expected [B, {want[0]}, {want[1]}] "
                                  "(one 30 s piece from sonic_core.audio.log_mel_pieces)")
        return self.encoder(mel)
