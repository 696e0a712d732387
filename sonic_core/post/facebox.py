"""Face boxes for post-processing: accept a caller's (x1, y1, w, h) box or find one with OpenCV's Haar cascade.

A box is the detector convention of SPEC §3.1: (x1, y1, width, height) in pixels of the frame. Anything with those
four numbers works: a tuple, a list, or an object with ``x1``, ``y1``, ``w``/``width``, ``h``/``height``.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from sonic_core.errors import SonicDependencyError, SonicInputError

HAAR_CASCADE = "haarcascade_frontalface_default.xml"
DETECTION_SAMPLES = 8  # frames the detector looks at; the median box over them is used


class FaceBox(NamedTuple):
    """A face rectangle in pixels: top-left corner and size."""

    x1: float
    y1: float
    w: float
    h: float


def as_face_box(value: Any, name: str = "face_box") -> FaceBox:
    """Coerce a FaceBox-like value (4 numbers or an object with x1, y1, w, h) into a FaceBox."""
    if all(hasattr(value, field) for field in ("x1", "y1")):
        width = getattr(value, "w", getattr(value, "width", None))
        height = getattr(value, "h", getattr(value, "height", None))
        value = (value.x1, value.y1, width, height)
    try:
        x1, y1, w, h = (float(v) for v in value)
    except (TypeError, ValueError):
        raise SonicInputError(f"{name}: expected (x1, y1, width, height) in pixels, got {value!r}") from None
    if not np.all(np.isfinite([x1, y1, w, h])) or w <= 0 or h <= 0:
        raise SonicInputError(f"{name}: expected finite numbers and a positive width and height, got {value!r}")
    return FaceBox(x1, y1, w, h)


def _cascade() -> Any:
    try:
        import cv2
    except ImportError as exc:
        raise SonicDependencyError("face detection needs OpenCV: pip install 'opencv-python-headless<5'") from exc
    cascade = cv2.CascadeClassifier(cv2.data.haarcascades + HAAR_CASCADE)
    if cascade.empty():
        raise SonicDependencyError(f"OpenCV's {HAAR_CASCADE} could not be loaded; reinstall opencv-python-headless")
    return cascade


def detect_face_box(gray_uint8: np.ndarray) -> FaceBox | None:
    """Median of the largest Haar detection over a few evenly spaced frames of [F, H, W] uint8; None if no face."""
    cascade = _cascade()
    count = gray_uint8.shape[0]
    picks = np.unique(np.linspace(0, count - 1, min(count, DETECTION_SAMPLES)).round().astype(int))
    boxes = []
    for index in picks:
        found = cascade.detectMultiScale(gray_uint8[index], scaleFactor=1.1, minNeighbors=5)
        if len(found):
            boxes.append(max(found, key=lambda box: box[2] * box[3]))
    if not boxes:
        return None
    return FaceBox(*(float(v) for v in np.median(np.asarray(boxes, dtype=np.float64), axis=0)))


def clip_region(x1: float, y1: float, x2: float, y2: float, height: int, width: int) -> tuple[slice, slice]:
    """Row and column slices of a rectangle clipped to the frame; at least one pixel each way."""
    left = int(np.clip(np.floor(x1), 0, width - 1))
    top = int(np.clip(np.floor(y1), 0, height - 1))
    right = int(np.clip(np.ceil(x2), left + 1, width))
    bottom = int(np.clip(np.ceil(y2), top + 1, height))
    return slice(top, bottom), slice(left, right)
