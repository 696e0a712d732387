"""``python -m sonic_core generate`` (the official weights) and ``demo`` (the embedded tiny model, no download).

Both run :class:`~sonic_core.pipeline.SonicPipeline` with a tqdm bar over sampler steps × windows and end with a
cost report: the job's tokens, then the seconds per stage and the peak memory the run actually took. ``generate``
checks the output path, the audio (readable, duration) and the face before it reads any weights, so a bad input
fails with one line and costs no model load. The report also carries the cost model's prediction
(:mod:`sonic_core.cost`; ``null`` fields with the reason when it has no profile for the device).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch

from ..errors import SonicDependencyError, SonicInputError
from ..device import DTYPES, parse_device, parse_dtype
from ..pipeline import GenerationReport, SonicPipeline
from ..post.chain import LIPSYNC_MODES, SMOOTH_METHODS, PostOptions
from ..settings import SonicSettings
from ..timing import SAMPLE_RATE
from ..tokens import settings_tokens

ASSETS = Path(__file__).resolve().parents[1] / "assets"
DEMO_SPEECH = ASSETS / "speech.wav"
DEMO_PORTRAIT = ASSETS / "portrait.jpg"
# The tiny model's cost is in the full-resolution decoder layers and RIFE, so the demo uses the smallest frames and
# few steps: an untrained model gives noise-like frames at any setting.
DEMO_DEFAULTS = {"min_resolution": 256, "steps": 2}
FIT_MODES = ("error", "trim", "pad")
OUTPUT_RATES = {12.5: False, 25.0: True}  # fps -> RIFE x2 interpolation on
UNTRAINED_NOTICE = ("The demo runs the embedded tiny model, whose weights are random and untrained: the video is "
                    "noise-like and only shows that every stage runs. For real talking heads get the official "
                    "weights with `python -m sonic_core fetch-weights`, then run `python -m sonic_core generate "
                    "--image PORTRAIT --audio SPEECH --out OUT.mp4`.")
ASSETS_FIX = "run `bash scripts/dev.sh setup` or `python scripts/fetch_assets.py`, or pass --no-interpolate (12.5 fps)"


def _knob_option(parser: argparse.ArgumentParser, name: str, default: Any = None, **kwargs: Any) -> None:
    """An option whose help, type and (unless ``default`` is given) default come from SonicSettings."""
    knob = SonicSettings.knob(name)
    default = knob.default if default is None else default
    parser.add_argument("--" + name.replace("_", "-"), dest=name, type=kwargs.pop("type", knob.type),
                        default=default, help=f"{knob.help} (default {default})", **kwargs)


def _add_run_options(parser: argparse.ArgumentParser, defaults: dict[str, Any]) -> None:
    parser.add_argument("--out", required="out" not in defaults, default=defaults.get("out"), metavar="OUT.mp4",
                        help="output MP4 (h264 + aac); written to a temporary file and renamed when complete")
    _knob_option(parser, "min_resolution", defaults.get("min_resolution"), metavar="N")
    _knob_option(parser, "steps", defaults.get("steps"), metavar="N")
    _knob_option(parser, "seed", metavar="N")
    parser.add_argument("--no-interpolate", action="store_true", help="no RIFE: write the generated 12.5 fps")
    parser.add_argument("--lipsync", choices=LIPSYNC_MODES, default="off",
                        help="Lip-Sync Align: measure the audio/video offset, or correct it (shifts the audio) when "
                             "confident (default off)")
    parser.add_argument("--smooth", choices=SMOOTH_METHODS, default="off",
                        help="Motion Smooth: filter the head trajectory and warp the frames (default off)")
    parser.add_argument("--smooth-strength", default="auto", type=_strength, metavar="auto|X",
                        help="Motion Smooth strength, 0-1 or auto from the measured jitter (default auto)")
    parser.add_argument("--json", action="store_true", help="print the cost report as one JSON object")


def _strength(text: str) -> float | str:
    if text.strip().lower() == "auto":
        return "auto"
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not 'auto' or a number between 0 and 1") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{value:g} is not between 0 and 1")
    return value


def add_generate_parsers(sub: argparse._SubParsersAction) -> None:
    """Register ``generate`` and ``demo`` on the CLI's subparsers."""
    gen = sub.add_parser("generate", help="animate a portrait with a speech clip using the official weights")
    gen.add_argument("--image", required=True, metavar="IMG", help="portrait (one clearly visible face)")
    gen.add_argument("--audio", required=True, metavar="AUD", help="speech (wav, mp3, flac, ogg, m4a)")
    gen.add_argument("--weights", metavar="DIR", help="weights folder (default $SONIC_WEIGHTS, else ~/.cache/sonic)")
    _add_run_options(gen, {})
    for name in ("dynamic_scale", "motion_scale"):
        _knob_option(gen, name, metavar="X")
    _knob_option(gen, "expand_ratio", metavar="X|auto", type=str)
    _knob_option(gen, "fps", metavar="N", type=float)
    _knob_option(gen, "crf", metavar="N")
    gen.add_argument("--duration", type=float, metavar="S", help="the audio's length in seconds, checked against "
                                                                   "the file (default: the whole file)")
    gen.add_argument("--fit", choices=FIT_MODES, default="error",
                     help="when --duration differs from the file by more than a frame: error, trim or pad")
    gen.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                     help="torch device (default cuda when available, else cpu)")
    gen.add_argument("--dtype", choices=list(DTYPES),
                     help="precision of the UNet, VAE and CLIP (default fp16 on CUDA, fp32 on the CPU; whisper, "
                          "the adapters and RIFE run in fp32)")
    gen.set_defaults(run=cmd_generate)

    demo = sub.add_parser("demo", help="the bundled portrait and speech on the embedded tiny model, no download")
    _add_run_options(demo, {"out": "demo.mp4", **DEMO_DEFAULTS})
    demo.set_defaults(run=cmd_demo)


