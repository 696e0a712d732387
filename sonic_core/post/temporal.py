"""Flicker: measure per-frame brightness/colour statistics and remove low-frequency strobing.

Model: a strobing frame is the intended frame times a per-frame, per-channel gain (exposure pumping, roughly once a
second in generated clips). Statistics: each channel's brightness level, the running sum of the frame-to-frame
changes (:func:`log_steps`: the median log ratio of a frame and the one before it, moved onto it by phase
correlation, over the stats region — the whole frame less the mouth region, so a speaking mouth never steers the
correction). A strobe scales every pixel alike and the median sees it; a moving head changes a region's mean as much
as a strobe would (edges and the mouth move in and out of it) but only some pixels of the compensated pair, so the
levels keep 0.07-0.25 % of head motion where the region's mean keeps 0.4-2.6 %. For the report: the mean luma of
the frame, of the face region (the face box less the mouth) and of the background (outside the face box grown by a
quarter).

Correction: each channel's level is low-passed with a Gaussian of :data:`TIME_SCALE_S` (its response is 0.7 % at
1 Hz, 4 % at 0.8 Hz, 29 % at 0.5 Hz, 64 % at 0.3 Hz); each frame is multiplied per channel by
exp(low-passed − level), so its brightness follows the slow trend and the strobe is gone. Near the clip's ends the
Gaussian is one-sided and an average over part of a strobe cycle keeps part of the strobe, so where a strobe stands
out in the levels around a frame (:func:`strobe_period`: a sinusoid of 0.1 to 2.2 s explaining most of what a
parabola leaves, of at least :data:`MIN_STROBE_AMPLITUDE`), the levels are first averaged over exactly one period
(:func:`period_box`), which leaves nothing of that period wherever the average sits; slow head motion, whose best fit
is a period longer than any strobe's, is not taken for one. Where no strobe stands out, only flicker above what head
motion leaves in the levels is corrected (:func:`flicker_weight`), so a clip without flicker is left as it is and
its mouth motion with it. Slow lighting changes (below ~0.3 Hz) pass.

Streaming: the Gaussian needs :data:`TIME_SCALE_S` × 3 (1.5 s) of look-ahead, so :class:`Deflicker` holds back that
many frames and releases each frame once the statistics after it are known — a bounded window, not the whole clip.

The flicker figure (report): RMS, in percent, of the whole-frame mean luma's deviation from its own low-passed
trend (the same Gaussian), on the input and on the output.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from typing import Any

import cv2
import numpy as np
import torch

from ..face.box import FaceBox, clip_region
from ..frames import check_fps, check_frames
from .lipsync import mouth_region
from .signals import parabolic_peak

TIME_SCALE_S = 0.5  # standard deviation of the Gaussian low-pass of the statistics
SUPPORT = 3.0  # the Gaussian is cut at this many standard deviations (the look-ahead)
MAX_GAIN = 1.5  # per-frame gains are clamped to [1 / MAX_GAIN, MAX_GAIN]
BACKGROUND_MARGIN = 0.25  # the background is outside the face box grown by this share each way
_LUMA = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
_EPS = 1e-4
MIN_STROBE_PERIOD_FRAMES = 2.5  # shortest strobe period looked for
MAX_STROBE_PERIOD_S = 2.2  # longest (a box this long still fits the look-ahead either side of a frame)
SEARCH_BEYOND = 1.5  # periods are searched this far past the longest strobe, so a slow drift (head motion) that
# fits the longest periods best is told from a strobe, whose fit peaks at its period
STROBE_PERIOD_STEPS = 96  # candidate periods, geometrically spaced
MIN_STROBE_SHARE = 0.5  # share of the detrended log-luma variance the strobe's sinusoid must explain
MIN_STROBE_AMPLITUDE = 0.006  # and its least relative amplitude (head motion leaves up to ~0.3 % in the levels)
ANALYSIS_SIZE = 256  # brightness changes are measured on frames area-downscaled to at most this side
STEP_DARK = 0.02  # pixels this close to black or to white in either frame do not measure the change
FLICKER_FLOOR = 0.004  # RMS of the log levels about their low-pass below which no flicker is corrected: head
# motion leaves 0.07-0.25 % in them (bench/quality_eval.py's moving heads), a 1 % strobe 0.7 %


@dataclass(frozen=True)
class FlickerReport:
    """What the deflicker measured and applied; flicker figures are RMS % of mean luma about its slow trend."""

    applied: bool
    flicker_before: float
    flicker_after: float
    face_flicker_before: float | None
    background_flicker_before: float | None
    max_gain_change: float  # largest |gain - 1| applied to any channel of any frame
    time_scale_s: float
    look_ahead_frames: int
    frames: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def stats_masks(height: int, width: int, box: FaceBox | None) -> tuple[torch.Tensor, torch.Tensor | None,
                                                                        torch.Tensor | None]:
    """(stats region, face region, background) as boolean [H, W] masks; without a box: everything, None, None."""
    everything = torch.ones(height, width, dtype=torch.bool)
    if box is None:
        return everything, None, None
    rows, cols = mouth_region(box, height, width)
    stats = everything.clone()
    stats[rows, cols] = False
    face = torch.zeros(height, width, dtype=torch.bool)
    face_rows, face_cols = clip_region(box.x1, box.y1, box.x2, box.y2, height, width)
    face[face_rows, face_cols] = True
    face &= stats
    grow_x, grow_y = BACKGROUND_MARGIN * box.width, BACKGROUND_MARGIN * box.height
    grown_rows, grown_cols = clip_region(box.x1 - grow_x, box.y1 - grow_y, box.x2 + grow_x, box.y2 + grow_y,
                                         height, width)
    background = everything.clone()
    background[grown_rows, grown_cols] = False
    return stats, face, (background if bool(background.any()) else None)


def look_ahead_frames(fps: float, time_scale_s: float = TIME_SCALE_S) -> int:
    return int(math.ceil(SUPPORT * time_scale_s * fps))


def gaussian_at(values: np.ndarray, index: int, sigma_frames: float) -> np.ndarray:
    """The Gaussian low-pass of ``values`` (rows are frames) at row ``index``, cut at :data:`SUPPORT` sigma, its
    weights renormalised where the rows end."""
    radius = int(math.ceil(SUPPORT * sigma_frames))
    lo, hi = max(0, index - radius), min(len(values), index + radius + 1)
    if radius < 1:
        return np.asarray(values[index], dtype=np.float64)
    weights = np.exp(-0.5 * ((np.arange(lo, hi) - index) / sigma_frames) ** 2)
    return np.tensordot(weights, np.asarray(values[lo:hi], dtype=np.float64), axes=1) / weights.sum()


def gaussian_lowpass(values: np.ndarray, sigma_frames: float) -> np.ndarray:
    """:func:`gaussian_at` at every row."""
    values = np.asarray(values, dtype=np.float64)
    return np.stack([gaussian_at(values, index, sigma_frames) for index in range(len(values))])


def flicker_percent(mean_luma: np.ndarray, fps: float, time_scale_s: float = TIME_SCALE_S) -> float:
    """RMS (%) of a per-frame mean-luma signal's relative deviation from its Gaussian-low-passed trend."""
    signal = np.maximum(np.asarray(mean_luma, dtype=np.float64), _EPS)
    if len(signal) < 2:
        return 0.0
    trend = gaussian_lowpass(signal, time_scale_s * fps)
    return float(np.sqrt(np.mean((signal / trend - 1.0) ** 2)) * 100.0)


