"""Clips of known truth for evaluating post-processing (the bench harness and the tests share them).

- ``talking_clip``: the bundled portrait whose mouth opening follows the real speech envelope of the bundled
  speech, with the video shifted by a known offset (``offset_s > 0``: audio leads video, as in
  :mod:`sonic_core.post.lipsync`); ``silent=True`` keeps the mouth closed while the speech plays.
- ``motion_clip``: the same portrait moved by a slow intended similarity motion (sinusoids) plus jitter of a known
  spectrum (white noise with its low band removed).
- ``strobed`` / ``drifted``: a clip with injected brightness strobing of known amplitude and period, or a
  per-channel colour drift (gain and offset) growing linearly over the clip.
- ``paste_case``: the portrait cut to a wider-than-tall shot as the original, and its crop at a given box, resized to
  the working size with a brightness change and noise, as the "generated" frames to paste back.

The mouth-opening truth is an envelope computed differently from the detector's (sample-accurate |x|, low-passed
at ~10 Hz, percentile-normalised, compressed) so the evaluation is not circular.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import soundfile
import torch
from PIL import Image

from ..errors import SonicAudioError
from ..face.box import FaceBox
from ..frames import to_gray
from ..timing import SAMPLE_RATE
from .lipsync import mouth_activity
from .signals import moving_average
from .smooth import similarity_from_params

ASSETS = Path(__file__).resolve().parent.parent / "assets"
PORTRAIT_FACE = FaceBox(178.0, 67.0, 92.0, 92.0)  # Haar detection on the 512 × 512 portrait
PORTRAIT_SIZE = 512
ENVELOPE_RATE = 1000  # Hz of the truth envelope
MOUTH_CENTRE = (0.5, 0.86)  # fractions of the face box
MOUTH_HALF_WIDTH = 0.18  # fraction of the face width
MOUTH_MAX_HALF_HEIGHT = 0.09  # fraction of the face height at full opening
MOUTH_COLOUR = (0.28, 0.06, 0.07)


@dataclass(frozen=True)
class Motion:
    """Intended motion: per-parameter amplitude and frequency (Hz) of sinusoids, plus jitter of known spectrum."""

    amplitude: tuple[float, float, float, float] = (10.0, 6.0, 0.025, 0.02)  # x px, y px, angle rad, log-scale
    frequency: tuple[float, float, float, float] = (0.4, 0.3, 0.25, 0.2)
    jitter: tuple[float, float, float, float] = (1.5, 1.5, 0.004, 0.003)  # std of the high-passed noise
    jitter_cutoff_hz: float = 3.0  # jitter has (almost) no power below this


@lru_cache(maxsize=4)
def portrait(size: int = PORTRAIT_SIZE) -> np.ndarray:
    """The bundled portrait as float32 [size, size, 3] RGB in [0, 1]."""
    image = Image.open(ASSETS / "portrait.jpg").convert("RGB")
    if image.size != (size, size):
        image = image.resize((size, size), Image.Resampling.LANCZOS)
    return np.asarray(image, dtype=np.float32) / 255.0


def speech() -> np.ndarray:
    """The bundled speech, float32 mono at 16 kHz."""
    samples, rate = soundfile.read(ASSETS / "speech.wav", dtype="float32")
    if rate != SAMPLE_RATE:
        raise SonicAudioError(f"{ASSETS / 'speech.wav'}: expected {SAMPLE_RATE} Hz, got {rate} Hz; restore the asset")
    return samples


def face_box(size: int) -> FaceBox:
    """The portrait's face box at another square size."""
    k = size / PORTRAIT_SIZE
    return PORTRAIT_FACE.scaled(k, k)


