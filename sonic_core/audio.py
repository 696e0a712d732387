"""Audio input: the speech track read once, its duration checked the way the published design does it (within one
25 fps frame, else trimmed or padded on request), and whisper's log-mel features (MODEL.md §4.1).

A file is decoded once into its own rate and channels (libsndfile for wav, flac, ogg and mp3; the imageio-ffmpeg
binary for the rest, e.g. m4a/AAC). The model hears that waveform as 16 kHz mono, made exactly as ``librosa.load``
makes it (channel mean, then the soxr_hq resampler); the video carries the original, fitted to the same duration.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile
import torch

from .errors import SonicAudioError, SonicDependencyError
from .finite import is_finite_number, shown
from .paths import existing_file
from .timing import AUDIO_FPS, AUDIO_FRAMES_PER_VIDEO_FRAME, SAMPLE_RATE, SAMPLES_PER_AUDIO_FRAME

AUDIO_SUFFIXES = (".wav", ".mp3", ".flac", ".ogg", ".m4a")
MIN_SAMPLES = SAMPLES_PER_AUDIO_FRAME * AUDIO_FRAMES_PER_VIDEO_FRAME  # 80 ms: anything shorter gives 0 video frames
DURATION_TOLERANCE = 1 / AUDIO_FPS
FIT_MODES = ("error", "trim", "pad")  # what a duration mismatch does: refuse, cut longer audio, pad shorter audio
SAMPLE_RATES = (1_000, 768_000)  # Hz a waveform may have: ffmpeg's highest; below 1 kHz no speech survives

PIECE_SAMPLES = 30 * SAMPLE_RATE  # whisper's 30 s window
N_FFT = 400
HOP_LENGTH = 160
PIECE_FRAMES = PIECE_SAMPLES // HOP_LENGTH  # 3000 mel frames a piece
LOG_MEL_FLOOR = 1e-10
DYNAMIC_RANGE = 8.0  # log10 units kept below each piece's maximum


@dataclass(frozen=True)
class Speech:
    """A speech track as a generation uses it, both forms fitted to the same duration: ``waveform`` float32
    ``[channels, T]`` at ``sample_rate`` (what the video carries) and ``samples``, float32 mono 16 kHz (what the
    model hears)."""

    waveform: np.ndarray
    sample_rate: int
    samples: np.ndarray

    @property
    def seconds(self) -> float:
        return self.samples.size / SAMPLE_RATE

    def delayed(self, seconds: float) -> Speech:
        """Both forms delayed by ``seconds`` (advanced when negative), lengths kept (Lip-Sync Align's correction)."""
        return Speech(np.stack([shift_audio(channel, int(round(seconds * self.sample_rate)))
                                for channel in self.waveform]), self.sample_rate,
                      shift_audio(self.samples, int(round(seconds * SAMPLE_RATE))))


def shift_audio(audio: np.ndarray, samples: int) -> np.ndarray:
    """Delay (``samples > 0``) or advance (``< 0``) a waveform, keeping its length: zeros fill the gap."""
    shifted = np.zeros_like(audio)
    count = len(audio)
    if abs(samples) >= count:
        return shifted
    if samples >= 0:
        shifted[samples:] = audio[:count - samples]
    else:
        shifted[:count + samples] = audio[-samples:]
    return shifted


def _readable_formats() -> str:
    return "/".join(AUDIO_SUFFIXES)


def _existing_file(path: str | os.PathLike) -> Path:
    return existing_file(path, "audio file", f"pass a {_readable_formats()} file", SonicAudioError)


def _unreadable(file: Path, exc: Exception) -> SonicAudioError:
    return SonicAudioError(f"cannot read audio file {file.name!r} ({type(exc).__name__}): "
                           f"use an uncorrupted {_readable_formats()} file")


def _decode_with_ffmpeg(file: Path, wav: Path) -> None:
    """Decode any ffmpeg-readable audio to a float WAV at its own rate and channel count."""
    try:
        import imageio_ffmpeg
        ffmpeg = imageio_ffmpeg.get_ffmpeg_exe()
    except (ImportError, RuntimeError) as exc:
        raise SonicDependencyError(f"reading {file.name!r} needs ffmpeg ({exc}): pip install imageio-ffmpeg, "
                                   "or convert the audio to wav") from None
    result = subprocess.run([ffmpeg, "-nostdin", "-v", "error", "-i", str(file), "-vn", "-acodec", "pcm_f32le",
                             "-f", "wav", str(wav)], capture_output=True, text=True)
    if result.returncode != 0 or not wav.is_file():
        reason = (result.stderr.strip().splitlines() or ["no audio stream"])[-1]
        raise SonicAudioError(f"cannot read audio file {file.name!r} ({reason}): "
                              f"use an uncorrupted {_readable_formats()} file")


def _read_with_libsndfile(file: Path) -> tuple[np.ndarray, int]:
    """float32 ``[channels, T]`` and the rate, as libsndfile decodes the file (and as librosa reads it)."""
    with soundfile.SoundFile(str(file)) as handle:
        data = handle.read(dtype="float32", always_2d=True)
        return np.ascontiguousarray(data.T), int(handle.samplerate)


def read_audio(path: str | os.PathLike) -> tuple[np.ndarray, int]:
    """Decode an audio file once: float32 ``[channels, T]`` at its own sample rate."""
    file = _existing_file(path)
    try:
        try:
            return _read_with_libsndfile(file)
        except (soundfile.LibsndfileError, RuntimeError, TypeError):  # a format libsndfile does not decode
            with tempfile.TemporaryDirectory(prefix="sonic_audio_") as tmp:
                wav = Path(tmp) / "decoded.wav"
                _decode_with_ffmpeg(file, wav)
                return _read_with_libsndfile(wav)
    except (SonicAudioError, SonicDependencyError):
        raise
    except Exception as exc:  # soundfile raises many unrelated types for damaged data
        raise _unreadable(file, exc) from None


def audio_duration(path: str | os.PathLike) -> float:
    """Length of an audio file in seconds, as ``librosa.get_duration`` measures it; libsndfile formats are measured
    from their header without decoding."""
    file = _existing_file(path)
    try:
        seconds = float(soundfile.info(str(file)).duration)
    except (soundfile.LibsndfileError, RuntimeError, TypeError):
        waveform, rate = read_audio(file)
        seconds = waveform.shape[-1] / rate
    if seconds <= 0:
        raise SonicAudioError(f"audio file {file.name!r} is empty: use a file with speech in it")
    return seconds


def to_16k_mono(waveform: np.ndarray, sample_rate: int) -> np.ndarray:
    """float32 ``[channels, T]`` at ``sample_rate`` -> float32 mono 16 kHz, exactly as ``librosa.load`` makes it
    (channel mean, then the soxr_hq resampler)."""
    import librosa

    mono = librosa.to_mono(np.asarray(waveform, dtype=np.float32))
    return librosa.resample(mono, orig_sr=int(sample_rate), target_sr=SAMPLE_RATE,
                            res_type="soxr_hq").astype(np.float32, copy=False)


def _check_length(samples: np.ndarray, name: str) -> np.ndarray:
    if samples.size == 0:
        raise SonicAudioError(f"audio {name} is empty: use a clip with speech in it")
    if samples.size < MIN_SAMPLES:
        raise SonicAudioError(f"audio {name} lasts {samples.size / SAMPLE_RATE * 1000:.0f} ms, too short for one "
                              f"video frame: use at least {MIN_SAMPLES / SAMPLE_RATE * 1000:.0f} ms of audio")
    return samples


def _fit_to(signal: np.ndarray, rate: int, duration: float) -> np.ndarray:
    """``signal`` ``[..., T]`` cut or zero-padded to ``round(duration · rate)`` samples."""
    target = round(duration * rate)
    if signal.shape[-1] >= target:
        return signal[..., :target]
    return np.pad(signal, [(0, 0)] * (signal.ndim - 1) + [(0, target - signal.shape[-1])])


def _check_fit(fit: str, duration: float | None) -> None:
    if fit not in FIT_MODES:
        raise SonicAudioError(f"fit={fit!r} is not a duration mode: use one of {', '.join(FIT_MODES)}")
    if duration is not None and (not is_finite_number(duration) or duration <= 0):
        raise SonicAudioError(f"requested audio duration {shown(duration)} s is not positive and finite: pass "
                              "seconds > 0 or None")


def _fitted_duration(real: float, duration: float | None, fit: str, name: str) -> float | None:
    """The duration to cut or pad to, ``None`` to keep the audio as it is: the published design's check that
    ``duration`` matches within one 25 fps frame, unless ``fit`` says to trim longer or pad shorter audio."""
    if duration is None or abs(real - duration) <= DURATION_TOLERANCE:
        return None
    if (fit == "trim" and real > duration) or (fit == "pad" and real < duration):
        return duration
    fix = "trim" if real > duration else "pad"
    raise SonicAudioError(f"audio {name} lasts {real:.3f} s but the requested duration is {duration:.3f} s "
                          f"(tolerance {DURATION_TOLERANCE:.2f} s): set the duration to {real:.2f} s, "
                          f"or pass fit={fix!r} to {fix} the audio")


def check_rate(sample_rate: float, what: str) -> None:
    """Refuse a sample rate outside :data:`SAMPLE_RATES`: resampling 4,000 samples "at 1 Hz" to 16 kHz makes 64
    million samples (over a minute of work for a fraction of a second of sound)."""
    low, high = SAMPLE_RATES
    if not low <= sample_rate <= high:
        raise SonicAudioError(f"{what}: sample rate {shown(sample_rate)} Hz is outside {low:,}-{high:,} Hz; pass the "
                              "clip's real rate (speech is usually 8,000-48,000 Hz)")


def speech_from_waveform(waveform: np.ndarray | torch.Tensor, sample_rate: int, duration: float | None = None,
                         fit: str = "error", name: str = "clip") -> Speech:
    """A :class:`Speech` from a decoded waveform ``[channels, T]`` (or a ComfyUI AUDIO's ``[1, channels, T]``),
    checked against ``duration`` (see :data:`FIT_MODES`); ``name`` names the input in errors."""
    _check_fit(fit, duration)
    if isinstance(waveform, torch.Tensor):
        waveform = waveform.detach().to("cpu", torch.float32).numpy()
    waveform = np.asarray(waveform, dtype=np.float32)
    if waveform.ndim == 3:
        if waveform.shape[0] != 1:
            raise SonicAudioError(f"AUDIO holds a batch of {waveform.shape[0]} clips: pass a single clip")
        waveform = waveform[0]
    if waveform.ndim != 2:
        raise SonicAudioError(f"audio {name} has shape {tuple(waveform.shape)}: expected [channels, samples] "
                              "or [1, channels, samples]")
    if not is_finite_number(sample_rate) or sample_rate < 1:
        raise SonicAudioError(f"audio {name}: sample rate {shown(sample_rate)} is not a positive number of Hz; "
                              "pass the clip's rate in Hz")
    check_rate(sample_rate, f"audio {name}")
    if not np.isfinite(waveform).all():
        raise SonicAudioError(f"audio {name} holds NaN or infinite samples: pass a clean waveform (re-export the "
                              "audio)")
    samples = _check_length(to_16k_mono(waveform, sample_rate), name)
    target = _fitted_duration(samples.size / SAMPLE_RATE, duration, fit, name)
    if target is not None:
        samples = _check_length(_fit_to(samples, SAMPLE_RATE, target), name)
        waveform = _fit_to(waveform, sample_rate, target)
    return Speech(waveform, int(sample_rate), samples)


def load_speech(path: str | os.PathLike, duration: float | None = None, fit: str = "error") -> Speech:
    """Read a speech file once (see :func:`speech_from_waveform` for ``duration`` and ``fit``)."""
    _check_fit(fit, duration)
    waveform, rate = read_audio(path)
    return speech_from_waveform(waveform, rate, duration, fit, repr(Path(path).name))


def load_audio(path: str | os.PathLike, duration: float | None = None, fit: str = "error") -> np.ndarray:
    """What the model hears of a file: float32 mono 16 kHz samples (MODEL.md §4.1), checked like
    :func:`load_speech`."""
    return load_speech(path, duration, fit).samples


def waveform_to_16k_mono(waveform: np.ndarray | torch.Tensor, sample_rate: int) -> np.ndarray:
    """What the model hears of a decoded waveform ``[channels, T]`` or ``[1, channels, T]``: float32 mono 16 kHz."""
    return speech_from_waveform(waveform, sample_rate).samples


def _mel_filters(n_mels: int) -> torch.Tensor:
    import librosa

    return torch.from_numpy(librosa.filters.mel(sr=SAMPLE_RATE, n_fft=N_FFT, n_mels=n_mels, dtype=np.float64))


def log_mel_pieces(samples: np.ndarray, n_mels: int = 80) -> torch.Tensor:
    """Whisper log-mel features of consecutive 30 s pieces: ``[K, n_mels, 3000]`` float32, K = ceil(S / 480000).

    Each piece is zero-padded to 30 s, then: centred reflect-padded STFT (n_fft 400, hop 160, periodic Hann),
    power, Slaney mel filters 0-8 kHz, last frame dropped, log10 floored at 1e-10 and at the piece's max - 8,
    then ``(x + 4) / 4``. Computed in float64.
    """
    samples = np.asarray(samples)
    if samples.ndim != 1 or samples.size == 0:
        raise SonicAudioError(f"audio samples have shape {samples.shape}: pass a non-empty mono 16 kHz array")
    filters = _mel_filters(n_mels)
    window = torch.hann_window(N_FFT, periodic=True, dtype=torch.float64)
    pieces = []
    for start in range(0, samples.size, PIECE_SAMPLES):
        piece = torch.zeros(PIECE_SAMPLES, dtype=torch.float64)
        chunk = torch.from_numpy(samples[start:start + PIECE_SAMPLES].astype(np.float64))
        piece[:chunk.numel()] = chunk
        spectrum = torch.stft(piece, N_FFT, HOP_LENGTH, window=window, center=True, pad_mode="reflect",
                              return_complex=True)
        power = spectrum[:, :-1].abs() ** 2
        log_mel = (filters @ power).clamp_min(LOG_MEL_FLOOR).log10()
        log_mel = torch.maximum(log_mel, log_mel.max() - DYNAMIC_RANGE)
        pieces.append(((log_mel + 4.0) / 4.0).to(torch.float32))
    return torch.stack(pieces)
