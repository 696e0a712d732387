"""Motion Smooth: estimate the head trajectory, smooth it, and warp each frame by the difference.

Trajectory: features (Shi–Tomasi corners) inside the face region of a keyframe are tracked into each frame with
pyramidal Lucas–Kanade (started from the previous frame's fit), and a similarity transform (translation, rotation,
uniform scale) is fitted to them with RANSAC, so the moving mouth counts as outliers. That gives, per frame, the
similarity that takes frame 0's head to frame i's, without the drift of chaining frame-to-frame fits. Its four
parameters about the frame centre — (tx, ty) in pixels, angle and log-scale multiplied by half the short side (the
pixels they move a point that far from the centre) — form the trajectory [F, 4] in pixels, which the filters smooth
and the jitter figure (mean |second difference|) is measured on.

Each frame is warped by ``smoothed ∘ raw⁻¹`` so its head lands on the smoothed trajectory. Borders never turn black:
``border="reflect"`` mirrors the image into the uncovered margin, ``border="zoom"`` first zooms in just enough to
cover the largest correction (and mirrors whatever a rotation still leaves).

``strength`` in [0, 1] sets the filter's time scale (0: off, 1: 0.6 s); ``"auto"`` derives it from the measured
high-frequency jitter (full strength from 1 px at 512 px, nothing below 0.1 px).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
import torch

from ..errors import SonicDependencyError, SonicInputError, StopCheck, number_in, stop_if_asked
from ..face.box import FaceBox, as_face_box, clip_region
from ..face.detect import detect_face_box
from ..frames import CHUNK, check_fps, check_frames, to_gray, to_gray_uint8
from ..interpolation import Midpoint, retime
from .filters import bezier_fit, one_euro, savitzky_golay
from .signals import second_difference_jitter

Method = Literal["bezier", "savgol", "one_euro"]
METHODS = ("bezier", "savgol", "one_euro")
MAX_TIME_SCALE_S = 0.6
AUTO_FULL_PX, AUTO_NONE_PX = 1.0, 0.1  # residual jitter (RMS, px at 512 px) for strength 1 and 0
REFERENCE_SIZE = 512
FACE_MARGIN = 0.25  # the tracked region is the face box grown by this fraction each way
MIN_TRACKED_POINTS = 8
LK_LEVELS = 2  # pyramid levels above the image: with the previous fit as the start, motions are small
KEYFRAME_SUPPORT = 0.5  # re-anchor when fewer than this share of the keyframe's features fit the similarity
ONE_EURO_CUTOFF_S = 0.6  # One-Euro minimum cutoff (Hz) = this / time scale (s): 1 Hz at full strength
ONE_EURO_BETA = 0.05  # Hz per (px/s at 512 px)


@dataclass(frozen=True)
class Trajectory:
    """Per-frame similarity of the head relative to frame 0, and its parameters in pixels."""

    matrices: np.ndarray  # [F, 3, 3]: frame-0 coordinates -> frame-i coordinates
    params: np.ndarray  # [F, 4]: tx, ty, angle·radius, log-scale·radius (pixels)
    centre: tuple[float, float]
    radius: float
    failed_frames: int  # frames where tracking failed (the previous frame's pose is kept)
    face_box: FaceBox | None  # the tracked head in frame 0 (None: the whole frame was tracked)


@dataclass(frozen=True)
class SmoothReport:
    """What Motion Smooth measured and did; jitter figures are mean |second difference| in pixels."""

    method: str
    strength: float
    strength_auto: bool
    jitter_before: float
    jitter_after: float  # of the smoothed trajectory the frames were warped onto
    max_correction_px: float
    zoom: float
    border: str
    frames_in: int
    frames_out: int
    fps_in: float
    fps_out: float
    failed_frames: int
    face_box: tuple[float, float, float, float] | None
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _cv2() -> Any:
    try:
        import cv2
    except ImportError as exc:
        raise SonicDependencyError("Motion Smooth needs OpenCV: pip install 'opencv-python-headless<5'") from exc
    return cv2


def similarity_params(matrix: np.ndarray, centre: tuple[float, float], radius: float) -> np.ndarray:
    """(tx, ty, angle·radius, log-scale·radius) of a 3 × 3 similarity about ``centre``."""
    scale = math.sqrt(max(1e-12, float(np.linalg.det(matrix[:2, :2]))))
    angle = math.atan2(matrix[1, 0], matrix[0, 0])
    moved = matrix @ np.array([centre[0], centre[1], 1.0])
    return np.array([moved[0] - centre[0], moved[1] - centre[1], angle * radius, math.log(scale) * radius])


def similarity_from_params(params: np.ndarray, centre: tuple[float, float], radius: float) -> np.ndarray:
    """Inverse of :func:`similarity_params`: rotate/scale about ``centre``, then translate."""
    tx, ty, arc, log_arc = params
    scale = math.exp(log_arc / radius)
    c, s = scale * math.cos(arc / radius), scale * math.sin(arc / radius)
    cx, cy = centre
    return np.array([[c, -s, cx + tx - c * cx + s * cy],
                     [s, c, cy + ty - s * cx - c * cy],
                     [0.0, 0.0, 1.0]])


def _tracking_mask(shape: tuple[int, ...], box: FaceBox | None, motion: np.ndarray) -> np.ndarray | None:
    """Mask of the face box grown by FACE_MARGIN, moved with the head's motion since frame 0; None: everything."""
    if box is None:
        return None
    centre = np.array([box.x1 + box.width / 2, box.y1 + box.height / 2, 1.0])
    shift = (motion @ centre)[:2] - centre[:2]
    mask = np.zeros(shape, dtype=np.uint8)
    grow_x, grow_y = FACE_MARGIN * box.width, FACE_MARGIN * box.height
    rows, cols = clip_region(box.x1 - grow_x + shift[0], box.y1 - grow_y + shift[1],
                             box.x1 + box.width + grow_x + shift[0], box.y1 + box.height + grow_y + shift[1], *shape)
    mask[rows, cols] = 255
    return mask


