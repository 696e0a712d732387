"""Post-processing of a whole generated clip, as the CLI and the pipeline apply it: Lip-Sync Align, then Motion
Smooth. Both need every frame of the clip (a cross-correlation over the clip, a trajectory filter), so a run with
post-processing holds its frames in memory; without it the pipeline streams.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ..audio import Speech
from ..errors import SonicInputError
from ..face.box import FaceBox
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


def apply_post(frames: torch.Tensor, speech: Speech, fps: float, options: PostOptions,
               face_box: FaceBox | None = None) -> tuple[torch.Tensor, Speech, dict[str, Any]]:
    """Run the chosen steps on frames ``[F, 3, H, W]`` in [0, 1] and their speech; returns the frames, the speech
    (delayed when Lip-Sync Align corrected it; both its forms, lengths kept) and a report ``{"lipsync": ...,
    "smooth": ...}`` of what was done. ``face_box`` is the face in the frames' pixels (the generation knows it);
    without it each step finds the face itself."""
    report: dict[str, Any] = {}
    if options.lipsync != "off":
        frames, _, sync = align(frames, speech.samples, fps, options.lipsync, face_box=face_box,
                                max_offset=options.max_offset, min_confidence=options.min_confidence)
        if sync.applied:
            speech = speech.delayed(sync.offset_s)
        report["lipsync"] = sync.to_dict()
    if options.smooth != "off":
        frames, smooth = smooth_motion(frames, fps, options.smooth, options.smooth_strength, face_box=face_box)
        report["smooth"] = smooth.to_dict()
    return frames, speech, report
