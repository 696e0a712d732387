"""Where the fetched demo/test assets live (real RIFE weights and frames; see ``scripts/fetch_assets.py``)."""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RIFE_WEIGHTS = Path("RIFE") / "flownet.pkl"
RIFE_DEMO_FRAMES = (Path("RIFE") / "I0_0.png", Path("RIFE") / "I0_1.png")


def assets_dir() -> Path:
    """``$SONIC_ASSETS_DIR``, default ``<repo>/.cache/assets`` (git-ignored)."""
    return Path(os.environ.get("SONIC_ASSETS_DIR") or REPO / ".cache" / "assets")
