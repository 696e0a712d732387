"""Pricing tiers: limits as data (``tiers.toml`` beside this file, or a TOML file of the same shape) and
:func:`price`, which turns a job into a verdict that says why a tier refuses it."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from ..errors import BudgetExceeded, SonicInputError
from ..paths import config_file, read_config
from ..settings import SonicSettings
from ..tokens import settings_tokens

DEFAULT_TIERS_FILE = Path(__file__).with_name("tiers.toml")
TIERS_ENV = "SONIC_TIERS"


@dataclass(frozen=True)
class Tier:
    """Limits of one pricing tier; ``None`` means no limit."""

    name: str
    description: str = ""
    max_tokens_per_job: int | None = None
    max_resolution: int | None = None
    max_steps: int | None = None
    metered: bool = False


_TIER_KEYS = {"description": str, "max_tokens_per_job": int, "max_resolution": int, "max_steps": int,
              "metered": bool}


def parse_tiers(table: Mapping[str, object], source: str = "tiers") -> dict[str, Tier]:
    """Tiers from a parsed TOML table ``{name: {key: value}}``; unknown keys and bad types are errors."""
    tiers: dict[str, Tier] = {}
    for name, body in table.items():
        if not isinstance(body, Mapping):
            raise SonicInputError(f"{source}: [{name}] must be a table of limits")
        fields = {}
        for key, value in body.items():
            want = _TIER_KEYS.get(key)
            if want is None:
                raise SonicInputError(f"{source}: [{name}] has unknown key {key!r}; known keys: {sorted(_TIER_KEYS)}")
            if not isinstance(value, want) or (want is int and isinstance(value, bool)):
                raise SonicInputError(f"{source}: [{name}].{key} = {value!r} must be of type {want.__name__}")
            if want is int and value <= 0:
                raise SonicInputError(f"{source}: [{name}].{key} = {value} must be positive (omit it for no limit)")
            fields[key] = value
        tiers[name] = Tier(name=name, **fields)
    if not tiers:
        raise SonicInputError(f"{source}: no tier defined")
    return tiers


def load_tiers(path: str | os.PathLike | None = None) -> dict[str, Tier]:
    """Tiers from ``path``, else from ``$SONIC_TIERS``, else the bundled ``tiers.toml``."""
    chosen = config_file(path, TIERS_ENV, DEFAULT_TIERS_FILE)
    return parse_tiers(read_config(chosen, "tiers file", "toml", "pass an existing TOML file"), str(chosen))


def resolve_tier(tier: Tier | str, tiers: Mapping[str, Tier] | None = None) -> Tier:
    """A :class:`Tier`, looking a name up in ``tiers`` (default: :func:`load_tiers`)."""
    if isinstance(tier, Tier):
        return tier
    known = tiers if tiers is not None else load_tiers()
    if tier not in known:
        raise SonicInputError(f"unknown tier {tier!r}: choose one of {sorted(known)}")
    return known[tier]


@dataclass(frozen=True)
class PriceVerdict:
    """The cost of a job and whether a tier accepts it (``reason`` says why not)."""

    tier: str
    tokens: int
    allowed: bool
    reason: str | None = None
    metered: bool = False

    def raise_if_refused(self) -> None:
        if not self.allowed:
            raise BudgetExceeded(f"tier '{self.tier}' refuses this job: {self.reason}", tokens=self.tokens)


def price(settings: SonicSettings, tier: Tier | str, duration: float | None = None,
          tiers: Mapping[str, Tier] | None = None) -> PriceVerdict:
    """Price a job: its tokens and the tier's verdict.

    ``duration`` defaults to ``settings.duration``; ``tier`` is a :class:`Tier` or a name looked up in ``tiers``
    (default: :func:`load_tiers`).
    """
    tier = resolve_tier(tier, tiers)
    seconds = duration if duration is not None else settings.duration
    if seconds is None:
        raise SonicInputError("duration is not set: pass the audio length in seconds to price a job")
    tokens = settings_tokens(settings, seconds)
    reasons = []
    if tier.max_resolution is not None and settings.min_resolution > tier.max_resolution:
        reasons.append(f"resolution {settings.min_resolution} px is above the tier's {tier.max_resolution} px")
    if tier.max_steps is not None and settings.steps > tier.max_steps:
        reasons.append(f"{settings.steps} steps are above the tier's {tier.max_steps}")
    if tier.max_tokens_per_job is not None and tokens > tier.max_tokens_per_job:
        reasons.append(f"{tokens} tokens exceed the tier's cap of {tier.max_tokens_per_job} per job")
    reason = "; ".join(reasons) or None
    return PriceVerdict(tier=tier.name, tokens=tokens, allowed=not reasons, reason=reason, metered=tier.metered)
