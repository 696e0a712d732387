"""Building the frozen config dataclasses of the models from published ``config.json`` mappings."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypeVar

Config = TypeVar("Config", bound="FromConfigDict")


class FromConfigDict:
    """Mixin for a config dataclass: build it from a transformers-style mapping, keeping only its own fields."""

    @classmethod
    def from_dict(cls: type[Config], config: Mapping) -> Config:
        return cls(**{k: v for k, v in config.items() if k in cls.__dataclass_fields__})
