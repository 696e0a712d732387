"""Audio nodes: Load Audio Duration (an AUDIO or a file from input/ → AUDIO + duration + a duration check)."""

from __future__ import annotations

import os
import warnings
from typing import TYPE_CHECKING, Any

from sonic_core import node_ids
from sonic_core.audio import AUDIO_SUFFIXES
from sonic_core.errors import SonicAudioError, SonicInputError
from sonic_core.finite import is_finite_number, shown
from sonic_core.paths import inside, relative_name

from .comfy_compat import folder_paths, io
from .schema import refusal

if TYPE_CHECKING:
    import torch

NO_FILE = "none"
# One frame at Sonic's 25 fps: the published design's tolerance between requested and real duration.
DURATION_TOLERANCE_S = 0.04


def input_audio_files() -> list[str]:
    """Audio files directly in ComfyUI's input folder, sorted, after the "none" choice."""
    folder = folder_paths.get_input_directory()
    names = sorted(f for f in os.listdir(folder) if f.lower().endswith(AUDIO_SUFFIXES)
                   and os.path.isfile(os.path.join(folder, f))) if os.path.isdir(folder) else []
    return [NO_FILE, *names]


def resolve_input_file(name: str) -> str:
    """Path of ``name`` inside the input folder; names that are absolute or leave the folder (also through a link)
    are refused."""
    fix = "only files inside ComfyUI's input folder can be loaded: pick one from the list or upload it"
    folder = folder_paths.get_input_directory()
    path = os.path.join(folder, relative_name(name, "audio_file", fix))
    if not inside(path, [folder]):
        raise SonicInputError(f"audio_file {name!r} leads out of the input folder; {fix}")
    if not os.path.isfile(path):
        raise SonicAudioError(f"audio_file {name!r} is not in the input folder: upload it or pick another")
    return path


def read_audio_file(path: str) -> dict[str, Any]:
    """A file as a ComfyUI AUDIO value (waveform [1, channels, samples] float32, original rate and channels)."""
    import librosa
    import torch

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # librosa's audioread fallback warns before it fails
            samples, rate = librosa.load(path, sr=None, mono=False)
    except Exception as exc:  # soundfile/audioread raise many unrelated types for unreadable data
        raise SonicAudioError(f"cannot read audio file {os.path.basename(path)!r} ({type(exc).__name__}): "
                              f"use an uncorrupted {'/'.join(AUDIO_SUFFIXES)} file") from None
    waveform = torch.from_numpy(samples).float()
    waveform = waveform[None] if waveform.ndim == 1 else waveform
    return {"waveform": waveform[None], "sample_rate": int(rate)}


def audio_value(audio: Any, what: str = "audio") -> tuple[torch.Tensor, int]:
    """The waveform ``[1, channels, samples]`` and sample rate of a ComfyUI AUDIO value, checked once for every
    node that takes one: one line naming ``what`` when it is not a dict with both, the rate is not a positive
    whole number of Hz, or the waveform is empty, malformed or holds NaN or infinite samples."""
    import torch

    if not isinstance(audio, dict) or "waveform" not in audio or "sample_rate" not in audio:
        raise SonicAudioError(f"{what}: not a ComfyUI AUDIO value (needs 'waveform' and 'sample_rate'); "
                              "connect a Load Audio node")
    waveform, rate = audio["waveform"], audio["sample_rate"]
    if not is_finite_number(rate) or rate < 1 or rate != int(rate):
        raise SonicAudioError(f"{what}: sample rate {shown(rate)} is not a positive whole number of Hz; connect a "
                              "Load Audio node")
    if not isinstance(waveform, torch.Tensor) or waveform.ndim != 3 or waveform.shape[-1] == 0:
        shape = tuple(waveform.shape) if isinstance(waveform, torch.Tensor) else type(waveform).__name__
        raise SonicAudioError(f"{what}: waveform {shape} is empty or not [batch, channels, samples]; load a file "
                              "with speech in it")
    if not torch.isfinite(waveform).all():
        raise SonicAudioError(f"{what}: the waveform holds NaN or infinite samples; re-export the audio")
    return waveform, int(rate)


def audio_seconds(audio: dict[str, Any]) -> float:
    """Duration of an AUDIO value the way librosa defines it: samples / sample rate."""
    waveform, rate = audio_value(audio)
    return waveform.shape[-1] / rate


