"""``python -m sonic_core demo``: the bundled portrait and speech on the embedded tiny model; nothing to download.

The same path as ``generate`` (:mod:`.generate`) with the tiny, untrained networks: every stage runs for real, the
video is noise-like.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from ..distributed import RankGroup
from ..errors import SonicDependencyError
from ..inputs import prepare_inputs
from ..pipeline import SonicPipeline
from ..weights.layout import RIFE_WEIGHTS, assets_dir
from ..weights.loader import load_rife
from ..weights.tiny import tiny_models
from .devices import plan_devices, run_on_devices
from .generate import add_run_options, render_and_report, run_settings
from .options import check_output_path

ASSETS = Path(__file__).resolve().parents[1] / "assets"
DEMO_SPEECH = ASSETS / "speech.wav"
DEMO_PORTRAIT = ASSETS / "portrait.jpg"
# The tiny model's cost is in the full-resolution decoder layers and RIFE, so the demo uses the smallest frames and
# few steps: an untrained model gives noise-like frames at any setting.
DEMO_DEFAULTS = {"min_resolution": 256, "steps": 2}
UNTRAINED_NOTICE = ("The demo runs the embedded tiny model, whose weights are random and untrained: the video is "
                    "noise-like and only shows that every stage runs. For real talking heads get the official "
                    "weights with `python -m sonic_core fetch-weights`, then run `python -m sonic_core generate "
                    "--image PORTRAIT --audio SPEECH --out OUT.mp4`.")
ASSETS_FIX = "run `bash scripts/dev.sh setup` or `python scripts/fetch_assets.py`, or pass --no-interpolate (12.5 fps)"


def add_demo_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``demo`` on the CLI's subparsers."""
    demo = sub.add_parser("demo", help="the bundled portrait and speech on the embedded tiny model, no download")
    add_run_options(demo, out="demo.mp4", **DEMO_DEFAULTS)
    demo.set_defaults(run=cmd_demo)


def cmd_demo(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    settings = run_settings(args)
    devices = plan_devices(args.devices, "cpu")
    out = check_output_path(args.out)

    def demo(device: torch.device, ranks: RankGroup | None) -> int:
        inputs = prepare_inputs(DEMO_PORTRAIT, DEMO_SPEECH, settings, fit=args.fit)
        writes = ranks is None or ranks.leads  # the other ranks only sample
        rife = None
        if settings.interpolate and writes:
            weights = assets_dir() / RIFE_WEIGHTS
            if not weights.is_file():
                raise SonicDependencyError(f"demo: the RIFE weights are missing at {weights}; {ASSETS_FIX}")
            rife = load_rife(weights)
        if writes:
            print(UNTRAINED_NOTICE, file=sys.stderr if args.json else sys.stdout)
        pipeline = SonicPipeline(tiny_models(rife=rife), device, ranks=ranks, compile=args.compile)
        render_and_report(pipeline, inputs, out, settings,
                          ("embedded tiny model (untrained)", "tiny"), args, started)
        return 0

    return run_on_devices(args.argv, devices, out, demo)
