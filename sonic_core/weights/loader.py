"""Assembling :class:`SonicModels` from the official weight files (the layout :func:`locate_weights` finds).

Every network is built on the meta device and its file's tensors are assigned to it (:func:`build_and_load`), so
the weights are held once, in the precision MODEL.md §2 gives them: UNet, VAE and CLIP in the requested dtype;
whisper, the audio adapters and RIFE in float32. The network shapes come from :class:`ModelConfigs`: the published
configs by default (bundled in ``sonic_core/configs/``), or any other set of the same form, such as the tiny model's.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from ..device import parse_dtype
from ..models.bundle import ModelConfigs, SonicModels
from ..models.rife import IFNet
from .components import (CLIP_FIX, RIFE_FIX, UNET_FIX, WHISPER_FIX, load_svd_parts, read_rife, read_unet,
                         read_whisper_encoder)
from .layout import WeightFiles
from .reading import build_and_load, read_state_dict

REQUIRED = ("unet", "audio2token", "audio2bucket", "whisper", "svd")


def required_components(interpolate: bool, svd: bool = True) -> tuple[str, ...]:
    """The weight components a generation reads (RIFE only with interpolation on; SVD unless its VAE and CLIP are
    shared; the detector is separate)."""
    required = tuple(c for c in REQUIRED if svd or c != "svd")
    return (*required, "rife") if interpolate else required


def load_sonic_models(files: WeightFiles, device: str | torch.device = "cpu", dtype: str | torch.dtype = "fp16",
                      interpolate: bool = True, configs: ModelConfigs | None = None,
                      shared: Mapping[str, nn.Module] | None = None) -> SonicModels:
    """Every network of a generation, loaded strictly from ``files`` onto ``device``.

    A missing file is one :class:`~sonic_core.errors.SonicWeightsError` naming every absent component and where it
    goes, raised before anything is read. ``interpolate=False`` leaves RIFE out (the pipeline then writes 12.5 fps).
    ``shared`` holds a ``vae`` and/or ``image_encoder`` already built on another owner's tensors (:mod:`.shared`):
    they are used as they are, and the SVD file is read only for a part not given (not needed with both).
    """
    shared = dict(shared or {})
    files.require(*required_components(interpolate, svd=not {"vae", "image_encoder"} <= set(shared)))
    low = parse_dtype(dtype)
    build = (configs or ModelConfigs.official()).factories()

    def load(name: str, state_dict: Mapping[str, torch.Tensor], source: Path, precision: torch.dtype,
             **kwargs: str) -> nn.Module:
        return build_and_load(build[name], state_dict, dtype=precision, device=device, source=str(source), **kwargs)

    svd = {} if len(shared) == 2 else load_svd_parts(files.svd)
    vae = shared.get("vae") or load("vae", svd.pop("vae"), files.svd, low)
    image_encoder = shared.get("image_encoder") or load("image_encoder", svd.pop("image_encoder"), files.svd, low,
                                                        fix=CLIP_FIX)
    del svd
    fp32 = torch.float32
    return SonicModels(
        unet=load("unet", read_unet(files.unet), files.unet, low, fix=UNET_FIX),
        vae=vae, image_encoder=image_encoder,
        whisper=load("whisper", read_whisper_encoder(files.whisper), files.whisper, fp32, fix=WHISPER_FIX),
        audio2token=load("audio2token", read_state_dict(files.audio2token), files.audio2token, fp32),
        audio2bucket=load("audio2bucket", read_state_dict(files.audio2bucket), files.audio2bucket, fp32),
        rife=load_rife(files.rife, device) if interpolate else None,
        shared=frozenset(shared),
    )


def load_rife(path: str | os.PathLike, device: str | torch.device = "cpu") -> IFNet:
    """The fp32 :class:`IFNet` of ``RIFE/flownet.pkl`` (read with ``weights_only=True``, loaded strictly), in eval
    mode with gradients off. A missing, unreadable or foreign file is one :class:`SonicWeightsError` line."""
    return build_and_load(IFNet, read_rife(path), dtype=torch.float32, device=device, source=str(path), fix=RIFE_FIX)