def strobe_period(log_luma: np.ndarray, fps: float) -> float | None:
    """Period, in frames, of the strobe in a window of per-frame log luma, or None where none stands out.

    Each candidate period (:data:`MIN_STROBE_PERIOD_FRAMES` frames to :data:`MAX_STROBE_PERIOD_S`) is fitted as a
    sinusoid together with a parabola (the slow trend); the best fit is a strobe when it explains
    :data:`MIN_STROBE_SHARE` of what the parabola leaves and its amplitude is at least :data:`MIN_STROBE_AMPLITUDE`.
    """
    signal = np.asarray(log_luma, dtype=np.float64)
    count = len(signal)
    longest = SEARCH_BEYOND * MAX_STROBE_PERIOD_S * fps
    if count < 2 * MIN_STROBE_PERIOD_FRAMES or longest <= MIN_STROBE_PERIOD_FRAMES:
        return None
    times = np.arange(count, dtype=np.float64) - 0.5 * (count - 1)
    line = np.stack([np.ones(count), times, times ** 2], axis=1)
    residual = signal - line @ np.linalg.lstsq(line, signal, rcond=None)[0]
    spread = float(residual @ residual)
    if spread <= 0.0:
        return None
    periods = np.geomspace(MIN_STROBE_PERIOD_FRAMES, longest, STROBE_PERIOD_STEPS)
    phase = 2.0 * np.pi * times[None, :] / periods[:, None]
    design = np.concatenate([np.broadcast_to(line, (len(periods), count, 3)),
                             np.stack([np.sin(phase), np.cos(phase)], axis=2)], axis=2)  # [K, F, 5]
    normal = np.einsum("kfa,kfb->kab", design, design) + 1e-9 * np.eye(5)
    coefficients = np.linalg.solve(normal, np.einsum("kfa,f->ka", design, signal)[..., None])[..., 0]
    fitted = np.einsum("kfa,ka->kf", design, coefficients)
    explained = 1.0 - ((signal[None, :] - fitted) ** 2).sum(axis=1) / spread
    best = int(np.argmax(explained))
    amplitude = float(np.hypot(coefficients[best, 3], coefficients[best, 4]))
    if explained[best] < MIN_STROBE_SHARE or amplitude < MIN_STROBE_AMPLITUDE or periods[best] > MAX_STROBE_PERIOD_S * fps:
        return None
    if 0 < best < len(periods) - 1:  # between the grid's steps: the vertex of the parabola through the peak
        step = parabolic_peak(*explained[best - 1:best + 2])
        return float(periods[best] * (periods[best + 1] / periods[best]) ** step)
    return float(periods[best])


def flicker_weight(levels: np.ndarray, sigma_frames: float) -> float:
    """How much of a window's non-periodic flicker to correct, 0 to 1: the RMS of the window's log brightness
    levels about their Gaussian low-pass, 0 up to :data:`FLICKER_FLOOR` (what head motion leaves in the levels),
    rising to 1 at twice that (a 1.2 % strobe and up is corrected in full)."""
    residual = np.asarray(levels, dtype=np.float64) - gaussian_lowpass(levels, sigma_frames)
    return float(np.clip(np.sqrt(np.mean(residual ** 2)) / FLICKER_FLOOR - 1.0, 0.0, 1.0))


def period_box(centres: np.ndarray, period: float, lo: int, hi: int) -> np.ndarray:
    """Weights [len(centres), hi - lo] of a box exactly ``period`` frames long (fractional ends) at each centre,
    shifted to lie within frames [lo, hi): the mean over a whole period has no component of that period or its
    harmonics wherever the box sits, so frames near the clip's ends are corrected as well as the middle."""
    if period >= hi - lo:
        return np.full((len(centres), hi - lo), 1.0 / (hi - lo))
    start = np.clip(np.asarray(centres, dtype=np.float64) - 0.5 * period, lo - 0.5, hi - 0.5 - period)[:, None]
    frames = np.arange(lo, hi, dtype=np.float64)[None, :]
    overlap = np.clip(np.minimum(frames + 0.5, start + period) - np.maximum(frames - 0.5, start), 0.0, 1.0)
    return overlap / overlap.sum(axis=1, keepdims=True)


