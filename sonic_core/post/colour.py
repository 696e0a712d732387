"""Colour consistency: match each frame's colour distribution to the reference portrait.

Over the match region — the whole frame less the mouth region, where the generated mouth legitimately differs from
the still portrait — each frame's per-channel (R, G, B) mean and standard deviation are moved toward the
reference's (a statistics transfer): with strength ``s``, mean' = mean + s (mean_ref − mean) and
std' = std · (std_ref / std)^s (the ratio clamped to [0.5, 2]). That is a per-channel gain and offset, which undoes
a per-channel gain/offset drift exactly (short of clipping). The transfer is applied to every pixel of the frame,
mouth included, so the frame stays coherent.

Every frame is matched on its own against fixed reference statistics: chunks stream through with no buffer.

Two ΔE figures (CIE76: Euclidean distance in CIELAB) against the reference, both over the match region and
averaged over the frames, both on a fixed grid of every :data:`SAMPLE_STEP`-th pixel each way (the Lab conversion of
every pixel would cost more than the match itself): ``delta_e`` (:func:`colour_error`) is the mean per-pixel
difference — on a still clip it is the colour error itself, on a moving one it also counts the motion; ``cast`` is
the difference of the mean colours — the colour drift alone, blind to motion and noise.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch

from ..errors import SonicInputError, number_in
from ..face.box import FaceBox
from ..frames import CHUNK, check_frames
from .lipsync import mouth_region

MAX_STD_RATIO = 2.0
SAMPLE_STEP = 4  # ΔE is measured on every 4th pixel each way of the match region
_RGB_TO_XYZ = torch.tensor([[0.4124564, 0.3575761, 0.1804375],
                            [0.2126729, 0.7151522, 0.0721750],
                            [0.0193339, 0.1191920, 0.9503041]], dtype=torch.float64)
_WHITE = torch.tensor([0.95047, 1.0, 1.08883], dtype=torch.float64)  # D65
_DELTA = 6.0 / 29.0


def check_strength(strength: Any, name: str = "colour_strength") -> float:
    """A strength in [0, 1] as a float; one line naming ``name`` otherwise."""
    return number_in(strength, 0.0, 1.0, f"{name}: expected a number in [0, 1] (0 = off, 1 = full match), "
                                         f"got {strength!r}")


def rgb_to_lab(rgb: torch.Tensor) -> torch.Tensor:
    """sRGB [..., 3, P] in [0, 1] (P pixels) -> CIELAB (D65) [..., 3, P] (float64)."""
    rgb = rgb.double().clamp(0, 1)
    linear = torch.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)
    xyz = torch.einsum("ij,...jp->...ip", _RGB_TO_XYZ.to(rgb.device), linear)
    ratio = xyz / _WHITE.to(rgb.device).view(3, 1)
    f = torch.where(ratio > _DELTA ** 3, ratio.clamp_min(1e-12) ** (1 / 3), ratio / (3 * _DELTA ** 2) + 4 / 29)
    fx, fy, fz = f.unbind(dim=-2)
    return torch.stack([116 * fy - 16, 500 * (fx - fy), 200 * (fy - fz)], dim=-2)


def match_region(height: int, width: int, box: FaceBox | None) -> torch.Tensor:
    """Boolean [H, W]: the frame less the mouth region (everything without a face box)."""
    region = torch.ones(height, width, dtype=torch.bool)
    if box is not None:
        rows, cols = mouth_region(box, height, width)
        region[rows, cols] = False
    return region


def sample_grid(region: torch.Tensor) -> torch.Tensor:
    """Boolean [H, W]: the pixels of ``region`` on the every-:data:`SAMPLE_STEP`-th grid (the ΔE sample)."""
    grid = torch.zeros_like(region)
    grid[SAMPLE_STEP // 2::SAMPLE_STEP, SAMPLE_STEP // 2::SAMPLE_STEP] = True
    return grid & region


def _region_stats(images: torch.Tensor, region: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image, per-channel mean and std over ``region`` of images [n, 3, H, W] -> ([n, 3], [n, 3])."""
    pixels = images[:, :, region]
    return pixels.mean(dim=2), pixels.std(dim=2).clamp_min(1e-6)


