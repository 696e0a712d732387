"""Studio output: paste-back into the full frame, deflicker and colour match, on small synthetic cases of known truth
(fixed seeds), against the issue's targets: seam within 10 % of the original's gradient, strobing cut by ≥ 80 % with
≥ 95 % of the mouth motion kept, colour error cut by ≥ 70 % on drifted clips and moved by ≤ 0.5 ΔE on clean ones."""

from __future__ import annotations

import pytest
import torch

from sonic_core.errors import SonicInputError
from sonic_core.face.box import FaceBox
from sonic_core.post import synthetic
from sonic_core.post.colour import ColourMatch, colour_error, delta_e_between
from sonic_core.post.paste import PasteBack
from sonic_core.post.temporal import Deflicker, deflicker

FPS = 25.0
SIZE = 128
INNER_BOX = (132, 21, 316, 205)  # the portrait's face with margin, inside the 512 x 448 shot
PAST_TOP_LEFT = (-40, -30, 200, 210)  # a crop padded beyond the top-left corner
ON_TOP_BORDER = (100, 0, 348, 248)  # a crop clamped to the top border, as the engine's square crop does


@pytest.fixture(scope="module")
def talking() -> tuple[torch.Tensor, FaceBox]:
    frames, _, box = synthetic.talking_clip(0.0, duration=6.0, start=0.5, size=SIZE, fps=FPS, noise=0.0, seed=1)
    return frames, box


# --- paste-back -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("crop_box, gain", [(INNER_BOX, 1.1), (PAST_TOP_LEFT, 1.1), (ON_TOP_BORDER, 1.1),
                                            (INNER_BOX, 1.25)])
def test_pasted_frames_have_the_original_size_and_no_seam(crop_box, gain) -> None:
    """The generated face is brighter than the original (by 10 %, and by 25 %, which only a matched exposure hides)."""
    original, frames = synthetic.paste_case(crop_box, size=SIZE, gain=gain)
    paste = PasteBack(original, crop_box)
    pasted = paste.paste(frames)
    assert pasted.shape == (len(frames), 3, *original.shape[1:])
    assert paste.seam_ratio(pasted[0]) <= 1.10
    # outside the crop the original is untouched
    outside = paste.mask() == 0
    assert torch.equal(pasted[:, :, outside], original[:, outside].expand(len(frames), -1, -1))
    # a hard edge shows: the measure is not blind to the seam it is there to catch
    hard = PasteBack(original, crop_box, feather=0.0)
    assert hard.seam_ratio(hard.paste(frames)[0]) > 1.10


def test_the_padded_part_of_a_crop_past_the_border_is_not_pasted() -> None:
    original, frames = synthetic.paste_case(PAST_TOP_LEFT, size=SIZE)
    paste = PasteBack(original, PAST_TOP_LEFT)
    assert paste.visible_box == (0, 0, 200, 210)
    assert paste.inner_edges() == {"left": False, "top": False, "right": True, "bottom": True}
    pasted = paste.paste(frames)
    # the frames are black where the crop left the image; none of that black reaches the pasted corner
    assert float(pasted[:, :, :8, :8].mean()) > 0.2
    # at the image border (no blend there) the frame is pasted as it is
    assert torch.equal(paste.region_mask()[:40, 0], torch.ones(40))


def test_a_crop_without_an_inner_edge_has_no_seam_to_measure() -> None:
    original, frames = synthetic.paste_case((0, 0, 512, 448), size=SIZE, count=1)
    paste = PasteBack(original, (0, 0, 512, 448))
    assert paste.seam_ratio(paste.paste(frames)[0]) is None and not paste.seam_strips()


def test_pasting_the_crop_itself_gives_back_the_original() -> None:
    original, frames = synthetic.paste_case(INNER_BOX, size=184, gain=1.0, noise=0.0)
    pasted = PasteBack(original, INNER_BOX).paste(frames)[0]
    assert float((pasted - original).abs().mean()) < 0.005


# --- flicker ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("amplitude, period_s", [(0.05, 1.0), (0.08, 0.8)])
def test_deflicker_removes_strobing_and_keeps_the_mouth(talking, amplitude, period_s) -> None:
    clean, box = talking
    strobing = synthetic.strobed(clean, amplitude, period_s, FPS)
    out, report = deflicker(strobing, FPS, box)
    before = synthetic.strobe_amplitude(strobing, period_s, FPS)
    after = synthetic.strobe_amplitude(out, period_s, FPS)
    assert before > 0.8 * amplitude
    assert after <= 0.2 * before
    assert synthetic.mouth_energy_kept(out, clean, box) >= 0.95
    assert report.flicker_after < 0.2 * report.flicker_before and report.frames == len(clean)
    assert report.face_flicker_before is not None and report.background_flicker_before is not None


@pytest.mark.parametrize("amplitude, period_s", [(0.1, 1.5), (0.05, 0.6)])
def test_deflicker_keeps_the_mouth_of_a_moving_head_to_the_clip_ends(amplitude, period_s) -> None:
    """A strobe's period is found and averaged out, so frames near the ends (where a Gaussian low-pass is one-sided
    and lets the strobe through) keep the mouth as well as the middle does."""
    clean, _, _ = synthetic.motion_clip(duration=6.0, size=96, fps=FPS, seed=3)
    box = synthetic.face_box(96)
    strobing = synthetic.strobed(clean, amplitude, period_s, FPS, phase=1.0)
    out, _ = deflicker(strobing, FPS, box)
    assert synthetic.mouth_energy_kept(out, clean, box) >= 0.95
    after = synthetic.strobe_amplitude(out, period_s, FPS)
    assert after <= 0.2 * synthetic.strobe_amplitude(strobing, period_s, FPS)


