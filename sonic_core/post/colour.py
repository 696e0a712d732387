"""Colour consistency: undo a colour drift of the frames away from the reference portrait.

Model: a drifting frame is the intended one with a per-channel (R, G, B) gain and offset. The reference is
registered to each frame (:class:`~sonic_core.post.register.Registration`: an affine warp, so a moving head is
followed), and over the pixels of the match region — the frame less the mouth region, where the generated mouth
legitimately differs from the still portrait — that the registered reference covers outside its own mouth region,
and that are neither dark nor clipped in either, each channel's mean and standard deviation of the frame are
moved toward the registered reference's (a statistics transfer over the same content): with strength ``s``,
mean' = mean + s (mean_ref − mean) and std' = std · (std_ref / std)^s (the ratio clamped to [0.5, 2]). That is a
per-channel gain and offset, which undoes a per-channel gain/offset drift exactly (short of clipping). Statistics of
a fixed region of the frame instead move with the head (the content in the region changes), and a match to the
reference's statistics of that region then shifted the colours of a moving head without drift (0.7 ΔE) and left
30 % of a drift. The transfer is applied to every pixel of the frame, mouth included, so the frame stays coherent.

Every frame is matched on its own (the registration starts from the previous frame's warp): chunks stream through
with no buffer. Each frame's transfer is fitted on thousands of pixels, so it does not jitter from frame to frame
(it moves an undrifted moving clip by 0.03 ΔE in all) and needs no temporal smoothing, which would lag a drift.

Two ΔE figures (CIE76: Euclidean distance in CIELAB) against the reference, both over the match region and
averaged over the frames, both on a fixed grid of every :data:`SAMPLE_STEP`-th pixel each way (the Lab conversion of
every pixel would cost more than the match itself): ``delta_e`` (:func:`colour_error`) is the mean per-pixel
difference — on a still clip it is the colour error itself, on a moving one it also counts the motion; ``cast`` is
the difference of the mean colours — the colour drift alone, blind to motion and noise.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from ..errors import SonicInputError, number_in
from ..face.box import FaceBox
from ..frames import CHUNK, check_frames
from .lipsync import mouth_region
from .register import Registration

MAX_STD_RATIO = 2.0
FIT_STRIDE = 2  # the transfer is fitted on every 2nd pixel each way of the match region
CLIPPED = 0.02  # pixels this close to black or white in a channel (of frame or reference) are left out of the fit
MIN_FIT_PIXELS = 64  # fewer clear pixels than this: all covered ones are used; fewer covered: the frame is kept
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


def _clear(pixels: np.ndarray) -> np.ndarray:
    """[P] boolean: pixels [P, 3] neither dark nor clipped in any channel (where a gain and offset hold)."""
    return ((pixels > CLIPPED) & (pixels < 1.0 - CLIPPED)).all(axis=1)


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
        self.registration = Registration(reference, self.region)
        self.reference = reference.float().cpu()[None]  # [1, 3, H, W]
        rows, cols = np.nonzero(self.region.numpy()[FIT_STRIDE // 2::FIT_STRIDE, FIT_STRIDE // 2::FIT_STRIDE])
        self.fit_rows, self.fit_cols = rows * FIT_STRIDE + FIT_STRIDE // 2, cols * FIT_STRIDE + FIT_STRIDE // 2
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

    def transfer(self, frame: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """(frame's, reference's) per-channel mean and standard deviation, [2, 3] each, over the pixels of the
        match region that the registered reference covers (outside its own mouth region) and that are clear in
        both (:func:`_clear`)."""
        warp = self.registration(frame)
        height, width = self.region.shape
        x = warp[0, 0] * self.fit_cols + warp[0, 1] * self.fit_rows + warp[0, 2]
        y = warp[1, 0] * self.fit_cols + warp[1, 1] * self.fit_rows + warp[1, 2]
        inside = (x >= 0) & (x <= width - 1) & (y >= 0) & (y <= height - 1)
        inside[inside] = self.region.numpy()[np.rint(y[inside]).astype(int), np.rint(x[inside]).astype(int)]
        grid = torch.from_numpy(np.stack([x[inside] / (width - 1), y[inside] / (height - 1)], axis=1) * 2 - 1)
        registered = torch.nn.functional.grid_sample(self.reference, grid.float()[None, None], align_corners=True)
        registered = registered[0, :, 0].T.numpy()  # [P, 3], bilinear
        rows, cols = (torch.from_numpy(index[inside]).to(frame.device) for index in (self.fit_rows, self.fit_cols))
        pixels = frame[:, rows, cols].float().cpu().numpy().T  # [P, 3]
        if len(pixels) < MIN_FIT_PIXELS:  # the registered reference barely covers the frame: leave it as it is
            unchanged = np.stack([np.zeros(3), np.ones(3)])
            return unchanged, unchanged
        clear = _clear(pixels) & _clear(registered)
        if clear.sum() < MIN_FIT_PIXELS:
            clear = np.ones(len(pixels), dtype=bool)
        pixels, registered = pixels[clear].astype(np.float64), registered[clear].astype(np.float64)
        return (np.stack([pixels.mean(axis=0), pixels.std(axis=0)]),
                np.stack([registered.mean(axis=0), registered.std(axis=0)]))

    def apply(self, frames: torch.Tensor) -> torch.Tensor:
        """Matched frames [n, 3, H, W] (same dtype and device)."""
        frames = check_frames(frames)
        self.check_size(frames)
        out = torch.empty_like(frames)
        for start in range(0, len(frames), CHUNK):
            chunk = frames[start:start + CHUNK]
            self._before.append(self.measure(chunk))
            if self.strength > 0:
                stats = [self.transfer(frame) for frame in chunk]
                found = torch.from_numpy(np.stack([frame for frame, _ in stats])).to(chunk.device)  # [n, 2, 3]
                wanted = torch.from_numpy(np.stack([reference for _, reference in stats])).to(chunk.device)
                mean, std = found[:, 0], found[:, 1].clamp_min(1e-6)
                ratio = (wanted[:, 1] / std).clamp(1 / MAX_STD_RATIO, MAX_STD_RATIO) ** self.strength
                target = mean + self.strength * (wanted[:, 0] - mean)
                rgb = (chunk.double() - mean[:, :, None, None]) * ratio[:, :, None, None] + target[:, :, None, None]
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


def delta_e_between(frames: torch.Tensor, truth: torch.Tensor, face_box: FaceBox | None = None) -> float:
    """Mean per-pixel ΔE between frames [F, 3, H, W] and the clip they should be (e.g. before a drift) over the
    match region, on the ΔE sample grid: the colour error left, free of the motion and noise a still reference
    would count."""
    frames, truth = check_frames(frames), check_frames(truth)
    sample = sample_grid(match_region(frames.shape[2], frames.shape[3], face_box)).to(frames.device)
    total = 0.0
    for start in range(0, len(frames), CHUNK):
        lab = rgb_to_lab(frames[start:start + CHUNK][:, :, sample])
        total += float((lab - rgb_to_lab(truth[start:start + CHUNK][:, :, sample])).pow(2).sum(dim=1).sqrt().sum())
    return total / (len(frames) * int(sample.sum()))