@dataclass(frozen=True)
class _Keyframe:
    """The frame features are tracked from: its image, its features and its similarity from frame 0."""

    image: np.ndarray
    points: np.ndarray | None  # [N, 1, 2] float32, None when it has too few features
    matrix: np.ndarray
    window: int  # Lucas–Kanade window (pixels)


def _keyframe(cv2: Any, image: np.ndarray, matrix: np.ndarray, box: FaceBox | None) -> _Keyframe:
    mask = _tracking_mask(image.shape, box, matrix)
    spacing = max(3, min(image.shape) // 64)
    points = cv2.goodFeaturesToTrack(image, maxCorners=300, qualityLevel=0.01, minDistance=spacing, mask=mask)
    usable = points is not None and len(points) >= MIN_TRACKED_POINTS
    return _Keyframe(image, points.astype(np.float32) if usable else None, matrix, lk_window(box, image.shape))


def lk_window(box: FaceBox | None, shape: tuple[int, ...]) -> int:
    """Odd Lucas–Kanade window, a fifth of the face width (a quarter of the short side without a face), 7–31 px.

    LK models each window as translating; on a small face a large window blends the rotation field and reads the
    rotation low (21 px on a 46 px face: 11 % low, 9 px: 3 %).
    """
    extent = box.width if box is not None else min(shape) / 4.0
    return int(np.clip(round(extent / 5.0), 7, 31)) | 1


def _track(cv2: Any, key: _Keyframe, image: np.ndarray, guess: np.ndarray) -> tuple[np.ndarray | None, float]:
    """Similarity from the keyframe to ``image`` (LK from the guessed key -> image similarity, then RANSAC).

    Returns it with the share of the keyframe's features that support it, or (None, 0) when tracking fails.
    """
    if key.points is None:
        return None, 0.0
    start = cv2.transform(key.points, guess[:2]).astype(np.float32)
    moved, status, _ = cv2.calcOpticalFlowPyrLK(key.image, image, key.points, start,
                                                winSize=(key.window, key.window), maxLevel=LK_LEVELS,
                                                flags=cv2.OPTFLOW_USE_INITIAL_FLOW)
    good = status.reshape(-1) == 1
    if good.sum() < MIN_TRACKED_POINTS:
        return None, 0.0
    affine, inliers = cv2.estimateAffinePartial2D(key.points[good], moved[good], method=cv2.RANSAC,
                                                  ransacReprojThreshold=1.0)
    if affine is None:
        return None, 0.0
    return np.vstack([affine, [0.0, 0.0, 1.0]]), float(inliers.sum()) / len(key.points)


def estimate_trajectory(frames: torch.Tensor, face_box: Any = None,
                        should_stop: StopCheck | None = None) -> Trajectory:
    """Head trajectory of a clip [F, 3, H, W]; the tracked region follows the head from ``face_box``.

    Every frame is matched to a keyframe (frame 0 at first), not to its predecessor, so errors do not accumulate;
    when fewer than half of the keyframe's features still support the fit (the head turned, the face changed) the
    previous frame becomes the keyframe. Without a box the Haar detector looks for one; with no face at all the
    whole frame is tracked.
    """
    cv2 = _cv2()
    frames = check_frames(frames)
    gray = to_gray_uint8(to_gray(frames))
    height, width = gray.shape[1:]
    box = as_face_box(face_box) if face_box is not None else detect_face_box(gray)
    centre, radius = ((width - 1) / 2.0, (height - 1) / 2.0), min(height, width) / 2.0
    matrices = np.empty((len(gray), 3, 3))
    matrices[0] = np.eye(3)
    key = _keyframe(cv2, gray[0], matrices[0], box)
    failed = 0
    for index in range(1, len(gray)):
        stop_if_asked(should_stop, "Motion Smooth")
        found, share = _track(cv2, key, gray[index], matrices[index - 1] @ np.linalg.inv(key.matrix))
        if found is None or share < KEYFRAME_SUPPORT:
            key = _keyframe(cv2, gray[index - 1], matrices[index - 1], box)
            found, _ = _track(cv2, key, gray[index], np.eye(3))
        if found is None:
            failed += 1
            matrices[index] = matrices[index - 1]
        else:
            matrices[index] = found @ key.matrix
    params = np.stack([similarity_params(m, centre, radius) for m in matrices])
    params[:, 2] = np.unwrap(params[:, 2] / radius) * radius
    return Trajectory(matrices, params, centre, radius, failed, box)


def time_scale_frames(strength: float, fps: float) -> float:
    """Filter time scale in frames for a strength in [0, 1]."""
    return strength * MAX_TIME_SCALE_S * fps


def smooth_trajectory(params: np.ndarray, fps: float, method: Method, strength: float) -> np.ndarray:
    """Smooth a trajectory [F, D] (pixels at 512 px) with the chosen filter at ``strength`` in [0, 1].

    Strength 0 (or a time scale under one frame) returns it unchanged.
    """
    scale = time_scale_frames(strength, fps)
    if strength <= 0 or scale < 1.0:
        return np.array(params, dtype=np.float64)
    if method == "bezier":
        return bezier_fit(params, segment=scale)
    if method == "savgol":
        return savitzky_golay(params, window=2 * int(round(scale)) + 1, polyorder=2)
    return one_euro(params, fps, min_cutoff=ONE_EURO_CUTOFF_S / (scale / fps), beta=ONE_EURO_BETA, d_cutoff=1.0)


def auto_strength(params: np.ndarray, fps: float) -> float:
    """Strength from the RMS of the trajectory's high-frequency residual (what a 0.4 s Savitzky–Golay removes).

    ``params`` in pixels at 512 px.
    """
    window = 2 * int(round(0.2 * fps)) + 1
    residual = params[:, :2] - savitzky_golay(params[:, :2], window, 2)
    rms = float(np.sqrt((residual ** 2).mean()))
    return float(np.clip((rms - AUTO_NONE_PX) / (AUTO_FULL_PX - AUTO_NONE_PX), 0.0, 1.0))


def _check_strength(strength: float | str) -> float | None:
    if isinstance(strength, str):
        if strength != "auto":
            raise SonicInputError(f"strength: expected 'auto' or a number in [0, 1], got {strength!r}")
        return None
    return number_in(strength, 0.0, 1.0, f"strength: expected 'auto' or a number in [0, 1], got {strength!r}")


def _cover_zoom(corrections: list[np.ndarray], height: int, width: int) -> float:
    """Zoom about the centre that keeps every output corner inside the warped source (translation-exact)."""
    corners = np.array([[0, 0, 1], [width - 1, 0, 1], [0, height - 1, 1], [width - 1, height - 1, 1]], float).T
    worst = max(float(np.abs(np.linalg.inv(c) @ corners - corners)[:2].max()) for c in corrections)
    return 1.0 + 2.0 * worst / min(height, width)


def warp_frames(frames: torch.Tensor, corrections: list[np.ndarray], zoom: float = 1.0,
                should_stop: StopCheck | None = None) -> torch.Tensor:
    """Warp each frame [3, H, W] by its 3 × 3 correction (then the zoom about the centre), mirroring borders."""
    cv2 = _cv2()
    height, width = frames.shape[2:]
    centre = ((width - 1) / 2.0, (height - 1) / 2.0)
    zoom_matrix = similarity_from_params(np.array([0.0, 0.0, 0.0, math.log(zoom)]), centre, 1.0)
    out = torch.empty_like(frames)
    for start in range(0, len(frames), CHUNK):
        stop_if_asked(should_stop, "Motion Smooth")
        source = frames[start:start + CHUNK].permute(0, 2, 3, 1).float().contiguous().cpu().numpy()
        warped = np.empty_like(source)
        for offset, correction in enumerate(corrections[start:start + CHUNK]):
            cv2.warpAffine(source[offset], (zoom_matrix @ correction)[:2], (width, height), dst=warped[offset],
                           flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
        out[start:start + CHUNK] = torch.from_numpy(warped).permute(0, 3, 1, 2).to(out.dtype)
    return out


def smooth_motion(frames: torch.Tensor, fps: float = 25.0, method: Method = "bezier",
                  strength: float | str = "auto", target_fps: float | None = None,
                  interpolator: Midpoint | None = None, face_box: Any = None,
                  border: Literal["reflect", "zoom"] = "reflect",
                  should_stop: StopCheck | None = None) -> tuple[torch.Tensor, SmoothReport]:
    """Suppress head jitter; frame count and duration unchanged unless ``target_fps`` asks for a retime.

    ``interpolator`` is a midpoint function ``(a [N, 3, H, W], b) -> [N, 3, H, W]`` (e.g. RIFE's
    ``IFNet.midpoint``) used for the retime; a linear blend when None. ``should_stop`` is asked between tracked
    frames and warped chunks (a true answer raises :class:`SonicInterrupted`).
    """
    frames = check_frames(frames)
    fps = check_fps(fps)
    if method not in METHODS:
        raise SonicInputError(f"method: expected one of {', '.join(METHODS)}, got {method!r}")
    if border not in ("reflect", "zoom"):
        raise SonicInputError(f"border: expected 'reflect' or 'zoom', got {border!r}")
    chosen = _check_strength(strength)
    trajectory = estimate_trajectory(frames, face_box, should_stop)
    height, width = frames.shape[2:]
    to_reference = REFERENCE_SIZE / min(height, width)
    reference = trajectory.params * to_reference
    value = auto_strength(reference, fps) if chosen is None else chosen
    smoothed = smooth_trajectory(reference, fps, method, value) / to_reference
    corrections = [similarity_from_params(s, trajectory.centre, trajectory.radius) @ np.linalg.inv(raw)
                   for s, raw in zip(smoothed, trajectory.matrices)]
    max_correction = float(np.abs(smoothed - trajectory.params).max())
    zoom = _cover_zoom(corrections, height, width) if border == "zoom" and value > 0 else 1.0
    out = warp_frames(frames, corrections, zoom, should_stop) if value > 0 else frames.clone()
    if value > 0:
        reason = f"smoothed with {method} at strength {value:.2f}"
    else:
        reason = "no jitter measured: frames left as they are" if chosen is None else "strength 0: frames unchanged"
    fps_out = fps
    if target_fps is not None:
        fps_out = check_fps(target_fps, "target_fps")
        out = retime(out, fps, fps_out, interpolator)
    box = trajectory.face_box
    report = SmoothReport(method, value, chosen is None, second_difference_jitter(trajectory.params),
                          second_difference_jitter(smoothed), max_correction, zoom, border, len(frames), len(out),
                          fps, fps_out, trajectory.failed_frames, box.xywh if box else None, reason)
    return out, report