@pytest.mark.parametrize("motion", [synthetic.Motion(), synthetic.Motion(amplitude=(2.0, 16.0, 0.01, 0.01),
                                                                     frequency=(0.3, 0.8, 0.2, 0.2))])
def test_deflicker_leaves_a_short_moving_clip_without_strobing_alone(motion) -> None:
    """A moving head changes the mean over any fixed region (edges and the mouth move in and out of it) as much as a
    strobe would; on a 3 s clip the low-pass had few seconds to tell the two apart and took the motion for
    flicker (the default motion kept 96 % of the mouth's energy, a nod 60 %)."""
    clean, _, _ = synthetic.motion_clip(motion, duration=3.0, size=96, fps=FPS, seed=11)
    box = synthetic.face_box(96)
    out, report = deflicker(clean, FPS, box)
    assert synthetic.mouth_energy_kept(out, clean, box) >= 0.97
    assert report.max_gain_change < 0.004


def test_deflicker_leaves_a_clip_without_strobing_as_it_is(talking) -> None:
    clean, box = talking
    out, report = deflicker(clean, FPS, box)
    assert synthetic.mouth_energy_kept(out, clean, box) >= 0.95
    assert float((out - clean).abs().mean()) < 0.003 and report.max_gain_change < 0.01


def test_deflicker_streams_with_a_bounded_look_ahead(talking) -> None:
    clean, box = talking
    strobing = synthetic.strobed(clean, 0.05, 1.0, FPS)
    whole, _ = deflicker(strobing, FPS, box)
    worker = Deflicker(FPS, box)
    held, released = [], []
    for chunk in strobing.split(7):
        released.extend(worker.push(chunk))
        held.append(worker.held)
    released.extend(worker.finish())
    assert torch.allclose(torch.cat(released), whole, atol=1e-6)
    assert max(held) <= worker.look_ahead + 7 < len(strobing)


# --- colour -----------------------------------------------------------------------------------------------------

def test_colour_match_undoes_a_drift_to_the_portrait(talking) -> None:
    clean, box = talking
    reference = torch.from_numpy(synthetic.portrait(SIZE)).permute(2, 0, 1)
    drifting = synthetic.drifted(clean)
    matcher = ColourMatch(reference, box, 1.0)
    out = matcher.apply(drifting)
    before, after = colour_error(drifting, reference, box), colour_error(out, reference, box)
    assert after[0] <= 0.3 * before[0] and after[1] <= 0.3 * before[1]
    report = matcher.report()
    assert report.delta_e_before == pytest.approx(before[0], abs=1e-3) and report.cast_after < 0.3 * report.cast_before


@pytest.fixture(scope="module")
def moving() -> tuple[torch.Tensor, FaceBox, torch.Tensor]:
    """A moving talking head (the whole frame moves), its face box and the still portrait it was made from."""
    frames, _, _ = synthetic.motion_clip(synthetic.Motion(amplitude=(16.0, 10.0, 0.04, 0.03)), duration=2.0,
                                         size=96, fps=FPS, seed=7)
    return frames, synthetic.face_box(96), torch.from_numpy(synthetic.portrait(96)).permute(2, 0, 1)


@pytest.mark.parametrize("gain, offset", [((0.9, 0.95, 1.1), (-0.02, 0.0, 0.03)), ((1.1, 1.1, 1.1), (0.0, 0.0, 0.0))])
def test_colour_match_undoes_a_drift_of_a_moving_head(moving, gain, offset) -> None:
    """Measured against the clip before the drift: statistics of a fixed region move with the head, so a match to
    the portrait's left 30 % of the drift; the registered portrait's are those of the same content."""
    clean, box, reference = moving
    drifting = synthetic.drifted(clean, gain, offset)
    out = ColourMatch(reference, box, 1.0).apply(drifting)
    assert delta_e_between(out, clean, box) <= 0.3 * delta_e_between(drifting, clean, box)


def test_colour_match_leaves_a_moving_head_without_drift_unchanged(moving) -> None:
    clean, box, reference = moving
    matcher = ColourMatch(reference, box, 1.0)
    assert delta_e_between(matcher.apply(clean), clean, box) <= 0.25
    assert matcher.report().frames == len(clean)


def test_colour_strength_scales_the_match(talking) -> None:
    clean, box = talking
    reference = torch.from_numpy(synthetic.portrait(SIZE)).permute(2, 0, 1)
    drifting = synthetic.drifted(clean)
    assert torch.equal(ColourMatch(reference, box, 0.0).apply(drifting), drifting)
    casts = [colour_error(ColourMatch(reference, box, s).apply(drifting), reference, box)[1] for s in (0.0, 0.5, 1.0)]
    assert casts[0] > casts[1] > casts[2]


# --- bad input --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("make, needle", [
    (lambda o: PasteBack(o, (10, 10, 5, 50)), "crop_box"),
    (lambda o: PasteBack(o, (600, 10, 700, 110)), "overlap"),
    (lambda o: PasteBack(o, INNER_BOX, feather=0.9), "feather"),
    (lambda o: PasteBack(o[:2], INNER_BOX), "original"),
    (lambda o: ColourMatch(o, None, 1.5), "colour_strength"),
    (lambda o: ColourMatch(o, None).apply(torch.rand(2, 3, 16, 16)), "reference"),
    (lambda o: Deflicker(0.0), "fps"),
])
def test_bad_inputs_are_refused_in_one_line(make, needle) -> None:
    original, _ = synthetic.paste_case(INNER_BOX, size=SIZE, count=1)
    with pytest.raises(SonicInputError, match=needle) as caught:
        make(original)
    assert "\n" not in str(caught.value)
