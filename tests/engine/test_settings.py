import dataclasses
import math

import pytest

from sonic_core.errors import SonicInputError
from sonic_core.settings import AUTO, SonicSettings

# The table of ../shared/DESIGN.md "Settings and their defaults".
DESIGN_DEFAULTS = {
    "min_resolution": (512, 256, 1280), "steps": (25, 1, 100), "dynamic_scale": (1.0, 0.5, 2.0),
    "motion_scale": (1.0, 0.5, 2.0), "fps": (25.0, None, None), "seed": (72589, None, None),
    "audio_guidance": (7.5, 1.0, None), "appearance_guidance": (2.0, 1.0, None),
}

NUMERIC = [f.name for f in dataclasses.fields(SonicSettings)
           if SonicSettings.knob(f.name).type in (int, float) and f.name != "expand_ratio"]


def test_design_defaults_and_ranges():
    s = SonicSettings()
    for name, (default, lo, hi) in DESIGN_DEFAULTS.items():
        assert getattr(s, name) == default, name
        knob = SonicSettings.knob(name)
        if lo is not None:
            assert knob.min == lo, name
        if hi is not None:
            assert knob.max == hi, name
    assert s.expand_ratio == AUTO
    assert SonicSettings.knob("min_resolution").multiple_of == 64


@pytest.mark.parametrize("name", NUMERIC)
def test_out_of_range_names_field_value_and_range(name):
    knob = SonicSettings.knob(name)
    for bad in (knob.min - 1, knob.max + 1, math.nan, math.inf, -math.inf):
        with pytest.raises(SonicInputError) as info:
            SonicSettings(**{name: bad})
        msg = str(info.value)
        assert msg.startswith(f"{name}=") and str(int(knob.max) if float(knob.max).is_integer() else knob.max) in msg


@pytest.mark.parametrize("name", NUMERIC)
def test_range_ends_are_accepted(name):
    knob = SonicSettings.knob(name)
    for ok in (knob.min, knob.max):
        if name == "window_overlap" and ok >= SonicSettings().frames_per_window:
            continue
        assert getattr(SonicSettings(**{name: ok}), name) == ok


@pytest.mark.parametrize("value", [500, 1000, 300])
def test_resolution_multiple_of_64(value):
    with pytest.raises(SonicInputError, match=r"min_resolution=\d+ .*multiple of 64 between 256 and 1280"):
        SonicSettings(min_resolution=value)


@pytest.mark.parametrize("name,value", [("steps", 2.5), ("steps", "25"), ("seed", True), ("dynamic_scale", None),
                                        ("interpolate", 1), ("expand_ratio", "wide"), ("expand_ratio", 1.5)])
def test_wrong_types(name, value):
    with pytest.raises(SonicInputError, match=name):
        SonicSettings(**{name: value})


def test_expand_ratio_forms():
    assert SonicSettings(expand_ratio="AUTO").expand_ratio == AUTO
    assert SonicSettings(expand_ratio="0.25").expand_ratio == 0.25
    assert SonicSettings(expand_ratio=0).expand_ratio == 0.0


def test_whole_floats_become_ints():
    s = SonicSettings(steps=20.0, min_resolution=768.0)
    assert (s.steps, s.min_resolution) == (20, 768) and isinstance(s.steps, int)


def test_overlap_must_be_below_window():
    with pytest.raises(SonicInputError, match="window_overlap"):
        SonicSettings(frames_per_window=10, window_overlap=10)


def test_replace_validates_and_rejects_unknown():
    s = SonicSettings()
    assert s.replace(steps=10).steps == 10
    with pytest.raises(SonicInputError, match="steps"):
        s.replace(steps=0)
    with pytest.raises(SonicInputError, match="unknown setting"):
        s.replace(stepz=10)


def test_avg_scale_and_dict():
    s = SonicSettings(dynamic_scale=1.1, motion_scale=1.05)
    assert s.avg_scale == pytest.approx(1.075)
    assert s.to_dict()["dynamic_scale"] == 1.1 and set(s.to_dict()) == set(SonicSettings.knob_names())
