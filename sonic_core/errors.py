"""Exception types of the engine: one per domain, each message naming the input and the fix.

Every public failure raised by ``sonic_core`` derives from :class:`SonicError`, so callers (the CLI, the ComfyUI
nodes, a queue worker) can catch one type and show its one-line message. Input errors also derive from
``ValueError`` so that generic validation code keeps working.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class SonicError(Exception):
    """Base class of every error the engine raises on purpose."""


class SonicInputError(SonicError, ValueError):
    """A setting or input is invalid: the message names the field, the value and what is allowed."""


class SonicAudioError(SonicInputError):
    """The audio cannot be read, is too short, or its duration does not match the requested one."""


class SonicFaceError(SonicInputError):
    """No usable face was found in the portrait."""


class SonicWeightsError(SonicError):
    """A weight file is missing, truncated, of the wrong shape or unsafe to load: names the file and the fix."""


class SonicDependencyError(SonicError):
    """An optional runtime component (ffmpeg, a detector package) is not available."""


class BudgetExceeded(SonicError):
    """A job was refused because it costs more tokens than the caller's tier or balance allows."""

    def __init__(self, message: str, *, tokens: int | None = None, limit: int | None = None) -> None:
        super().__init__(message)
        self.tokens = tokens
        self.limit = limit


class SonicRankLost(SonicError):
    """Another rank of a several-device run died or left: this rank cannot finish the clip alone."""


class SonicInterrupted(SonicError):
    """The user cancelled a running job; nothing was written and nothing is charged."""


StopCheck = Callable[[], bool]  # asked between units of long work; True means the user cancelled
ProgressCallback = Callable[[int, int], None]  # (done, total) after each unit of long work


def stop_if_asked(should_stop: StopCheck | None, what: str = "generation") -> None:
    """Raise :class:`SonicInterrupted` when ``should_stop`` says the user cancelled (a cancel, not an error)."""
    if should_stop is not None and should_stop():
        raise SonicInterrupted(f"{what} cancelled by the user: nothing was written")


def number_in(value: Any, low: float, high: float, message: str) -> float:
    """``value`` as a float when it is a number in [low, high]; else :class:`SonicInputError` with ``message`` (the
    caller's one line naming the input)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise SonicInputError(message) from None
    if not low <= number <= high:
        raise SonicInputError(message)
    return number
