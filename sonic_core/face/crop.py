"""Reference-image preparation (MODEL.md §3.1–3.3): face detection, the square crop around the face, the face mask and the
working-size resize.

Official order, kept here: detect on the original → square crop with the expand ratio → detect again on the crop for
the mask box → resize image and mask with LANCZOS. EXIF orientation is applied once, up front, so the crop and
everything after it see the same pixels (the official code mixes an EXIF-aware and an EXIF-blind loader).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from PIL import Image, ImageOps

from ..errors import SonicFaceError, SonicInputError
from .box import Detector, FaceBox
from .detect import NO_FACE_FIX, detect_faces, select_face

WORKING_MULTIPLE = 64
AUTO_RATIO_MIN, AUTO_RATIO_MAX = 0.15, 0.5
AUTO_SHARE_TIGHT, AUTO_SHARE_LOOSE = 0.15, 0.45  # face share at which the auto ratio reaches its min / max


@dataclass
class Reference:
    """The prepared portrait: what the pipeline conditions on and where it came from."""

    image: Image.Image          # cropped and resized RGB image (W', H' multiples of 64)
    ref_image: torch.Tensor     # [3, H', W'] float32 in [-1, 1]
    face_mask: torch.Tensor     # [1, H', W'] float32 in [0, 1], soft-edged (Lanczos, not re-binarised)
    face_box: FaceBox           # the selected face in the (EXIF-oriented) original image
    crop_box: tuple[int, int, int, int]  # (x1, y1, x2, y2) of the square crop in the original image
    mask_box: FaceBox           # the face found again in the crop, before the resize
    expand_ratio: float         # the ratio used (the auto choice when "auto" was asked)
    clip_source: Image.Image    # the image CLIP preprocessing starts from (the resized image, MODEL.md §3.4)
    original: Image.Image | None = None  # the EXIF-oriented RGB portrait the crop was cut from (for paste-back)

    @property
    def frame_box(self) -> FaceBox:
        """The face in pixels of the generated frames (the mask box, carried through the resize): what Lip-Sync
        Align and Motion Smooth track, so they never have to find the face again on generated frames."""
        x1, y1, x2, y2 = self.crop_box
        return self.mask_box.scaled(self.image.width / (x2 - x1), self.image.height / (y2 - y1))


def _slide(centre: float, target: float, limit: float) -> float:
    """Move ``centre`` toward ``target`` by at most ``limit`` (direction −1 when target ≤ centre)."""
    direction = 1.0 if target > centre else -1.0
    return centre + direction * min(limit, abs(target - centre))


def square_crop_box(box: FaceBox, width: int, height: int, expand_ratio: float) -> tuple[int, int, int, int]:
    """Integer square (x1, y1, x2, y2) around the face (MODEL.md §3.2): expand by ``expand_ratio`` of the face size on
    every side, clamp to the image, take the shorter side, slide along the longer axis toward the face centre by at
    most half the excess, round with Python's half-to-even ``round``."""
    ex1, ey1 = max(box.x1 - expand_ratio * box.width, 0), max(box.y1 - expand_ratio * box.height, 0)
    ex2, ey2 = min(box.x2 + expand_ratio * box.width, width), min(box.y2 + expand_ratio * box.height, height)
    side_w, side_h = ex2 - ex1, ey2 - ey1
    half = min(side_w, side_h) / 2
    cx, cy = (ex1 + ex2) / 2, (ey1 + ey2) / 2
    fx, fy = (box.x1 + box.x2) / 2, (box.y1 + box.y2) / 2
    if side_w < side_h:
        cy = _slide(cy, fy, (side_h - side_w) / 2)
    else:
        cx = _slide(cx, fx, (side_w - side_h) / 2)
    return round(cx - half), round(cy - half), round(cx + half), round(cy + half)


