import math
from pathlib import Path

import pytest

from sonic_core.errors import BudgetExceeded, SonicInputError
from sonic_core.metering.tiers import Tier, load_tiers, parse_tiers, price
from sonic_core.settings import SonicSettings
from sonic_core.tokens import estimate_tokens


def reference(duration, resolution, steps, dynamic_scale=1.0, motion_scale=1.0):
    """The published formula, spelled out term by term."""
    avg_scale = (dynamic_scale + motion_scale) / 2
    multiplier = 1 + max(0, avg_scale - 1) * 0.3
    return int(round(duration * 10 * (resolution / 512) ** 2 * (steps / 20) * multiplier))


def test_published_example_is_767_not_1420():
    assert estimate_tokens(15, 1024, 25, 1.1, 1.05) == 767


@pytest.mark.parametrize("duration,expected", [(1.25, 12), (3.75, 38), (0.25, 2), (0.35, 4), (10, 100)])
def test_round_half_to_even(duration, expected):
    assert estimate_tokens(duration, 512, 20) == expected


@pytest.mark.parametrize("args", [
    (10, 512, 25, 1.0, 1.0), (7.3, 768, 30, 1.5, 0.5), (60, 1280, 100, 2.0, 2.0), (0.08, 256, 1, 0.5, 0.5),
    (15, 1024, 25, 1.1, 1.05), (42.42, 640, 17, 1.3, 1.2),
])
def test_matches_formula(args):
    assert estimate_tokens(*args) == reference(*args)


def test_scales_below_one_are_not_discounted():
    assert estimate_tokens(10, 512, 20, 0.5, 0.5) == estimate_tokens(10, 512, 20) == 100
    assert estimate_tokens(10, 512, 20, 2.0, 1.0) == 115


def test_defaults_are_unit_scales():
    assert estimate_tokens(10, 512, 20) == estimate_tokens(10, 512, 20, 1.0, 1.0)


@pytest.mark.parametrize("field", ["duration", "resolution", "steps"])
@pytest.mark.parametrize("bad", [0, -1, -0.5, math.nan, math.inf, -math.inf, "10", None, True])
def test_invalid_inputs_raise_value_error(field, bad):
    args = {"duration": 10, "resolution": 512, "steps": 20, field: bad}
    with pytest.raises(ValueError, match=field):
        estimate_tokens(**args)


@pytest.mark.parametrize("field", ["dynamic_scale", "motion_scale"])
def test_non_finite_scales_raise(field):
    with pytest.raises(ValueError, match=field):
        estimate_tokens(10, 512, 20, **{field: math.nan})


def test_bundled_tiers():
    tiers = load_tiers()
    assert set(tiers) == {"standard", "pro", "api"}
    assert tiers["standard"] == Tier("standard", tiers["standard"].description, 500, 768, 20, False)
    assert (tiers["pro"].max_tokens_per_job, tiers["pro"].max_resolution, tiers["pro"].max_steps) == (1500, 1080, None)
    assert tiers["api"].metered and tiers["api"].max_tokens_per_job is None


def test_price_verdicts():
    ok = SonicSettings(min_resolution=512, steps=20)
    assert price(ok, "standard", 10) .allowed
    v = price(ok, "standard", 60)
    assert (v.allowed, v.tokens) == (False, 600) and "600 tokens exceed" in v.reason
    hi = SonicSettings(min_resolution=1024, steps=25, dynamic_scale=1.1, motion_scale=1.05)
    v = price(hi, "standard", 15)
    assert not v.allowed and "1024 px" in v.reason and "25 steps" in v.reason and v.tokens == 767
    assert price(hi, "pro", 15).allowed
    assert not price(hi.replace(min_resolution=1152), "pro", 15).allowed
    big = price(hi, "api", 400)
    assert big.allowed and big.metered and big.tokens == estimate_tokens(400, 1024, 25, 1.1, 1.05)


def test_price_reads_duration_from_settings():
    s = SonicSettings(steps=20, duration=12.5)
    assert price(s, "standard").tokens == estimate_tokens(12.5, 512, 20)
    with pytest.raises(SonicInputError, match="duration"):
        price(SonicSettings(), "standard")


def test_refusal_raises_budget_exceeded():
    v = price(SonicSettings(steps=20), "standard", 100)
    with pytest.raises(BudgetExceeded, match="standard") as info:
        v.raise_if_refused()
    assert info.value.tokens == 1000


def test_unknown_tier():
    with pytest.raises(SonicInputError, match="unknown tier 'gold'"):
        price(SonicSettings(), "gold", 10)


def test_toml_override(tmp_path: Path, monkeypatch):
    f = tmp_path / "tiers.toml"
    f.write_text('[trial]\nmax_tokens_per_job = 50\nmax_steps = 10\n\n[enterprise]\nmetered = true\n')
    tiers = load_tiers(f)
    assert set(tiers) == {"trial", "enterprise"}
    assert not price(SonicSettings(steps=10), "trial", 10.2, tiers).allowed  # 51 tokens
    assert price(SonicSettings(steps=10), "trial", 10, tiers).allowed  # 50 tokens
    monkeypatch.setenv("SONIC_TIERS", str(f))
    assert set(load_tiers()) == {"trial", "enterprise"}


@pytest.mark.parametrize("text,match", [
    ("[x]\nmax_tokens = 5\n", "unknown key"),
    ("[x]\nmax_tokens_per_job = 'many'\n", "must be of type int"),
    ("[x]\nmax_tokens_per_job = -5\n", "must be positive"),
    ("[x\n", "not valid TOML"),
    ("", "no tier"),
])
def test_bad_tier_files(tmp_path, text, match):
    f = tmp_path / "t.toml"
    f.write_text(text)
    with pytest.raises(SonicInputError, match=match):
        load_tiers(f)


def test_missing_tier_file(tmp_path):
    with pytest.raises(SonicInputError, match="does not exist"):
        load_tiers(tmp_path / "nope.toml")


def test_parse_tiers_rejects_non_tables():
    with pytest.raises(SonicInputError, match="table"):
        parse_tiers({"x": 3})
