"""Shared fixtures. The repo root is on sys.path (pyproject's pythonpath), so ``import sonic_core`` works."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from comfyui_harness import comfyui_browser, comfyui_server  # noqa: F401  (fixtures of the real-ComfyUI tests)

REPO = Path(__file__).resolve().parent.parent
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def golden_dir() -> Path:
    """Fixture set of the golden parity tests: $SONIC_GOLDEN_DIR, default ../shared/sonic/golden."""
    return Path(os.environ.get("SONIC_GOLDEN_DIR", REPO.parent / "shared" / "sonic" / "golden"))


def golden_manifest() -> list[dict]:
    """The fixtures listed in the golden manifest (empty when the set is absent)."""
    manifest = golden_dir() / "manifest.json"
    if not manifest.is_file():
        return []
    return json.loads(manifest.read_text())["fixtures"]


def load_pack(name: str = "sonic_pack") -> ModuleType:
    """Import the repo root as a package the way ComfyUI imports a custom node folder."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, REPO / "__init__.py",
                                                  submodule_search_locations=[str(REPO)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def run_cli(*args: str, cwd: Path = REPO, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run ``python -m sonic_core ARGS`` in a fresh interpreter, as a user would."""
    full_env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    return subprocess.run([sys.executable, "-m", "sonic_core", *args], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO
