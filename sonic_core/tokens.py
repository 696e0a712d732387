"""The token: the cost unit of the published enterprise design for Sonic (contract).

    tokens = int(round(duration * 10 * (resolution / 512)**2 * (steps / 20) * (1 + max(0, avg_scale - 1) * 0.3)))

with ``avg_scale = (dynamic_scale + motion_scale) / 2`` and Python's ``round`` (half to even: 12.5 -> 12).
The design's own worked example says "~1420" for (15 s, 1024 px, 25 steps, 1.1, 1.05); its formula gives 767.

Tiers and the verdict of a tier on a job are in :mod:`sonic_core.metering.tiers`.
"""

from __future__ import annotations

import math

from .errors import SonicInputError
from .finite import is_finite_number, shown
from .settings import SonicSettings


def _positive(name: str, value: float) -> float:
    if not is_finite_number(value) or value <= 0:
        raise SonicInputError(f"{name} must be a finite number greater than 0, got {shown(value)}")
    return value


def _finite(name: str, value: float) -> float:
    if not is_finite_number(value):
        raise SonicInputError(f"{name} must be a finite number, got {shown(value)}")
    return value


def estimate_tokens(duration: float, resolution: float, steps: float, dynamic_scale: float = 1.0,
                    motion_scale: float = 1.0) -> int:
    """Tokens of one job, exactly as the published design defines them (contract).

    Raises :class:`SonicInputError` (a ``ValueError``) for a NaN, infinite, zero or negative duration, resolution
    or steps, for non-finite scales, and for values so large that the formula overflows (never ``OverflowError``).
    """
    duration = _positive("duration", duration)
    resolution = _positive("resolution", resolution)
    steps = _positive("steps", steps)
    avg_scale = (_finite("dynamic_scale", dynamic_scale) + _finite("motion_scale", motion_scale)) / 2
    try:
        cost = duration * 10 * (resolution / 512) ** 2 * (steps / 20) * (1 + max(0, avg_scale - 1) * 0.3)
    except OverflowError:  # float ** raises instead of giving inf
        cost = math.inf
    if not math.isfinite(cost):  # finite inputs whose product overflows a float: no token count exists
        raise SonicInputError(f"the token count of duration={duration!r}, resolution={resolution!r}, steps={steps!r}, "
                              f"dynamic_scale={dynamic_scale!r}, motion_scale={motion_scale!r} overflows: "
                              "use realistic values")
    return int(round(cost))


def settings_tokens(settings: SonicSettings, duration: float) -> int:
    """Tokens of a job described by validated settings and an audio duration in seconds."""
    return estimate_tokens(duration, settings.min_resolution, settings.steps, settings.dynamic_scale,
                           settings.motion_scale)
