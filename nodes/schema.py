"""Small helpers the node classes share when they declare their schema or check their inputs.

Every node of the pack is a named ``class X(io.ComfyNode)`` (``io`` from :mod:`.comfy_compat`: ComfyUI's own V3
schema inside ComfyUI, :mod:`.standin_io` elsewhere). Widget values are checked by ComfyUI against min/max/options
before the queue; ``validate_inputs`` adds the cheap checks ComfyUI cannot know (:func:`refusal`), and ``execute``
still checks everything, because outside ComfyUI nobody validated.
"""

from __future__ import annotations

from typing import Any, Callable

from sonic_core.errors import SonicError, SonicInputError
from sonic_core.settings import SonicSettings

from .comfy_compat import io


def auto_or_number(text: str, name: str, allowed: str = "between 0 and 1") -> float | str:
    """A STRING widget that takes ``auto`` or a number: ``"auto"`` or the float (range checks are the engine's)."""
    value = str(text).strip().lower()
    if value == "auto":
        return value
    try:
        return float(value)
    except ValueError:
        raise SonicInputError(f"{name} {text!r}: use 'auto' or a number {allowed}") from None


def knob_input(name: str, tooltip: str | None = None) -> Any:
    """An INT/FLOAT widget whose default, range and tooltip come from :class:`SonicSettings` (one place for every
    default); ``tooltip`` replaces the knob's help where the node says more."""
    knob = SonicSettings.knob(name)
    kind = io.Int if knob.type is int else io.Float
    return kind.Input(name, default=knob.default, min=knob.min, max=knob.max, step=knob.step,
                      tooltip=tooltip or knob.help)


def refusal(check: Callable[[], Any]) -> bool | str:
    """``validate_inputs``' answer for a check that raises a SonicError: True, or the error's one line (ComfyUI
    shows it in its dialog and refuses the prompt before it is queued).

    ComfyUI repeats a refusal once for every input the method names (``"name - message"``) and skips its own
    min/max/options checks for those inputs, so each node's ``validate_inputs`` names exactly one input.
    """
    try:
        check()
    except SonicError as exc:
        return str(exc)
    return True
