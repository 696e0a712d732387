"""Audio input: reading files and measuring their duration the way the published design does (librosa)."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

from .errors import SonicAudioError

AUDIO_SUFFIXES = (".wav", ".mp3", ".flac", ".ogg", ".m4a")


def audio_duration(path: str | os.PathLike) -> float:
    """Length of an audio file in seconds, as ``librosa.get_duration`` measures it."""
    import librosa

    file = Path(path)
    if not file.is_file():
        raise SonicAudioError(f"audio file {str(file)!r} does not exist: pass a {'/'.join(AUDIO_SUFFIXES)} file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # librosa's audioread fallback warns before failing
            seconds = float(librosa.get_duration(path=str(file)))
    except Exception as exc:  # soundfile/audioread raise many unrelated types for unreadable data
        raise SonicAudioError(f"cannot read audio file {file.name!r} ({type(exc).__name__}): "
                              f"use an uncorrupted {'/'.join(AUDIO_SUFFIXES)} file") from None
    if seconds <= 0:
        raise SonicAudioError(f"audio file {file.name!r} is empty: use a file with speech in it")
    return seconds
