"""Frame arithmetic of Sonic: audio samples -> 25 fps audio frames -> generated frames -> output frames.

Sonic reads audio at 16 kHz, cuts it into 25 fps frames of 640 samples, generates one video frame per two audio
frames (12.5 fps) and doubles the rate with RIFE (2N - 1 frames at 25 fps).
"""

from __future__ import annotations

from .errors import SonicAudioError

SAMPLE_RATE = 16_000
AUDIO_FPS = 25
SAMPLES_PER_AUDIO_FRAME = SAMPLE_RATE // AUDIO_FPS  # 640
AUDIO_FRAMES_PER_VIDEO_FRAME = 2
GENERATED_FPS = AUDIO_FPS / AUDIO_FRAMES_PER_VIDEO_FRAME  # 12.5


def audio_frames(num_samples: int) -> int:
    """Number of 25 fps audio frames in a 16 kHz signal (floor). Not capped: the official code stops at 10,000
    (400 s), but windows and decode are streamed here, so every second of audio is generated, and priced
    (MODEL.md §4.1)."""
    return num_samples // SAMPLES_PER_AUDIO_FRAME


def samples_for(duration: float) -> int:
    """16 kHz sample count of a duration in seconds."""
    return int(round(duration * SAMPLE_RATE))


def generated_frames(duration: float) -> int:
    """Video frames the sampler generates (12.5 fps) for ``duration`` seconds of audio."""
    return audio_frames(samples_for(duration)) // AUDIO_FRAMES_PER_VIDEO_FRAME


def output_frames(duration: float, interpolate: bool = True) -> int:
    """Frames of the final video: 2N - 1 at 25 fps with RIFE, N at 12.5 fps without."""
    n = generated_frames(duration)
    if not interpolate or n == 0:
        return n
    return 2 * n - 1


def generated_frame_count(audio_len: int, step: int = AUDIO_FRAMES_PER_VIDEO_FRAME) -> int:
    """Video frames for ``audio_len`` 25 fps audio frames at one video frame per ``step`` audio frames; one line
    naming the fix when the audio is too short for a single frame."""
    frames = audio_len // step
    if frames < 1:
        raise SonicAudioError(f"the audio has {audio_len} frames of 40 ms, fewer than the {step} one video frame "
                              f"needs: use at least {step * 40} ms of speech")
    return frames