def auto_expand_ratio(box: FaceBox, width: int, height: int) -> float:
    """Crop margin chosen from the face's linear share of the image, s = sqrt(face area / image area).

    Rule: 0.15 for s ≤ 0.15, 0.5 for s ≥ 0.45, linear in between. A face that is a small part of the picture
    (head-and-shoulders or wider, s ≈ 0.2 for the bundled portrait → ≈ 0.2) gets the 0.15–0.2 margin the published
    design recommends, so the generated frame is spent on the face and not on background. A close-up (large s)
    gets up to the official 0.5: there the expanded box is clamped by the image borders anyway, so the large margin
    keeps the framing the user chose and leaves the head room to move instead of cutting into it.
    """
    share = math.sqrt(max(box.area, 0.0) / (width * height))
    t = (share - AUTO_SHARE_TIGHT) / (AUTO_SHARE_LOOSE - AUTO_SHARE_TIGHT)
    return AUTO_RATIO_MIN + (AUTO_RATIO_MAX - AUTO_RATIO_MIN) * min(max(t, 0.0), 1.0)


def face_mask(box: FaceBox, width: int, height: int, area: float = 1.1) -> np.ndarray:
    """Binary uint8 [H, W] mask (0/255) of the face box enlarged by ``area`` about its floored centre (MODEL.md §3.3)."""
    mask_w, mask_h = box.width * area, box.height * area
    cx, cy = math.floor((box.x1 + box.x2) / 2), math.floor((box.y1 + box.y2) / 2)
    x1, y1 = max(cx - math.floor(mask_w / 2), 0), max(cy - math.floor(mask_h / 2), 0)
    x2, y2 = min(cx + math.floor(mask_w / 2), width), min(cy + math.floor(mask_h / 2), height)
    mask = np.zeros((height, width), dtype=np.uint8)
    mask[int(y1):int(y2), int(x1):int(x2)] = 255
    return mask


def working_size(width: int, height: int, min_resolution: int = 512) -> tuple[int, int]:
    """(W', H') of the generated frames: short side scaled to ``min_resolution``, each side rounded (half-to-even)
    to a multiple of 64, so the aspect ratio changes slightly."""
    scale = min_resolution / min(width, height)
    return (round(width * scale / WORKING_MULTIPLE) * WORKING_MULTIPLE,
            round(height * scale / WORKING_MULTIPLE) * WORKING_MULTIPLE)


def resolve_expand_ratio(expand_ratio: float | str, box: FaceBox, width: int, height: int) -> float:
    if expand_ratio == "auto":
        return auto_expand_ratio(box, width, height)
    if isinstance(expand_ratio, str) or not 0.0 <= float(expand_ratio) <= 1.0:
        raise SonicInputError(f"expand_ratio must be 'auto' or a number in [0, 1], got {expand_ratio!r}")
    return float(expand_ratio)


def prepare_reference(image: Image.Image, detector: Detector, min_resolution: int = 512,
                      expand_ratio: float | Literal["auto"] = "auto", face_area: float = 1.1) -> Reference:
    """Crop, mask and resize a portrait the way the official preprocessing does (MODEL.md §3.2–3.3)."""
    original = ImageOps.exif_transpose(image).convert("RGB")
    face = select_face(detect_faces(np.asarray(original), detector))
    ratio = resolve_expand_ratio(expand_ratio, face, *original.size)
    crop_box = square_crop_box(face, *original.size, ratio)
    cropped = original.crop(crop_box)
    found = detect_faces(np.asarray(cropped), detector)
    if not found:
        raise SonicFaceError(f"the face found in the portrait is lost after cropping it to {crop_box}; "
                             f"{NO_FACE_FIX}, or set expand_ratio higher")
    mask_box = select_face(found)
    mask = Image.fromarray(face_mask(mask_box, *cropped.size, face_area))
    size = working_size(*cropped.size, min_resolution)
    if size != cropped.size:
        cropped = cropped.resize(size, Image.LANCZOS)
        mask = mask.resize(size, Image.LANCZOS)
    pixels = torch.from_numpy(np.array(cropped)).permute(2, 0, 1).float() / 255.0
    return Reference(image=cropped, ref_image=(pixels - 0.5) / 0.5,
                     face_mask=torch.from_numpy(np.array(mask))[None].float() / 255.0,
                     face_box=face, crop_box=crop_box, mask_box=mask_box, expand_ratio=ratio, clip_source=cropped,
                     original=original)
