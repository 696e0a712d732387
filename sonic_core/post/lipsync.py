"""Lip-Sync Align: measure the offset between mouth motion and speech, and correct it when the evidence is clear.

Sign convention: ``offset_s > 0`` means the **audio leads the video** (a sound is heard ``offset_s`` seconds before
the mouth moves for it); ``offset_s < 0`` means the audio lags. Correcting delays the audio by ``offset_s`` (a
positive offset prepends silence, a negative one drops the first samples), padding or trimming the end so the audio
keeps its length and frames are never touched.

Signals (one value per video frame, frame ``i`` shown at ``i / fps`` s):
- mouth activity: darkness (1 - mean luma) of the mouth region, the lower-middle part of the face box — an open
  mouth shows its dark inside, so this follows the opening;
- speech activity: RMS of the audio in a one-frame window centred on each frame time, square-root compressed
  (mouth opening grows slower than loudness).
Both lose their slow trend (a one-second moving average: lighting, head drift, loudness level) and are scaled to unit
variance. The normalised cross-correlation is computed over a wide lag range (±1 s); its maximum inside
±max_offset, refined to a sub-frame lag by a parabola through the three samples around it, is the offset. The
confidence compares that peak with the correlation's sidelobes (lags away from the main lobe): a peak-to-sidelobe
ratio mapped linearly to [0, 1], scaled down when the peak correlation itself is weak.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
import torch

from ..audio import shift_audio
from ..errors import SonicAudioError, SonicInputError
from ..face.box import FaceBox, as_face_box, clip_region
from ..face.detect import detect_face_box
from ..frames import check_fps, check_frames, to_gray, to_gray_uint8
from ..timing import SAMPLE_RATE
from .signals import parabolic_peak, standardise

DEFAULT_MAX_OFFSET = 0.2
DEFAULT_MIN_CONFIDENCE = 0.5
SIDELOBE_SPAN_S = 1.0  # correlation is computed over ±1 s to have sidelobes to compare the peak with
MAIN_LOBE_S = 0.12  # lags closer than this to the peak belong to its main lobe, not the sidelobes
DETREND_S = 1.0
PSR_FLOOR, PSR_FULL = 3.0, 6.0  # peak-to-sidelobe ratios mapped to confidence 0 and 1
STRONG_PEAK = 0.3  # correlations below this scale the confidence down proportionally
FLAT_SIGNAL = 1e-6  # raw standard deviation under which a signal counts as constant
MOUTH_REGION = (0.25, 0.60, 0.75, 1.02)  # (left, top, right, bottom) as fractions of the face box

AlignMode = Literal["measure", "correct"]


@dataclass(frozen=True)
class LipSyncReport:
    """What Lip-Sync Align measured and did. ``offset_s > 0``: audio leads video."""

    offset_s: float
    offset_frames: float
    confidence: float
    applied: bool
    reason: str
    peak_correlation: float
    peak_to_sidelobe: float
    fps: float
    max_offset: float
    min_confidence: float
    mode: str
    face_box: tuple[float, float, float, float] | None
    shift_samples: int = 0
    usable: bool = False  # the estimate passed every check (face, signals, range, confidence)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class _Estimate:
    offset_frames: float
    confidence: float
    peak_correlation: float
    peak_to_sidelobe: float
    problem: str | None  # why the estimate must not be used, or None


def mouth_region(box: FaceBox, height: int, width: int) -> tuple[slice, slice]:
    """Row/column slices of the mouth region: the lower-middle part of the face box, clipped to the frame."""
    left, top, right, bottom = MOUTH_REGION
    return clip_region(box.x1 + left * box.width, box.y1 + top * box.height, box.x1 + right * box.width,
                       box.y1 + bottom * box.height, height, width)


def mouth_activity(gray: np.ndarray, box: FaceBox) -> np.ndarray:
    """Per-frame darkness of the mouth region of luma frames [F, H, W] in [0, 1]."""
    rows, cols = mouth_region(box, gray.shape[1], gray.shape[2])
    return 1.0 - gray[:, rows, cols].mean(axis=(1, 2), dtype=np.float64)


def speech_activity(audio: np.ndarray, fps: float, count: int, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Square-root RMS of the audio in a one-frame window centred on each of ``count`` frame times."""
    half = 0.5 * sample_rate / fps
    power = np.concatenate([[0.0], np.cumsum(np.asarray(audio, dtype=np.float64) ** 2)])
    centres = np.arange(count) * sample_rate / fps
    starts = np.clip(np.rint(centres - half).astype(int), 0, len(audio))
    ends = np.clip(np.rint(centres + half).astype(int), 0, len(audio))
    window = max(1, int(round(2 * half)))
    return np.sqrt(np.sqrt((power[ends] - power[starts]) / window))


