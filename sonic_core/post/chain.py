"""Post-processing of a generated clip, as the CLI, the pipeline and the Python API apply it, in this order:

1. Lip-Sync Align, 2. Motion Smooth — whole-clip steps (a cross-correlation over the clip, a trajectory filter):
   a run with either holds every frame in memory;
3. Deflicker (:mod:`.temporal`) — streams with a bounded look-ahead (1.5 s of frames);
4. Colour match (:mod:`.colour`) — streams frame by frame;
5. Paste-back (:mod:`.paste`) — streams frame by frame; the frames become the original image's size.

Defaults (:class:`PostOptions`), from bench/quality_eval.py's measurements: deflicker is on — on clips without
strobing it keeps the mouth's motion (≥ 95 % of its energy, head motion or not, short clips or long) and barely
moves the frames, and on strobed clips it removes most of the strobe. Colour match is on at full strength — on still
and moving heads it removes ≥ 94 % of a drift (ΔE against the clip before it) and moves an undrifted clip by
≤ 0.08 ΔE (0.5 allowed). Lip-Sync Align, Motion Smooth and paste-back are off:
the first two change timing or geometry and are asked for, paste-back changes what the output is (the full original
frame instead of the square crop).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import torch

from ..audio import Speech
from ..errors import SonicInputError
from ..face.box import FaceBox
from ..face.crop import Reference
from .colour import ColourMatch, check_strength
from .lipsync import DEFAULT_MAX_OFFSET, DEFAULT_MIN_CONFIDENCE, align
from .paste import DEFAULT_FEATHER, PasteBack, check_feather
from .smooth import METHODS, smooth_motion
from .temporal import Deflicker

LIPSYNC_MODES = ("off", "measure", "correct")
SMOOTH_METHODS = ("off", *METHODS)
DEFAULT_DEFLICKER = True
DEFAULT_COLOUR_STRENGTH = 1.0  # on: see the module docstring


@dataclass(frozen=True)
class PostOptions:
    """Which post-processing runs: ``lipsync`` off/measure/correct; ``smooth`` off or a filter method, with its
    ``smooth_strength`` (``"auto"`` or 0–1); ``deflicker`` on/off; ``colour_strength`` 0 (off) to 1; ``paste_back``
    into the original image with a blend ramp of ``paste_feather`` × the crop's side."""

    lipsync: str = "off"
    smooth: str = "off"
    smooth_strength: float | str = "auto"
    max_offset: float = DEFAULT_MAX_OFFSET
    min_confidence: float = DEFAULT_MIN_CONFIDENCE
    deflicker: bool = DEFAULT_DEFLICKER
    colour_strength: float = DEFAULT_COLOUR_STRENGTH
    paste_back: bool = False
    paste_feather: float = DEFAULT_FEATHER

    def __post_init__(self) -> None:
        if self.lipsync not in LIPSYNC_MODES:
            raise SonicInputError(f"lipsync={self.lipsync!r}: use one of {', '.join(LIPSYNC_MODES)}")
        if self.smooth not in SMOOTH_METHODS:
            raise SonicInputError(f"smooth={self.smooth!r}: use one of {', '.join(SMOOTH_METHODS)}")
        for name in ("deflicker", "paste_back"):
            if not isinstance(getattr(self, name), bool):
                raise SonicInputError(f"{name}={getattr(self, name)!r}: use True or False")
        object.__setattr__(self, "colour_strength", check_strength(self.colour_strength))
        object.__setattr__(self, "paste_feather", check_feather(self.paste_feather, "paste_feather"))

    @property
    def whole_clip(self) -> bool:
        """Whether a step that needs every frame at once runs (Lip-Sync Align, Motion Smooth)."""
        return self.lipsync != "off" or self.smooth != "off"

    @property
    def streaming(self) -> bool:
        """Whether a chunk-by-chunk step runs (deflicker, colour match, paste-back)."""
        return self.deflicker or self.colour_strength > 0 or self.paste_back

    @property
    def active(self) -> bool:
        return self.whole_clip or self.streaming


