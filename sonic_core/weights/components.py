"""Each published checkpoint -> the state dict of our module: one place per component for its key mapping, its
checks and the fix its errors suggest.

* UNet (``Sonic/unet.pth``): our keys already; a file with a second IP adapter (``to_k_ip.1.*``) is refused by name.
* SVD (:func:`load_svd_parts`): the diffusers folder already uses our names (less the ``position_ids`` buffer that
  older transformers saved with the CLIP weights); the single Stability file is renamed by :mod:`.svd_single_file`.
  Either way only the VAE and the CLIP image encoder are read, never the UNet.
* Whisper: openai/whisper-tiny's ``model.safetensors`` is a ``WhisperForConditionalGeneration`` (``model.encoder.*``,
  ``model.decoder.*``, ``proj_out.*``); we keep the encoder as ``encoder.*`` (a ``WhisperModel`` or bare encoder
  state dict, ``encoder.*``, is taken as is). The decoder is never read from a safetensors file.
* RIFE: ``flownet.pkl`` was saved from a ``DataParallel`` wrapper (``module.`` prefix); the prefix is stripped.
* Face detector (``yoloface_v5m.pt``): a TorchScript archive, loaded with ``torch.jit.load`` (which runs serialized
  TorchScript graphs, not pickled Python); load only the official file (MODEL.md §1.3).

Per component: ``*_state_dict`` maps a published state dict to ours (checked), ``read_*`` reads a file into ours,
and ``load_*`` strictly loads a published state dict into a module that is already built (the loader builds its
modules on the meta device instead, :func:`~.reading.build_and_load`).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path

import torch
from torch import nn

from ..errors import SonicWeightsError
from .reading import DEFAULT_FIX, FETCH_COMMAND, load_strict, read_state_dict, safetensors_keys
from .svd_single_file import read_single_file

UNET_FIX = f"use Sonic/unet.pth from LeonJoe13/Sonic (run `{FETCH_COMMAND}`)"
CLIP_FIX = (f"use image_encoder/ of stabilityai/stable-video-diffusion-img2vid-xt (ViT-H/14 with projection) or a "
            f"Stability svd_xt*.safetensors ({DEFAULT_FIX})")
WHISPER_FIX = f"use model.safetensors of openai/whisper-tiny ({DEFAULT_FIX})"
RIFE_FIX = f"use the RIFE HDv3 flownet.pkl (run `{FETCH_COMMAND}`, or scripts/fetch_assets.py for the test assets)"

SECOND_IP_ADAPTER = (".to_k_ip.1.", ".to_v_ip.1.")
SVD_FILES = {"vae": ("vae", "diffusion_pytorch_model"), "image_encoder": ("image_encoder", "model")}
NON_PERSISTENT = ("vision_model.embeddings.position_ids",)  # saved by older transformers; rebuilt by the model
WHISPER_FILE = "model.safetensors"
WHISPER_PREFIXES = ("model.encoder.", "encoder.")  # WhisperForConditionalGeneration first, then WhisperModel
WHISPER_ENCODER = "encoder."
RIFE_PREFIX = "module."
YOLOFACE_FIX = "use the official Sonic yoloface_v5m.pt (models/sonic/yoloface_v5m.pt)"


# ------------------------------------------------------------------------------------------------------------ UNet

def unet_state_dict(state_dict: Mapping[str, torch.Tensor], source: str = "unet.pth") -> dict[str, torch.Tensor]:
    """A Sonic UNet checkpoint as it is (its keys are ours), refusing one with a second IP adapter."""
    if any(marker in key for key in state_dict for marker in SECOND_IP_ADAPTER):
        raise SonicWeightsError(f"{source} has a second IP adapter (to_k_ip.1.*): it is not a Sonic UNet; {UNET_FIX}")
    return dict(state_dict)


def read_unet(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The state dict of ``Sonic/unet.pth``."""
    return unet_state_dict(read_state_dict(path, fix=UNET_FIX), str(path))


def load_unet_state_dict(model: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str = "unet.pth") -> None:
    """Strictly load a Sonic UNet checkpoint into ``model``, with one-line errors that name the file and the fix."""
    load_strict(model, unet_state_dict(state_dict, source), source, UNET_FIX)


# ------------------------------------------------------------------------------------------------------------- SVD

