"""Video Combine: IMAGE frames (+ AUDIO) → an MP4 (h264/AAC) or WebM (VP9/Opus) in ComfyUI's output folder."""

from __future__ import annotations

import os
from typing import Any

from sonic_core import node_ids
from sonic_core.errors import SonicInputError
from sonic_core.frames import check_finite
from sonic_core.paths import os_reason, relative_name
from sonic_core.video import CODECS, PIX_FMTS, VideoWriter

from .audio import audio_value
from .comfy_compat import ProgressBar, folder_paths, io, note_output, throw_if_interrupted, video_from_file
from .schema import refusal

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


class SonicVideoCombine(io.ComfyNode):
    """Video Combine (Sonic): IMAGE frames and an optional AUDIO encoded to MP4 or WebM in the output folder."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=node_ids.VIDEO_COMBINE, display_name="Video Combine (Sonic)", category="Sonic/video",
            description="Encodes IMAGE frames, with the audio muxed in and cut to the video's length, into "
                        "ComfyUI's output folder as MP4 (h264 + AAC) or WebM (VP9 + Opus), in one ffmpeg pass, "
                        f"{CHUNK_FRAMES} frames at a time. The frames arrive as one IMAGE batch (4 bytes per colour "
                        "value: 60 s at 512 px is about 4.7 GB); for long clips use Sonic Sampler (to video), "
                        "which never holds them.",
            inputs=[
                io.Image.Input("images", tooltip="the frames, in order ([frames, height, width, 3], values 0-1)"),
                io.Float.Input("fps", default=25.0, min=1.0, max=120.0, step=0.5,
                               tooltip="frames per second of the video (connect the Sampler's fps)"),
                io.Combo.Input("format", options=list(FORMATS), default="mp4 (h264 + aac)",
                               tooltip="mp4 plays everywhere; webm for the web"),
                io.Int.Input("crf", default=18, min=0, max=51, step=1,
                             tooltip="quality: lower is better and bigger; 18 ≈ visually lossless, 23-28 small"),
                io.Combo.Input("pix_fmt", options=list(PIX_FMTS), default="yuv420p",
                               tooltip="yuv420p plays everywhere; yuv444p keeps full colour (fewer players)"),
                io.String.Input("filename_prefix", default="Sonic",
                                tooltip="file name (or sub/folder/name) under the output folder; a counter and "
                                        "the extension are added"),
                io.Audio.Input("audio", optional=True, tooltip="speech to mux; cut to the video's length"),
            ],
            outputs=[
                io.Video.Output(display_name="video", tooltip="the written file as a core VIDEO (Save Video, Get "
                                                               "Video Components); a path outside ComfyUI"),
                io.String.Output(display_name="path", tooltip="absolute path of the written file"),
            ],
            is_output_node=True,
        )

    @classmethod
    def validate_inputs(cls, filename_prefix: str = "Sonic") -> bool | str:
        """The prefix must stay inside the output folder (refused before the queue, nothing written)."""
        return refusal(lambda: check_prefix(filename_prefix))

    @classmethod
    def execute(cls, images: Any, fps: float = 25.0, format: str = "mp4 (h264 + aac)", crf: int = 18,
                pix_fmt: str = "yuv420p", filename_prefix: str = "Sonic",
                audio: dict[str, Any] | None = None) -> io.NodeOutput:
        if format not in FORMATS:
            raise SonicInputError(f"format {format!r}: use one of {list(FORMATS)}")
        if getattr(images, "ndim", 0) != 4 or images.shape[-1] != 3 or images.shape[0] == 0:
            raise SonicInputError(f"images of shape {tuple(getattr(images, 'shape', ()))}: expected a ComfyUI "
                                  "IMAGE batch [frames, height, width, 3]")
        check_finite(images, "images")
        codec = FORMATS[format]
        count, height, width = int(images.shape[0]), int(images.shape[1]), int(images.shape[2])
        track = _audio_track(audio)
        path, name, subfolder = output_path(filename_prefix, width, height, CODECS[codec]["container"])
        with VideoWriter(path, width, height, fps, audio=track, crf=int(crf), codec=codec,
                         pix_fmt=pix_fmt, frames=count) as writer:
            progress = ProgressBar(count)
            for start in range(0, count, CHUNK_FRAMES):
                throw_if_interrupted()
                chunk = images[start:start + CHUNK_FRAMES]
                writer.write(chunk.permute(0, 3, 1, 2))
                progress.update(chunk.shape[0])
        note_output(path)
        preview = video_preview(name, subfolder, "output", CODECS[codec]["container"])
        return io.NodeOutput(video_from_file(path), path, ui=preview)


def output_path(filename_prefix: str, width: int, height: int, container: str,
                kind: str = "output") -> tuple[str, str, str]:
    """``(path, file name, subfolder)`` of the next numbered file for ``filename_prefix`` in ComfyUI's output (or
    temp) folder; a prefix that leaves the folder, or a folder that cannot be made, is one SonicInputError line."""
    base = folder_paths.get_temp_directory() if kind == "temp" else folder_paths.get_output_directory()
    prefix = check_prefix(filename_prefix)
    try:
        folder, filename, counter, subfolder, _ = folder_paths.get_save_image_path(prefix, base, width, height)
    except OSError as exc:  # the subfolder cannot be made (an unwritable output folder, a file in the way)
        raise SonicInputError(f"filename_prefix {prefix!r}: its folder under {base!r} cannot be created "
                              f"({os_reason(exc)}); make the {kind} folder writable or choose another prefix") \
            from None
    name = f"{filename}_{counter:05}_.{container}"
    return os.path.join(folder, name), name, subfolder


def video_preview(name: str, subfolder: str, kind: str, container: str) -> dict[str, Any]:
    """The ``ui`` payload that shows a written video on its node (ComfyUI's animated-image preview)."""
    return {"images": [{"filename": name, "subfolder": subfolder, "type": kind, "format": f"video/{container}"}],
            "animated": (True,)}


NODES = [SonicVideoCombine]