def check_audio(audio: Any, name: str = "audio") -> np.ndarray:
    """A finite mono float waveform as float32 numpy [T] (a [1, T] or [T, 1] array is accepted)."""
    if isinstance(audio, torch.Tensor):
        audio = audio.detach().cpu().numpy()
    array = np.asarray(audio)
    if array.ndim == 2 and 1 in array.shape:
        array = array.reshape(-1)
    if array.ndim != 1 or array.size == 0:
        raise SonicAudioError(f"{name}: expected a mono waveform [T] at 16 kHz, got shape {list(array.shape)}")
    if not np.issubdtype(array.dtype, np.floating):
        raise SonicAudioError(f"{name}: expected float samples in [-1, 1], got {array.dtype}")
    if not np.all(np.isfinite(array)):
        raise SonicAudioError(f"{name}: contains NaN or infinite samples")
    return array.astype(np.float32, copy=False)


def normalised_cross_correlation(video: np.ndarray, audio: np.ndarray, max_lag: int) -> np.ndarray:
    """Pearson correlation of ``video[i]`` with ``audio[i - k]`` for k in [-max_lag, max_lag] (index k + max_lag)."""
    count = len(video)
    values = np.zeros(2 * max_lag + 1)
    for index, lag in enumerate(range(-max_lag, max_lag + 1)):
        v = video[max(0, lag):count + min(0, lag)]
        a = audio[max(0, -lag):count - max(0, lag)]
        v = v - v.mean()
        a = a - a.mean()
        norm = math.sqrt(float(v @ v) * float(a @ a))
        values[index] = float(v @ a) / norm if norm > 0 else 0.0
    return values


