"""``python -m sonic_core generate``: animate a portrait with a speech track using the official weights.

The path of one run, each step once: check the output path; prepare the inputs (the speech read once and checked,
the portrait opened, its face detected, cropped and masked: :func:`sonic_core.inputs.prepare_inputs`), so a bad
input fails with one line before any network weights are read; load the networks; render (the pipeline's frame
chunks, optional post-processing, the video with the user's own audio track); print the cost report (tokens, the
cost model's prediction, the seconds per stage and the peak memory the run actually took).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from ..audio import FIT_MODES
from ..device import DTYPES, check_precision, default_dtype, free_memory, parse_dtype
from ..distributed import RankGroup
from ..errors import SonicInputError
from ..inputs import PreparedInputs, prepare_inputs
from ..memory import BUDGET_FLAG, MemoryPlan, parse_budget, plan_memory
from ..pipeline import SonicPipeline, memory_job
from ..post.chain import DEFAULT_COLOUR_STRENGTH, DEFAULT_DEFLICKER, LIPSYNC_MODES, SMOOTH_METHODS, PostOptions
from ..post.paste import DEFAULT_FEATHER, MAX_FEATHER
from ..render import render_video
from ..settings import SonicSettings
from ..timing import GENERATED_FPS
from ..weights import locate_weights
from ..weights.loader import load_sonic_models
from .devices import add_devices_option, plan_devices, run_on_devices
from .estimate import predicted_cost
from .options import check_output_path, knob_option
from .report import cost_report, format_cost_report

OUTPUT_RATES = {GENERATED_FPS: False, 2 * GENERATED_FPS: True}  # --fps -> RIFE x2 interpolation on


def add_run_options(parser: argparse.ArgumentParser, **defaults: object) -> None:
    """The options ``generate`` and ``demo`` share: output, resolution, steps, seed, rate, duration, post, report,
    devices."""
    parser.add_argument("--out", required="out" not in defaults, default=defaults.get("out"), metavar="OUT.mp4",
                        help="output MP4 (h264 + aac); written to a temporary file and renamed when complete")
    knob_option(parser, "min_resolution", default=defaults.get("min_resolution"), metavar="N")
    knob_option(parser, "steps", default=defaults.get("steps"), metavar="N")
    knob_option(parser, "seed", metavar="N")
    parser.add_argument("--device-noise", action="store_true", help=SonicSettings.knob("device_noise").help)
    parser.add_argument("--no-interpolate", action="store_true", help="no RIFE: write the generated 12.5 fps")
    parser.add_argument("--compile", action="store_true",
                        help="sample with the UNet under torch.compile: minutes of compilation first, then faster "
                             "steps on long clips (same results within 1e-4)")
    parser.add_argument("--duration", type=float, metavar="S", help="the audio's length in seconds, checked against "
                                                                      "the file (default: the whole file)")
    parser.add_argument("--fit", choices=FIT_MODES, default="error",
                        help="when --duration differs from the file by more than a frame: error, trim or pad")
    parser.add_argument("--lipsync", choices=LIPSYNC_MODES, default="off",
                        help="Lip-Sync Align: measure the audio/video offset, or correct it (shifts the audio) when "
                             "confident (default off)")
    parser.add_argument("--smooth", choices=SMOOTH_METHODS, default="off",
                        help="Motion Smooth: filter the head trajectory and warp the frames (default off)")
    parser.add_argument("--smooth-strength", default="auto", type=_strength, metavar="auto|X",
                        help="Motion Smooth strength, 0-1 or auto from the measured jitter (default auto)")
    parser.add_argument("--deflicker", action=argparse.BooleanOptionalAction, default=DEFAULT_DEFLICKER,
                        help="remove brightness strobing (a temporal filter on per-frame gains, 1.5 s look-ahead; "
                             "default on)")
    parser.add_argument("--colour-strength", type=_unit_number, default=DEFAULT_COLOUR_STRENGTH, metavar="X",
                        help="undo a colour drift: match each frame's colours to the portrait registered to it, "
                             f"0 (off) to 1 (default {DEFAULT_COLOUR_STRENGTH:g})")
    parser.add_argument("--paste-back", action="store_true",
                        help="paste the generated face back into the full original portrait (the video gets the "
                             "portrait's size; default off: the square crop)")
    parser.add_argument("--paste-feather", type=_feather, default=DEFAULT_FEATHER, metavar="X",
                        help="paste-back blend ramp as a share of the crop's side, 0 (hard edge) to "
                             f"{MAX_FEATHER:g} (default {DEFAULT_FEATHER:g})")
    parser.add_argument("--json", action="store_true", help="print the cost report as one JSON object")
    add_devices_option(parser)


def _bounded_number(text: str, high: float, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
    if not 0.0 <= value <= high:
        raise argparse.ArgumentTypeError(f"{value:g} is not between 0 and {high:g}")
    return value


def _strength(text: str) -> float | str:
    if text.strip().lower() == "auto":
        return "auto"
    return _bounded_number(text, 1.0, "'auto' or a number between 0 and 1")


def _unit_number(text: str) -> float:
    return _bounded_number(text, 1.0, "a number between 0 and 1")


def _feather(text: str) -> float:
    return _bounded_number(text, MAX_FEATHER, f"a number between 0 and {MAX_FEATHER:g}")


def add_generate_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``generate`` on the CLI's subparsers."""
    gen = sub.add_parser("generate", help="animate a portrait with a speech clip using the official weights")
    gen.add_argument("--image", required=True, metavar="IMG", help="portrait (one clearly visible face)")
    gen.add_argument("--audio", required=True, metavar="AUD", help="speech (wav, mp3, flac, ogg, m4a)")
    gen.add_argument("--weights", metavar="DIR", help="weights folder (default $SONIC_WEIGHTS, else ~/.cache/sonic)")
    add_run_options(gen)
    for name in ("dynamic_scale", "motion_scale"):
        knob_option(gen, name, metavar="X")
    knob_option(gen, "expand_ratio", metavar="X|auto", type=str)
    knob_option(gen, "fps", metavar="N", type=float)
    knob_option(gen, "crf", metavar="N")
    gen.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                     help="torch device (default cuda when available, else cpu)")
    gen.add_argument("--dtype", choices=list(DTYPES),
                     help="precision of the UNet, VAE and CLIP (default fp16 on CUDA, fp32 on the CPU, where fp16 is "
                          "refused; whisper, the adapters and RIFE run in fp32)")
    add_budget_option(gen)
    gen.set_defaults(run=cmd_generate)


