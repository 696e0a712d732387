"""The set of networks one Sonic generation needs, whether they hold real weights or the embedded tiny ones."""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch
from torch import nn

from ..errors import SonicInputError

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def parse_dtype(dtype: str | torch.dtype) -> torch.dtype:
    """``fp32`` / ``fp16`` / ``bf16`` (or a torch dtype among them) -> the torch dtype."""
    if isinstance(dtype, torch.dtype) and dtype in DTYPES.values():
        return dtype
    if isinstance(dtype, str) and dtype.lower() in DTYPES:
        return DTYPES[dtype.lower()]
    raise SonicInputError(f"dtype={dtype!r} is not supported: use one of {', '.join(DTYPES)}")


def parse_device(name: str, what: str = "device") -> torch.device:
    """A torch device from its name, refusing CUDA where none is available; ``what`` names the input in errors."""
    try:
        device = torch.device(name)
    except RuntimeError:
        raise SonicInputError(f"{what} {name!r} is not a torch device: use cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SonicInputError(f"{what} {name!r}: no CUDA device is available here; use cpu")
    return device


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
