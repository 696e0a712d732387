"""Retime a clip to another frame rate with a midpoint function (RIFE's ``IFNet.midpoint`` or a linear blend).

Output frame ``j`` is shown at ``j / target_fps`` s; the clip keeps its duration ``F / fps``, so it has
``round(F · target_fps / fps)`` frames. Each output time maps to a source position ``p = j · fps / target_fps``
(clamped to the last frame). Positions on the dyadic grid ``k / 2^d`` (d ≤ ``max_depth``) are built by recursive
midpoints — the frame at ``(2m + 1) / 2^d`` is ``midpoint`` of its two neighbours at depth ``d − 1`` — and any other
position takes the nearest grid frame at ``max_depth`` (8 sub-steps: at most 1/16 of a source frame off). Only the
grid frames some output needs are computed, one batched ``midpoint`` call per depth and batch.
"""

from __future__ import annotations

from typing import Callable

import torch

from sonic_core.errors import SonicInputError
from sonic_core.post.frames import check_fps, check_frames

Midpoint = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
MAX_DEPTH = 3
BATCH = 8


def linear_midpoint(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The default midpoint: the average of the two frames."""
    return 0.5 * (a + b)


def output_count(count: int, fps: float, target_fps: float) -> int:
    """Frames of a clip of ``count`` frames at ``fps`` retimed to ``target_fps`` (duration kept)."""
    return max(1, int(round(count * target_fps / fps)))


def _reduce(numerator: int, depth: int) -> tuple[int, int]:
    """The same dyadic position ``numerator / 2^depth`` with the smallest depth."""
    while depth > 0 and numerator % 2 == 0:
        numerator, depth = numerator // 2, depth - 1
    return numerator, depth


def grid_positions(count: int, fps: float, target_fps: float, max_depth: int = MAX_DEPTH) -> list[tuple[int, int]]:
    """For every output frame, its source position as a reduced dyadic fraction (numerator, depth)."""
    scale = 1 << max_depth
    positions = []
    for index in range(output_count(count, fps, target_fps)):
        numerator = min(int(round(index * fps / target_fps * scale)), (count - 1) * scale)
        positions.append(_reduce(numerator, max_depth))
    return positions


def _check_midpoint(result: torch.Tensor, expected: torch.Size) -> torch.Tensor:
    if not isinstance(result, torch.Tensor) or result.shape != expected:
        shape = list(result.shape) if isinstance(result, torch.Tensor) else type(result).__name__
        raise SonicInputError(f"interpolator: must return a tensor {list(expected)} like its inputs, got {shape}")
    return result


def retime(frames: torch.Tensor, fps: float, target_fps: float, midpoint: Midpoint | None = None,
           max_depth: int = MAX_DEPTH, batch: int = BATCH) -> torch.Tensor:
    """Frames [F, 3, H, W] at ``fps`` as ``target_fps`` (duration kept); ``midpoint`` defaults to a linear blend."""
    frames = check_frames(frames)
    fps, target_fps = check_fps(fps), check_fps(target_fps, "target_fps")
    midpoint = midpoint or linear_midpoint
    positions = grid_positions(len(frames), fps, target_fps, max_depth)
    needed: list[set[int]] = [set() for _ in range(max_depth + 1)]
    for numerator, depth in positions:
        needed[depth].add(numerator)
    for depth in range(max_depth, 0, -1):  # a midpoint at depth d needs its two neighbours at depth d - 1
        for numerator in needed[depth]:
            for neighbour in (numerator - 1, numerator + 1):
                reduced, level = _reduce(neighbour, depth)
                needed[level].add(reduced)
    grid: dict[tuple[int, int], torch.Tensor] = {(n, 0): frames[n] for n in needed[0]}

    def lookup(numerator: int, depth: int) -> torch.Tensor:
        return grid[_reduce(numerator, depth)]

    for depth in range(1, max_depth + 1):
        todo = sorted(needed[depth])
        for start in range(0, len(todo), batch):
            chunk = todo[start:start + batch]
            left = torch.stack([lookup(n - 1, depth) for n in chunk])
            right = torch.stack([lookup(n + 1, depth) for n in chunk])
            with torch.no_grad():
                middle = _check_midpoint(midpoint(left, right), left.shape)
            for n, frame in zip(chunk, middle):
                grid[(n, depth)] = frame.to(frames.dtype)
    return torch.stack([grid[p] for p in positions])
