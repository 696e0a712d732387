"""Checks and conversions of the post-processing frame convention: float tensors [F, 3, H, W] in [0, 1]."""

from __future__ import annotations

import math

import numpy as np
import torch

from .errors import SonicInputError
from .finite import shown

# ITU-R BT.601 luma weights, the ones OpenCV's RGB2GRAY uses.
_LUMA = (0.299, 0.587, 0.114)
CHUNK = 16  # frames converted or checked at a time, so no full-clip temporary is made


def check_frames(frames: torch.Tensor, name: str = "frames", min_frames: int = 1) -> torch.Tensor:
    """Validate a clip [F, 3, H, W] of floats and return it; one-line SonicInputError otherwise."""
    if not isinstance(frames, torch.Tensor):
        raise SonicInputError(f"{name}: expected a torch tensor [F, 3, H, W] in [0, 1], got {type(frames).__name__}")
    if frames.dim() != 4 or frames.shape[1] != 3:
        raise SonicInputError(f"{name}: expected shape [F, 3, H, W], got {list(frames.shape)}")
    if not frames.is_floating_point():
        raise SonicInputError(f"{name}: expected a float tensor in [0, 1], got {frames.dtype}; divide uint8 by 255")
    if frames.shape[0] < min_frames:
        raise SonicInputError(f"{name}: needs at least {min_frames} frames, got {frames.shape[0]}")
    return check_finite(frames, name)


def check_finite(frames: torch.Tensor, name: str = "frames") -> torch.Tensor:
    """``frames`` (any layout, frames first) when every value is finite; else a one-line SonicInputError naming the
    first bad frame. Checked :data:`CHUNK` frames at a time, so no clip-sized temporary is made."""
    for start in range(0, frames.shape[0], CHUNK):
        finite = torch.isfinite(frames[start:start + CHUNK]).flatten(1).all(dim=1)
        if not finite.all():
            bad = start + int((~finite).nonzero()[0])
            raise SonicInputError(f"{name}: frame {bad} holds NaN or infinite pixel values; fix the node or code that "
                                  "made them (pixels must be finite numbers in 0-1)")
    return frames


def check_fps(fps: float, name: str = "fps") -> float:
    """A finite, positive frame rate as a float."""
    try:
        value = float(fps)
    except (TypeError, ValueError, OverflowError):
        raise SonicInputError(f"{name}: expected a positive number of frames per second, got {shown(fps)}") from None
    if not math.isfinite(value) or value <= 0:
        raise SonicInputError(f"{name}: expected a positive number of frames per second, got {shown(fps)}")
    return value


def to_gray(frames: torch.Tensor) -> np.ndarray:
    """Luma of every frame as float32 numpy [F, H, W] in [0, 1] (a third of the clip's memory)."""
    weights = torch.tensor(_LUMA, dtype=torch.float32, device=frames.device).view(1, 3, 1, 1)
    gray = np.empty((frames.shape[0], *frames.shape[2:]), dtype=np.float32)
    for start in range(0, frames.shape[0], CHUNK):
        chunk = frames[start:start + CHUNK].float()
        gray[start:start + CHUNK] = (chunk * weights).sum(dim=1).clamp(0, 1).cpu().numpy()
    return gray


def to_gray_uint8(gray: np.ndarray) -> np.ndarray:
    """Float luma in [0, 1] as uint8 (what OpenCV's detectors and trackers take)."""
    return np.clip(np.rint(gray * 255.0), 0, 255).astype(np.uint8)