def clip_vision_state_dict(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A transformers ``CLIPVisionModelWithProjection`` state dict without the ``position_ids`` buffer."""
    return {k: v for k, v in state_dict.items() if k not in NON_PERSISTENT}


def load_clip_vision(model: nn.Module, state_dict: Mapping[str, torch.Tensor],
                     source: str = "image_encoder/model.fp16.safetensors") -> None:
    """Strictly load a transformers ``CLIPVisionModelWithProjection`` checkpoint (any float dtype) into ``model``."""
    load_strict(model, clip_vision_state_dict(state_dict), source, CLIP_FIX)


def svd_folder_file(folder: Path, part: str) -> Path:
    """The file of ``part`` (``vae`` / ``image_encoder``) in a diffusers SVD folder: the fp16 variant first."""
    sub, stem = SVD_FILES[part]
    for name in (f"{stem}.fp16.safetensors", f"{stem}.safetensors"):  # the official code loads the fp16 variant
        if (folder / sub / name).is_file():
            return folder / sub / name
    raise SonicWeightsError(f"{folder / sub} has neither {stem}.fp16.safetensors nor {stem}.safetensors; "
                            f"{DEFAULT_FIX}")


def read_svd_folder_part(folder: Path, part: str) -> dict[str, torch.Tensor]:
    """Our state dict of one part (``vae`` / ``image_encoder``) of a diffusers SVD folder."""
    state_dict = read_state_dict(svd_folder_file(folder, part))
    return clip_vision_state_dict(state_dict) if part == "image_encoder" else state_dict


def load_svd_parts(source: str | os.PathLike) -> dict[str, dict[str, torch.Tensor]]:
    """``{"vae": ..., "image_encoder": ...}`` from a diffusers SVD folder or a single ``svd_xt*.safetensors``."""
    source = Path(source)
    if source.is_dir():
        return {part: read_svd_folder_part(source, part) for part in SVD_FILES}
    if not source.is_file():
        raise SonicWeightsError(f"{source} not found; {DEFAULT_FIX}")
    return read_single_file(source)


# --------------------------------------------------------------------------------------------------------- whisper

def _whisper_encoder_names(keys: Iterable[str], source: str) -> dict[str, str]:
    """Our ``encoder.*`` name -> the checkpoint's name; decoder and head tensors are left out."""
    keys = list(keys)
    for prefix in WHISPER_PREFIXES:
        names = {WHISPER_ENCODER + k[len(prefix):]: k for k in keys if k.startswith(prefix)}
        if names:
            return names
    raise SonicWeightsError(f"{source} has no whisper encoder tensors (model.encoder.* or encoder.*); {WHISPER_FIX}")


def whisper_encoder_state_dict(state_dict: Mapping[str, torch.Tensor],
                               source: str = WHISPER_FILE) -> dict[str, torch.Tensor]:
    """The ``encoder.*`` tensors of a whisper checkpoint (``model.encoder.*`` renamed, decoder and proj_out dropped)."""
    return {ours: state_dict[theirs] for ours, theirs in _whisper_encoder_names(state_dict, source).items()}


def read_whisper_encoder(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The whisper encoder state dict of a ``whisper-tiny/`` folder or a checkpoint file (safetensors: the decoder
    is never read)."""
    path = Path(path)
    file = path / WHISPER_FILE if path.is_dir() else path
    if file.suffix != ".safetensors":
        return whisper_encoder_state_dict(read_state_dict(file, fix=WHISPER_FIX), str(file))
    names = _whisper_encoder_names(safetensors_keys(file, fix=WHISPER_FIX), str(file))
    tensors = read_state_dict(file, keys=names.values(), fix=WHISPER_FIX)
    return {ours: tensors[theirs] for ours, theirs in names.items()}


def load_whisper_encoder(model: nn.Module, state_dict: Mapping[str, torch.Tensor],
                         source: str = "whisper-tiny/model.safetensors") -> None:
    """Strictly load the encoder part of a whisper checkpoint into ``model``
    (see :func:`whisper_encoder_state_dict`)."""
    load_strict(model, whisper_encoder_state_dict(state_dict, source), source, WHISPER_FIX)


# ------------------------------------------------------------------------------------------------------------ RIFE

def rife_state_dict(state_dict: Mapping[str, torch.Tensor], source: str = "flownet.pkl") -> dict[str, torch.Tensor]:
    """``flownet.pkl`` keys with the ``module.`` prefix stripped (keys without it are kept as they are)."""
    stripped = {k.removeprefix(RIFE_PREFIX): v for k, v in state_dict.items()}
    if len(stripped) != len(state_dict):
        raise SonicWeightsError(f"{source} holds the same RIFE key with and without '{RIFE_PREFIX}'; {RIFE_FIX}")
    return stripped


def read_rife(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The IFNet state dict of ``RIFE/flownet.pkl`` (a legacy pickle, read with ``weights_only=True``)."""
    return rife_state_dict(read_state_dict(path, fix=RIFE_FIX, kind="RIFE weights"), str(path))


def load_rife_state_dict(model: nn.Module, state_dict: Mapping[str, torch.Tensor],
                         source: str = "flownet.pkl") -> None:
    """Strictly load a flownet state dict whose keys carry the ``module.`` prefix (as published) or not."""
    load_strict(model, rife_state_dict(state_dict, source), source, RIFE_FIX)


def load_yoloface(path: str | os.PathLike, device: torch.device | str = "cpu") -> torch.jit.ScriptModule:
    """The TorchScript face detector ``yoloface_v5m.pt`` on ``device``, in eval mode; one-line errors."""
    path = Path(path)
    if not path.is_file():
        raise SonicWeightsError(f"face detector not found at {path}; {YOLOFACE_FIX}")
    try:
        with warnings.catch_warnings():  # torch ≥ 2.9 deprecates TorchScript; the official file is one
            warnings.simplefilter("ignore", DeprecationWarning)
            return torch.jit.load(str(path), map_location=device).eval()
    except Exception as exc:  # torch raises RuntimeError/ValueError variants for foreign or truncated files
        raise SonicWeightsError(f"{path} is not a TorchScript face detector ({type(exc).__name__}); "
                                f"{YOLOFACE_FIX}") from None