def add_budget_option(parser: argparse.ArgumentParser) -> None:
    """``--memory-budget SIZE`` (the memory planner's budget)."""
    parser.add_argument(BUDGET_FLAG, metavar="SIZE",
                        help="device memory the run may use: 8GB (decimal), 8GiB, 8000MB or bytes; the planner then "
                             "chunks the UNet's feed-forwards, offloads idle networks and keeps a long clip's latents "
                             "in host memory, never changing the result (default: the free memory of a CUDA device, "
                             "no budget on the CPU)")


def output_rate(fps: float, no_interpolate: bool) -> bool:
    """Whether RIFE runs, from ``--fps`` and ``--no-interpolate``."""
    if no_interpolate:
        return False
    if fps not in OUTPUT_RATES:
        raise SonicInputError(f"--fps {fps:g} is not an output rate of generate: use 25 (RIFE x2) or 12.5 "
                              "(the generated frames)")
    return OUTPUT_RATES[fps]


class StepProgress:
    """A tqdm bar on stderr over one stage's units of work (the sampler's UNet calls, steps × windows; the decoded
    chunks), opened on the stage's first report, so its name on stderr marks that the stage has begun. Opening it
    closes the bar of the stage before (``follows``): one bar at a time, so an error line after it starts on a clean
    line instead of after a second bar's cursor movements."""

    def __init__(self, stage: str, unit: str, follows: StepProgress | None = None) -> None:
        self.stage, self.unit, self.follows = stage, unit, follows
        self.bar = None

    def __call__(self, done: int, total: int) -> None:
        if self.bar is None:
            from tqdm import tqdm

            if self.follows is not None:
                self.follows.close()

            self.bar = tqdm(total=total, desc=self.stage, unit=self.unit, leave=False)
        self.bar.update(done - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def run_settings(args: argparse.Namespace, **extra: object) -> SonicSettings:
    """The settings of a run from the shared options (``extra``: the ones only ``generate`` has)."""
    interpolate = output_rate(getattr(args, "fps", 2 * GENERATED_FPS), args.no_interpolate)
    return SonicSettings(min_resolution=args.min_resolution, steps=args.steps, seed=args.seed,
                         device_noise=args.device_noise, interpolate=interpolate,
                         fps=2 * GENERATED_FPS if interpolate else GENERATED_FPS, duration=args.duration, **extra)


def memory_plan(budget: int | None, given: bool, inputs: PreparedInputs, settings: SonicSettings,
                dtype: torch.dtype, model: str) -> MemoryPlan:
    """The run's memory plan under ``budget`` (``None``: none); a ``given`` budget (``--memory-budget``) that no plan
    meets is refused in one line, the free memory of a device is taken as it is (the most frugal plan runs)."""
    plan = plan_memory(memory_job(inputs, settings, dtype, model), budget)
    if given and not plan.fits:
        raise SonicInputError(plan.refusal())
    return plan


def render_and_report(pipeline: SonicPipeline, inputs: PreparedInputs, out: Path, settings: SonicSettings,
                      model: tuple[str, str], args: argparse.Namespace, started: float,
                      memory: MemoryPlan | None = None) -> dict | None:
    """Render with a progress bar under the memory plan ``memory``, then print the cost report; ``model`` is (its
    description, cost-model name). A rank other than 0 of a several-device run only samples its share (rank 0
    writes and reports): None."""
    if pipeline.ranks is not None and not pipeline.ranks.leads:
        pipeline.latents(inputs, settings, memory=memory)
        return None
    dtype = next(name for name, value in DTYPES.items() if value == pipeline.dtype)
    prediction = predicted_cost(inputs.speech.seconds, settings, pipeline.device.type, dtype, model[1], memory)
    post = PostOptions(lipsync=args.lipsync, smooth=args.smooth, smooth_strength=args.smooth_strength,
                       deflicker=args.deflicker, colour_strength=args.colour_strength, paste_back=args.paste_back,
                       paste_feather=args.paste_feather)
    sampling = StepProgress("sampling", "call")
    decoding = StepProgress("decoding", "chunk", follows=sampling)
    try:
        report = render_video(pipeline, inputs, out, settings, post=post, memory=memory, on_step=sampling,
                              on_decode=decoding)
    finally:
        sampling.close()
        decoding.close()
    cost = cost_report(report, settings, model[0], time.perf_counter() - started, prediction)
    print(json.dumps(cost) if args.json else format_cost_report(cost))
    return cost


def cmd_generate(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    settings = run_settings(args, dynamic_scale=args.dynamic_scale, motion_scale=args.motion_scale,
                            expand_ratio=args.expand_ratio, crf=args.crf)
    budget = parse_budget(args.memory_budget) if args.memory_budget else None
    devices = plan_devices(args.devices, args.device)
    dtype = check_precision(devices[0], parse_dtype(args.dtype) if args.dtype else default_dtype(devices[0]))
    out = check_output_path(args.out)

    def generate(device: torch.device, ranks: RankGroup | None) -> int:
        files = locate_weights(args.weights)
        inputs = prepare_inputs(args.image, args.audio, settings, fit=args.fit, yoloface=files.yoloface,
                                device=device)
        plan = memory_plan(budget if budget is not None else free_memory(device), budget is not None, inputs,
                           settings, dtype, "sonic")
        models = load_sonic_models(files, device, dtype, settings.interpolate and (ranks is None or ranks.leads))
        pipeline = SonicPipeline(models, device, dtype, ranks=ranks, compile=args.compile)
        render_and_report(pipeline, inputs, out, settings,
                          ("official Sonic weights", "sonic"), args, started, plan)
        return 0

    return run_on_devices(args.argv, devices, out, generate)