def check_output_path(out: str | os.PathLike) -> Path:
    """``out`` as a Path when an MP4 can be written there; else a one-line :class:`SonicInputError`."""
    path = Path(out).expanduser()
    if path.suffix.lower() != ".mp4":
        raise SonicInputError(f"--out {str(out)!r} is not an .mp4 path: name the output like clip.mp4")
    if path.is_dir():
        raise SonicInputError(f"--out {str(out)!r} is a directory: give a file path such as {path / 'clip.mp4'}")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise SonicInputError(f"--out {str(out)!r}: the folder {str(parent)!r} does not exist; create it first")
    if not os.access(parent, os.W_OK):
        raise SonicInputError(f"--out {str(out)!r}: the folder {str(parent)!r} is not writable; choose another")
    return path


def _output_rate(fps: float, no_interpolate: bool) -> bool:
    """Whether RIFE runs, from ``--fps`` and ``--no-interpolate``."""
    if no_interpolate:
        return False
    if fps not in OUTPUT_RATES:
        raise SonicInputError(f"--fps {fps:g} is not an output rate of generate: use 25 (RIFE x2) or 12.5 "
                              "(the generated frames)")
    return OUTPUT_RATES[fps]


class StepProgress:
    """A tqdm bar over the sampler's UNet calls (steps × windows), opened on the first report."""

    def __init__(self) -> None:
        self.bar = None

    def __call__(self, done: int, total: int) -> None:
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc="sampling", unit="call", leave=False)
        self.bar.update(done - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def cost_report(report: GenerationReport, settings: SonicSettings, model: str, wall_seconds: float,
                prediction: dict) -> dict:
    """The cost report of a finished run: what it is charged (tokens), what the cost model predicted
    (``prediction``, the fields of :func:`sonic_core.cli.predicted_cost`) and what the run took."""
    return {
        "output": report.output,
        "model": model,
        "tokens": settings_tokens(settings, report.audio_seconds),
        **prediction,
        "actual": {"seconds": {k: round(v, 3) for k, v in report.seconds.items()},
                   "total_seconds": round(wall_seconds, 3), "peak_host_mb": round(report.peak_host_mb, 1),
                   "peak_device_mb": None if report.peak_device_mb is None else round(report.peak_device_mb, 1)},
        "video": {"frames_generated": report.frames_generated, "frames_written": report.frames_written,
                  "width": report.width, "height": report.height, "fps": report.fps,
                  "audio_seconds": round(report.audio_seconds, 3)},
        "face": {"box": [round(v, 1) for v in report.face_box], "expand_ratio": round(report.expand_ratio, 3)},
        "post": report.post,
        "settings": settings.to_dict(),
    }


def format_cost_report(cost: dict) -> str:
    video, actual = cost["video"], cost["actual"]
    stages = ", ".join(f"{k} {v:.1f}" for k, v in actual["seconds"].items())
    peak = f"{actual['peak_host_mb']:.0f} MB host"
    if actual["peak_device_mb"] is not None:
        peak += f", {actual['peak_device_mb']:.0f} MB device"
    rows = [
        ("wrote", f"{cost['output']}: {video['frames_written']} frames {video['width']}x{video['height']} at "
                  f"{video['fps']:g} fps ({video['frames_generated']} generated), {video['audio_seconds']:.2f} s"),
        ("model", cost["model"]),
        ("face", f"box {cost['face']['box']}, expand_ratio {cost['face']['expand_ratio']}"),
        ("tokens", str(cost["tokens"])),
        ("predicted", _format_prediction(cost)),
        ("took", f"{actual['total_seconds']:.1f} s ({stages})"),
        ("peak memory", peak),
        *((name, _format_post(name, step)) for name, step in cost["post"].items()),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"  {k.ljust(width)}  {v}" for k, v in rows)


def _format_post(name: str, step: dict) -> str:
    if name == "lipsync":
        verdict = "applied" if step["applied"] else step["reason"]
        return f"offset {step['offset_s'] * 1000:+.0f} ms, confidence {step['confidence']:.2f}: {verdict}"
    return (f"{step['method']} strength {step['strength']:.2f}, jitter {step['jitter_before']:.3f} -> "
            f"{step['jitter_after']:.3f} px")


def _format_prediction(cost: dict) -> str:
    if cost["predicted_seconds"] is None:
        return f"unavailable ({cost['prediction'].get('unavailable', 'no cost model')})"
    assumed = cost["prediction"]
    return (f"{cost['predicted_seconds']:.1f} s, peak {cost['predicted_peak_bytes'] / 2**20:.0f} MB "
            f"(on {assumed['device']} {assumed['dtype']})")


def _predict(duration: float, settings: SonicSettings, device: torch.device, dtype: torch.dtype,
             model: str) -> dict:
    from . import predicted_cost

    name = next(k for k, v in DTYPES.items() if v == dtype)
    return predicted_cost(duration, settings, device.type, name, model)


def _run(pipeline: SonicPipeline, image: Any, audio: Any, out: Path, settings: SonicSettings, detector: Any,
         fit: str, model: tuple[str, str], duration: float, args: argparse.Namespace, started: float) -> dict:
    """Generate with a progress bar and print the cost report; ``model`` is (its description, cost-model name)."""
    prediction = _predict(duration, settings, pipeline.device, pipeline.dtype, model[1])
    post = PostOptions(lipsync=args.lipsync, smooth=args.smooth, smooth_strength=args.smooth_strength)
    progress = StepProgress()
    try:
        report = pipeline.generate(image, audio, out, settings, detector, fit=fit, on_step=progress, post=post)
    finally:
        progress.close()
    cost = cost_report(report, settings, model[0], time.perf_counter() - started, prediction)
    print(json.dumps(cost) if args.json else format_cost_report(cost))
    return cost


def _settings(args: argparse.Namespace, **extra: Any) -> SonicSettings:
    return SonicSettings(min_resolution=args.min_resolution, steps=args.steps, seed=args.seed, **extra)


def cmd_generate(args: argparse.Namespace) -> int:
    from ..audio import load_audio
    from ..face.detect import load_detector
    from ..face.crop import prepare_reference
    from ..weights.loader import load_sonic_models
    from ..weights import locate_weights

    started = time.perf_counter()
    interpolate = _output_rate(args.fps, args.no_interpolate)
    settings = _settings(args, dynamic_scale=args.dynamic_scale, motion_scale=args.motion_scale,
                         expand_ratio=args.expand_ratio, fps=25.0 if interpolate else 12.5, crf=args.crf,
                         duration=args.duration, interpolate=interpolate)
    device = parse_device(args.device, "--device")
    dtype = parse_dtype(args.dtype or ("fp16" if device.type == "cuda" else "fp32"))
    out = check_output_path(args.out)
    files = locate_weights(args.weights)
    detector = load_detector(files.yoloface, device)
    # the inputs are checked before any weights are read: a bad input costs no model load
    seconds = len(load_audio(args.audio, duration=settings.duration, fit=args.fit)) / SAMPLE_RATE
    portrait = _open_image(args.image)
    prepare_reference(portrait, detector, settings.min_resolution, settings.expand_ratio, settings.face_area)
    models = load_sonic_models(files, device, dtype, interpolate)
    _run(SonicPipeline(models, device, dtype), portrait, args.audio, out, settings, detector, args.fit,
         ("official Sonic weights", "sonic"), seconds, args, started)
    return 0


def _open_image(path: str | os.PathLike) -> Any:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except FileNotFoundError:
        raise SonicInputError(f"--image {str(path)!r} does not exist: pass a portrait file") from None
    except (UnidentifiedImageError, OSError) as exc:
        raise SonicInputError(f"--image {str(path)!r} is not a readable image ({type(exc).__name__}): "
                              "use a JPEG or PNG portrait") from None


def cmd_demo(args: argparse.Namespace) -> int:
    from ..audio import audio_duration
    from ..weights.layout import RIFE_WEIGHTS, assets_dir
    from ..face.detect import load_detector
    from ..weights.tiny import tiny_models

    started = time.perf_counter()
    settings = _settings(args, interpolate=not args.no_interpolate,
                         fps=12.5 if args.no_interpolate else 25.0)
    out = check_output_path(args.out)
    rife = None
    if settings.interpolate:
        from ..weights.loader import load_rife

        weights = assets_dir() / RIFE_WEIGHTS
        if not weights.is_file():
            raise SonicDependencyError(f"demo: the RIFE weights are missing at {weights}; {ASSETS_FIX}")
        rife = load_rife(weights)
    print(UNTRAINED_NOTICE, file=sys.stderr if args.json else sys.stdout)
    _run(SonicPipeline(tiny_models(rife=rife)), _open_image(DEMO_PORTRAIT), DEMO_SPEECH, out, settings,
         load_detector(None), "error", ("embedded tiny model (untrained)", "tiny"), audio_duration(DEMO_SPEECH),
         args, started)
    return 0