@lru_cache(maxsize=2)
def _speech_envelope() -> np.ndarray:
    magnitude = np.abs(speech().astype(np.float64))
    step = SAMPLE_RATE // ENVELOPE_RATE
    coarse = magnitude[: len(magnitude) // step * step].reshape(-1, step).mean(axis=1)
    smooth = moving_average(moving_average(coarse, 50), 50)  # two 50 ms boxes: ~10 Hz low-pass, zero phase
    return np.clip(smooth / np.percentile(smooth, 95), 0.0, 1.0) ** 0.7


def mouth_opening(times: np.ndarray) -> np.ndarray:
    """Truth mouth opening in [0, 1] at times (s) of the bundled speech (0 outside it)."""
    envelope = _speech_envelope()
    return np.interp(times * ENVELOPE_RATE, np.arange(len(envelope)), envelope, left=0.0, right=0.0)


def _draw_mouth(image: np.ndarray, box: FaceBox, opening: float) -> np.ndarray:
    """Blend a soft dark ellipse whose height follows the opening into a copy of the image."""
    if opening <= 0:
        return image
    cx, cy = box.x1 + MOUTH_CENTRE[0] * box.width, box.y1 + MOUTH_CENTRE[1] * box.height
    rx, ry = MOUTH_HALF_WIDTH * box.width, max(1e-3, opening * MOUTH_MAX_HALF_HEIGHT * box.height)
    top, left = max(0, int(cy - ry) - 2), max(0, int(cx - rx) - 2)
    bottom, right = min(image.shape[0], int(cy + ry) + 3), min(image.shape[1], int(cx + rx) + 3)
    ys, xs = np.mgrid[top:bottom, left:right].astype(np.float32)
    radius = np.sqrt(((xs - cx) / rx) ** 2 + ((ys - cy) / ry) ** 2)
    alpha = np.clip((1.0 - radius) * min(rx, ry) + 0.5, 0.0, 1.0)[..., None]  # ~1 px anti-aliased edge
    out = image.copy()
    out[top:bottom, left:right] = image[top:bottom, left:right] * (1 - alpha) + np.asarray(MOUTH_COLOUR) * alpha
    return out


def talking_clip(offset_s: float = 0.0, duration: float = 4.0, start: float = 0.0, size: int = 128,
                 fps: float = 25.0, noise: float = 0.01, silent: bool = False,
                 seed: int = 0) -> tuple[torch.Tensor, np.ndarray, FaceBox]:
    """Frames [F, 3, size, size] whose mouth shows the speech at ``t - offset_s``, the audio from ``start``, the box."""
    rng = np.random.default_rng(seed)
    base, box = portrait(size), face_box(size)
    count = int(round(duration * fps))
    times = start + np.arange(count) / fps - offset_s
    openings = np.zeros(count) if silent else mouth_opening(times)
    frames = np.stack([_draw_mouth(base, box, float(o)) for o in openings])
    frames = frames + rng.normal(0.0, noise, frames.shape).astype(np.float32)
    first = int(round(start * SAMPLE_RATE))
    audio = speech()[first:first + int(round(duration * SAMPLE_RATE))]
    audio = np.pad(audio, (0, int(round(duration * SAMPLE_RATE)) - len(audio)))
    return torch.from_numpy(np.clip(frames, 0, 1)).permute(0, 3, 1, 2).contiguous(), audio, box


def _high_passed_noise(rng: np.random.Generator, count: int, fps: float, cutoff_hz: float) -> np.ndarray:
    """Unit-variance white noise with the band below ~cutoff_hz removed (minus a moving average)."""
    white = rng.normal(size=(count, 4))
    window = max(3, int(round(fps / cutoff_hz)))
    residual = white - moving_average(white, window)
    return residual / residual.std(axis=0)


def motion_clip(motion: Motion = Motion(), duration: float = 4.0, size: int = 128, fps: float = 25.0,
                talking: bool = True, noise: float = 0.005,
                seed: int = 0) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    """Frames moved by intended + jitter motion; returns (frames, intended [F, 4], jitter [F, 4]).

    Amplitudes in pixels are for the 512 px portrait and scale with ``size``.
    """
    import cv2

    rng = np.random.default_rng(seed)
    count = int(round(duration * fps))
    k = size / PORTRAIT_SIZE
    unit = np.array([k, k, 1.0, 1.0])
    times = np.arange(count)[:, None] / fps
    intended = np.asarray(motion.amplitude) * unit * np.sin(2 * np.pi * np.asarray(motion.frequency) * times)
    jitter = np.asarray(motion.jitter) * unit * _high_passed_noise(rng, count, fps, motion.jitter_cutoff_hz)
    base, box = portrait(size), face_box(size)
    openings = mouth_opening(1.0 + times[:, 0]) if talking else np.zeros(count)
    centre = ((size - 1) / 2.0, (size - 1) / 2.0)
    frames = []
    for index in range(count):
        matrix = similarity_from_params(intended[index] + jitter[index], centre, radius=1.0)
        moved = cv2.warpAffine(_draw_mouth(base, box, float(openings[index])), matrix[:2], (size, size),
                               flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
        frames.append(moved + rng.normal(0.0, noise, moved.shape).astype(np.float32))
    tensor = torch.from_numpy(np.clip(np.stack(frames), 0, 1)).permute(0, 3, 1, 2).contiguous()
    return tensor, intended, jitter


def sinusoid_amplitude(signal: np.ndarray, frequency: float, fps: float) -> float:
    """Amplitude of the ``frequency`` Hz component of a per-frame signal (least-squares sine + cosine + offset)."""
    times = np.arange(len(signal)) / fps
    design = np.stack([np.sin(2 * np.pi * frequency * times), np.cos(2 * np.pi * frequency * times),
                       np.ones_like(times)], axis=1)
    coefficients = np.linalg.lstsq(design, np.asarray(signal, dtype=np.float64), rcond=None)[0]
    return float(np.hypot(coefficients[0], coefficients[1]))


def dark_border_fraction(frames: torch.Tensor, width: int = 4, level: float = 0.02) -> float:
    """Share of the pixels in the outer ``width``-pixel strip of every frame that are black in all channels."""
    dark = (frames < level).all(dim=1)
    strip = torch.ones_like(dark)
    strip[:, width:-width, width:-width] = False
    return float(dark[strip].float().mean())


def strobed(frames: torch.Tensor, amplitude: float, period_s: float, fps: float, phase: float = 0.0) -> torch.Tensor:
    """Frames times a brightness strobe ``1 + amplitude · sin(2π t / period_s + phase)`` (every channel), clipped."""
    times = torch.arange(len(frames), dtype=torch.float64) / fps
    gain = 1.0 + amplitude * torch.sin(2 * np.pi * times / period_s + phase)
    return (frames * gain.float().view(-1, 1, 1, 1)).clamp(0, 1)


def drifted(frames: torch.Tensor, gain: tuple[float, float, float] = (1.08, 1.0, 0.94),
            offset: tuple[float, float, float] = (0.0, 0.02, 0.03)) -> torch.Tensor:
    """A per-channel (R, G, B) colour drift: none at the first frame, ``gain`` and ``offset`` at the last."""
    share = torch.linspace(0.0, 1.0, len(frames)).view(-1, 1, 1, 1)
    gains = 1.0 + share * (torch.tensor(gain) - 1.0).view(1, 3, 1, 1)
    return (frames * gains + share * torch.tensor(offset).view(1, 3, 1, 1)).clamp(0, 1)


def mean_luma(frames: torch.Tensor) -> np.ndarray:
    """Per-frame mean luma [F] (float64)."""
    return to_gray(frames).mean(axis=(1, 2), dtype=np.float64)


def strobe_amplitude(frames: torch.Tensor, period_s: float, fps: float) -> float:
    """Relative amplitude of the ``1 / period_s`` Hz component of the per-frame mean luma."""
    luma = mean_luma(frames)
    return sinusoid_amplitude(luma / luma.mean(), 1.0 / period_s, fps)


def mouth_energy_kept(output: torch.Tensor, clean: torch.Tensor, box: FaceBox) -> float:
    """Share of the clean clip's mouth-motion energy the output keeps: the squared projection coefficient of the
    output's mouth signal (:func:`~sonic_core.post.lipsync.mouth_activity`, mean removed) onto the clean one's."""
    truth = mouth_activity(to_gray(clean), box)
    found = mouth_activity(to_gray(output), box)
    truth, found = truth - truth.mean(), found - found.mean()
    return float(np.dot(found, truth) / np.dot(truth, truth)) ** 2


def paste_case(crop_box: tuple[int, int, int, int], size: int = 256, count: int = 3, gain: float = 1.03,
               noise: float = 0.01, shot: tuple[int, int] = (512, 448),
               seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(original [3, H, W], frames [count, 3, size, size]): the portrait's top ``shot`` (width, height) as the
    original, and its ``crop_box`` (black where the box leaves the image) resized to the working size, brightened
    by ``gain`` and with noise, as generated frames."""
    rng = np.random.default_rng(seed)
    original = Image.fromarray(np.round(portrait()[:shot[1], :shot[0]] * 255).astype(np.uint8))
    crop = original.crop(crop_box).resize((size, size), Image.Resampling.LANCZOS)
    base = np.asarray(crop, dtype=np.float32) / 255.0 * gain
    frames = np.clip(base[None] + rng.normal(0.0, noise, (count, *base.shape)).astype(np.float32), 0, 1)
    pixels = torch.from_numpy(np.asarray(original, dtype=np.float32) / 255.0).permute(2, 0, 1).contiguous()
    return pixels, torch.from_numpy(frames).permute(0, 3, 1, 2).contiguous()
