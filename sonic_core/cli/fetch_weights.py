"""``python -m sonic_core fetch-weights [--dir DIR]``: download the official weights into the standalone tree."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..weights import COMPONENTS, WeightFiles, default_weights_dir, fetch_weights
from ..weights.layout import WEIGHTS_ENV


def add_fetch_weights_parser(sub: argparse._SubParsersAction) -> None:
    """Register the ``fetch-weights`` command on the CLI's subparsers."""
    fetch = sub.add_parser("fetch-weights", help="download the official Sonic, SVD (VAE + CLIP), whisper-tiny and "
                                                 "RIFE files from the Hugging Face hub")
    fetch.add_argument("--dir", metavar="DIR", help=f"weights folder (default ${WEIGHTS_ENV}, else ~/.cache/sonic)")
    fetch.add_argument("--token", help="Hugging Face token for the gated SVD repository (default $HF_TOKEN)")
    fetch.add_argument("--cache-dir", metavar="DIR", help="hub cache to download into (default $HF_HUB_CACHE)")
    fetch.add_argument("--no-progress", action="store_true", help="no progress bars")
    fetch.add_argument("--json", action="store_true", help="print the located files as one JSON object")
    fetch.set_defaults(run=cmd_fetch_weights)


def format_weight_files(files: WeightFiles) -> dict[str, str | None]:
    """Component -> located path (``None`` where absent), plus the SVD source kind."""
    located = {c: (str(getattr(files, c)) if getattr(files, c) else None) for c in COMPONENTS}
    return {**located, "svd_kind": files.svd_kind}


def cmd_fetch_weights(args: argparse.Namespace) -> int:
    dest = Path(args.dir).expanduser() if args.dir else default_weights_dir()
    files = fetch_weights(dest, token=args.token, progress=not args.no_progress, cache_dir=args.cache_dir)
    located = format_weight_files(files)
    if args.json:
        print(json.dumps(located))
    else:
        print(f"Sonic weights in {dest}:")
        width = max(map(len, located))
        print("\n".join(f"  {name.ljust(width)}  {path}" for name, path in located.items()))
    return 0
