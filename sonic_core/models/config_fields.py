"""Building the frozen config dataclasses of the models from published ``config.json`` files."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TypeVar

Config = TypeVar("Config", bound="FromConfigDict")


class FromConfigDict:
    """Mixin for a config dataclass: build it from a transformers-style mapping, keeping only its own fields."""

    @classmethod
    def from_dict(cls: type[Config], config: Mapping) -> Config:
        return cls(**{k: v for k, v in config.items() if k in cls.__dataclass_fields__})

    @classmethod
    def from_json(cls: type[Config], path: str | os.PathLike) -> Config:
        return cls.from_dict(json.loads(Path(path).read_text()))
