"""Registration of a still image (the reference portrait) to each frame of a clip of it: the affine warp that moves
the image onto the frame, found by ECC (enhanced correlation coefficient, Evangelidis & Psarakis, PAMI 2008) on
grey images area-downscaled to at most :data:`ANALYSIS_SIZE` pixels a side.

ECC maximises the correlation coefficient of the two images, which a gain and an offset of either leave unchanged,
so a colour drift of the frame does not pull the warp. Each frame starts from the warp found for the one before it
(head motion is continuous); where ECC does not converge the previous warp is kept.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import torch

ANALYSIS_SIZE = 128
ITERATIONS = 40
TOLERANCE = 1e-5
SMOOTHING = 3  # ECC's Gaussian pre-filter (pixels of the downscaled image)


def _downscale(image: np.ndarray, factor: int) -> np.ndarray:
    """Area downscale of an [H, W] (or [H, W, C]) array by an integer factor (the ragged edge dropped)."""
    if factor == 1:
        return image
    height, width = image.shape[0] // factor * factor, image.shape[1] // factor * factor
    cut = image[:height, :width]
    return cut.reshape(height // factor, factor, width // factor, factor, *image.shape[2:]).mean(axis=(1, 3))


def _grey(image: torch.Tensor) -> np.ndarray:
    """[3, H, W] in [0, 1] -> mean of the channels, float32 numpy [H, W]."""
    return image.float().mean(dim=0).cpu().numpy()


class Registration:
    """Finds, frame by frame, the warp from ``image`` [3, H, W] to frames of its size; ``mask`` [H, W] (boolean)
    marks the image's pixels to register on (the rest, e.g. a mouth that moves, is ignored)."""

    def __init__(self, image: torch.Tensor, mask: torch.Tensor) -> None:
        self.factor = max(1, math.ceil(max(image.shape[1:]) / ANALYSIS_SIZE))
        self.image = _downscale(_grey(image), self.factor).astype(np.float32)
        self.mask = (_downscale(mask.cpu().numpy().astype(np.float32), self.factor) > 0.999).astype(np.uint8)
        self.warp = np.eye(2, 3, dtype=np.float32)  # frame -> image coordinates, downscaled pixels

    def __call__(self, frame: torch.Tensor) -> np.ndarray:
        """The 2 × 3 affine map from the frame's pixel coordinates to the image's (full size), float64."""
        target = _downscale(_grey(frame), self.factor).astype(np.float32)
        criteria = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, ITERATIONS, TOLERANCE)
        try:
            _, warp = cv2.findTransformECC(target, self.image, self.warp.copy(), cv2.MOTION_AFFINE, criteria,
                                           self.mask, SMOOTHING)
            if np.isfinite(warp).all():
                self.warp = warp
        except cv2.error:
            pass  # not converged (a cut, a face turned away): the last warp stands
        return self.full_size(self.warp)

    def full_size(self, warp: np.ndarray) -> np.ndarray:
        """A warp between downscaled pixel coordinates as one between full-size ones (pixel centres: a downscaled
        pixel x covers full-size pixels factor·x to factor·x + factor − 1, centred at factor·x + (factor − 1) / 2)."""
        k, c = float(self.factor), (self.factor - 1) / 2.0
        to_small = np.array([[1 / k, 0, -c / k], [0, 1 / k, -c / k], [0, 0, 1]])
        to_full = np.array([[k, 0, c], [0, k, c], [0, 0, 1]])
        return (to_full @ np.vstack([warp.astype(np.float64), [0, 0, 1]]) @ to_small)[:2]
