"""Video files: a streaming ffmpeg encoder with audio mux, and a probe that needs no ffprobe.

The encoder pipes raw RGB frames to one ffmpeg process (imageio-ffmpeg's bundled binary), which encodes and muxes
the original audio in the same pass: h264 + AAC in MP4, or VP9 + Opus in WebM. Frames are never collected in
memory. The audio is cut to the video's length with ``-t`` (``-shortest`` overshoots by seconds with piped
input), so the writer needs the number of frames up front when there is audio. Output goes to a hidden temporary
file beside the target and is renamed into place only after ffmpeg succeeded; on any error or interrupt the
temporary files are removed and nothing is left behind. ffmpeg runs in a session of its own, so a terminal's Ctrl-C
reaches only Python, which then aborts the writer and kills ffmpeg (ffmpeg would otherwise stop on the SIGINT by
itself and finish the partial file).
"""

from __future__ import annotations

import os
import queue
import re
import subprocess
import tempfile
import threading
import uuid
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from .errors import SonicDependencyError, SonicInputError
from .paths import check_writable_folder

CODECS: dict[str, dict[str, Any]] = {
    "h264": {"container": "mp4", "video": ["-c:v", "libx264", "-preset", "medium"], "crf_max": 51,
             "audio": ["-c:a", "aac", "-b:a", "192k"], "extra": ["-movflags", "+faststart"]},
    "vp9": {"container": "webm", "video": ["-c:v", "libvpx-vp9", "-b:v", "0", "-deadline", "good",
                                           "-cpu-used", "4", "-row-mt", "1"], "crf_max": 63,
            "audio": ["-c:a", "libopus", "-b:a", "128k"], "extra": []},
}
PIX_FMTS = ("yuv420p", "yuv444p")
_STDERR_TAIL = 400


def ffmpeg_exe() -> str:
    """Path of imageio-ffmpeg's ffmpeg binary; SonicDependencyError when the package or binary is missing."""
    try:
        import imageio_ffmpeg
    except ImportError:
        raise SonicDependencyError("ffmpeg is not available: pip install imageio-ffmpeg "
                                   "(it ships the ffmpeg binary the video writer uses)") from None
    try:
        return imageio_ffmpeg.get_ffmpeg_exe()
    except RuntimeError as exc:
        raise SonicDependencyError(f"imageio-ffmpeg found no ffmpeg binary ({exc}): reinstall imageio-ffmpeg "
                                   "or set IMAGEIO_FFMPEG_EXE to an ffmpeg executable") from None


def frames_to_uint8(frames: Any) -> np.ndarray:
    """A chunk of frames as a contiguous uint8 ``[n, H, W, 3]`` array.

    Accepts float tensors/arrays ``[n, 3, H, W]`` in [0, 1] (converted by truncating x·255, as the official
    writer does, after clamping) or uint8 ``[n, H, W, 3]`` / ``[H, W, 3]`` arrays, which pass through. A float
    tensor is quantised where it lies (on a GPU: a quarter of the bytes cross to the host, and the host thread
    feeding ffmpeg does no per-pixel work); the result equals the NumPy path bit for bit.
    """
    if hasattr(frames, "detach"):  # a torch tensor
        frames = frames.detach()
        if frames.dtype.is_floating_point and frames.ndim == 4 and frames.shape[1] == 3:
            quantised = (frames.float().clamp(0.0, 1.0) * 255.0).byte()  # truncates toward zero
            return quantised.permute(0, 2, 3, 1).contiguous().cpu().numpy()
        frames = frames.cpu()
        frames = (frames.float() if frames.dtype.is_floating_point else frames).numpy()
    array = np.asarray(frames)
    if array.dtype == np.uint8:
        if array.ndim == 3:
            array = array[None]
        if array.ndim != 4 or array.shape[-1] != 3:
            raise SonicInputError(f"uint8 frames of shape {tuple(array.shape)}: expected [n, H, W, 3] RGB")
        return np.ascontiguousarray(array)
    if not np.issubdtype(array.dtype, np.floating) or array.ndim != 4 or array.shape[1] != 3:
        raise SonicInputError(f"frames of shape {tuple(array.shape)} and dtype {array.dtype}: expected float "
                              "[n, 3, H, W] in [0, 1] or uint8 [n, H, W, 3]")
    array = (np.clip(array, 0.0, 1.0) * 255.0).astype(np.uint8)  # astype truncates toward zero
    return np.ascontiguousarray(array.transpose(0, 2, 3, 1))


