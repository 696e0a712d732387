"""One generation written to a video file: the pipeline's frame chunks, optionally post-processed, encoded with
the speech (the user's own track, at its own rate and channels) into an MP4 that appears only when complete.

Host memory stays flat in audio length: frames stream from the decoder through RIFE, deflicker (which holds a
bounded 1.5 s look-ahead), colour match and paste-back into the encoder. Lip-Sync Align and Motion Smooth need the
whole clip, so a run with them holds its frames.
"""

from __future__ import annotations

import os
import resource
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from .errors import ProgressCallback, StopCheck
from .inputs import PreparedInputs
from .memory import MemoryPlan
from .pipeline import SonicPipeline, StageClock
from .post.chain import PostOptions, StreamSteps, apply_clip_steps
from .settings import SonicSettings
from .video import VideoWriter

# chunks waiting for the encoder's feeder thread: compute goes on while ffmpeg drains the pipe, and host memory holds
# at most this many quantised chunks (a few MB each)
ENCODER_QUEUE = 2


@dataclass
class GenerationReport:
    """What :func:`render_video` did: frame counts, size, rate, seconds per stage, peak memory, post results."""

    output: str
    frames_generated: int
    frames_written: int
    width: int
    height: int
    fps: float
    audio_seconds: float
    face_box: tuple[float, float, float, float]  # (x1, y1, width, height) in the original portrait
    expand_ratio: float
    seconds: dict[str, float] = field(default_factory=dict)
    peak_host_mb: float = 0.0
    peak_device_mb: float | None = None
    post: dict[str, Any] = field(default_factory=dict)  # what post-processing measured and applied

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def peak_host_mb() -> float:
    """Peak resident memory of this process in MiB.

    Linux's ``VmHWM`` where available: ``ru_maxrss`` carries the parent's peak over fork+exec, so a small job
    started from a big process (a test runner, a ComfyUI worker) would report the parent's figure.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux, bytes on macOS


def render_video(pipeline: SonicPipeline, inputs: PreparedInputs, out: str | os.PathLike, settings: SonicSettings,
                 *, post: PostOptions | None = None, windows_per_call: int = 1, memory: MemoryPlan | None = None,
                 on_step: ProgressCallback | None = None, should_stop: StopCheck | None = None,
                 on_decode: ProgressCallback | None = None) -> GenerationReport:
    """Generate from prepared inputs and write ``out`` (h264 + aac). The file is written under a temporary name and
    renamed when complete, so an error or a cancellation leaves nothing behind. ``memory``: the pipeline's memory
    plan; ``on_step`` follows the sampler's UNet calls and ``on_decode`` the decoded chunks (see
    :class:`SonicPipeline`)."""
    clock = StageClock(inputs.seconds)
    if pipeline.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(pipeline.device)
    height, width = inputs.reference.ref_image.shape[-2:]
    fps = pipeline.output_fps(settings)
    steps = StreamSteps(post, fps, inputs.reference) if post is not None and post.streaming else None
    out_height, out_width = steps.frame_size(height, width) if steps else (height, width)
    # yuv420p needs an even size; a pasted-back frame is the original's size, which may be odd
    pix_fmt = "yuv420p" if out_width % 2 == 0 and out_height % 2 == 0 else "yuv444p"
    chunks = pipeline(inputs, settings, windows_per_call=windows_per_call, memory=memory, on_step=on_step,
                      should_stop=should_stop, clock=clock, on_decode=on_decode)
    speech, post_report = inputs.speech, {}
    if post is not None and post.whole_clip:
        frames = torch.cat([chunk.cpu() for chunk in chunks])
        tick = time.perf_counter()
        frames, speech, post_report = apply_clip_steps(frames, speech, fps, post, inputs.reference.frame_box)
        clock.add("post", tick)
        chunks = iter([frames])
    if steps is not None:
        chunks = clock.timed("post", steps.run(chunk.cpu() for chunk in chunks))
    with VideoWriter(out, out_width, out_height, fps, audio=(speech.waveform, speech.sample_rate), crf=settings.crf,
                     pix_fmt=pix_fmt, frames=pipeline.output_frames(inputs, settings), queued=ENCODER_QUEUE) as writer:
        for chunk in chunks:
            tick = time.perf_counter()
            writer.write(chunk)  # quantised on the device (a quarter of the bytes cross), fed to ffmpeg by a thread
            clock.add("encode", tick)
    if steps is not None:
        post_report.update(steps.report)
    peak_device = torch.cuda.max_memory_allocated(pipeline.device) / 2**20 if pipeline.device.type == "cuda" else None
    reference = inputs.reference
    return GenerationReport(str(Path(out)), inputs.num_frames, writer.frames_written, out_width, out_height, fps,
                            inputs.speech.seconds, reference.face_box.xywh, reference.expand_ratio, clock.seconds,
                            peak_host_mb(), peak_device, post_report)