def _estimate(video: np.ndarray, audio: np.ndarray, fps: float, max_offset: float) -> _Estimate:
    count = len(video)
    search = int(math.floor(max_offset * fps + 1e-9))
    span = min(max(2 * search + 2, int(round(SIDELOBE_SPAN_S * fps))), count // 3)
    if search < 1 or span <= search:
        return _Estimate(0.0, 0.0, 0.0, 0.0, f"clip too short for ±{max_offset} s at {fps:g} fps "
                                               f"({count} frames)")
    detrend = max(3, int(round(DETREND_S * fps)))
    v, v_spread = standardise(video, detrend)
    a, a_spread = standardise(audio, detrend)
    if v_spread < FLAT_SIGNAL:
        return _Estimate(0.0, 0.0, 0.0, 0.0, "no mouth motion in the frames")
    if a_spread < FLAT_SIGNAL:
        return _Estimate(0.0, 0.0, 0.0, 0.0, "no speech activity in the audio")
    correlation = normalised_cross_correlation(v, a, span)
    inside = correlation[span - search:span + search + 1]
    peak = span - search + int(np.argmax(inside))
    refined = (peak - span) + parabolic_peak(correlation[peak - 1], correlation[peak], correlation[peak + 1])
    guard = max(2, int(round(MAIN_LOBE_S * fps)))
    lags = np.arange(len(correlation))
    sidelobes = correlation[np.abs(lags - peak) > guard]
    psr = float((correlation[peak] - sidelobes.mean()) / (sidelobes.std() + 1e-9))
    peak_value = float(correlation[peak])
    confidence = float(np.clip((psr - PSR_FLOOR) / (PSR_FULL - PSR_FLOOR), 0.0, 1.0)
                       * np.clip(peak_value / STRONG_PEAK, 0.0, 1.0))
    problem = None
    if abs(peak - span) == search and correlation[peak + np.sign(peak - span)] > correlation[peak]:
        problem = f"the correlation still rises beyond ±{max_offset} s: the offset is outside the search range"
        confidence = 0.0
    return _Estimate(float(refined), confidence, peak_value, psr, problem)


def _check_offset(max_offset: float) -> float:
    try:
        value = float(max_offset)
    except (TypeError, ValueError, OverflowError):
        value = float("nan")
    if not math.isfinite(value) or value <= 0:
        raise SonicInputError(f"max_offset: expected a positive number of seconds (default 0.2), got {max_offset!r}")
    return value


def measure_offset(frames: torch.Tensor, audio: Any, fps: float = 25.0, face_box: Any = None,
                   max_offset: float = DEFAULT_MAX_OFFSET, min_confidence: float = DEFAULT_MIN_CONFIDENCE,
                   sample_rate: int = SAMPLE_RATE) -> LipSyncReport:
    """Measure the audio/video offset of a clip; never changes anything (``applied`` is always False)."""
    return _measure(frames, audio, fps, face_box, max_offset, min_confidence, sample_rate, "measure")


def _measure(frames: torch.Tensor, audio: Any, fps: float, face_box: Any, max_offset: float,
             min_confidence: float, sample_rate: int, mode: str) -> LipSyncReport:
    frames = check_frames(frames)
    samples = check_audio(audio)
    fps = check_fps(fps)
    max_offset = _check_offset(max_offset)
    if not isinstance(sample_rate, int) or sample_rate <= 0:
        raise SonicAudioError(f"sample_rate: expected a positive integer in Hz (16000), got {sample_rate!r}")
    if not 0.0 <= float(min_confidence) <= 1.0:
        raise SonicInputError(f"min_confidence: expected a number in [0, 1], got {min_confidence!r}")
    gray = to_gray(frames)
    box = as_face_box(face_box) if face_box is not None else detect_face_box(to_gray_uint8(gray))
    common = dict(fps=fps, max_offset=max_offset, min_confidence=float(min_confidence), mode=mode,
                  face_box=box.xywh if box is not None else None)
    if box is None:
        return LipSyncReport(0.0, 0.0, 0.0, False, "no face found in the frames; pass face_box", 0.0, 0.0, **common)
    estimate = _estimate(mouth_activity(gray, box), speech_activity(samples, fps, len(gray), sample_rate),
                         fps, max_offset)
    offset_s = estimate.offset_frames / fps
    if estimate.problem is not None:
        reason = f"not applied: {estimate.problem}"
    elif estimate.confidence < min_confidence:
        reason = (f"not applied: confidence {estimate.confidence:.2f} is below the threshold {min_confidence:.2f} "
                  f"(measured {offset_s * 1000:+.0f} ms)")
    else:
        reason = f"measured {offset_s * 1000:+.0f} ms (audio {'leads' if offset_s >= 0 else 'lags'} video)"
    usable = estimate.problem is None and estimate.confidence >= min_confidence
    return LipSyncReport(offset_s, estimate.offset_frames, estimate.confidence, False, reason,
                         estimate.peak_correlation, estimate.peak_to_sidelobe, usable=usable, **common)


def align(frames: torch.Tensor, audio: Any, fps: float = 25.0, mode: AlignMode = "measure", face_box: Any = None,
          max_offset: float = DEFAULT_MAX_OFFSET, min_confidence: float = DEFAULT_MIN_CONFIDENCE,
          sample_rate: int = SAMPLE_RATE) -> tuple[torch.Tensor, np.ndarray, LipSyncReport]:
    """Measure the offset and, in ``correct`` mode with enough confidence, shift the audio to cancel it.

    Frames come back unchanged; the audio keeps its length. Below ``min_confidence`` (or when no face or no
    signal is found) nothing is applied and the report's ``reason`` says why.
    """
    if mode not in ("measure", "correct"):
        raise SonicInputError(f"mode: expected 'measure' or 'correct', got {mode!r}")
    report = _measure(frames, audio, fps, face_box, max_offset, min_confidence, sample_rate, mode)
    samples = check_audio(audio)
    if mode == "measure" or not report.usable:
        return frames, samples, report
    shift = int(round(report.offset_s * sample_rate))
    corrected = shift_audio(samples, shift)
    reason = f"applied: audio delayed by {report.offset_s * 1000:+.0f} ms ({shift:+d} samples)"
    return frames, corrected, LipSyncReport(**{**report.to_dict(), "applied": True, "reason": reason,
                                               "shift_samples": shift})