def _write_wav(samples: Any, rate: int, path: str) -> None:
    """Audio given as ``(samples, rate)`` to a float WAV; samples are ``[T]`` or ``[C, T]`` (a tensor or array)."""
    import soundfile

    if hasattr(samples, "detach"):  # a torch tensor
        samples = samples.detach().cpu().float().numpy()
    data = np.asarray(samples, dtype=np.float32)
    if data.ndim == 2:
        data = data.T  # soundfile wants [T, C]
    elif data.ndim != 1:
        raise SonicInputError(f"audio samples of shape {data.shape}: expected [T] or [channels, T]")
    if data.shape[0] == 0:
        raise SonicInputError("audio has no samples: pass the speech track, or no audio at all")
    soundfile.write(path, data, int(rate), subtype="FLOAT")


class VideoWriter:
    """Stream frames into an MP4 (h264 + AAC) or WebM (VP9 + Opus), muxing the original audio.

    Use as a context manager::

        with VideoWriter("out.mp4", 512, 512, 25, audio="speech.wav", frames=n) as writer:
            for chunk in chunks:
                writer.write(chunk)

    ``audio`` is a file path or ``(samples, sample_rate)``; with audio, ``frames`` (how many frames will be
    written) is required, because the audio is cut to ``frames / fps`` seconds, and writing a different number
    of frames is an error. ``crf`` is the constant-quality setting (lower is better; 18 by default).

    ``queued`` > 0 feeds ffmpeg from a thread of its own: :meth:`write` quantises the chunk in the caller's thread
    (on the device, see :func:`frames_to_uint8`) and queues it, waiting only when ``queued`` chunks are already
    waiting, so the caller computes the next chunk while ffmpeg's pipe drains. The same bytes reach ffmpeg in the
    same order (the same file); an error of the feeder is raised by the next :meth:`write` or by :meth:`close`.
    """

    def __init__(self, path: str | os.PathLike, width: int, height: int, fps: float, audio: Any = None,
                 crf: int = 18, codec: str = "h264", pix_fmt: str = "yuv420p", frames: int | None = None,
                 queued: int = 0) -> None:
        if codec not in CODECS:
            raise SonicInputError(f"codec {codec!r}: use one of {sorted(CODECS)}")
        if pix_fmt not in PIX_FMTS:
            raise SonicInputError(f"pix_fmt {pix_fmt!r}: use one of {list(PIX_FMTS)}")
        if not (isinstance(width, int) and isinstance(height, int) and width > 0 and height > 0):
            raise SonicInputError(f"frame size {width}x{height}: width and height must be positive integers")
        if pix_fmt == "yuv420p" and (width % 2 or height % 2):
            raise SonicInputError(f"frame size {width}x{height}: yuv420p needs an even width and height; "
                                  "crop or pad the frames, or use pix_fmt yuv444p")
        if not (fps > 0 and np.isfinite(fps)):
            raise SonicInputError(f"fps {fps!r}: must be a positive number")
        if not (isinstance(crf, int) and 0 <= crf <= CODECS[codec]["crf_max"]):
            raise SonicInputError(f"crf {crf!r}: use an integer from 0 to {CODECS[codec]['crf_max']} for {codec}")
        if audio is not None and (frames is None or frames <= 0):
            raise SonicInputError("frames: with audio, give the number of frames you will write "
                                  "(the audio is cut to that length)")
        self.path = Path(path)
        self.width, self.height, self.fps = width, height, float(fps)
        self.audio, self.crf, self.codec, self.pix_fmt = audio, crf, codec, pix_fmt
        self.expected_frames = frames
        self.frames_written = 0
        self._process: subprocess.Popen | None = None
        self._stderr: BinaryIO | None = None
        self._temp_files: list[Path] = []
        self._tmp_output: Path | None = None
        self.queued = max(0, int(queued))
        self._chunks: queue.Queue | None = None  # the feeder's chunks (None: the last one)
        self._feeder: threading.Thread | None = None
        self._feed_error: BaseException | None = None

    def __enter__(self) -> VideoWriter:
        self.open()
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def _audio_input(self) -> list[str]:
        if self.audio is None:
            return []
        if isinstance(self.audio, (str, os.PathLike)):
            source = Path(self.audio)
            if not source.is_file():
                raise SonicInputError(f"audio {str(source)!r} does not exist: pass the speech file or None")
            return ["-i", str(source)]
        samples, rate = self.audio
        wav = self.path.parent / f".{self.path.stem}.{uuid.uuid4().hex[:8]}.audio.wav"
        self._temp_files.append(wav)
        _write_wav(samples, rate, str(wav))
        return ["-i", str(wav)]

    def command(self, output: str, audio_input: list[str]) -> list[str]:
        """The ffmpeg command line that encodes piped RGB frames (and the audio input, if any) to ``output``."""
        spec = CODECS[self.codec]
        cmd = [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-nostdin", "-y",
               "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{self.width}x{self.height}",
               "-framerate", f"{self.fps:g}", "-i", "pipe:0", *audio_input, "-map", "0:v:0"]
        if audio_input:
            cmd += ["-map", "1:a:0", *spec["audio"], "-t", f"{self.expected_frames / self.fps:.6f}"]
        cmd += [*spec["video"], "-crf", str(self.crf), "-pix_fmt", self.pix_fmt, *spec["extra"],
                "-f", spec["container"], output]
        return cmd

    def open(self) -> None:
        if not self.path.parent.is_dir():
            raise SonicInputError(f"output folder {str(self.path.parent)!r} does not exist: create it first")
        check_writable_folder(self.path.parent, f"output {self.path.name!r}", "make it writable or choose another")
        try:
            audio_input = self._audio_input()
            self._tmp_output = self.path.parent / f".{self.path.stem}.{uuid.uuid4().hex[:8]}.partial"
            self._temp_files.append(self._tmp_output)
            self._stderr = tempfile.TemporaryFile()
            self._process = subprocess.Popen(self.command(str(self._tmp_output), audio_input),
                                             stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                             stderr=self._stderr, start_new_session=True)
            if self.queued:
                self._chunks = queue.Queue(maxsize=self.queued)
                self._feeder = threading.Thread(target=self._feed, args=(self._process.stdin, self._chunks),
                                                name="sonic-video-feeder", daemon=True)
                self._feeder.start()
        except BaseException:
            self.abort()
            raise

    def write(self, frames: Any) -> None:
        """Append a chunk of frames (see :func:`frames_to_uint8` for the accepted forms)."""
        if self._process is None:
            raise SonicInputError("VideoWriter.write called outside its 'with' block: open the writer first")
        chunk = frames_to_uint8(frames)
        if chunk.shape[1:3] != (self.height, self.width):
            raise SonicInputError(f"frames of size {chunk.shape[2]}x{chunk.shape[1]}: this writer was opened "
                                  f"for {self.width}x{self.height}")
        self._raise_feed_error()
        if self._chunks is not None:
            self._chunks.put(chunk)
        else:
            try:
                self._process.stdin.write(chunk.tobytes())
            except BrokenPipeError:
                raise SonicDependencyError(f"ffmpeg stopped while encoding: {self._ffmpeg_error()}") from None
        self.frames_written += chunk.shape[0]

    def _feed(self, pipe: BinaryIO, chunks: queue.Queue) -> None:
        """The feeder thread: queued chunks into ffmpeg's pipe until the last (None). After an error it keeps
        taking chunks (dropping them), so that a writer waiting on a full queue is never stuck."""
        while (chunk := chunks.get()) is not None:
            if self._feed_error is None:
                try:
                    pipe.write(chunk.tobytes())
                except BaseException as exc:  # noqa: BLE001 -- handed to the caller's thread
                    self._feed_error = exc

    def _stop_feeder(self) -> None:
        """Let the feeder write what is queued, then end it."""
        if self._feeder is not None:
            self._chunks.put(None)
            self._feeder.join()
            self._feeder = self._chunks = None

    def _raise_feed_error(self) -> None:
        error = self._feed_error
        if isinstance(error, BrokenPipeError):
            raise SonicDependencyError(f"ffmpeg stopped while encoding: {self._ffmpeg_error()}") from None
        if error is not None:
            raise error

    def _ffmpeg_error(self) -> str:
        if self._process is not None:
            self._process.wait()
        if self._stderr is None:
            return "no message"
        self._stderr.seek(0)
        text = self._stderr.read().decode(errors="replace").strip().replace("\n", " | ")
        return text[-_STDERR_TAIL:] or f"exit status {self._process.returncode if self._process else '?'}"

    def close(self) -> Path:
        """Finish the file and move it into place; returns the final path."""
        if self._process is None:
            raise SonicInputError("VideoWriter.close called on a writer that is not open")
        try:
            if self.frames_written == 0:
                raise SonicInputError(f"no frames were written to {self.path.name!r}: write at least one frame")
            if self.expected_frames is not None and self.frames_written != self.expected_frames:
                raise SonicInputError(f"{self.frames_written} frames written to {self.path.name!r}, but frames="
                                      f"{self.expected_frames} was declared: pass the real frame count")
            self._stop_feeder()
            self._raise_feed_error()
            self._process.stdin.close()
            if self._process.wait() != 0:
                raise SonicDependencyError(f"ffmpeg failed to write {self.path.name!r}: {self._ffmpeg_error()}")
            os.replace(self._tmp_output, self.path)
            self._temp_files.remove(self._tmp_output)
        except BaseException:
            self.abort()
            raise
        self._cleanup()
        return self.path

    def abort(self) -> None:
        """Kill ffmpeg and remove every temporary file; the target path is left untouched. The files are removed
        even when a second interrupt lands while ffmpeg is being reaped."""
        process = self._process
        try:
            if process is not None:
                if process.poll() is None:
                    process.kill()  # first: a feeder blocked on the full pipe then fails and drains its queue
                self._stop_feeder()
                if process.stdin is not None:
                    try:
                        process.stdin.close()
                    except OSError:  # the unflushed frames meet a closed pipe
                        pass
                process.wait()
        finally:
            self._cleanup()

    def _cleanup(self) -> None:
        for temp in self._temp_files:
            temp.unlink(missing_ok=True)
        self._temp_files.clear()
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None
        self._process = None


