"""Step 0 of a generation: the portrait and the speech, prepared once and checked before any network weights are
read (MODEL.md §3, §4.1). The speech is decoded once (:class:`~sonic_core.audio.Speech`: the original track for the
video, 16 kHz mono for the model); the portrait is opened, its face detected, cropped, masked and resized
(:class:`~sonic_core.face.crop.Reference`). The face detector's file is read only after the audio and the image
have passed their checks, so a bad input costs no model load.
"""

from __future__ import annotations

import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from . import timing
from .audio import Speech, load_speech
from .errors import SonicInputError
from .face.box import Detector
from .face.crop import Reference, prepare_reference
from .face.detect import load_detector
from .paths import existing_file
from .settings import SonicSettings

MAX_PORTRAIT_PIXELS = 100_000_000  # a decompression-bomb guard: larger claims are refused before decoding


@dataclass
class PreparedInputs:
    """What a generation conditions on: the ``speech``, the prepared portrait (``reference``, with the face box
    that later steps reuse) and the seconds spent preparing them (``audio``, ``face``)."""

    speech: Speech
    reference: Reference
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def audio_frames(self) -> int:
        """25 fps audio frames of the speech (MODEL.md §4.3)."""
        return timing.audio_frames(len(self.speech.samples))

    @property
    def num_frames(self) -> int:
        """Video frames the sampler generates (12.5 fps)."""
        return timing.generated_frame_count(self.audio_frames)


def open_portrait(image: str | os.PathLike | Image.Image, what: str = "--image") -> Image.Image:
    """The portrait as an RGB PIL image (high-bit-depth images scaled to 8 bits, see :func:`to_rgb`); one line
    naming ``what`` when the file is missing, not an image, or claims more than :data:`MAX_PORTRAIT_PIXELS`."""
    if isinstance(image, Image.Image):
        return to_rgb(image)
    file = existing_file(image, what, "pass a portrait file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # refused below with our own limit
            with Image.open(file) as opened:
                if opened.width * opened.height > MAX_PORTRAIT_PIXELS:
                    raise _too_large(image, what, f"{opened.width}x{opened.height}")
                return to_rgb(opened)
    except SonicInputError:
        raise
    except Image.DecompressionBombError:
        raise _too_large(image, what, "its header's size") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:  # PIL's errors for damaged data
        raise SonicInputError(f"{what} {str(image)!r} is not a readable image ({type(exc).__name__}): "
                              "use a JPEG or PNG portrait") from None


def _too_large(image: str | os.PathLike, what: str, size: str) -> SonicInputError:
    return SonicInputError(f"{what} {str(image)!r} claims {size}, more than {MAX_PORTRAIT_PIXELS // 10**6} MP: "
                           "use a smaller portrait (a face needs far fewer pixels)")


def to_rgb(image: Image.Image) -> Image.Image:
    """``image`` as 8-bit RGB. 16- and 32-bit grayscale (modes I;16*, I) are scaled from 0-65535 and float images
    (F) from 0-1 to 0-255 first: PIL's own ``convert("RGB")`` clips them, so all but the darkest pixels turn
    white. The image's ``info`` (EXIF orientation) is kept."""
    if image.mode.startswith("I") or image.mode == "F":
        values = np.asarray(image, dtype=np.float64)
        peak = 1.0 if image.mode == "F" else 65535.0
        gray = Image.fromarray(np.clip(values / peak * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")
        gray.info.update(image.info)
        image = gray
    return image.convert("RGB")


def prepare_inputs(image: str | os.PathLike | Image.Image, audio: str | os.PathLike | Speech,
                   settings: SonicSettings, *, fit: str = "error", detector: Detector | None = None,
                   yoloface: str | Path | None = None, device: str = "cpu") -> PreparedInputs:
    """Read and check the speech (against ``settings.duration``; ``fit`` trims or pads), open the portrait, then
    detect, crop, mask and resize its face. ``detector`` is used when given; otherwise the face detector is loaded
    from ``yoloface`` (OpenCV's Haar cascade when that file is absent) once the inputs have passed their checks."""
    started = time.perf_counter()
    speech = audio if isinstance(audio, Speech) else load_speech(audio, settings.duration, fit)
    portrait = open_portrait(image)
    read = time.perf_counter()
    detector = detector or load_detector(yoloface, device)
    reference = prepare_reference(portrait, detector, settings.min_resolution, settings.expand_ratio,
                                  settings.face_area)
    return PreparedInputs(speech, reference, {"audio": read - started, "face": time.perf_counter() - read})