def _masked_mean(frames: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-frame, per-channel mean over ``mask``: [F, 3] float64."""
    weight = mask.to(frames.device, frames.dtype)
    return (torch.einsum("nchw,hw->nc", frames, weight) / weight.sum()).double().cpu()


def analysis_frames(frames: torch.Tensor, mask: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """(frames area-downscaled to at most :data:`ANALYSIS_SIZE` pixels a side, [F, h, w, 3] float32; boolean [h, w]:
    the downscaled pixels wholly inside ``mask``)."""
    factor = max(1, math.ceil(max(frames.shape[2:]) / ANALYSIS_SIZE))
    pool = torch.nn.functional.avg_pool2d
    small = pool(frames.float(), factor) if factor > 1 else frames.float()
    inside = pool(mask.float()[None, None], factor)[0, 0] if factor > 1 else mask.float()
    return small.permute(0, 2, 3, 1).contiguous().cpu().numpy(), (inside > 1.0 - 1e-6).numpy()


def log_steps(frames: np.ndarray, usable: np.ndarray) -> np.ndarray:
    """Per-channel brightness change from each frame to the next, [F - 1, 3] float64, of frames [F, h, w, 3].

    The two frames are moved half way each toward the other by the shift phase correlation finds between them (so
    both take the same interpolation blur, which would otherwise brighten dark details of one and not the other),
    and the change is the median of the log ratio of the two over the ``usable`` pixels (less the border the shift
    uncovers) that are neither dark nor clipped in any channel of either frame. A strobe scales every pixel alike;
    what the compensation leaves of head motion changes pixels along edges, brighter and darker, which the median
    passes over. The mean over a region, in contrast, follows the head (and the mouth it carries into the region) as
    much as a strobe.
    """
    steps = np.zeros((max(0, len(frames) - 1), 3))
    height, width = frames.shape[1:3]
    window = cv2.createHanningWindow((width, height), cv2.CV_64F) if min(height, width) > 1 else None
    grey = frames.mean(axis=3, dtype=np.float64)
    for index in range(1, len(frames)):
        (dx, dy), _ = cv2.phaseCorrelate(grey[index - 1], grey[index], window) if window is not None else ((0, 0), 0)
        moved, current = (cv2.warpAffine(frames[index - back], np.float32([[1, 0, half * dx], [0, 1, half * dy]]),
                                         (width, height), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
                          for back, half in ((1, 0.5), (0, -0.5)))
        margin_x, margin_y = int(math.ceil(abs(dx))) + 1, int(math.ceil(abs(dy))) + 1
        keep = np.zeros_like(usable)
        keep[margin_y:height - margin_y, margin_x:width - margin_x] = True
        before, after = moved[keep & usable], current[keep & usable]  # [P, 3]
        valid = ((np.minimum(before, after) > STEP_DARK) & (np.maximum(before, after) < 1.0 - STEP_DARK)).all(axis=1)
        if valid.any():
            steps[index - 1] = np.median(np.log(after[valid]) - np.log(before[valid]), axis=0)
    return steps


def _luma(channel_means: torch.Tensor) -> np.ndarray:
    return (channel_means * _LUMA.view(1, 3).double()).sum(dim=1).numpy()


class Deflicker:
    """Streaming deflicker over chunks [n, 3, H, W] in [0, 1]: :meth:`push` a chunk, take the frames it releases;
    :meth:`finish` releases the rest. Holds at most :func:`look_ahead_frames` frames plus one chunk."""

    def __init__(self, fps: float, face_box: FaceBox | None = None, time_scale_s: float = TIME_SCALE_S) -> None:
        self.fps = check_fps(fps)
        self.face_box = face_box
        self.sigma = time_scale_s * self.fps
        self.time_scale_s = time_scale_s
        self.look_ahead = look_ahead_frames(self.fps, time_scale_s)
        self._pending: deque[torch.Tensor] = deque()
        self._levels: list[np.ndarray] = []  # [3] per frame seen: log brightness relative to the first frame
        self._last: np.ndarray | None = None  # the last frame seen, downscaled [1, H, W, 3]
        self._luma_in: list[float] = []
        self._face_in: list[float] = []
        self._background_in: list[float] = []
        self._luma_out: list[float] = []
        self._released = 0
        self._max_change = 0.0
        self._masks: tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None] | None = None

    @property
    def held(self) -> int:
        """Frames pushed but not yet released."""
        return sum(len(chunk) for chunk in self._pending)

    def _measure(self, chunk: torch.Tensor) -> None:
        if self._masks is None:
            self._masks = stats_masks(chunk.shape[2], chunk.shape[3], self.face_box)
        stats, face, background = self._masks
        small, usable = analysis_frames(chunk, stats)
        level = self._levels[-1] if self._levels else np.zeros(3)
        steps = log_steps(small if self._last is None else np.concatenate([self._last, small]), usable)
        self._levels.extend(level + np.cumsum(np.concatenate([np.zeros((1, 3)), steps])[self._last is not None:],
                                              axis=0))
        self._last = small[-1:]
        self._luma_in.extend(_luma(_masked_mean(chunk, torch.ones_like(stats))))
        if face is not None:
            self._face_in.extend(_luma(_masked_mean(chunk, face)))
        if background is not None:
            self._background_in.extend(_luma(_masked_mean(chunk, background)))

    def _log_gain(self, index: int) -> np.ndarray:
        """Per-channel log gain [3] of frame ``index``, from the brightness levels up to its look-ahead (never
        further, so the result does not depend on how the clip was chunked): the low-passed level less the frame's.

        Where a strobe stands out in the window around the frame, the levels are first averaged over one strobe
        period (:func:`period_box`), then Gaussian-low-passed. Elsewhere the Gaussian alone, scaled by
        :func:`flicker_weight`: what is left of head motion in the levels is not corrected as flicker.
        """
        hi = min(len(self._levels), index + self.look_ahead + 1)
        window = np.asarray(self._levels[max(0, hi - 2 * self.look_ahead - 1):hi]).mean(axis=1)
        period = strobe_period(window, self.fps)
        if period is None:
            change = flicker_weight(window, self.sigma) * (gaussian_at(self._levels, index, self.sigma)
                                                           - self._levels[index])
        else:
            radius = self.look_ahead
            lo = max(0, index - radius - int(math.ceil(period)))
            centres = np.arange(max(0, index - radius), hi)
            boxed = period_box(centres, period, lo, hi) @ np.asarray(self._levels[lo:hi])
            weights = np.exp(-0.5 * ((centres - index) / self.sigma) ** 2)
            change = weights @ boxed / weights.sum() - self._levels[index]
        return np.clip(change, -math.log(MAX_GAIN), math.log(MAX_GAIN))

    def _release(self, until: int) -> Iterator[torch.Tensor]:
        """Correct and yield the pending frames with index < ``until``, as chunks."""
        while self._pending and self._released < until:
            frame_chunk = self._pending[0]
            take = min(len(frame_chunk), until - self._released)
            frames = frame_chunk[:take]
            gains = np.exp(np.stack([self._log_gain(i) for i in range(self._released, self._released + take)]))
            self._max_change = max(self._max_change, float(np.abs(gains - 1.0).max()))
            scale = torch.from_numpy(gains).to(frames.device, frames.dtype)[:, :, None, None]
            corrected = (frames * scale).clamp(0, 1)
            self._luma_out.extend(_luma(_masked_mean(corrected, torch.ones(frames.shape[2:], dtype=torch.bool))))
            if take == len(frame_chunk):
                self._pending.popleft()
            else:
                self._pending[0] = frame_chunk[take:]
            self._released += take
            yield corrected

    def push(self, chunk: torch.Tensor) -> Iterator[torch.Tensor]:
        chunk = check_frames(chunk)
        self._measure(chunk)
        self._pending.append(chunk)
        yield from self._release(len(self._levels) - self.look_ahead)

    def finish(self) -> Iterator[torch.Tensor]:
        yield from self._release(len(self._levels))

    def run(self, chunks: Iterable[torch.Tensor]) -> Iterator[torch.Tensor]:
        for chunk in chunks:
            yield from self.push(chunk)
        yield from self.finish()

    def report(self) -> FlickerReport:
        def measured(values: list[float]) -> float | None:
            return round(flicker_percent(np.array(values), self.fps, self.time_scale_s), 4) if values else None

        return FlickerReport(True, measured(self._luma_in) or 0.0, measured(self._luma_out) or 0.0,
                             measured(self._face_in), measured(self._background_in), round(self._max_change, 5),
                             self.time_scale_s, self.look_ahead, self._released)


def deflicker(frames: torch.Tensor, fps: float, face_box: FaceBox | None = None,
              time_scale_s: float = TIME_SCALE_S) -> tuple[torch.Tensor, FlickerReport]:
    """Deflicker a whole clip [F, 3, H, W] (the streaming :class:`Deflicker` over it); returns frames and report."""
    frames = check_frames(frames)
    worker = Deflicker(fps, face_box, time_scale_s)
    out = torch.cat(list(worker.run([frames])))
    return out, worker.report()
