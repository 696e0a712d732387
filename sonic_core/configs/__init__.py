"""The published network configs bundled with the package (``*.json`` here, package data), and their one reader."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

CONFIGS_DIR = Path(__file__).resolve().parent


def bundled_config(name: str) -> dict[str, Any]:
    """The parsed ``sonic_core/configs/<name>`` (e.g. ``"svd_unet_config.json"``); a fresh dict on every call."""
    path = CONFIGS_DIR / name
    if path.suffix != ".json" or not path.is_file():
        known = sorted(p.name for p in CONFIGS_DIR.glob("*.json"))
        raise ValueError(f"no bundled config {name!r}; known: {known}")
    return json.loads(path.read_text())