def apply_clip_steps(frames: torch.Tensor, speech: Speech, fps: float, options: PostOptions,
                     face_box: FaceBox | None = None) -> tuple[torch.Tensor, Speech, dict[str, Any]]:
    """Lip-Sync Align and Motion Smooth on frames ``[F, 3, H, W]`` in [0, 1] and their speech; returns the frames,
    the speech (delayed when Lip-Sync Align corrected it; both its forms, lengths kept) and a report
    ``{"lipsync": ..., "smooth": ...}``. ``face_box`` is the face in the frames' pixels (the generation knows it);
    without it each step finds the face itself."""
    report: dict[str, Any] = {}
    if options.lipsync != "off":
        frames, _, sync = align(frames, speech.samples, fps, options.lipsync, face_box=face_box,
                                max_offset=options.max_offset, min_confidence=options.min_confidence)
        if sync.applied:
            speech = speech.delayed(sync.offset_s)
        report["lipsync"] = sync.to_dict()
    if options.smooth != "off":
        frames, smooth = smooth_motion(frames, fps, options.smooth, options.smooth_strength, face_box=face_box)
        report["smooth"] = smooth.to_dict()
    return frames, speech, report


def reference_frame(reference: Reference) -> torch.Tensor:
    """The portrait as the model saw it (the crop at the working size), [3, H, W] in [0, 1]."""
    return (reference.ref_image.float() * 0.5 + 0.5).clamp(0, 1)


def paste_back_for(reference: Reference, feather: float = DEFAULT_FEATHER) -> PasteBack:
    """The :class:`PasteBack` that puts frames of this reference's crop into its original image."""
    if reference.original is None:
        raise SonicInputError("paste_back: this prepared portrait does not keep its original image; prepare it "
                              "with sonic_core.inputs.prepare_inputs (or pass the original to PasteBack yourself)")
    return PasteBack(reference.original, reference.crop_box, feather)


class StreamSteps:
    """Deflicker, colour match and paste-back over frame chunks ``[n, 3, H, W]`` of the crop. Built before the
    generation runs, so a missing input is refused before any work; :meth:`run` streams the chunks through and
    :attr:`report` gets ``"deflicker"``, ``"colour"`` and ``"paste"`` entries once they are exhausted. Without a
    ``reference`` there is no face box, and colour match (which needs the portrait) is skipped and says so."""

    def __init__(self, options: PostOptions, fps: float, reference: Reference | None) -> None:
        if options.paste_back and reference is None:
            raise SonicInputError("paste_back: needs the prepared portrait (its original image and crop box); pass "
                                  "reference=inputs.reference")
        self.options, self.fps, self.reference = options, fps, reference
        self.face_box = reference.frame_box if reference is not None else None
        self.paste = paste_back_for(reference, options.paste_feather) if options.paste_back else None
        self.report: dict[str, Any] = {}

    def frame_size(self, height: int, width: int) -> tuple[int, int]:
        """(height, width) of the frames :meth:`run` yields for chunks of ``height`` × ``width``."""
        return (self.paste.height, self.paste.width) if self.paste is not None else (height, width)

    def run(self, chunks: Iterable[torch.Tensor]) -> Iterator[torch.Tensor]:
        options, reference = self.options, self.reference
        deflicker = Deflicker(self.fps, self.face_box) if options.deflicker else None
        colour = None
        if options.colour_strength > 0 and reference is not None:
            colour = ColourMatch(reference_frame(reference), self.face_box, options.colour_strength)
        stream: Iterable[torch.Tensor] = deflicker.run(chunks) if deflicker else chunks
        seam = None
        for chunk in stream:
            if colour is not None:
                chunk = colour.apply(chunk)
            if self.paste is not None:
                chunk = self.paste.paste(chunk)
                seam = self.paste.seam_ratio(chunk[0].cpu()) if seam is None else seam
            yield chunk
        if deflicker is not None:
            self.report["deflicker"] = deflicker.report().to_dict()
        if options.colour_strength > 0:
            self.report["colour"] = colour.report().to_dict() if colour else {
                "applied": False, "reason": "no reference portrait given"}
        if self.paste is not None:
            self.report["paste"] = {**self.paste.describe(), "seam_ratio": None if seam is None else round(seam, 4)}


def apply_post(frames: torch.Tensor, speech: Speech, fps: float, options: PostOptions,
               face_box: FaceBox | None = None,
               reference: Reference | None = None) -> tuple[torch.Tensor, Speech, dict[str, Any]]:
    """Every chosen step on a whole clip: :func:`apply_clip_steps`, then :class:`StreamSteps` over the result.
    ``reference`` (the prepared portrait) gives the face box when ``face_box`` is None, the colour match's target
    and the paste-back's original and crop box."""
    if face_box is None and reference is not None:
        face_box = reference.frame_box
    frames, speech, report = apply_clip_steps(frames, speech, fps, options, face_box)
    if options.streaming:
        steps = StreamSteps(options, fps, reference)
        frames = torch.cat(list(steps.run([frames])))
        report.update(steps.report)
    return frames, speech, report
