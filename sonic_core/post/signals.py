"""Small pure helpers on 1-D signals shared by the lip-sync and motion analyses."""

from __future__ import annotations

import numpy as np


def moving_average(signal: np.ndarray, window: int) -> np.ndarray:
    """Centred moving average along axis 0 with edge-normalised weights (no shrink towards zero at the ends)."""
    signal = np.asarray(signal, dtype=np.float64)
    if window <= 1:
        return signal.copy()
    kernel = np.ones(window)
    ones = np.convolve(np.ones(signal.shape[0]), kernel, mode="same")
    if signal.ndim == 1:
        return np.convolve(signal, kernel, mode="same") / ones
    columns = [np.convolve(signal[:, j], kernel, mode="same") / ones for j in range(signal.shape[1])]
    return np.stack(columns, axis=1)


def standardise(signal: np.ndarray, detrend_window: int) -> tuple[np.ndarray, float]:
    """Remove the slow trend (centred moving average), then scale to unit variance.

    Returns the standardised signal and the standard deviation before scaling (0 for a constant signal, whose
    standardised form is all zeros).
    """
    residual = np.asarray(signal, dtype=np.float64) - moving_average(signal, detrend_window)
    residual -= residual.mean()
    spread = float(residual.std())
    if spread == 0.0:
        return np.zeros_like(residual), 0.0
    return residual / spread, spread


def parabolic_peak(left: float, centre: float, right: float) -> float:
    """Sub-sample offset in [-0.5, 0.5] of the vertex of the parabola through three samples around a maximum."""
    curvature = left - 2.0 * centre + right
    if curvature >= 0.0:
        return 0.0
    return float(np.clip(0.5 * (left - right) / curvature, -0.5, 0.5))


def second_difference_jitter(trajectory: np.ndarray) -> float:
    """Mean absolute second difference of a trajectory [F] or [F, D] (the issue's jitter measure)."""
    trajectory = np.asarray(trajectory, dtype=np.float64)
    if trajectory.shape[0] < 3:
        return 0.0
    return float(np.abs(np.diff(trajectory, n=2, axis=0)).mean())
