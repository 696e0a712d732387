"""The set of networks one Sonic generation needs (:class:`SonicModels`), whether they hold real weights or the
embedded tiny ones, and the configs that shape them (:class:`ModelConfigs`: the published ones, or another set of
the same form such as the tiny model's)."""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, fields
from typing import Any

import torch
from torch import nn

from ..configs import bundled_config
from ..device import parse_dtype
from .audio_adapters import Audio2BucketModel, AudioProjModel
from .clip_vision import CLIPVisionConfig, CLIPVisionModelWithProjection
from .rife import IFNet
from .unet import SonicUNet
from .vae import TemporalVAE
from .whisper import WhisperEncoder, WhisperEncoderConfig


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
    shared: frozenset[str] = frozenset()  # parts whose tensors another owner holds (ComfyUI's VAE / CLIP_VISION)

    def modules(self) -> dict[str, nn.Module]:
        """The networks present, by field name."""
        return {f.name: module for f in fields(self) if isinstance(module := getattr(self, f.name), nn.Module)}

    def to(self, device: str | torch.device, dtype: str | torch.dtype = torch.float32) -> SonicModels:
        """Move every network to ``device`` in eval mode: UNet, VAE and CLIP in ``dtype``, whisper, the audio
        adapters and RIFE in float32 (MODEL.md §2). A ``shared`` part keeps its dtype: casting would replace its
        owner's tensors by a copy."""
        low_precision = {"unet", "vae", "image_encoder"}
        dtype = parse_dtype(dtype)
        for name, module in self.modules().items():
            if name in self.shared:
                module.to(device=device).eval()
            else:
                module.to(device=device, dtype=dtype if name in low_precision else torch.float32).eval()
        return self


    def place(self, device: str | torch.device, resident: Collection[str], host: str | torch.device) -> None:
        """The ``resident`` networks on ``device``, the others in ``host`` memory (each keeps its dtype). A
        ``shared`` part stays where its owner keeps it."""
        for name, module in self.modules().items():
            if name not in self.shared:
                module.to(device=device if name in resident else host)


@dataclass(frozen=True)
class ModelConfigs:
    """The constructor configs of the networks: ``unet`` (diffusers UNet config), ``vae`` (diffusers VAE config),
    ``clip`` (transformers CLIPVisionConfig fields), ``whisper`` (WhisperConfig encoder fields), ``audio2token`` and
    ``audio2bucket`` (the adapters' constructor arguments)."""

    unet: Mapping[str, Any]
    vae: Mapping[str, Any]
    clip: Mapping[str, Any]
    whisper: Mapping[str, Any]
    audio2token: Mapping[str, Any]
    audio2bucket: Mapping[str, Any]

    @classmethod
    def official(cls) -> ModelConfigs:
        """The published Sonic / SVD-xt / ViT-H/14 / whisper-tiny configs."""
        adapters = bundled_config("sonic_adapters_config.json")
        return cls(unet=bundled_config("svd_unet_config.json"), vae=bundled_config("svd_vae_config.json"),
                   clip=bundled_config("clip_vit_h14_vision_config.json"),
                   whisper=bundled_config("whisper_tiny_config.json"),
                   audio2token=adapters["audio2token"], audio2bucket=adapters["audio2bucket"])

    def factories(self) -> dict[str, Callable[[], nn.Module]]:
        """A constructor per :class:`SonicModels` field (``rife`` has one fixed architecture)."""
        return {
            "unet": lambda: SonicUNet.from_config(self.unet),
            "vae": lambda: TemporalVAE(dict(self.vae)),
            "image_encoder": lambda: CLIPVisionModelWithProjection(CLIPVisionConfig.from_dict(self.clip)),
            "whisper": lambda: WhisperEncoder(WhisperEncoderConfig.from_dict(self.whisper)),
            "audio2token": lambda: AudioProjModel(**self.audio2token),
            "audio2bucket": lambda: Audio2BucketModel(**self.audio2bucket),
            "rife": IFNet,
        }
