"""Trajectory filters: small pure functions over a trajectory [F] or [F, D] (one row per frame).

- ``one_euro``: the causal One-Euro filter (Casiez et al., CHI 2012), a first-order low-pass whose cutoff rises
  with speed, so slow drift is smoothed hard and fast intended moves lag little; usable while streaming.
- ``savitzky_golay``: centred least-squares polynomial smoothing (zero phase, flat pass band); the ends are the
  polynomial fitted to the first/last full window, evaluated at each end position.
- ``bezier_fit``: least-squares fit of a C1-continuous piecewise cubic Bézier curve with knots every
  ``segment`` frames (each knot has a position and a tangent handle shared by both segments it joins), the
  Bézier-curve motion design of the published Sonic service.
"""

from __future__ import annotations

import math

import numpy as np

from ..errors import SonicInputError


def _as_2d(trajectory: np.ndarray) -> tuple[np.ndarray, bool]:
    array = np.asarray(trajectory, dtype=np.float64)
    if array.ndim not in (1, 2) or array.shape[0] == 0:
        raise SonicInputError(f"trajectory: expected [F] or [F, D] with F > 0, got shape {list(array.shape)}")
    return (array[:, None], True) if array.ndim == 1 else (array, False)


def _restore(result: np.ndarray, was_1d: bool) -> np.ndarray:
    return result[:, 0] if was_1d else result


def one_euro(trajectory: np.ndarray, fps: float, min_cutoff: float = 1.0, beta: float = 0.0,
             d_cutoff: float = 1.0) -> np.ndarray:
    """One-Euro filter; cutoffs in Hz, ``beta`` in Hz per (trajectory unit per second)."""
    values, was_1d = _as_2d(trajectory)

    def alpha(cutoff: np.ndarray | float) -> np.ndarray | float:
        return 1.0 / (1.0 + fps / (2.0 * math.pi * cutoff))

    out = np.empty_like(values)
    out[0] = values[0]
    speed = np.zeros(values.shape[1])
    for index in range(1, len(values)):
        raw_speed = (values[index] - out[index - 1]) * fps
        speed = speed + alpha(d_cutoff) * (raw_speed - speed)
        weight = alpha(min_cutoff + beta * np.abs(speed))
        out[index] = out[index - 1] + weight * (values[index] - out[index - 1])
    return _restore(out, was_1d)


def savitzky_golay(trajectory: np.ndarray, window: int, polyorder: int = 2) -> np.ndarray:
    """Savitzky–Golay smoothing with an odd ``window`` (shrunk to fit short trajectories)."""
    values, was_1d = _as_2d(trajectory)
    count = len(values)
    window = min(int(window), count if count % 2 else count - 1)
    if window < 3:
        return _restore(values.copy(), was_1d)
    window -= 1 - window % 2
    order = min(int(polyorder), window - 1)
    half = window // 2
    offsets = np.arange(-half, half + 1, dtype=np.float64)
    fit = np.linalg.pinv(np.vander(offsets, order + 1, increasing=True))  # [order+1, window]
    out = np.empty_like(values)
    centre = fit[0]
    for index in range(half, count - half):
        out[index] = centre @ values[index - half:index + half + 1]
    for index in range(min(half, count)):
        head = np.vander([index - half], order + 1, increasing=True) @ fit
        out[index] = head @ values[:window]
        tail = np.vander([half - index], order + 1, increasing=True) @ fit
        out[count - 1 - index] = tail @ values[count - window:]
    return _restore(out, was_1d)


def bezier_basis(count: int, segment: float) -> np.ndarray:
    """Design matrix [count, 2 (S + 1)] of the C1 piecewise cubic Bézier: knot positions, then tangent handles."""
    segments = max(1, int(round((count - 1) / segment)))
    length = (count - 1) / segments
    position = np.arange(count, dtype=np.float64)
    index = np.minimum((position // length).astype(int), segments - 1)
    u = position / length - index
    b0, b1, b2, b3 = (1 - u) ** 3, 3 * u * (1 - u) ** 2, 3 * u ** 2 * (1 - u), u ** 3
    knots = segments + 1
    basis = np.zeros((count, 2 * knots))
    rows = np.arange(count)
    basis[rows, index] += b0 + b1  # P0 = K_j, P1 = K_j + T_j
    basis[rows, knots + index] += b1
    basis[rows, index + 1] += b2 + b3  # P2 = K_j+1 - T_j+1, P3 = K_j+1
    basis[rows, knots + index + 1] -= b2
    return basis


def bezier_fit(trajectory: np.ndarray, segment: float) -> np.ndarray:
    """Least-squares C1 piecewise cubic Bézier through the trajectory, knots every ``segment`` (≥ 3) frames."""
    values, was_1d = _as_2d(trajectory)
    count = len(values)
    if count < 4:
        return _restore(values.copy(), was_1d)
    basis = bezier_basis(count, max(3.0, float(segment)))
    ridge = 1e-8 * np.eye(basis.shape[1])
    coefficients = np.linalg.solve(basis.T @ basis + ridge, basis.T @ values)
    return _restore(basis @ coefficients, was_1d)