def duration_check(seconds: float, requested: float) -> tuple[bool, str]:
    """Whether the real duration matches the requested one within one 25-fps frame, and a one-line report."""
    if not is_finite_number(requested) or requested < 0:
        raise SonicInputError(f"requested_duration {shown(requested)}: pass seconds >= 0 (0 = no check)")
    if requested == 0:
        return True, f"audio is {seconds:.3f} s (no duration requested)"
    difference = seconds - requested
    if abs(difference) <= DURATION_TOLERANCE_S + 1e-9:
        return True, f"audio is {seconds:.3f} s, matches the requested {requested:.3f} s"
    side = "longer" if difference > 0 else "shorter"
    return False, (f"MISMATCH: audio is {seconds:.3f} s, {abs(difference):.3f} s {side} than the requested "
                   f"{requested:.3f} s (tolerance {DURATION_TOLERANCE_S} s); trim the audio or set "
                   f"requested_duration to {seconds:.2f}")


class SonicLoadAudioDuration(io.ComfyNode):
    """Load Audio Duration (Sonic): an AUDIO passed through or loaded from the input folder, and its duration."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=node_ids.LOAD_AUDIO_DURATION, display_name="Load Audio Duration (Sonic)", category="Sonic/audio",
            description="Passes an AUDIO through (or loads one from ComfyUI's input folder) and measures its "
                        "duration in seconds as librosa does (samples / sample rate). With a requested duration, "
                        "flags a difference of more than one 25-fps frame (0.04 s): the Sonic PreData node refuses "
                        "such audio unless its fit is trim or pad.",
            inputs=[
                io.Audio.Input("audio", optional=True,
                               tooltip="audio from a core Load Audio node (or leave it unconnected and pick a file)"),
                io.Combo.Input("audio_file", options=input_audio_files(), default=NO_FILE, optional=True,
                               upload=io.UploadType.audio,
                               tooltip="or an audio file in ComfyUI's input folder (wav, mp3, flac, ogg, m4a); "
                                       "'none' when the audio input is connected"),
                io.Float.Input("requested_duration", default=0.0, min=0.0, max=3600.0, step=0.01, optional=True,
                               tooltip="seconds the video should last, compared with the audio within 0.04 s; "
                                       "0 = no check"),
            ],
            outputs=[
                io.Audio.Output(display_name="audio", tooltip="the audio, unchanged (its own rate and channels)"),
                io.Float.Output(display_name="duration", tooltip="the audio's length in seconds "
                                                                 "(samples / sample rate)"),
                io.Boolean.Output(display_name="duration_ok",
                                  tooltip="true when within one frame (0.04 s) of the requested duration, or "
                                          "when none is requested"),
                io.String.Output(display_name="duration_report", tooltip="the measurement and the check, one line"),
            ],
        )

    @classmethod
    def validate_inputs(cls, audio_file: str = NO_FILE) -> bool | str:
        """A picked file must be inside the input folder and exist, before the prompt is queued."""
        if audio_file in ("", NO_FILE):
            return True
        return refusal(lambda: resolve_input_file(audio_file))

    @classmethod
    def fingerprint_inputs(cls, audio_file: str = NO_FILE, **_: Any) -> Any:
        """The picked file's modification time and size: a file replaced under the same name is read again."""
        if audio_file in ("", NO_FILE):
            return NO_FILE
        try:
            stat = os.stat(resolve_input_file(audio_file))
        except (OSError, SonicInputError):
            return audio_file  # execute() reports the problem
        return audio_file, stat.st_mtime_ns, stat.st_size

    @classmethod
    def execute(cls, audio: dict[str, Any] | None = None, audio_file: str = NO_FILE,
                requested_duration: float = 0.0) -> io.NodeOutput:
        if audio is not None and audio_file not in ("", NO_FILE):
            raise SonicInputError(f"audio_file {audio_file!r} and a connected audio: give one of them; set "
                                  f"audio_file to '{NO_FILE}' to use the connected audio")
        if audio is None:
            if audio_file in ("", NO_FILE):
                raise SonicInputError("audio: connect a Load Audio node or pick an audio_file from the input "
                                      "folder")
            audio = read_audio_file(resolve_input_file(audio_file))
        seconds = audio_seconds(audio)
        matches, report = duration_check(seconds, requested_duration)
        return io.NodeOutput(audio, seconds, matches, report, ui={"text": [report]})


NODES = [SonicLoadAudioDuration]
