"""Video Combine: IMAGE frames (+ AUDIO) → an MP4 (h264/AAC) or WebM (VP9/Opus) in ComfyUI's output folder."""

from __future__ import annotations

import os
from typing import Any

from sonic_core import node_ids
from sonic_core.errors import SonicInputError
from sonic_core.paths import os_reason, relative_name
from sonic_core.video import CODECS, PIX_FMTS, VideoWriter

from .audio import audio_value
from .comfy_compat import ProgressBar, folder_paths, note_output, throw_if_interrupted, video_from_file
from .schema import NodeResult, NodeSpec, Param, Result, build_node

FORMATS = {"mp4 (h264 + aac)": "h264", "webm (vp9 + opus)": "vp9"}
# Frames handed to ffmpeg per write: bounds the uint8 copy in memory, and the interrupt check runs between them.
CHUNK_FRAMES = 16


def check_prefix(filename_prefix: str) -> str:
    """The prefix, or a SonicInputError when it is empty, absolute or climbs out of the output folder."""
    prefix = filename_prefix.strip() if isinstance(filename_prefix, str) else filename_prefix
    return relative_name(prefix, "filename_prefix", "use a plain name like 'Sonic' or 'videos/Sonic'")


def _audio_track(audio: dict[str, Any] | None) -> tuple[Any, int] | None:
    if audio is None:
        return None
    waveform, rate = audio_value(audio)
    return waveform[0], rate


def video_combine(images: Any, fps: float = 25.0, format: str = "mp4 (h264 + aac)", crf: int = 18,
                  pix_fmt: str = "yuv420p", filename_prefix: str = "Sonic",
                  audio: dict[str, Any] | None = None) -> NodeResult:
    if format not in FORMATS:
        raise SonicInputError(f"format {format!r}: use one of {list(FORMATS)}")
    if getattr(images, "ndim", 0) != 4 or images.shape[-1] != 3 or images.shape[0] == 0:
        raise SonicInputError(f"images of shape {tuple(getattr(images, 'shape', ()))}: expected a ComfyUI IMAGE "
                              "batch [frames, height, width, 3]")
    codec = FORMATS[format]
    count, height, width = int(images.shape[0]), int(images.shape[1]), int(images.shape[2])
    track = _audio_track(audio)
    output_dir = folder_paths.get_output_directory()
    prefix = check_prefix(filename_prefix)
    try:
        folder, filename, counter, subfolder, _ = folder_paths.get_save_image_path(prefix, output_dir, width, height)
    except OSError as exc:  # the subfolder cannot be made (an unwritable output folder, a file in the way)
        raise SonicInputError(f"filename_prefix {prefix!r}: its folder under {output_dir!r} cannot be created "
                              f"({os_reason(exc)}); make the output folder writable or choose another prefix") \
            from None
    name = f"{filename}_{counter:05}_.{CODECS[codec]['container']}"
    path = os.path.join(folder, name)
    with VideoWriter(path, width, height, fps, audio=track, crf=int(crf), codec=codec,
                     pix_fmt=pix_fmt, frames=count) as writer:
        progress = ProgressBar(count)
        for start in range(0, count, CHUNK_FRAMES):
            throw_if_interrupted()
            chunk = images[start:start + CHUNK_FRAMES]
            writer.write(chunk.permute(0, 3, 1, 2))
            progress.update(chunk.shape[0])
    note_output(path)
    preview = {"filename": name, "subfolder": subfolder, "type": "output",
               "format": f"video/{CODECS[codec]['container']}"}
    video = video_from_file(path)
    return NodeResult((path if video is None else video, path), ui={"images": [preview], "animated": (True,)})


VIDEO_COMBINE = NodeSpec(
    node_id=node_ids.VIDEO_COMBINE, display_name="Video Combine (Sonic)", category="Sonic/video",
    description="Encodes IMAGE frames, with the audio muxed in and cut to the video's length, into ComfyUI's "
                "output folder as MP4 (h264 + AAC) or WebM (VP9 + Opus), in one ffmpeg pass.",
    inputs=(
        Param("images", "IMAGE", tooltip="the frames, in order"),
        Param("fps", "FLOAT", default=25.0, min=1.0, max=120.0, step=0.5),
        Param("format", "COMBO", default="mp4 (h264 + aac)", options=tuple(FORMATS)),
        Param("crf", "INT", default=18, min=0, max=51, step=1, tooltip="quality: lower is better, 18 ≈ visually "
                                                                         "lossless"),
        Param("pix_fmt", "COMBO", default="yuv420p", options=PIX_FMTS,
              tooltip="yuv420p plays everywhere; yuv444p keeps full colour (fewer players)"),
        Param("filename_prefix", "STRING", default="Sonic", tooltip="file name (or sub/folder/name) under the "
                                                                     "output folder"),
        Param("audio", "AUDIO", optional=True, tooltip="speech to mux; cut to the video's length"),
    ),
    outputs=(Result("video", "VIDEO", "the written file as a core VIDEO (a path outside ComfyUI)"),
             Result("path", "STRING", "absolute path of the written file")),
    output_node=True,
)

SonicVideoCombine = build_node(VIDEO_COMBINE, video_combine)

NODES = [SonicVideoCombine]
