"""Post-processing nodes over :mod:`sonic_core.post`: Lip-Sync Align and Motion Smooth (IMAGE in, IMAGE out).

Thin adapters: they convert ComfyUI's IMAGE ``[F, H, W, 3]`` and AUDIO to the engine's frames ``[F, 3, H, W]`` and
16 kHz mono samples, call the engine, and return its report as one line (plus the full report as JSON on the node).
"""

from __future__ import annotations

import json
from typing import Any

import torch

from sonic_core import node_ids
from sonic_core.audio import speech_from_waveform
from sonic_core.errors import SonicInputError
from sonic_core.post.lipsync import DEFAULT_MAX_OFFSET, DEFAULT_MIN_CONFIDENCE, align
from sonic_core.post.smooth import METHODS, smooth_motion
from sonic_core.settings import AUTO

from .audio import audio_value
from .comfy_compat import cancel_check
from .schema import NodeResult, NodeSpec, Param, Result, auto_or_number, build_node

ALIGN_MODES = ("measure", "correct")
BORDERS = ("reflect", "zoom")


def image_to_frames(images: Any, name: str = "images") -> torch.Tensor:
    """ComfyUI IMAGE ``[F, H, W, 3]`` → engine frames ``[F, 3, H, W]`` (float32, CPU)."""
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[-1] != 3 or 0 in images.shape:
        raise SonicInputError(f"{name} of shape {tuple(getattr(images, 'shape', ()))}: expected a ComfyUI IMAGE "
                              "batch [frames, height, width, 3]; connect a Load Image node or a Sonic node")
    return images.detach().cpu().float().permute(0, 3, 1, 2)


def frames_to_image(frames: torch.Tensor) -> torch.Tensor:
    return frames.permute(0, 2, 3, 1).contiguous()


def lipsync_align(images: Any, audio: dict[str, Any], fps: float = 25.0, mode: str = "measure",
                  max_offset: float = DEFAULT_MAX_OFFSET, min_confidence: float = DEFAULT_MIN_CONFIDENCE) -> NodeResult:
    speech = speech_from_waveform(*audio_value(audio), name="audio")
    frames, _, report = align(image_to_frames(images), speech.samples, fps, mode, max_offset=max_offset,
                              min_confidence=min_confidence)
    out_audio = audio
    if report.applied:
        delayed = speech.delayed(report.offset_s)
        out_audio = {"waveform": torch.from_numpy(delayed.waveform)[None], "sample_rate": delayed.sample_rate}
    line = (f"offset {report.offset_s * 1000:+.0f} ms ({report.offset_frames:+.2f} frames, audio leads when +), "
            f"confidence {report.confidence:.2f}: {report.reason}")
    return NodeResult((images, out_audio, line), ui={"text": [line, json.dumps(report.to_dict())]})


def motion_smooth(images: Any, fps: float = 25.0, method: str = "bezier", strength: str = AUTO,
                  target_fps: float = 0.0, border: str = "reflect", model: Any = None) -> NodeResult:
    rife = getattr(getattr(model, "models", None), "rife", None)
    if rife is not None:
        model.load()
    frames, report = smooth_motion(image_to_frames(images), fps, method, auto_or_number(strength, "strength"),
                                   target_fps=target_fps or None, interpolator=rife.midpoint if rife else None,
                                   border=border, should_stop=cancel_check)
    line = (f"{report.reason}; jitter {report.jitter_before:.2f} -> {report.jitter_after:.2f} px, "
            f"largest correction {report.max_correction_px:.1f} px, {report.frames_in} frames at {report.fps_in:g} "
            f"fps -> {report.frames_out} at {report.fps_out:g} fps")
    return NodeResult((frames_to_image(frames), report.fps_out, line),
                      ui={"text": [line, json.dumps(report.to_dict())]})


LIPSYNC_ALIGN = NodeSpec(
    node_id=node_ids.LIPSYNC_ALIGN, display_name="Lip-Sync Align", category="Sonic/post",
    description="Measures the offset between mouth movement and speech (cross-correlation of mouth and speech "
                "activity); in 'correct' mode, when confident, shifts the audio to cancel it. Frames are unchanged.",
    inputs=(
        Param("images", "IMAGE"),
        Param("audio", "AUDIO"),
        Param("fps", "FLOAT", default=25.0, min=1.0, max=120.0, step=0.5),
        Param("mode", "COMBO", default="measure", options=ALIGN_MODES,
              tooltip="measure only, or correct the audio when the measurement is confident"),
        Param("max_offset", "FLOAT", default=DEFAULT_MAX_OFFSET, min=0.04, max=1.0, step=0.01,
              tooltip="largest offset searched, in seconds"),
        Param("min_confidence", "FLOAT", default=DEFAULT_MIN_CONFIDENCE, min=0.0, max=1.0, step=0.05,
              tooltip="below this confidence nothing is changed"),
    ),
    outputs=(Result("images", "IMAGE"), Result("audio", "AUDIO", "the audio, shifted when a correction was applied"),
             Result("report", "STRING")),
)

MOTION_SMOOTH = NodeSpec(
    node_id=node_ids.MOTION_SMOOTH, display_name="Motion Smooth", category="Sonic/post",
    description="Tracks the head, smooths its trajectory (Bézier, Savitzky-Golay or One-Euro) and warps each frame "
                "onto the smoothed path; optionally retimes to target_fps (RIFE from a connected model, else a "
                "linear blend).",
    inputs=(
        Param("images", "IMAGE"),
        Param("fps", "FLOAT", default=25.0, min=1.0, max=120.0, step=0.5),
        Param("method", "COMBO", default="bezier", options=METHODS),
        Param("strength", "STRING", default=AUTO, tooltip="'auto' (from the measured jitter) or 0-1"),
        Param("target_fps", "FLOAT", default=0.0, min=0.0, max=120.0, step=0.5, tooltip="0 = keep the frame rate"),
        Param("border", "COMBO", default="reflect", options=BORDERS,
              tooltip="reflect: mirrored borders; zoom: zoom in just enough to hide them"),
        Param("model", "SONIC_MODEL", optional=True, tooltip="a Sonic Loader whose RIFE does the retime"),
    ),
    outputs=(Result("images", "IMAGE"), Result("fps", "FLOAT", "frame rate of the output"),
             Result("report", "STRING")),
)

SonicLipSyncAlign = build_node(LIPSYNC_ALIGN, lipsync_align)
SonicMotionSmooth = build_node(MOTION_SMOOTH, motion_smooth)

NODES = [SonicLipSyncAlign, SonicMotionSmooth]
