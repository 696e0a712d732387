"""Assembling :class:`SonicModels` from the official weight files (the layout :func:`locate_weights` finds).

Every network is built on the meta device and its file's tensors are assigned to it (:func:`build_and_load`), so
the weights are held once, in the precision MODEL.md §2 gives them: UNet, VAE and CLIP in the requested dtype;
whisper, the audio adapters and RIFE in float32. The network shapes come from :class:`ModelConfigs`: the published
configs by default (bundled in ``sonic_core/configs/``), or any other set of the same form, such as the tiny model's.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..configs import bundled_config
from ..device import parse_dtype
from ..models.audio_adapters import Audio2BucketModel, AudioProjModel
from ..models.bundle import SonicModels
from ..models.clip_vision import CLIPVisionConfig, CLIPVisionModelWithProjection
from ..models.rife import IFNet
from ..models.unet import SonicUNet
from ..models.vae import TemporalVAE
from ..models.whisper import WhisperEncoder, WhisperEncoderConfig
from .components import (CLIP_FIX, RIFE_FIX, UNET_FIX, WHISPER_FIX, load_svd_parts, read_rife, read_unet,
                         read_whisper_encoder)
from .layout import WeightFiles
from .reading import build_and_load, read_state_dict

REQUIRED = ("unet", "audio2token", "audio2bucket", "whisper", "svd")


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

    @classmethod
    def tiny(cls) -> ModelConfigs:
        """The embedded tiny model's configs (:mod:`sonic_core.weights.tiny`)."""
        from . import tiny

        return cls(unet=tiny.TINY_UNET, vae=tiny.TINY_VAE, clip=tiny.TINY_CLIP, whisper=tiny.TINY_WHISPER,
                   audio2token=tiny.TINY_AUDIO2TOKEN, audio2bucket=tiny.TINY_AUDIO2BUCKET)

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


def required_components(interpolate: bool) -> tuple[str, ...]:
    """The weight components a generation reads (RIFE only with interpolation on; the detector is separate)."""
    return (*REQUIRED, "rife") if interpolate else REQUIRED


def load_sonic_models(files: WeightFiles, device: str | torch.device = "cpu", dtype: str | torch.dtype = "fp16",
                      interpolate: bool = True, configs: ModelConfigs | None = None) -> SonicModels:
    """Every network of a generation, loaded strictly from ``files`` onto ``device``.

    A missing file is one :class:`~sonic_core.errors.SonicWeightsError` naming every absent component and where it
    goes, raised before anything is read. ``interpolate=False`` leaves RIFE out (the pipeline then writes 12.5 fps).
    """
    files.require(*required_components(interpolate))
    low = parse_dtype(dtype)
    build = (configs or ModelConfigs.official()).factories()

    def load(name: str, state_dict: Mapping[str, torch.Tensor], source: Path, precision: torch.dtype,
             **kwargs: str) -> nn.Module:
        return build_and_load(build[name], state_dict, dtype=precision, device=device, source=str(source), **kwargs)

    svd = load_svd_parts(files.svd)
    vae = load("vae", svd.pop("vae"), files.svd, low)
    image_encoder = load("image_encoder", svd.pop("image_encoder"), files.svd, low, fix=CLIP_FIX)
    del svd
    fp32 = torch.float32
    return SonicModels(
        unet=load("unet", read_unet(files.unet), files.unet, low, fix=UNET_FIX),
        vae=vae, image_encoder=image_encoder,
        whisper=load("whisper", read_whisper_encoder(files.whisper), files.whisper, fp32, fix=WHISPER_FIX),
        audio2token=load("audio2token", read_state_dict(files.audio2token), files.audio2token, fp32),
        audio2bucket=load("audio2bucket", read_state_dict(files.audio2bucket), files.audio2bucket, fp32),
        rife=load_rife(files.rife, device) if interpolate else None,
    )


def load_rife(path: str | os.PathLike, device: str | torch.device = "cpu") -> IFNet:
    """The fp32 :class:`IFNet` of ``RIFE/flownet.pkl`` (read with ``weights_only=True``, loaded strictly), in eval
    mode with gradients off. A missing, unreadable or foreign file is one :class:`SonicWeightsError` line."""
    return build_and_load(IFNet, read_rife(path), dtype=torch.float32, device=device, source=str(path), fix=RIFE_FIX)
