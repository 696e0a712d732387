"""Fallback face detector whose weights ship inside ``opencv-python-headless<5``: OpenCV's frontal-face Haar cascade,
with its box mapped to approximate the official YOLOv5-face box semantics (MODEL.md §3.1).

The Haar box is a tight square from the eyebrows to the upper lip/chin; YOLOv5-face is trained on WIDER FACE, whose
boxes run from the hairline to below the chin and are narrower than tall. The mapping keeps the centre x, scales the
width by 0.92 and the height by 1.17 and moves the centre down by 0.04 of the Haar height. Those factors were fitted
so that on the bundled astronaut portrait (Haar (178, 67, 92, 92) on the JPEG, (177, 66, 95, 95) on the original
PNG) the result lands within about a pixel of facenet-pytorch MTCNN's WIDER-FACE box (181.1, 62.2, 86.6, 109.9);
expect a few pixels of disagreement with the real yoloface on other faces.
"""

from __future__ import annotations

import cv2
import numpy as np

from ..errors import SonicDependencyError
from .box import check_rgb_image

CASCADE = "haarcascade_frontalface_default.xml"
SCALE_FACTOR = 1.1
MIN_NEIGHBORS = 5
MIN_FACE_FRACTION = 1 / 16  # of the short side; smaller faces are not a usable portrait
WIDTH_SCALE, HEIGHT_SCALE, CENTRE_SHIFT = 0.92, 1.17, 0.04


def haar_to_yolo_box(x: float, y: float, width: float, height: float) -> tuple[float, float, float, float]:
    """Map a Haar box (x1, y1, w, h) to the looser WIDER-FACE-style box the official detector returns."""
    cx, cy = x + width / 2, y + height / 2 + CENTRE_SHIFT * height
    w, h = width * WIDTH_SCALE, height * HEIGHT_SCALE
    return cx - w / 2, cy - h / 2, w, h


class HaarFaceDetector:
    """``detector(image_rgb) -> float64 [K, 5]`` rows (x1, y1, width, height, score), by descending score.

    The score is ``n / (n + 5)`` where n is the number of raw cascade hits merged into the box (OpenCV's own
    confidence proxy); it only orders the boxes.
    """

    def __init__(self) -> None:
        if not hasattr(cv2, "CascadeClassifier") or not hasattr(cv2, "data"):
            raise SonicDependencyError("this OpenCV has no Haar cascades (OpenCV 5 dropped them); "
                                       "pip install 'opencv-python-headless<5'")
        self.cascade = cv2.CascadeClassifier(cv2.data.haarcascades + CASCADE)
        if self.cascade.empty():
            raise SonicDependencyError(f"OpenCV could not read {CASCADE}; reinstall 'opencv-python-headless<5'")

    def cascade_boxes(self, image_rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The cascade's own square boxes int [K, 4] (x, y, w, h) and merged-hit counts [K], unmapped."""
        check_rgb_image(image_rgb)
        return self.gray_boxes(cv2.cvtColor(image_rgb, cv2.COLOR_RGB2GRAY))

    def gray_boxes(self, gray: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`cascade_boxes` of a grayscale uint8 [H, W] image."""
        min_side = max(24, round(min(gray.shape) * MIN_FACE_FRACTION))
        rects, hits = self.cascade.detectMultiScale2(gray, SCALE_FACTOR, MIN_NEIGHBORS, minSize=(min_side, min_side))
        return np.asarray(rects).reshape(-1, 4), np.asarray(hits).reshape(-1)

    def __call__(self, image_rgb: np.ndarray) -> np.ndarray:
        rects, hits = self.cascade_boxes(image_rgb)
        rows = [(*haar_to_yolo_box(*map(float, rect)), n / (n + MIN_NEIGHBORS)) for rect, n in zip(rects, hits)]
        rows.sort(key=lambda row: -row[4])
        return np.asarray(rows, dtype=np.float64).reshape(-1, 5)
