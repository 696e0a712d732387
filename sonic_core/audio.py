"""Audio input: reading files, measuring and checking their duration the way the published design does (librosa),
and whisper's log-mel features (SPEC §4.1).

Files libsndfile reads (wav, flac, ogg, mp3) go straight to librosa; others (m4a/AAC) are first decoded to a
float WAV with the imageio-ffmpeg binary, because librosa's audioread fallback needs a system ffmpeg.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch

from .errors import SonicAudioError, SonicDependencyError

AUDIO_SUFFIXES = (".wav", ".mp3", ".flac", ".ogg", ".m4a")
SAMPLE_RATE = 16000
VIDEO_FPS = 25  # the audio frame rate of the published design: 640 samples per frame
SAMPLES_PER_FRAME = SAMPLE_RATE // VIDEO_FPS
FRAMES_PER_GENERATED_FRAME = 2  # SPEC §2 "step"
MIN_SAMPLES = SAMPLES_PER_FRAME * FRAMES_PER_GENERATED_FRAME  # 80 ms: anything shorter gives 0 video frames
DURATION_TOLERANCE = 1 / VIDEO_FPS
FIT_MODES = ("error", "trim", "pad")

PIECE_SAMPLES = 30 * SAMPLE_RATE  # whisper's 30 s window
N_FFT = 400
HOP_LENGTH = 160
PIECE_FRAMES = PIECE_SAMPLES // HOP_LENGTH  # 3000 mel frames a piece
LOG_MEL_FLOOR = 1e-10
DYNAMIC_RANGE = 8.0  # log10 units kept below each piece's maximum


def _readable_formats() -> str:
    return "/".join(AUDIO_SUFFIXES)


def _existing_file(path: str | os.PathLike) -> Path:
    file = Path(path)
    if not file.is_file():
        raise SonicAudioError(f"audio file {str(file)!r} does not exist: pass a {_readable_formats()} file")
    return file


def _unreadable(file: Path, exc: Exception) -> SonicAudioError:
    return SonicAudioError(f"cannot read audio file {file.name!r} ({type(exc).__name__}): "
                           f"use an uncorrupted {_readable_formats()} file")


def _libsndfile_reads(file: Path) -> bool:
    import soundfile

    try:
        soundfile.info(str(file))
    except Exception:  # libsndfile raises LibsndfileError/RuntimeError/TypeError depending on the failure
        return False
    return True


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


def _librosa_load(source: Path) -> np.ndarray:
    import librosa

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # librosa's audioread fallback warns before failing
        samples, _ = librosa.load(str(source), sr=SAMPLE_RATE, mono=True)
    return samples


def _read_16k_mono(file: Path) -> np.ndarray:
    """``librosa.load(file, sr=16000)``: channel mean, then the soxr_hq resampler; float32."""
    try:
        if _libsndfile_reads(file):
            return _librosa_load(file)
        with tempfile.TemporaryDirectory(prefix="sonic_audio_") as tmp:
            wav = Path(tmp) / "decoded.wav"
            _decode_with_ffmpeg(file, wav)
            return _librosa_load(wav)
    except (SonicAudioError, SonicDependencyError):
        raise
    except Exception as exc:  # soundfile/soxr raise many unrelated types for unreadable data
        raise _unreadable(file, exc) from None


def audio_duration(path: str | os.PathLike) -> float:
    """Length of an audio file in seconds, as ``librosa.get_duration`` measures it."""
    import librosa

    file = _existing_file(path)
    if _libsndfile_reads(file):
        try:
            seconds = float(librosa.get_duration(path=str(file)))
        except Exception as exc:  # a valid header over damaged data
            raise _unreadable(file, exc) from None
    else:
        seconds = len(_read_16k_mono(file)) / SAMPLE_RATE
    if seconds <= 0:
        raise SonicAudioError(f"audio file {file.name!r} is empty: use a file with speech in it")
    return seconds


def _check_length(samples: np.ndarray, name: str) -> np.ndarray:
    if samples.size == 0:
        raise SonicAudioError(f"audio {name} is empty: use a clip with speech in it")
    if samples.size < MIN_SAMPLES:
        raise SonicAudioError(f"audio {name} lasts {samples.size / SAMPLE_RATE * 1000:.0f} ms, too short for one "
                              f"video frame: use at least {MIN_SAMPLES / SAMPLE_RATE * 1000:.0f} ms of audio")
    return samples


def _fit_duration(samples: np.ndarray, duration: float, fit: str, name: str) -> np.ndarray:
    """Apply the published design's duration check: ``duration`` must match within one 25-fps frame, unless
    ``fit`` says to trim longer audio or zero-pad shorter audio to exactly ``duration`` seconds."""
    real = samples.size / SAMPLE_RATE
    if abs(real - duration) <= DURATION_TOLERANCE:
        return samples
    target = round(duration * SAMPLE_RATE)
    if fit == "trim" and real > duration:
        return samples[:target]
    if fit == "pad" and real < duration:
        return np.pad(samples, (0, target - samples.size))
    fix = "trim" if real > duration else "pad"
    raise SonicAudioError(f"audio {name} lasts {real:.3f} s but the requested duration is {duration:.3f} s "
                          f"(tolerance {DURATION_TOLERANCE:.2f} s): set the duration to {real:.2f} s, "
                          f"or pass fit={fix!r} to {fix} the audio")


def load_audio(path: str | os.PathLike, duration: float | None = None, fit: str = "error") -> np.ndarray:
    """Read an audio file as float32 mono 16 kHz samples (SPEC §4.1), optionally checked against ``duration``.

    ``fit`` decides what a mismatch beyond one 25-fps frame (0.04 s) does: ``"error"`` raises, ``"trim"`` cuts
    longer audio and ``"pad"`` zero-pads shorter audio to ``duration``.
    """
    if fit not in FIT_MODES:
        raise SonicAudioError(f"fit={fit!r} is not a duration mode: use one of {', '.join(FIT_MODES)}")
    if duration is not None and not duration > 0:
        raise SonicAudioError(f"requested audio duration {duration!r} s is not positive: pass seconds > 0 or None")
    file = _existing_file(path)
    samples = _check_length(_read_16k_mono(file), repr(file.name))
    if duration is not None:
        samples = _check_length(_fit_duration(samples, duration, fit, repr(file.name)), repr(file.name))
    return samples


def fit_samples(samples: np.ndarray, duration: float | None, fit: str = "error", name: str = "clip") -> np.ndarray:
    """:func:`load_audio`'s duration check for 16 kHz samples already in memory (e.g. a ComfyUI AUDIO)."""
    if fit not in FIT_MODES:
        raise SonicAudioError(f"fit={fit!r} is not a duration mode: use one of {', '.join(FIT_MODES)}")
    if duration is None:
        return _check_length(samples, name)
    if not duration > 0:
        raise SonicAudioError(f"requested audio duration {duration!r} s is not positive: pass seconds > 0 or None")
    return _check_length(_fit_duration(samples, duration, fit, name), name)


def waveform_to_16k_mono(waveform: torch.Tensor, sample_rate: int) -> np.ndarray:
    """ComfyUI AUDIO ``waveform`` ``[C, T]`` or ``[1, C, T]`` at ``sample_rate`` -> float32 mono 16 kHz, mixed down and
    resampled exactly as ``librosa.load`` does (channel mean, then soxr_hq)."""
    import librosa

    if waveform.ndim == 3:
        if waveform.shape[0] != 1:
            raise SonicAudioError(f"AUDIO holds a batch of {waveform.shape[0]} clips: pass a single clip")
        waveform = waveform[0]
    if waveform.ndim != 2:
        raise SonicAudioError(f"AUDIO waveform has shape {tuple(waveform.shape)}: expected [channels, samples] "
                              "or [1, channels, samples]")
    if not sample_rate > 0:
        raise SonicAudioError(f"AUDIO sample_rate {sample_rate!r} is not positive: pass the clip's rate in Hz")
    mono = waveform.detach().to("cpu", torch.float32).mean(dim=0).numpy()
    samples = librosa.resample(mono, orig_sr=int(sample_rate), target_sr=SAMPLE_RATE, res_type="soxr_hq")
    return _check_length(samples.astype(np.float32, copy=False), "clip")


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
