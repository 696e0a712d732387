"""Post-processing of a whole generated clip, as the CLI and the pipeline apply it: Lip-Sync Align, then Motion
Smooth. Both need every frame of the clip (a cross-correlation over the clip, a trajectory filter), so a run with
post-processing holds its frames in memory; without it the pipeline streams.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..errors import SonicInputError
from .lipsync import DEFAULT_MAX_OFFSET, DEFAULT_MIN_CONFIDENCE, align
from .smooth import METHODS, smooth_motion

LIPSYNC_MODES = ("off", "measure", "correct")
SMOOTH_METHODS = ("off", *METHODS)


@dataclass(frozen=True)
class PostOptions:
    """Which post-processing runs: ``lipsync`` off/measure/correct, ``smooth`` off or a filter method, with its
    ``smooth_strength`` (``"auto"`` or 0–1)."""

    lipsync: str = "off"
    smooth: str = "off"
    smooth_strength: float | str = "auto"
    max_offset: float = DEFAULT_MAX_OFFSET
    min_confidence: float = DEFAULT_MIN_CONFIDENCE

    def __post_init__(self) -> None:
        if self.lipsync not in LIPSYNC_MODES:
            raise SonicInputError(f"lipsync={self.lipsync!r}: use one of {', '.join(LIPSYNC_MODES)}")
        if self.smooth not in SMOOTH_METHODS:
            raise SonicInputError(f"smooth={self.smooth!r}: use one of {', '.join(SMOOTH_METHODS)}")

    @property
    def active(self) -> bool:
        return self.lipsync != "off" or self.smooth != "off"


def apply_post(frames: torch.Tensor, samples: np.ndarray, fps: float, options: PostOptions,
               face_box: Any = None, sample_rate: int = 16_000) -> tuple[torch.Tensor, np.ndarray, dict]:
    """Run the chosen steps on frames ``[F, 3, H, W]`` in [0, 1] and mono ``samples``; returns the frames, the
    (possibly shifted, same length) samples and a report ``{"lipsync": ..., "smooth": ...}`` of what was done."""
    report: dict[str, Any] = {}
    if options.lipsync != "off":
        frames, samples, sync = align(frames, samples, fps, options.lipsync, face_box=face_box,
                                      max_offset=options.max_offset, min_confidence=options.min_confidence,
                                      sample_rate=sample_rate)
        report["lipsync"] = sync.to_dict()
    if options.smooth != "off":
        frames, smooth = smooth_motion(frames, fps, options.smooth, options.smooth_strength, face_box=face_box)
        report["smooth"] = smooth.to_dict()
    return frames, samples, report
