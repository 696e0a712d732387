"""The set of networks one Sonic generation needs, whether they hold real weights or the embedded tiny ones."""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch
from torch import nn

from ..device import parse_dtype


@dataclass
class SonicModels:
    """Every network of the pipeline except the face detector (chosen separately).

    ``image_encoder(pixel_values [B, 3, S, S]) -> [B, P]`` image embeds; ``whisper(mel [B, n_mels, 3000]) ->
    [B, 1500, L+1, d]`` stacked hidden states; ``rife`` is the frame interpolator (``None``: no interpolation).
    """

    unet: nn.Module
    vae: nn.Module
    image_encoder: nn.Module
    whisper: nn.Module
    audio2token: nn.Module
    audio2bucket: nn.Module
    rife: nn.Module | None = None

    def to(self, device: str | torch.device, dtype: str | torch.dtype = torch.float32) -> SonicModels:
        """Move every network to ``device`` in eval mode: UNet, VAE and CLIP in ``dtype``, whisper, the audio
        adapters and RIFE in float32 (SPEC §2)."""
        low_precision = {"unet", "vae", "image_encoder"}
        dtype = parse_dtype(dtype)
        for f in fields(self):
            module = getattr(self, f.name)
            if module is not None:
                module.to(device=device, dtype=dtype if f.name in low_precision else torch.float32).eval()
        return self
