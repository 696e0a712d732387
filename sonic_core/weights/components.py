"""State dicts of the components whose published files are named differently from our modules.

* SVD (``load_svd_parts``): the diffusers folder already uses our names; the single Stability file is renamed by
  :mod:`.svd_single_file`. Either way only the VAE and the CLIP image encoder are read, never the UNet.
* Whisper: openai/whisper-tiny's ``model.safetensors`` is a ``WhisperForConditionalGeneration`` (``model.encoder.*``,
  ``model.decoder.*``, ``proj_out.*``); we keep the encoder as ``encoder.*`` (an ``encoder.*`` file is taken as is).
* RIFE: ``flownet.pkl`` was saved from a ``DataParallel`` wrapper (``module.`` prefix); the prefix is stripped.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from ..errors import SonicWeightsError
from .reading import DEFAULT_FIX, read_state_dict, safetensors_keys
from .svd_single_file import read_single_file

SVD_FILES = {"vae": ("vae", "diffusion_pytorch_model"), "image_encoder": ("image_encoder", "model")}
NON_PERSISTENT = ("vision_model.embeddings.position_ids",)  # saved by older transformers; rebuilt by the model
WHISPER_FILE = "model.safetensors"
WHISPER_PREFIXES = ("model.encoder.", "encoder.")
RIFE_PREFIX = "module."


def _svd_folder_file(folder: Path, part: str) -> Path:
    sub, stem = SVD_FILES[part]
    for name in (f"{stem}.fp16.safetensors", f"{stem}.safetensors"):  # the official code loads the fp16 variant
        if (folder / sub / name).is_file():
            return folder / sub / name
    raise SonicWeightsError(f"{folder / sub} has neither {stem}.fp16.safetensors nor {stem}.safetensors; "
                            f"{DEFAULT_FIX}")


def load_svd_parts(source: str | os.PathLike) -> dict[str, dict[str, torch.Tensor]]:
    """``{"vae": ..., "image_encoder": ...}`` from a diffusers SVD folder or a single ``svd_xt*.safetensors``."""
    source = Path(source)
    if source.is_dir():
        parts = {part: read_state_dict(_svd_folder_file(source, part)) for part in SVD_FILES}
        parts["image_encoder"] = {k: v for k, v in parts["image_encoder"].items() if k not in NON_PERSISTENT}
        return parts
    if not source.is_file():
        raise SonicWeightsError(f"{source} not found; {DEFAULT_FIX}")
    return read_single_file(source)


def whisper_encoder_state_dict(state_dict: dict[str, torch.Tensor], source: str = WHISPER_FILE) -> dict[str, torch.Tensor]:
    """The ``encoder.*`` tensors of a whisper checkpoint (``model.encoder.*`` renamed, decoder and proj_out dropped)."""
    for prefix in WHISPER_PREFIXES:
        encoder = {"encoder." + k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}
        if encoder:
            return encoder
    raise SonicWeightsError(f"{source} has no whisper encoder tensors (model.encoder.* or encoder.*); "
                            f"use openai/whisper-tiny's model.safetensors ({DEFAULT_FIX})")


def read_whisper_encoder(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The whisper encoder state dict of a ``whisper-tiny/`` folder (or its ``model.safetensors``); decoder unread."""
    path = Path(path)
    file = path / WHISPER_FILE if path.is_dir() else path
    if not file.is_file():
        raise SonicWeightsError(f"{file} not found; {DEFAULT_FIX}")
    if file.suffix == ".safetensors":
        keys = [k for k in safetensors_keys(file) if k.startswith(WHISPER_PREFIXES)]
        return whisper_encoder_state_dict(read_state_dict(file, keys=keys), str(file))
    return whisper_encoder_state_dict(read_state_dict(file), str(file))


def rife_state_dict(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``flownet.pkl`` keys with the ``module.`` prefix stripped (keys without it are kept as they are)."""
    return {k.removeprefix(RIFE_PREFIX): v for k, v in state_dict.items()}


def read_rife(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The IFNet state dict of ``RIFE/flownet.pkl`` (a legacy pickle, read with ``weights_only=True``)."""
    return rife_state_dict(read_state_dict(path))
