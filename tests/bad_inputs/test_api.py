"""Bad inputs through the Python API: every portrait, speech file, setting, token value and graph a user can hand
the engine ends in one ``SonicError`` line that names the input (never a library error or a traceback), leaves no
file, and the inputs that are merely unusual (16-bit, palette, CMYK, animated, silent) work."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sonic_testing import SPEECH, assert_one_line, bad_audio, bad_image, basic_prompt, files_in, seconds_of

from sonic_core import timing
from sonic_core.audio import load_speech, speech_from_waveform
from sonic_core.errors import SonicAudioError, SonicFaceError, SonicInputError
from sonic_core.inputs import prepare_inputs
from sonic_core.metering.graph_pricing import GraphCostError, price_graph
from sonic_core.post.lipsync import align
from sonic_core.post.smooth import smooth_motion
from sonic_core.post.temporal import deflicker
from sonic_core.settings import SonicSettings
from sonic_core.tokens import estimate_tokens


@pytest.fixture(scope="module")
def speech():
    return load_speech(SPEECH)


# -- portraits ---------------------------------------------------------------------------------------------------

IMAGE_ERRORS = [
    ("truncated", SonicInputError, "not a readable image"),
    ("no_face", SonicFaceError, "face"),
    ("tiny", SonicFaceError, "face"),
    ("bomb", SonicInputError, "MP"),
    ("huge", SonicInputError, "11000x10000"),
    ("text", SonicInputError, "not a readable image"),
    ("empty", SonicInputError, "not a readable image"),
    ("directory", SonicInputError, "is a directory"),
    ("missing", SonicInputError, "does not exist"),
    ("long_name", SonicInputError, "File name too long"),
    ("newline_name", SonicInputError, "por\\ntrait.png"),
]


@pytest.mark.parametrize("kind, error, needle", IMAGE_ERRORS, ids=[case[0] for case in IMAGE_ERRORS])
def test_bad_portraits_end_in_one_line(tmp_path, speech, kind, error, needle):
    image = bad_image(kind, tmp_path)
    before = files_in(tmp_path)
    with pytest.raises(error) as caught:
        prepare_inputs(image, speech, SonicSettings())
    assert_one_line(str(caught.value), needle)
    assert files_in(tmp_path) == before


@pytest.mark.parametrize("kind", ["i16", "P", "RGBA", "LA", "L", "CMYK", "gif"])
def test_unusual_image_modes_keep_their_face(tmp_path, speech, kind):
    """A 16-bit grayscale portrait used to turn white in ``convert("RGB")`` (PIL clips I;16) and lose its face."""
    prepared = prepare_inputs(bad_image(kind, tmp_path), speech, SonicSettings())
    box = prepared.reference.face_box
    assert 150 < box.x1 + box.width / 2 < 300 and box.score > 0  # the bundled portrait's face, as in RGB


def test_16_bit_portrait_is_scaled_not_clipped(tmp_path):
    from sonic_core.inputs import open_portrait

    pixels = np.asarray(open_portrait(bad_image("i16", tmp_path)), dtype=np.float64)
    gray = np.asarray(open_portrait(bad_image("L", tmp_path)), dtype=np.float64)
    assert np.abs(pixels - gray).max() <= 1


# -- speech ------------------------------------------------------------------------------------------------------

AUDIO_ERRORS = [
    ("empty", "empty"),
    ("10ms", "too short"),
    ("nan", "NaN"),
    ("directory", "is a directory"),
    ("missing", "does not exist"),
    ("wrong_extension", "speech.mp3"),
    ("corrupt_header", "corrupt_header.wav"),
    ("long_name", "File name too long"),
    ("newline_name", "spe\\nech.wav"),
]


@pytest.mark.parametrize("kind, needle", AUDIO_ERRORS, ids=[case[0] for case in AUDIO_ERRORS])
def test_bad_speech_files_end_in_one_line(tmp_path, kind, needle):
    audio = bad_audio(kind, tmp_path)
    before = files_in(tmp_path)
    with pytest.raises(SonicAudioError) as caught:
        load_speech(audio)
    assert_one_line(str(caught.value), needle)
    assert files_in(tmp_path) == before


def test_silent_speech_is_accepted(tmp_path):
    assert load_speech(bad_audio("silent", tmp_path)).seconds == pytest.approx(1.0)


WAVEFORM_ERRORS = [
    ("nan samples", np.full((1, 16000), np.nan, np.float32), 16000, None, "NaN"),
    ("inf samples", np.full((1, 16000), np.inf, np.float32), 16000, None, "NaN or infinite"),
    ("rate 0", np.zeros((1, 16000), np.float32), 0, None, "sample rate 0"),
    ("rate nan", np.zeros((1, 16000), np.float32), math.nan, None, "sample rate nan"),
    ("rate inf", np.zeros((1, 16000), np.float32), math.inf, None, "sample rate inf"),
    ("rate text", np.zeros((1, 16000), np.float32), "16k", None, "sample rate '16k'"),
    # 4,000 samples "at 1 Hz" resampled to 16 kHz were 64 million samples: the audio-node fuzz stalled on it
    ("rate 1 Hz", np.zeros((1, 4000), np.float32), 1, None, "sample rate 1 Hz is outside 1,000-768,000 Hz"),
    ("rate 999 Hz", np.zeros((1, 4000), np.float32), 999, None, "sample rate 999 Hz is outside"),
    ("rate 10 MHz", np.zeros((1, 4000), np.float32), 10_000_000, None, "sample rate 10000000 Hz is outside"),
    ("duration nan", np.zeros((1, 16000), np.float32), 16000, math.nan, "duration nan"),
    ("duration inf", np.zeros((1, 16000), np.float32), 16000, math.inf, "duration inf"),
    ("duration negative", np.zeros((1, 16000), np.float32), 16000, -1.0, "duration -1.0"),
    ("batch of 2", np.zeros((2, 1, 16000), np.float32), 16000, None, "batch of 2"),
    ("1-D", np.zeros(16000, np.float32), 16000, None, "shape"),
]


@pytest.mark.parametrize("waveform, rate, duration, needle", [case[1:] for case in WAVEFORM_ERRORS],
                         ids=[case[0] for case in WAVEFORM_ERRORS])
def test_bad_waveforms_end_in_one_line(waveform, rate, duration, needle):
    with pytest.raises(SonicAudioError) as caught:
        speech_from_waveform(waveform, rate, duration, fit="pad")
    assert_one_line(str(caught.value), needle)


def test_audio_longer_than_400_s_is_generated_and_priced_whole():
    """The official 400 s cap cut the frames while the tokens priced the whole audio."""
    seconds = 401
    speech = speech_from_waveform(np.zeros((1, seconds * 8000), np.float32), 8000)
    assert speech.seconds == seconds
    frames = seconds * timing.AUDIO_FPS // timing.AUDIO_FRAMES_PER_VIDEO_FRAME
    assert timing.generated_frames(seconds) == frames
    assert timing.output_frames(seconds) == 2 * frames - 1

    class Ref:  # the frame count needs no portrait
        pass

    from sonic_core.inputs import PreparedInputs

    assert PreparedInputs(speech, Ref()).num_frames == frames


# -- settings ----------------------------------------------------------------------------------------------------

NUMERIC_KNOBS = [name for name in SonicSettings.knob_names() if SonicSettings.knob(name).type in (int, float)]
BAD_VALUES = {"nan": math.nan, "inf": math.inf, "negative": -1, "huge": 1e300, "text": "abc", "bool": True}


@pytest.mark.parametrize("value", list(BAD_VALUES.values()), ids=list(BAD_VALUES))
@pytest.mark.parametrize("name", NUMERIC_KNOBS)
def test_every_numeric_knob_refuses_absurd_values(name, value):
    if name == "shift_offset" and value == -1 or name in ("seed",) and value == -1:
        value = -5  # -1 is refused as well; keep the case honest for knobs whose minimum is 0
    with pytest.raises(SonicInputError) as caught:
        SonicSettings(**{name: value})
    assert_one_line(str(caught.value), name)


# -- tokens ------------------------------------------------------------------------------------------------------

TOKEN_ERRORS = [
    ((1e300, 1e300, 1e300), "overflows"),
    ((1e308, 512, 20, 1e308, 1e308), "overflows"),
    ((math.nan, 512, 20), "duration"),
    ((10, math.inf, 20), "resolution"),
    ((10, 512, -1), "steps"),
    ((10, 512, 20, math.nan), "dynamic_scale"),
    (("10", 512, 20), "duration"),
    ((True, 512, 20), "duration"),
]


@pytest.mark.parametrize("args, needle", TOKEN_ERRORS, ids=[str(case[0]) for case in TOKEN_ERRORS])
def test_token_formula_refuses_with_a_value_error(args, needle):
    """``int(round(inf))`` raised OverflowError, which is no ValueError: the contract says ValueError."""
    with pytest.raises(SonicInputError) as caught:
        estimate_tokens(*args)
    assert isinstance(caught.value, ValueError)
    assert_one_line(str(caught.value), needle)


# -- frames handed to the post-processing API --------------------------------------------------------------------

POST_STEPS = {
    "align": lambda frames: align(frames, np.zeros(16000, np.float32), 25.0),
    "smooth_motion": lambda frames: smooth_motion(frames, 25.0),
    "deflicker": lambda frames: deflicker(frames, 25.0),
}


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf], ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize("step", list(POST_STEPS))
def test_post_steps_refuse_nan_or_infinite_pixels(step, value):
    frames = torch.full((20, 3, 32, 32), 0.5)
    frames[17, 0, 5, 5] = value  # past the first CHUNK of 16 frames checked at a time
    with pytest.raises(SonicInputError) as caught:
        POST_STEPS[step](frames)
    assert_one_line(str(caught.value), "frames: frame 17 holds NaN or infinite pixel values")


# -- graphs ------------------------------------------------------------------------------------------------------

def graph(change) -> dict:
    prompt = basic_prompt()
    change(prompt)
    return prompt


def _cycle_of_loaders(prompt):
    prompt["3"] = {"class_type": "SonicLoadAudioDuration", "inputs": {"audio": ["6", 0], "audio_file": "none"}}
    prompt["6"] = {"class_type": "SonicLoadAudioDuration", "inputs": {"audio": ["3", 0], "audio_file": "none"}}


def _cycle_of_primitives(prompt):
    prompt["4"]["inputs"]["duration"] = ["7", 0]
    prompt["7"] = {"class_type": "PrimitiveFloat", "inputs": {"value": ["8", 0]}}
    prompt["8"] = {"class_type": "PrimitiveFloat", "inputs": {"value": ["7", 0]}}


def _self_loop(prompt):
    prompt["4"]["inputs"]["steps"] = 1
    prompt["5"]["inputs"]["steps"] = ["9", 0]
    prompt["9"] = {"class_type": "PrimitiveInt", "inputs": {"value": ["9", 0]}}


GRAPH_ERRORS = [
    ("cycle of audio loaders", _cycle_of_loaders, "3 -> 6 -> 3"),
    ("cycle of primitives", _cycle_of_primitives, "7 -> 8 -> 7"),
    ("primitive feeding itself", _self_loop, "9 -> 9"),
    ("sampler inputs a list", lambda p: p["5"].update(inputs=[1, 2]), "node 5"),
    ("predata inputs a string", lambda p: p["4"].update(inputs="x"), "node 4"),
    ("dangling link", lambda p: p["5"]["inputs"].update(predata=["99", 0]), "'99'"),
    ("steps as text", lambda p: p["5"]["inputs"].update(steps="many"), "'steps'"),
    ("steps a bool", lambda p: p["5"]["inputs"].update(steps=True), "'steps'"),
    ("huge steps", lambda p: p["5"]["inputs"].update(steps=10**30), "steps"),
    ("nan scale", lambda p: p["5"]["inputs"].update(dynamic_scale=math.nan), "dynamic_scale"),
    ("huge duration", lambda p: p["4"]["inputs"].update(duration=1e308), "5"),
    ("negative duration", lambda p: p["4"]["inputs"].update(duration=-3.0), "duration"),
    ("audio never uploaded", lambda p: p["3"]["inputs"].update(audio="never.wav"), "never.wav"),
    ("no audio file", lambda p: p["3"]["inputs"].update(audio=""), "no audio file"),
    ("predata not connected", lambda p: p["5"]["inputs"].update(predata=None), "'predata'"),
]


@pytest.mark.parametrize("change, needle", [case[1:] for case in GRAPH_ERRORS], ids=[case[0] for case in GRAPH_ERRORS])
def test_bad_graphs_end_in_one_line(change, needle):
    with pytest.raises(GraphCostError) as caught:
        price_graph(graph(change), tier="standard", audio_duration=seconds_of)
    assert_one_line(str(caught.value), needle)


def test_a_prompt_that_is_no_object_is_refused():
    with pytest.raises(GraphCostError) as caught:
        price_graph([1, 2], tier="standard", audio_duration=seconds_of)
    assert_one_line(str(caught.value), "Save (API)")
