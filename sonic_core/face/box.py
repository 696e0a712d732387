"""The one face-box type of the engine, and the checks and pixel arithmetic every detector and post step share."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from ..errors import SonicInputError

Detector = Callable[[np.ndarray], np.ndarray]  # RGB uint8 [H, W, 3] -> float [K, 5] (x1, y1, w, h, score)


@dataclass(frozen=True)
class FaceBox:
    """A face in pixels of the image it was found in: top-left corner, size and detector score (MODEL.md §3.1)."""

    x1: float
    y1: float
    width: float
    height: float
    score: float = 1.0

    @property
    def x2(self) -> float:
        return self.x1 + self.width

    @property
    def y2(self) -> float:
        return self.y1 + self.height

    @property
    def area(self) -> float:
        return self.width * self.height

    @property
    def xywh(self) -> tuple[float, float, float, float]:
        return self.x1, self.y1, self.width, self.height

    def scaled(self, sx: float, sy: float, dx: float = 0.0, dy: float = 0.0) -> FaceBox:
        """The box after the image was shifted by (−dx, −dy) and then scaled by (sx, sy)."""
        return FaceBox((self.x1 - dx) * sx, (self.y1 - dy) * sy, self.width * sx, self.height * sy, self.score)


def as_face_box(value: Any, name: str = "face_box") -> FaceBox:
    """A :class:`FaceBox` from a caller's value: a FaceBox, or four numbers (x1, y1, width, height) in pixels."""
    if isinstance(value, FaceBox):
        value = value.xywh
    try:
        x1, y1, w, h = (float(v) for v in value)
    except (TypeError, ValueError):
        raise SonicInputError(f"{name}: expected (x1, y1, width, height) in pixels, got {value!r}") from None
    if not np.all(np.isfinite([x1, y1, w, h])) or w <= 0 or h <= 0:
        raise SonicInputError(f"{name}: expected finite numbers and a positive width and height, got {value!r}")
    return FaceBox(x1, y1, w, h)


def check_rgb_image(image: np.ndarray) -> None:
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8 or 0 in image.shape:
        raise SonicInputError(f"face detection needs an RGB uint8 [H, W, 3] image, got {image.dtype} "
                              f"{tuple(image.shape)}")


def clip_region(x1: float, y1: float, x2: float, y2: float, height: int, width: int) -> tuple[slice, slice]:
    """Row and column slices of a rectangle clipped to the frame; at least one pixel each way."""
    left = int(np.clip(np.floor(x1), 0, width - 1))
    top = int(np.clip(np.floor(y1), 0, height - 1))
    right = int(np.clip(np.ceil(x2), left + 1, width))
    bottom = int(np.clip(np.ceil(y2), top + 1, height))
    return slice(top, bottom), slice(left, right)
