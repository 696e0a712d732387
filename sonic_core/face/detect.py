"""Finding faces: choosing the detector, running it, and the face-selection rule of MODEL.md §3.1.

A detector is any callable ``detector(image_rgb uint8 [H, W, 3]) -> float [K, 5]`` rows (x1, y1, width, height,
score) by descending score: the official TorchScript YOLOv5-face (:mod:`.yolo`) when its file is there, else
OpenCV's Haar cascade (:mod:`.haar`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..errors import SonicFaceError
from .box import Detector, FaceBox, check_rgb_image
from .haar import HaarFaceDetector
from .yolo import YoloFaceDetector

NO_FACE_FIX = "use a photo with one clearly visible, roughly frontal face"
DETECTION_SAMPLES = 8  # frames of a clip the detector looks at; the median box over them is used


def detect_faces(image_rgb: np.ndarray, detector: Detector) -> list[FaceBox]:
    """Every face the detector finds in an RGB uint8 image, in the detector's order (descending score)."""
    check_rgb_image(image_rgb)
    return [FaceBox(*map(float, row)) for row in np.asarray(detector(image_rgb)).reshape(-1, 5)]


def select_face(boxes: list[FaceBox]) -> FaceBox:
    """The official "maxface" choice: the *last* box whose area exceeds the *first* box's area, else the first.

    The reference area is never updated (MODEL.md §3.1 quirk, kept because it decides which face is animated), so
    with areas [10, 30, 20] the third box wins, not the largest.
    """
    if not boxes:
        raise SonicFaceError(f"no face found in the portrait; {NO_FACE_FIX}")
    chosen = boxes[0]
    for box in boxes[1:]:
        if box.area > boxes[0].area:
            chosen = box
    return chosen


def load_detector(yoloface_path: str | Path | None = None, device: torch.device | str = "cpu") -> Detector:
    """The official TorchScript yoloface when its file is given and exists, else the OpenCV Haar fallback."""
    if yoloface_path is not None and Path(yoloface_path).is_file():
        return YoloFaceDetector(yoloface_path, device)
    return HaarFaceDetector()


def detect_face_box(gray_uint8: np.ndarray) -> FaceBox | None:
    """The head in a clip of [F, H, W] uint8 frames: the median over a few evenly spaced frames of the largest
    Haar cascade box (unmapped, the tight eyebrow-to-lip square); None when no frame shows a face. Used by the
    post-processing steps when the caller has no box from the generation."""
    detector = HaarFaceDetector()
    count = gray_uint8.shape[0]
    picks = np.unique(np.linspace(0, count - 1, min(count, DETECTION_SAMPLES)).round().astype(int))
    boxes = []
    for index in picks:
        found, _hits = detector.gray_boxes(gray_uint8[index])
        if len(found):
            boxes.append(max(found, key=lambda box: box[2] * box[3]))
    if not boxes:
        return None
    return FaceBox(*(float(v) for v in np.median(np.asarray(boxes, dtype=np.float64), axis=0)))