_TB = re.compile(r"^#tb (\d+): (\d+)/(\d+)")
_HEADER = re.compile(r"^#(media_type|codec_id|dimensions|sample_rate|channel_layout_name) (\d+): (.+)$")


def probe(path: str | os.PathLike) -> dict[str, Any]:
    """Streams of a media file, read with ffmpeg alone (no ffprobe): exact packet timestamps via ``framecrc``.

    Returns ``{"duration": s, "streams": [{"index", "type", "codec", "frames", "duration", "start", ...}],
    "video": first video stream or None, "audio": first audio stream or None}``; video streams carry
    ``width``, ``height`` and ``fps`` (frames / duration), audio streams ``sample_rate`` and ``channels`` (the
    layout name, e.g. "mono"). Durations are from the first presented sample to the end of the last packet.
    """
    source = Path(path)
    if not source.is_file():
        raise SonicInputError(f"video {str(source)!r} does not exist")
    result = subprocess.run([ffmpeg_exe(), "-hide_banner", "-nostdin", "-i", str(source), "-map", "0", "-c",
                             "copy", "-f", "framecrc", "-"], capture_output=True, text=True, timeout=600)
    if result.returncode != 0:
        tail = result.stderr.strip().splitlines()[-1:] or ["no message"]
        raise SonicInputError(f"cannot read {source.name!r} as a media file: {tail[0]}")
    streams: dict[int, dict[str, Any]] = {}
    for line in result.stdout.splitlines():
        if match := _TB.match(line):
            _stream(streams, int(match[1]))["_tb"] = (int(match[2]), int(match[3]))
        elif match := _HEADER.match(line):
            _set_header(_stream(streams, int(match[2])), match[1], match[3].strip())
        elif line and not line.startswith("#"):
            index, _dts, pts, duration = (int(field) for field in line.split(",")[:4])
            stream = streams[index]
            stream["frames"] += 1
            first = max(pts, 0)  # negative pts are encoder priming, never presented
            stream["_start"] = first if stream["_start"] is None else min(stream["_start"], first)
            stream["_end"] = max(stream["_end"], pts + duration)
    listed = [_finish_stream(streams[i]) for i in sorted(streams)]
    return {"duration": max((s["duration"] for s in listed), default=0.0), "streams": listed,
            "video": next((s for s in listed if s["type"] == "video"), None),
            "audio": next((s for s in listed if s["type"] == "audio"), None)}


def _stream(streams: dict[int, dict[str, Any]], index: int) -> dict[str, Any]:
    return streams.setdefault(index, {"index": index, "type": "data", "codec": None, "frames": 0,
                                      "_tb": (1, 1), "_start": None, "_end": 0})


def _set_header(stream: dict[str, Any], key: str, value: str) -> None:
    if key == "media_type":
        stream["type"] = value
    elif key == "codec_id":
        stream["codec"] = value
    elif key == "dimensions":
        stream["width"], stream["height"] = (int(v) for v in value.split("x"))
    elif key == "sample_rate":
        stream["sample_rate"] = int(value)
    else:
        stream["channels"] = value


def _finish_stream(stream: dict[str, Any]) -> dict[str, Any]:
    num, den = stream.pop("_tb")
    start = stream.pop("_start") or 0
    end = stream.pop("_end")
    stream["start"] = start * num / den
    stream["duration"] = max(end - start, 0) * num / den
    if stream.get("type") == "video":
        stream["fps"] = stream["frames"] / stream["duration"] if stream["duration"] else 0.0
    return stream
