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
from sonic_core.frames import check_finite
from sonic_core.post.lipsync import DEFAULT_MAX_OFFSET, DEFAULT_MIN_CONFIDENCE, align
from sonic_core.post.smooth import METHODS, smooth_motion
from sonic_core.settings import AUTO

from .audio import audio_value
from .comfy_compat import cancel_check, io
from .schema import auto_or_number, refusal

ALIGN_MODES = ("measure", "correct")
BORDERS = ("reflect", "zoom")


def image_to_frames(images: Any, name: str = "images") -> torch.Tensor:
    """ComfyUI IMAGE ``[F, H, W, 3]`` → engine frames ``[F, 3, H, W]`` (float32, CPU)."""
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[-1] != 3 or 0 in images.shape:
        raise SonicInputError(f"{name} of shape {tuple(getattr(images, 'shape', ()))}: expected a ComfyUI IMAGE "
                              "batch [frames, height, width, 3]; connect a Load Image node or a Sonic node")
    return check_finite(images.detach().cpu().float().permute(0, 3, 1, 2), name)


def frames_to_image(frames: torch.Tensor) -> torch.Tensor:
    return frames.permute(0, 2, 3, 1).contiguous()


class SonicLipSyncAlign(io.ComfyNode):
    """Lip-Sync Align: the offset between mouth movement and speech, measured and optionally corrected."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=node_ids.LIPSYNC_ALIGN, display_name="Lip-Sync Align", category="Sonic/post",
            description="Measures the offset between mouth movement and speech (cross-correlation of mouth "
                        "darkness and speech loudness, searched up to max_offset seconds either way); in 'correct' "
                        "mode, when the confidence (0-1) reaches min_confidence, delays or advances the audio to "
                        "cancel it. Frames pass through unchanged. Needs the whole clip: put it after an IMAGE "
                        "Sampler.",
            inputs=[
                io.Image.Input("images", tooltip="the talking-head frames, in order"),
                io.Audio.Input("audio", tooltip="the speech the frames were made from"),
                io.Float.Input("fps", default=25.0, min=1.0, max=120.0, step=0.5,
                               tooltip="frames per second of the images (connect the Sampler's fps)"),
                io.Combo.Input("mode", options=list(ALIGN_MODES), default="measure",
                               tooltip="measure only, or correct the audio when the measurement is confident"),
                io.Float.Input("max_offset", default=DEFAULT_MAX_OFFSET, min=0.04, max=1.0, step=0.01,
                               tooltip="largest offset searched, in seconds (0.04 = one frame at 25 fps)"),
                io.Float.Input("min_confidence", default=DEFAULT_MIN_CONFIDENCE, min=0.0, max=1.0, step=0.05,
                               tooltip="below this confidence (0-1) nothing is changed"),
            ],
            outputs=[
                io.Image.Output(display_name="images", tooltip="the frames, unchanged"),
                io.Audio.Output(display_name="audio", tooltip="the audio, shifted when a correction was applied"),
                io.String.Output(display_name="report",
                                 tooltip="offset in ms and frames (+: audio leads), confidence, and what was done"),
            ],
        )

    @classmethod
    def execute(cls, images: Any, audio: dict[str, Any], fps: float = 25.0, mode: str = "measure",
                max_offset: float = DEFAULT_MAX_OFFSET,
                min_confidence: float = DEFAULT_MIN_CONFIDENCE) -> io.NodeOutput:
        speech = speech_from_waveform(*audio_value(audio), name="audio")
        frames, _, report = align(image_to_frames(images), speech.samples, fps, mode, max_offset=max_offset,
                                  min_confidence=min_confidence)
        out_audio = audio
        if report.applied:
            delayed = speech.delayed(report.offset_s)
            out_audio = {"waveform": torch.from_numpy(delayed.waveform)[None], "sample_rate": delayed.sample_rate}
        line = (f"offset {report.offset_s * 1000:+.0f} ms ({report.offset_frames:+.2f} frames, audio leads when "
                f"+), confidence {report.confidence:.2f}: {report.reason}")
        return io.NodeOutput(images, out_audio, line, ui={"text": [line, json.dumps(report.to_dict())]})


class SonicMotionSmooth(io.ComfyNode):
    """Motion Smooth: the head's trajectory smoothed and each frame warped onto it, optionally retimed."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=node_ids.MOTION_SMOOTH, display_name="Motion Smooth", category="Sonic/post",
            description="Tracks the head, smooths its trajectory (Bézier, Savitzky-Golay or One-Euro) and warps "
                        "each frame onto the smoothed path (strength 0-1, 'auto' from the measured jitter in "
                        "pixels); optionally retimes to target_fps (RIFE from a connected Sonic Loader, else a "
                        "linear blend). Needs the whole clip: put it after an IMAGE Sampler.",
            inputs=[
                io.Image.Input("images", tooltip="the talking-head frames, in order"),
                io.Float.Input("fps", default=25.0, min=1.0, max=120.0, step=0.5,
                               tooltip="frames per second of the images (connect the Sampler's fps)"),
                io.Combo.Input("method", options=list(METHODS), default="bezier",
                               tooltip="smoothing filter of the head trajectory: Bézier fit, Savitzky-Golay, or "
                                       "One-Euro"),
                io.String.Input("strength", default=AUTO,
                                tooltip="'auto' (from the measured jitter) or 0-1: the filter's time scale, 0 = off, "
                                        "1 = 0.6 s"),
                io.Float.Input("target_fps", default=0.0, min=0.0, max=120.0, step=0.5,
                               tooltip="frame rate to retime to; 0 = keep the frame rate"),
                io.Combo.Input("border", options=list(BORDERS), default="reflect",
                               tooltip="reflect: mirrored borders; zoom: zoom in just enough to hide them"),
                io.Custom("SONIC_MODEL").Input("model", optional=True,
                                               tooltip="a Sonic Loader whose RIFE does the retime (optional)"),
            ],
            outputs=[
                io.Image.Output(display_name="images", tooltip="the smoothed (and retimed) frames"),
                io.Float.Output(display_name="fps", tooltip="frame rate of the output"),
                io.String.Output(display_name="report", tooltip="method, jitter before and after in pixels, largest "
                                                                "correction, frame counts and rates"),
            ],
        )

    @classmethod
    def validate_inputs(cls, strength: str = AUTO) -> bool | str:
        return refusal(lambda: auto_or_number(strength, "strength"))

    @classmethod
    def execute(cls, images: Any, fps: float = 25.0, method: str = "bezier", strength: str = AUTO,
                target_fps: float = 0.0, border: str = "reflect", model: Any = None) -> io.NodeOutput:
        rife = getattr(getattr(model, "models", None), "rife", None)
        if rife is not None:
            model.load()
        frames, report = smooth_motion(image_to_frames(images), fps, method, auto_or_number(strength, "strength"),
                                       target_fps=target_fps or None, interpolator=rife.midpoint if rife else None,
                                       border=border, should_stop=cancel_check)
        line = (f"{report.reason}; jitter {report.jitter_before:.2f} -> {report.jitter_after:.2f} px, largest "
                f"correction {report.max_correction_px:.1f} px, {report.frames_in} frames at {report.fps_in:g} "
                f"fps -> {report.frames_out} at {report.fps_out:g} fps")
        return io.NodeOutput(frames_to_image(frames), report.fps_out, line,
                             ui={"text": [line, json.dumps(report.to_dict())]})


NODES = [SonicLipSyncAlign, SonicMotionSmooth]
