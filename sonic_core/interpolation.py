"""Frame-rate conversion of generated clips (MODEL.md §8.2): RIFE ×2 (whole clip or streamed chunk by chunk) and
retiming to any rate with a midpoint function (RIFE's or a linear blend).

:func:`retime_chunks` is the one place a generation's 12.5 fps frames become the output rate, for the CLI and the
ComfyUI Sampler alike: nothing to do at 12.5 fps, streamed RIFE ×2 (2N − 1 frames) at 25 fps, and for any other
rate (or 25 fps without RIFE) :func:`retime` on the whole clip.

Retiming: output frame ``j`` is shown at ``j / target_fps`` s; the clip keeps its duration ``F / fps``, so it has
``round(F · target_fps / fps)`` frames. Each output time maps to a source position ``p = j · fps / target_fps``
(clamped to the last frame). Positions on the dyadic grid ``k / 2^d`` (d ≤ ``max_depth``) are built by recursive
midpoints — the frame at ``(2m + 1) / 2^d`` is ``midpoint`` of its two neighbours at depth ``d − 1`` — and any other
position takes the nearest grid frame at ``max_depth`` (8 sub-steps: at most 1/16 of a source frame off). Only the
grid frames some output needs are computed, one batched ``midpoint`` call per depth and batch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

import torch
import torch.nn.functional as F

from . import timing
from .errors import SonicInputError
from .frames import check_fps, check_frames
from .models.rife import SIZE_MULTIPLE, IFNet

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


def _padded_midpoints(model: IFNet, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``model.midpoint`` on frames of any size: edge-replicate to a multiple of 16, interpolate, crop back."""
    height, width = a.shape[-2:]
    pad = (0, -width % SIZE_MULTIPLE, 0, -height % SIZE_MULTIPLE)
    if any(pad):
        a, b = F.pad(a, pad, mode="replicate"), F.pad(b, pad, mode="replicate")
    return model.midpoint(a, b)[..., :height, :width]


@torch.inference_mode()
def _midpoints(frames: torch.Tensor, model: IFNet, batch_size: int) -> torch.Tensor:
    """Middle frames of every consecutive pair of ``frames`` ([N-1, 3, H, W], on ``frames``' device)."""
    device = next(model.parameters()).device
    mids = []
    for start in range(0, frames.shape[0] - 1, batch_size):
        pair = frames[start:start + batch_size + 1].to(device=device, dtype=torch.float32)
        mids.append(_padded_midpoints(model, pair[:-1], pair[1:]).to(frames.device))
    return torch.cat(mids) if mids else frames.new_zeros(0, *frames.shape[1:], dtype=torch.float32)


def _interleave(frames: torch.Tensor, mids: torch.Tensor) -> torch.Tensor:
    """frames[0], mids[0], frames[1], mids[1], … (len(frames) == len(mids))."""
    return torch.stack([frames.float(), mids], dim=1).flatten(0, 1)


def interpolate_x2(frames: torch.Tensor, model: IFNet, batch_size: int = 8) -> torch.Tensor:
    """Double the frame rate: [N, 3, H, W] in [0, 1] → [2N−1, 3, H, W] (I0, M01, I1, …, I_{N−1}), float32.

    RIFE runs on the model's device ``batch_size`` pairs at a time; the result stays on ``frames``' device.
    """
    check_frames(frames, "interpolate_x2 frames", min_frames=0)
    if frames.shape[0] == 0:
        raise SonicInputError("interpolate_x2 got no frames; pass at least one")
    mids = _midpoints(frames, model, batch_size)
    return torch.cat([_interleave(frames[:-1], mids), frames[-1:].float()])


class Rife2x:
    """Streaming ×2 interpolation: push decoded chunks, write what comes back, then write ``finish()``.

    The last frame of every chunk is held back because it is the first frame of the next pair, so the concatenated
    output equals :func:`interpolate_x2` on the whole clip while memory stays at one chunk.
    """

    def __init__(self, model: IFNet, batch_size: int = 8) -> None:
        self.model = model
        self.batch_size = batch_size
        self._last: torch.Tensor | None = None

    def push(self, chunk: torch.Tensor) -> torch.Tensor:
        """Take the next [n, 3, H, W] frames; return the frames now final (every input frame but the newest, with
        the middle frame after each)."""
        check_frames(chunk, "Rife2x chunk", min_frames=0)
        if self._last is not None and chunk.shape[1:] != self._last.shape[1:]:
            raise SonicInputError(f"Rife2x chunk of shape {tuple(chunk.shape[1:])} follows frames of shape "
                                  f"{tuple(self._last.shape[1:])}; all chunks of a clip must share one size")
        frames = chunk if self._last is None else torch.cat([self._last.to(chunk.device), chunk])
        if frames.shape[0] == 0:
            return frames.float()
        self._last = frames[-1:].clone()  # a copy, so the chunk itself can be freed
        return _interleave(frames[:-1], _midpoints(frames, self.model, self.batch_size))

    def finish(self) -> torch.Tensor:
        """The held-back last frame ([1, 3, H, W]; [0, …] when nothing was pushed); the stream can then restart."""
        last, self._last = self._last, None
        if last is None:
            return torch.zeros(0, 3, 0, 0)
        return last.float()


def output_frame_count(generated: int, fps: float, rife: IFNet | None) -> int:
    """How many frames :func:`retime_chunks` yields for ``generated`` frames at 12.5 fps."""
    if fps == timing.GENERATED_FPS or generated < 2:
        return generated
    if rife is not None and fps == 2 * timing.GENERATED_FPS:
        return 2 * generated - 1
    return output_count(generated, timing.GENERATED_FPS, fps)


def retime_chunks(chunks: Iterable[torch.Tensor], fps: float, rife: IFNet | None,
                  batch_size: int = 8) -> Iterator[torch.Tensor]:
    """A generation's 12.5 fps frame chunks ``[n, 3, H, W]`` in [0, 1] as chunks at ``fps``.

    12.5 fps: the chunks as they are. 25 fps with RIFE: streamed ×2 (:class:`Rife2x`, memory of one chunk). Any
    other rate, or 25 fps without RIFE: the whole clip through :func:`retime` (RIFE midpoints, else a linear blend).
    """
    fps = check_fps(fps)
    if fps == timing.GENERATED_FPS:
        yield from chunks
    elif rife is not None and fps == 2 * timing.GENERATED_FPS:
        stream = Rife2x(rife, batch_size)
        for chunk in chunks:
            yield stream.push(chunk)
        yield stream.finish()
    else:
        clip = torch.cat(list(chunks))
        yield clip if len(clip) < 2 else retime(clip, timing.GENERATED_FPS, fps,
                                                rife.midpoint if rife is not None else None)
