"""Every user-facing knob of a Sonic generation: one place for defaults, ranges and validation.

The CLI, the ComfyUI nodes and the cost estimator all read their defaults and widget ranges from
:class:`SonicSettings` (``SonicSettings.knob(name)``), so a default changes in exactly one place.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from .errors import SonicInputError
from .finite import is_finite_number, shown

AUTO = "auto"


def _knob(default: Any, help: str, *, min: float | None = None, max: float | None = None,
          multiple_of: int | None = None, step: float | None = None) -> Any:
    """A dataclass field carrying its allowed range and help text as metadata."""
    meta = {"help": help, "min": min, "max": max, "multiple_of": multiple_of, "step": step}
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class Knob:
    """Description of one setting, for CLIs and node widgets."""

    name: str
    default: Any
    type: type
    help: str
    min: float | None
    max: float | None
    multiple_of: int | None
    step: float | None


@dataclass(frozen=True)
class SonicSettings:
    """Validated settings of one generation job; construction raises :class:`SonicInputError` on bad values."""

    min_resolution: int = _knob(512, "short side of the generated frames in pixels",
                                min=256, max=1280, multiple_of=64, step=64)
    steps: int = _knob(25, "sampler steps (<10 blurry, >30 little gain)", min=1, max=100, step=1)
    dynamic_scale: float = _knob(1.0, "scales both motion buckets (official motion_bucket_scale); "
                                 "1.0-1.2 looks natural, more exaggerates",
                                 min=0.5, max=2.0, step=0.05)
    motion_scale: float = _knob(1.0, "extra scale on the head-motion bucket only; 1.0-1.2 looks "
                                "natural", min=0.5, max=2.0, step=0.05)
    expand_ratio: float | str = _knob(AUTO, "face-crop margin, 0-1 or 'auto' (0.15-0.5 from the face's "
                                      "share); 0.15-0.2 for close-ups",
                                      min=0.0, max=1.0, step=0.05)
    fps: float = _knob(25.0, "output frame rate (12.5 generated, 25 with RIFE, others by interpolation)",
                       min=1.0, max=120.0, step=0.5)
    seed: int = _knob(72589, "noise seed", min=0, max=2**64 - 1, step=1)
    device_noise: bool = _knob(False, "draw the noise on the generation device in its precision, as the official "
                                      "code does (same seed, same CUDA GPU kind: the official video; other devices "
                                      "differ); off: the same video on every device")
    audio_guidance: float = _knob(7.5, "classifier-free guidance on the audio condition", min=1.0, max=20.0,
                                  step=0.1)
    appearance_guidance: float = _knob(2.0, "classifier-free guidance on the reference image", min=1.0,
                                       max=20.0, step=0.1)
    duration: float | None = _knob(None, "seconds of audio to use (None: the whole file)", min=0.08,
                                   max=3600.0, step=0.01)
    frames_per_window: int = _knob(25, "frames per sliding sampler window", min=2, max=64, step=1)
    window_overlap: int = _knob(0, "frames shared by consecutive windows", min=0, max=63, step=1)
    shift_offset: int = _knob(7, "per-step rotation of the window starts, in frames", min=0, max=64, step=1)
    noise_aug_strength: float = _knob(0.0, "pixel noise added to the reference before conditioning encode",
                                      min=0.0, max=1.0, step=0.01)
    ip_audio_scale: float = _knob(1.0, "strength of the audio branch in every cross-attention", min=0.0,
                                  max=2.0, step=0.05)
    decode_chunk_size: int = _knob(8, "frames per VAE decode chunk (changes temporal mixing)", min=1,
                                   max=64, step=1)
    face_area: float = _knob(1.1, "enlargement of the face box for the face mask", min=1.0, max=3.0,
                             step=0.05)
    interpolate: bool = _knob(True, "RIFE x2 frame interpolation (12.5 -> 25 fps)")
    crf: int = _knob(18, "h264 constant rate factor (lower is better quality)", min=0, max=51, step=1)

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            object.__setattr__(self, f.name, _validate(f, getattr(self, f.name)))
        if self.window_overlap >= self.frames_per_window:
            raise SonicInputError(
                f"window_overlap={self.window_overlap} must be smaller than frames_per_window="
                f"{self.frames_per_window}: lower the overlap")

    @property
    def avg_scale(self) -> float:
        """Mean of dynamic_scale and motion_scale, the figure the token formula charges for."""
        return (self.dynamic_scale + self.motion_scale) / 2

    def replace(self, **changes: Any) -> "SonicSettings":
        """A copy with some fields changed, validated again."""
        unknown = set(changes) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise SonicInputError(f"unknown setting(s) {sorted(unknown)}: known are {sorted(self.knob_names())}")
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def knob_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def knob(cls, name: str) -> Knob:
        """Default, type, range and help of one setting (for argparse and ComfyUI widgets)."""
        for f in dataclasses.fields(cls):
            if f.name == name:
                m = f.metadata
                return Knob(name, f.default, _base_type(f), m["help"], m["min"], m["max"], m["multiple_of"],
                            m["step"])
        raise KeyError(name)


def _base_type(f: dataclasses.Field) -> type:
    hint = str(f.type)
    if hint.startswith("bool"):
        return bool
    if hint.startswith("int"):
        return int
    return float


def _allowed(f: dataclasses.Field) -> str:
    m = f.metadata
    noun = f"a multiple of {m['multiple_of']}" if m["multiple_of"] else "a value"
    text = f"{noun} between {_fmt(m['min'])} and {_fmt(m['max'])}" if m["min"] is not None else "true or false"
    if f.name == "expand_ratio":
        text += ", or 'auto'"
    if f.default is None:
        text += ", or None"
    return text


def _fmt(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


def _validate(f: dataclasses.Field, value: Any) -> Any:
    name, m = f.name, f.metadata
    kind = _base_type(f)

    def bad(why: str) -> SonicInputError:
        return SonicInputError(f"{name}={shown(value)} {why}: use {_allowed(f)}")

    if value is None and f.default is None:
        return None
    if name == "expand_ratio" and isinstance(value, str):
        text = value.strip().lower()
        if text == AUTO:
            return AUTO
        try:
            value = float(text)
        except ValueError:
            raise bad("is not a number") from None
    if kind is bool:
        if not isinstance(value, bool):
            raise bad("is not true/false")
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise bad("is not a number")
    if not is_finite_number(value):
        raise bad("is not finite")
    if kind is int:
        if not float(value).is_integer():
            raise bad("is not a whole number")
        value = int(value)
    else:
        value = float(value)
    if m["min"] is not None and value < m["min"]:
        raise bad("is too small")
    if m["max"] is not None and value > m["max"]:
        raise bad("is too large")
    if m["multiple_of"] and value % m["multiple_of"]:
        raise bad("is not allowed")
    return value
