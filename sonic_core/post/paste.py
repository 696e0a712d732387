"""Paste-back: put each generated frame into the original image at the square crop it was made from.

The generation cropped ``crop_box`` (x1, y1, x2, y2) out of the original and resized it to the working size; the
paste inverts that geometry: each frame is resized (bicubic, antialiased) from the working size back to exactly the
crop box's size — the two axes separately, since the working size's rounding to multiples of 64 changes the aspect
ratio slightly — and blended into the original with a feathered mask. The mask ramps (smoothstep) from 0 at the
crop's edge to 1 at ``feather`` × the crop's side inside it, along each edge that lies inside the image; an edge on
the image border needs no blend and is pasted to the border. A crop box that reaches past the image (a crop padded
beyond the border) is clipped to the image: the padded part of the frames is not pasted.

A generated face is never exactly as bright as the original (exposure and colour wander a little), and blending
two images of different brightness over the ramp draws that difference as a gradient: the seam. So before the blend
each frame's local exposure is matched to the original's near the inner edges: the frame is multiplied, per
channel, by the ratio of the original to the frame, both low-passed over the ring where the blend shows the original
(normalised convolution with a Gaussian of :data:`MATCH_SIGMA` feather widths, so texture and noise are not copied,
and the face inside the ring — a moving mouth — never steers the gain) — in full at the edge, fading out
(smoothstep) over :data:`MATCH_SPAN` feather widths inside the crop. A gain rather than an offset, because an exposure change scales
the texture's contrast as well as its level; the brightness difference then turns over a band three times wider
than the texture's ramp, and the middle of the generated face is left as it was generated.

Each frame is pasted on its own, so chunks stream through (:meth:`PasteBack.paste`).

The seam measure (:func:`seam_ratio`): the band where the paste meets the original — from two pixels outside each
inner edge to the end of the blend ramp — is cut into 4-pixel strips parallel to the edges; in each, the mean luma
gradient magnitude of the pasted frame is divided by the same mean of the untouched original, and the largest ratio
is the seam. A visible seam is an edge, which raises the ratio of the strip it runs through; 1 means the boundary
looks like the original image. (A ratio below 1 is a softer generated face, not a seam.)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import SonicInputError, number_in
from ..frames import CHUNK, check_frames

DEFAULT_FEATHER = 0.1  # share of the crop's side the blend ramp spans
MAX_FEATHER = 0.5
SEAM_MARGIN = 2  # pixels outside an inner edge that the seam measure starts at
SEAM_STRIP = 4  # width (px) of the strips the seam measure compares
MATCH_SPAN = 3.0  # the low-frequency match fades out over this many feather widths inside the crop ...
MAX_MATCH_SPAN = 0.5  # ... but at most this share of the crop's shorter side
MATCH_SIGMA = 1.0  # the low-pass of the match: a Gaussian of this many feather widths
MAX_MATCH_GAIN = 2.0  # the match's local gain is clamped to [1 / MAX_MATCH_GAIN, MAX_MATCH_GAIN]
BLUR_SCALE = 0.25  # a wide Gaussian blur runs on images shrunk by this many of its sigmas
MATCH_FLOOR = 1e-6  # low-passed levels (and ring support) below this count as none (no division by zero)
_LUMA = torch.tensor([0.299, 0.587, 0.114])


def check_feather(feather: Any, name: str = "feather") -> float:
    """A feather width in [0, 0.5] (share of the crop's side) as a float; one line naming ``name`` otherwise."""
    return number_in(feather, 0.0, MAX_FEATHER, f"{name}: expected a share of the crop's side in [0, {MAX_FEATHER}] "
                                                 f"(0 = hard edge), got {feather!r}")


def check_crop_box(crop_box: Any, height: int, width: int, name: str = "crop_box") -> tuple[int, int, int, int]:
    """Integer (x1, y1, x2, y2) with a positive size that overlaps a ``width`` × ``height`` image."""
    try:
        x1, y1, x2, y2 = (int(v) for v in crop_box)
    except (TypeError, ValueError):
        raise SonicInputError(f"{name}: expected (x1, y1, x2, y2) in pixels of the original, got {crop_box!r}") \
            from None
    if x2 <= x1 or y2 <= y1 or x2 <= 0 or y2 <= 0 or x1 >= width or y1 >= height:
        raise SonicInputError(f"{name} {(x1, y1, x2, y2)}: must have a positive size and overlap the "
                              f"{width}x{height} original; pass the crop box the portrait was prepared with")
    return x1, y1, x2, y2


def as_image_tensor(image: Any, name: str = "original") -> torch.Tensor:
    """An RGB image as float32 [3, H, W] in [0, 1]: a PIL image, a uint8/float numpy [H, W, 3] or a tensor
    [3, H, W]."""
    if isinstance(image, torch.Tensor):
        tensor = image.detach().cpu()
    else:
        array = np.asarray(image.convert("RGB") if hasattr(image, "convert") else image)
        if array.ndim != 3 or array.shape[2] != 3:
            raise SonicInputError(f"{name}: expected an RGB image [H, W, 3], got shape {list(array.shape)}")
        tensor = torch.from_numpy(array.astype(np.float32) / (255.0 if array.dtype == np.uint8 else 1.0))
        tensor = tensor.permute(2, 0, 1)
    if tensor.dim() != 3 or tensor.shape[0] != 3 or not tensor.is_floating_point():
        raise SonicInputError(f"{name}: expected a float RGB image [3, H, W] in [0, 1], got {tensor.dtype} "
                              f"{list(tensor.shape)}")
    return tensor.float().contiguous()


def _ramp(length: int, start: float, ramp_at_start: bool, ramp_at_end: bool, width: float) -> torch.Tensor:
    """Weights [length] along one axis of the visible crop: a smoothstep from each inner edge over ``width`` px.

    ``start`` is the crop edge's offset before the first visible pixel (0 unless the crop was clipped)."""
    centres = torch.arange(length, dtype=torch.float32) + 0.5 + start
    weight = torch.ones(length)
    if width > 0:
        if ramp_at_start:
            weight = torch.minimum(weight, (centres / width).clamp(0, 1))
        if ramp_at_end:
            total = length + start  # the crop's far edge; a clipped far side is never an inner edge
            weight = torch.minimum(weight, ((total - centres) / width).clamp(0, 1))
    return weight * weight * (3 - 2 * weight)


@dataclass(frozen=True)
class PasteBack:
    """Pastes frames of the crop ``crop_box`` back into ``original`` [3, H, W] (float, [0, 1]).

    ``feather`` is the blend ramp's width as a share of the crop's shorter side (0: a hard edge)."""

    original: torch.Tensor
    crop_box: tuple[int, int, int, int]
    feather: float = DEFAULT_FEATHER

    def __post_init__(self) -> None:
        object.__setattr__(self, "original", as_image_tensor(self.original))
        object.__setattr__(self, "feather", check_feather(self.feather))
        object.__setattr__(self, "crop_box", check_crop_box(self.crop_box, self.height, self.width))

    @property
    def height(self) -> int:
        return int(self.original.shape[1])

    @property
    def width(self) -> int:
        return int(self.original.shape[2])

    @property
    def visible_box(self) -> tuple[int, int, int, int]:
        """The part of the crop box inside the image: what is pasted."""
        x1, y1, x2, y2 = self.crop_box
        return max(x1, 0), max(y1, 0), min(x2, self.width), min(y2, self.height)

    @property
    def feather_px(self) -> float:
        x1, y1, x2, y2 = self.crop_box
        return self.feather * min(x2 - x1, y2 - y1)

    def inner_edges(self) -> dict[str, bool]:
        """Which sides of the crop lie inside the image (the sides that are blended)."""
        x1, y1, x2, y2 = self.crop_box
        return {"left": x1 > 0, "top": y1 > 0, "right": x2 < self.width, "bottom": y2 < self.height}

    def region_mask(self, width: float | None = None) -> torch.Tensor:
        """Blend weights [h, w] over the visible box: ramps ``width`` px wide (default: the feather) from the inner
        edges."""
        width = self.feather_px if width is None else width
        x1, y1, x2, y2 = self.crop_box
        vx1, vy1, vx2, vy2 = self.visible_box
        edges = self.inner_edges()
        columns = _ramp(vx2 - vx1, vx1 - x1, edges["left"], edges["right"], width)
        rows = _ramp(vy2 - vy1, vy1 - y1, edges["top"], edges["bottom"], width)
        return rows[:, None] * columns[None, :]

    def match_weight(self) -> torch.Tensor:
        """Weights [h, w] of the low-frequency match over the visible box: 1 at the inner edges, fading to 0 over
        :data:`MATCH_SPAN` feather widths (0 everywhere for a hard edge or without an inner edge)."""
        x1, y1, x2, y2 = self.crop_box
        span = max(self.feather_px, min(MATCH_SPAN * self.feather_px, MAX_MATCH_SPAN * min(x2 - x1, y2 - y1)))
        return 1.0 - self.region_mask(span)

    def mask(self) -> torch.Tensor:
        """Blend weights [H, W] over the whole original (0 outside the pasted box)."""
        full = torch.zeros(self.height, self.width)
        vx1, vy1, vx2, vy2 = self.visible_box
        full[vy1:vy2, vx1:vx2] = self.region_mask()
        return full

    def paste(self, frames: torch.Tensor) -> torch.Tensor:
        """Frames [F, 3, h, w] of the crop (any working size) -> full frames [F, 3, H, W]."""
        frames = check_frames(frames)
        x1, y1, x2, y2 = self.crop_box
        vx1, vy1, vx2, vy2 = self.visible_box
        weight = self.region_mask().to(frames.device)
        match = self.match_weight().to(frames.device)
        sigma = MATCH_SIGMA * self.feather_px
        background = self.original[:, vy1:vy2, vx1:vx2].to(frames.device)
        ring = 1.0 - weight  # where the original shows through the blend: the ring the exposure is measured on
        reach, support = None, None
        if bool(match.any()):
            reach = gaussian_blur((background * ring)[None], sigma)
            support = gaussian_blur(ring[None, None], sigma)
        out = self.original.to(frames.device).expand(len(frames), -1, -1, -1).clone()
        for start in range(0, len(frames), CHUNK):
            chunk = frames[start:start + CHUNK].float()
            resized = F.interpolate(chunk, size=(y2 - y1, x2 - x1), mode="bicubic", align_corners=False,
                                    antialias=True).clamp(0, 1)
            visible = resized[:, :, vy1 - y1:vy2 - y1, vx1 - x1:vx2 - x1]
            if reach is not None:
                gain = (reach / gaussian_blur(visible * ring, sigma).clamp_min(MATCH_FLOOR)).clamp(
                    1.0 / MAX_MATCH_GAIN, MAX_MATCH_GAIN)
                visible = visible * (1.0 + match * torch.where(support > MATCH_FLOOR, gain - 1.0, 0.0))
            out[start:start + CHUNK, :, vy1:vy2, vx1:vx2] = background + weight * (visible - background)
        return out

    def edge_distance(self) -> torch.Tensor:
        """[H, W]: each pixel's signed distance (px, positive inside the crop) to the nearest inner edge, within the
        crop grown by :data:`SEAM_MARGIN`; infinite elsewhere and where no edge is inner."""
        x1, y1, x2, y2 = self.crop_box
        ys, xs = torch.arange(self.height)[:, None] + 0.5, torch.arange(self.width)[None, :] + 0.5
        near = ((xs > x1 - SEAM_MARGIN) & (xs < x2 + SEAM_MARGIN) & (ys > y1 - SEAM_MARGIN) & (ys < y2 + SEAM_MARGIN))
        distance = torch.full((self.height, self.width), math.inf)
        offsets = {"left": xs - x1, "right": x2 - xs, "top": ys - y1, "bottom": y2 - ys}
        for side, inner in self.inner_edges().items():
            if inner:
                distance = torch.minimum(distance, offsets[side].expand(self.height, self.width))
        return torch.where(near, distance, torch.tensor(math.inf))

    def seam_strips(self) -> list[torch.Tensor]:
        """Boolean [H, W] strips :data:`SEAM_STRIP` px wide along the inner edges, from :data:`SEAM_MARGIN` px
        outside the crop to the end of the blend ramp (empty when no edge is inner)."""
        distance = self.edge_distance()
        strips, low = [], -float(SEAM_MARGIN)
        while low < max(self.feather_px, SEAM_STRIP):
            strip = (distance >= low) & (distance < low + SEAM_STRIP)
            if bool(strip.any()):
                strips.append(strip)
            low += SEAM_STRIP
        return strips

    def seam_ratio(self, pasted: torch.Tensor) -> float | None:
        """:func:`seam_ratio` of one pasted frame [3, H, W] against the original; None without an inner edge."""
        strips = self.seam_strips()
        return seam_ratio(pasted, self.original, strips) if strips else None

    def describe(self) -> dict[str, Any]:
        return {"crop_box": list(self.crop_box), "pasted_box": list(self.visible_box),
                "frame_size": [self.width, self.height], "feather": self.feather,
                "feather_px": round(self.feather_px, 2),
                "blended_edges": [side for side, inner in self.inner_edges().items() if inner]}


def gaussian_blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of images [N, C, H, W] (cut at 3 sigma, edges reflected; as is for sigma < 0.5).

    A wide blur runs on the images shrunk by :data:`BLUR_SCALE` sigma (area-averaged), then is enlarged back
    (bilinear): the result is smooth at that scale anyway, and the cost no longer grows with sigma squared."""
    factor = int(sigma * BLUR_SCALE)
    if factor >= 2 and min(images.shape[2:]) >= 4 * factor:
        small = F.interpolate(images, scale_factor=1.0 / factor, mode="area")
        return F.interpolate(gaussian_blur(small, sigma / factor), size=images.shape[2:], mode="bilinear",
                             align_corners=False)
    radius = min(int(math.ceil(3.0 * sigma)), images.shape[2] - 1, images.shape[3] - 1)
    if sigma < 0.5 or radius < 1:
        return images
    taps = torch.exp(-0.5 * (torch.arange(-radius, radius + 1, dtype=images.dtype, device=images.device) / sigma) ** 2)
    taps = taps / taps.sum()
    channels = images.shape[1]
    padded = F.pad(images, (radius, radius, radius, radius), mode="reflect")
    rows = F.conv2d(padded, taps.view(1, 1, -1, 1).expand(channels, 1, -1, 1).contiguous(), groups=channels)
    return F.conv2d(rows, taps.view(1, 1, 1, -1).expand(channels, 1, 1, -1).contiguous(), groups=channels)


def gradient_magnitude(image: torch.Tensor) -> torch.Tensor:
    """|∇ luma| [H, W] of an RGB image [3, H, W] (central differences, one-sided at the border)."""
    luma = (image.float().cpu() * _LUMA.view(3, 1, 1)).sum(dim=0)
    dy, dx = torch.gradient(luma)
    return torch.sqrt(dx * dx + dy * dy)


def seam_ratio(pasted: torch.Tensor, original: torch.Tensor, strips: list[torch.Tensor]) -> float:
    """The largest, over ``strips``, of the mean gradient magnitude of ``pasted`` divided by that of ``original``
    over the same strip."""
    before, after = gradient_magnitude(original), gradient_magnitude(pasted)
    return max(float(after[strip].mean()) / max(float(before[strip].mean()), 1e-12) for strip in strips)
