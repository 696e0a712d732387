"""Post-processing: Lip-Sync Align, Motion Smooth and retiming on small synthetic clips of known truth."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.signal import savgol_filter

from sonic_core.audio import shift_audio
from sonic_core.errors import SonicAudioError, SonicInputError, SonicInterrupted
from sonic_core.interpolation import grid_positions, linear_midpoint, retime
from sonic_core.post import synthetic
from sonic_core.post.filters import bezier_fit, one_euro, savitzky_golay
from sonic_core.post.lipsync import DEFAULT_MIN_CONFIDENCE, align, measure_offset
from sonic_core.post.signals import parabolic_peak, second_difference_jitter
from sonic_core.post.smooth import estimate_trajectory, smooth_motion
from sonic_core.timing import SAMPLE_RATE

FPS = 25.0
FRAME_S = 1.0 / FPS
SIZE = 128


# --- peak refinement and filters -------------------------------------------------------------------------------

@pytest.mark.parametrize("vertex", [-0.4, -0.1, 0.0, 0.25, 0.45])
def test_parabolic_peak_finds_the_vertex_of_a_sampled_parabola(vertex):
    left, centre, right = (-(x - vertex) ** 2 + 3.0 for x in (-1.0, 0.0, 1.0))
    assert parabolic_peak(left, centre, right) == pytest.approx(vertex, abs=1e-12)


def test_parabolic_peak_is_zero_without_a_maximum():
    assert parabolic_peak(1.0, 1.0, 1.0) == 0.0
    assert parabolic_peak(2.0, 0.0, 2.0) == 0.0


@pytest.mark.parametrize("window,order", [(5, 2), (9, 3), (11, 2), (7, 1)])
def test_savitzky_golay_matches_the_reference_including_the_ends(window, order):
    values = np.random.default_rng(1).normal(size=(40, 3))
    expected = savgol_filter(values, window, order, axis=0, mode="interp")
    np.testing.assert_allclose(savitzky_golay(values, window, order), expected, atol=1e-10)


def test_bezier_fit_reproduces_a_cubic_and_removes_noise():
    t = np.arange(80.0)
    cubic = 1e-4 * t ** 3 - 0.01 * t ** 2 + 0.5 * t + 3.0
    np.testing.assert_allclose(bezier_fit(cubic, segment=12), cubic, atol=1e-4)
    noise = np.random.default_rng(2).normal(size=t.shape)
    smoothed = bezier_fit(cubic + noise, segment=12)
    assert np.std(smoothed - cubic) < 0.4 * np.std(noise)
    assert second_difference_jitter(smoothed) < 0.1 * second_difference_jitter(cubic + noise)


def test_one_euro_keeps_constants_and_beta_reduces_lag_on_a_ramp():
    np.testing.assert_allclose(one_euro(np.full(30, 4.0), FPS, min_cutoff=1.0), 4.0)
    ramp = np.arange(100.0)
    slow = one_euro(ramp, FPS, min_cutoff=0.5, beta=0.0)
    fast = one_euro(ramp, FPS, min_cutoff=0.5, beta=0.5)
    assert 0 < ramp[-1] - fast[-1] < 0.5 * (ramp[-1] - slow[-1])


# --- lip sync ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("offset", [-0.2, -0.09, 0.0, 0.06, 0.13, 0.2])
def test_offset_is_recovered_within_one_frame_with_its_sign(offset):
    frames, audio, box = synthetic.talking_clip(offset, duration=3.0, start=1.0, size=SIZE, seed=3)
    report = measure_offset(frames, audio, FPS, face_box=box)
    assert abs(report.offset_s - offset) <= FRAME_S
    assert report.confidence >= DEFAULT_MIN_CONFIDENCE
    assert not report.applied


def test_correct_mode_delays_leading_audio_and_keeps_its_length():
    frames, audio, box = synthetic.talking_clip(0.12, duration=3.0, start=0.5, size=SIZE, seed=4)
    out_frames, corrected, report = align(frames, audio, FPS, mode="correct", face_box=box)
    assert report.applied and report.offset_s > 0 and report.shift_samples > 0
    assert out_frames is frames and corrected.shape == audio.shape
    np.testing.assert_array_equal(corrected[:report.shift_samples], 0.0)
    np.testing.assert_array_equal(corrected[report.shift_samples:], audio[:len(audio) - report.shift_samples])
    assert abs(measure_offset(frames, corrected, FPS, face_box=box).offset_s) <= FRAME_S / 2


def test_face_is_found_without_a_box():
    frames, audio, _ = synthetic.talking_clip(-0.1, duration=3.0, start=2.0, size=SIZE, seed=5)
    report = measure_offset(frames, audio, FPS)
    assert report.face_box is not None
    assert abs(report.offset_s + 0.1) <= FRAME_S


@pytest.mark.parametrize("noise,seed", [(0.01, 6), (0.03, 7)])
def test_still_mouth_with_speech_is_never_corrected(noise, seed):
    frames, audio, box = synthetic.talking_clip(0.0, duration=3.0, start=0.3, size=SIZE, noise=noise,
                                                silent=True, seed=seed)
    _, out_audio, report = align(frames, audio, FPS, mode="correct", face_box=box)
    assert report.confidence < DEFAULT_MIN_CONFIDENCE
    assert not report.applied and report.reason.startswith("not applied")
    np.testing.assert_array_equal(out_audio, audio)


def test_moving_head_with_closed_mouth_is_never_corrected():
    frames, _, _ = synthetic.motion_clip(duration=3.0, size=SIZE, talking=False, seed=8)
    audio = synthetic.talking_clip(0.0, duration=3.0, start=1.0, size=16)[1]
    _, _, report = align(frames, audio, FPS, mode="correct", face_box=synthetic.face_box(SIZE))
    assert report.confidence < DEFAULT_MIN_CONFIDENCE and not report.applied


def test_flat_signals_are_reported_not_guessed():
    frames, audio, box = synthetic.talking_clip(0.0, duration=2.0, size=SIZE, noise=0.0, silent=True)
    assert measure_offset(frames, audio, FPS, face_box=box).reason == "not applied: no mouth motion in the frames"
    talking = synthetic.talking_clip(0.0, duration=2.0, size=SIZE)[0]
    report = measure_offset(talking, np.zeros_like(audio), FPS, face_box=box)
    assert report.reason == "not applied: no speech activity in the audio" and report.confidence == 0.0


def test_shift_audio_keeps_length_both_ways():
    audio = np.arange(1, 11, dtype=np.float32)
    np.testing.assert_array_equal(shift_audio(audio, 3), [0, 0, 0, 1, 2, 3, 4, 5, 6, 7])
    np.testing.assert_array_equal(shift_audio(audio, -3), [4, 5, 6, 7, 8, 9, 10, 0, 0, 0])
    np.testing.assert_array_equal(shift_audio(audio, 20), np.zeros(10))


def test_lipsync_rejects_bad_input_in_one_line():
    frames = torch.rand(10, 3, 32, 32)
    audio = np.zeros(SAMPLE_RATE, dtype=np.float32)
    with pytest.raises(SonicInputError, match=r"frames: expected shape \[F, 3, H, W\]"):
        measure_offset(torch.rand(10, 32, 32), audio)
    with pytest.raises(SonicAudioError, match="audio: contains NaN"):
        measure_offset(frames, np.full(100, np.nan, dtype=np.float32))
    with pytest.raises(SonicInputError, match="mode: expected 'measure' or 'correct'"):
        align(frames, audio, mode="fix")
    with pytest.raises(SonicInputError, match="max_offset"):
        measure_offset(frames, audio, max_offset=-1)
    with pytest.raises(SonicInputError, match="face_box"):
        measure_offset(frames, audio, face_box=(1, 2, 0, 4))


# --- motion smooth -------------------------------------------------------------------------------------------

MOTION_SIZE = 192


@pytest.fixture(scope="module")
def jittery_clip():
    frames, intended, jitter = synthetic.motion_clip(duration=4.0, size=MOTION_SIZE, seed=11)
    box = synthetic.face_box(MOTION_SIZE)
    return frames, box, estimate_trajectory(frames, box).params, intended + jitter


def test_trajectory_follows_the_known_motion(jittery_clip):
    _, _, measured, truth = jittery_clip
    truth = truth.copy()
    truth[:, 2:] *= MOTION_SIZE / 2  # angle and log-scale in pixels at half the short side
    error = np.abs((measured - measured[0]) - (truth - truth[0]))
    assert error.mean(axis=0).max() < 0.25  # pixels; chaining frame-to-frame fits instead drifts past 0.3
    gains = [np.polyfit(truth[:, d], measured[:, d], 1)[0] for d in range(4)]
    assert all(0.93 < gain < 1.07 for gain in gains), gains  # a fixed 21 px LK window read rotation ~11 % low


@pytest.mark.parametrize("method", ["bezier", "savgol", "one_euro"])
def test_smoothing_cuts_jitter_keeps_intended_motion_and_frame_count(jittery_clip, method):
    frames, box, before, _ = jittery_clip
    out, report = smooth_motion(frames, FPS, method=method, strength="auto", face_box=box)
    assert out.shape == frames.shape and report.frames_out == len(frames) and report.fps_out == FPS
    assert report.strength_auto and report.strength > 0.5
    after = estimate_trajectory(out, box).params
    assert second_difference_jitter(after) <= 0.4 * second_difference_jitter(before)
    for dim, frequency in enumerate(synthetic.Motion().frequency):
        kept = synthetic.sinusoid_amplitude(after[:, dim], frequency, FPS) / synthetic.sinusoid_amplitude(
            before[:, dim], frequency, FPS)
        assert kept >= 0.95, (dim, kept)


@pytest.mark.parametrize("border", ["reflect", "zoom"])
def test_no_black_borders(jittery_clip, border):
    frames, box, _, _ = jittery_clip
    lifted = 0.1 + 0.9 * frames  # no pixel of the input is darker than 0.1
    out, report = smooth_motion(lifted, FPS, method="savgol", strength=1.0, face_box=box, border=border)
    assert report.max_correction_px > 1.0
    assert float(out.min()) >= 0.099
    assert (report.zoom > 1.0) == (border == "zoom")


def test_still_clip_is_left_alone_and_strength_zero_is_identity():
    frames, _, box = synthetic.talking_clip(0.0, duration=1.0, size=SIZE, noise=0.0, silent=True)
    out, report = smooth_motion(frames, FPS, face_box=box)
    assert report.strength == 0.0 and report.reason.startswith("no jitter measured")
    assert torch.equal(out, frames)
    moving = synthetic.motion_clip(duration=1.0, size=SIZE, seed=12)[0]
    assert torch.equal(smooth_motion(moving, FPS, strength=0.0, face_box=box)[0], moving)


def test_smooth_with_target_fps_uses_the_interpolator():
    frames = synthetic.motion_clip(duration=1.0, size=64, seed=13)[0]
    calls = []

    def midpoint(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        calls.append(a.shape)
        return linear_midpoint(a, b)

    out, report = smooth_motion(frames, FPS, strength=0.5, target_fps=50.0, interpolator=midpoint)
    assert len(out) == 2 * len(frames) and report.frames_out == len(out) and report.fps_out == 50.0
    assert calls and all(shape[1:] == frames.shape[1:] for shape in calls)


def test_smooth_rejects_bad_settings():
    frames = torch.rand(4, 3, 16, 16)
    with pytest.raises(SonicInputError, match="method: expected one of bezier, savgol, one_euro"):
        smooth_motion(frames, method="kalman")
    with pytest.raises(SonicInputError, match="strength: expected 'auto' or a number in"):
        smooth_motion(frames, strength=1.5)
    with pytest.raises(SonicInputError, match="fps"):
        smooth_motion(frames, fps=0)


# --- retiming ------------------------------------------------------------------------------------------------

def ramp(count: int) -> torch.Tensor:
    """Frames whose every pixel equals the frame index, so a linear retime shows the source position."""
    return torch.arange(float(count)).view(count, 1, 1, 1).expand(count, 3, 4, 4).contiguous()


@pytest.mark.parametrize("target,expected", [
    (50.0, [0, 0.5, 1, 1.5, 2, 2.5, 3, 3.5, 4, 4]),
    (100.0, [i / 4 for i in range(17)] + [4, 4, 4]),
    (12.5, [0, 2]),  # 0.2 s at 12.5 fps is 2.5 frames: round half to even
])
def test_retime_by_recursive_midpoints_keeps_duration(target, expected):
    out = retime(ramp(5), FPS, target)
    assert out[:, 0, 0, 0].tolist() == pytest.approx(expected)


def test_retime_to_an_arbitrary_rate_picks_the_nearest_grid_time():
    out = retime(ramp(10), FPS, 30.0)
    assert len(out) == 12
    positions = np.minimum(np.arange(12) * FPS / 30.0, 9)
    assert np.abs(out[:, 0, 0, 0].numpy() - positions).max() <= 1 / 16
    assert grid_positions(10, FPS, 30.0)[1] == (7, 3)  # 0.8333 frames -> 7/8


def test_retime_checks_the_interpolator_output():
    with pytest.raises(SonicInputError, match="interpolator: must return a tensor"):
        retime(ramp(3), FPS, 50.0, midpoint=lambda a, b: a[:, :1])


@pytest.mark.parametrize("stop_at", [2, 102])  # while tracking the head (99 frames); while warping (7 chunks)
def test_motion_smooth_stops_between_units_of_work_when_asked(jittery_clip, stop_at):
    frames, box, _, _ = jittery_clip
    asked: list[int] = []

    def stop() -> bool:
        asked.append(1)
        return len(asked) >= stop_at

    with pytest.raises(SonicInterrupted, match="Motion Smooth cancelled"):
        smooth_motion(frames, 25.0, "bezier", 1.0, face_box=box, should_stop=stop)
    assert len(asked) == stop_at