@dataclass(frozen=True)
class ColourReport:
    """What the colour match measured and applied (ΔE: mean CIE76 to the reference over the match region)."""

    applied: bool
    strength: float
    delta_e_before: float
    delta_e_after: float
    cast_before: float  # ΔE between the mean colours of frame and reference
    cast_after: float
    frames: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class ColourMatch:
    """Matches frames of the crop to ``reference`` [3, H, W] (the portrait as the model saw it) at ``strength``."""

    def __init__(self, reference: torch.Tensor, face_box: FaceBox | None = None, strength: float = 1.0) -> None:
        if reference.dim() != 3 or reference.shape[0] != 3:
            raise SonicInputError(f"reference: expected an RGB image [3, H, W], got {list(reference.shape)}")
        self.strength = check_strength(strength)
        self.region = match_region(reference.shape[1], reference.shape[2], face_box)
        self.sample = sample_grid(self.region)
        self.reference_lab = rgb_to_lab(reference.cpu()[:, self.sample])
        mean, std = _region_stats(reference.cpu().double()[None], self.region)
        self.mean, self.std = mean[0], std[0]
        self._before: list[torch.Tensor] = []  # per chunk: [n, 2] (delta_e, cast) of each frame
        self._after: list[torch.Tensor] = []

    def check_size(self, frames: torch.Tensor) -> None:
        if tuple(frames.shape[2:]) != tuple(self.region.shape):
            raise SonicInputError(f"frames of {frames.shape[3]}x{frames.shape[2]}: the reference is "
                                  f"{self.region.shape[1]}x{self.region.shape[0]}; match the frames of the "
                                  "generation that portrait was prepared for")

    def measure(self, frames: torch.Tensor) -> torch.Tensor:
        """[n, 2]: each frame's mean per-pixel ΔE and mean-colour ΔE (cast) to the reference, on the sample."""
        lab = rgb_to_lab(frames[:, :, self.sample.to(frames.device)]).cpu()
        delta_e = (lab - self.reference_lab).pow(2).sum(dim=1).sqrt().mean(dim=1)
        cast = (lab.mean(dim=2) - self.reference_lab.mean(dim=1)).pow(2).sum(dim=1).sqrt()
        return torch.stack([delta_e, cast], dim=1)

    def apply(self, frames: torch.Tensor) -> torch.Tensor:
        """Matched frames [n, 3, H, W] (same dtype and device)."""
        frames = check_frames(frames)
        self.check_size(frames)
        out = torch.empty_like(frames)
        for start in range(0, len(frames), CHUNK):
            chunk = frames[start:start + CHUNK]
            self._before.append(self.measure(chunk))
            if self.strength > 0:
                rgb = chunk.double()
                mean, std = _region_stats(rgb, self.region.to(rgb.device))
                ratio = (self.std.to(rgb.device) / std).clamp(1 / MAX_STD_RATIO, MAX_STD_RATIO) ** self.strength
                target = mean + self.strength * (self.mean.to(rgb.device) - mean)
                rgb = (rgb - mean[:, :, None, None]) * ratio[:, :, None, None] + target[:, :, None, None]
                out[start:start + CHUNK] = rgb.clamp(0, 1).to(frames.dtype)
                self._after.append(self.measure(out[start:start + CHUNK]))
            else:
                out[start:start + CHUNK] = chunk
                self._after.append(self._before[-1])
        return out

    def report(self) -> ColourReport:
        def means(rows: list[torch.Tensor]) -> list[float]:
            return [round(float(v), 4) for v in torch.cat(rows).mean(dim=0)] if rows else [0.0, 0.0]

        (delta_before, cast_before), (delta_after, cast_after) = means(self._before), means(self._after)
        return ColourReport(self.strength > 0, self.strength, delta_before, delta_after, cast_before, cast_after,
                            sum(len(rows) for rows in self._before))


def colour_error(frames: torch.Tensor, reference: torch.Tensor, face_box: FaceBox | None = None) -> tuple[float, float]:
    """(mean per-pixel ΔE, mean-colour ΔE) of frames [F, 3, H, W] to ``reference`` [3, H, W] over the frame less the
    mouth region, averaged over the frames (:meth:`ColourMatch.measure`)."""
    matcher = ColourMatch(reference, face_box, 0.0)
    frames = check_frames(frames)
    matcher.check_size(frames)
    values = torch.cat([matcher.measure(frames[start:start + CHUNK]) for start in range(0, len(frames), CHUNK)])
    delta_e, cast = values.mean(dim=0).tolist()
    return delta_e, cast
