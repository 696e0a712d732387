"""Devices and precisions: the names users type (``cuda:1``, ``fp16``) as torch objects, checked once for the CLI
and the nodes alike. UNet, VAE and CLIP run in the chosen dtype; whisper, the audio adapters and RIFE in float32
(MODEL.md §2)."""

from __future__ import annotations

import torch

from .errors import SonicInputError

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


def default_dtype(device: torch.device) -> torch.dtype:
    """fp16 on CUDA, fp32 elsewhere."""
    return torch.float16 if device.type == "cuda" else torch.float32


def check_precision(device: torch.device, dtype: torch.dtype, what: str = "--dtype") -> torch.dtype:
    """``dtype`` when ``device`` runs it; fp16 on the CPU is refused with one line (half-precision convolutions
    there are missing or many times slower than fp32; bf16 works)."""
    if device.type == "cpu" and dtype == torch.float16:
        raise SonicInputError(f"{what} fp16 on the CPU: half-precision convolutions are missing or very slow there; "
                              "use fp32 (or bf16) on the CPU, or fp16 on a CUDA device")
    return dtype


def free_memory(device: torch.device) -> int | None:
    """Free bytes on a CUDA ``device`` (``torch.cuda.mem_get_info``); ``None`` elsewhere (the CPU has no budget
    unless one is given)."""
    if device.type != "cuda":
        return None
    return torch.cuda.mem_get_info(device)[0]
