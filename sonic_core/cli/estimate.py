"""``python -m sonic_core estimate``: a job's tokens, tier verdicts, frame counts and the cost model's predicted
seconds and peak memory, before anything runs (no model code is loaded)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from .. import timing
from ..audio import audio_duration
from ..errors import SonicInputError
from ..metering import cost
from ..memory import BUDGET_FLAG, MemoryJob, MemoryPlan, parse_budget, plan_memory
from ..metering.tiers import PriceVerdict, Tier, load_tiers, price
from ..settings import SonicSettings
from .options import knob_option


def add_estimate_parser(sub: argparse._SubParsersAction) -> None:
    """Register the ``estimate`` command on the CLI's subparsers."""
    est = sub.add_parser("estimate", help="tokens, tier verdict and frame counts of a job, before it runs")
    src = est.add_mutually_exclusive_group(required=True)
    src.add_argument("--duration", type=float, metavar="S", help="audio length in seconds")
    src.add_argument("--audio", metavar="FILE", help="audio file; its real length is used")
    _add_cost_options(est)
    _add_prediction_options(est)
    est.set_defaults(run=cmd_estimate)


def _add_cost_options(parser: argparse.ArgumentParser) -> None:
    knob_option(parser, "min_resolution", "--resolution", metavar="N")
    knob_option(parser, "steps", metavar="N")
    knob_option(parser, "dynamic_scale", metavar="X")
    knob_option(parser, "motion_scale", metavar="X")
    parser.add_argument("--tier", help="price against this tier only (default: every tier)")
    parser.add_argument("--tiers-file", help="TOML file of tiers (default: $SONIC_TIERS or the bundled one)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")


def _add_prediction_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="cuda",
                        help="predict seconds and memory on: cuda (an A10G-class GPU), a10g, l4, a100, h100 or cpu "
                             "(default cuda: what real jobs run on)")
    parser.add_argument("--dtype", default="fp16", choices=("fp16", "bf16", "fp32"),
                        help="precision of the UNet, VAE and CLIP (default fp16)")
    parser.add_argument("--model", default="sonic", choices=("sonic", "tiny"),
                        help="the published networks or the embedded tiny demo model (default sonic)")
    parser.add_argument(BUDGET_FLAG, metavar="SIZE",
                        help="plan the device memory for this budget (8GB, 8GiB, 8000MB or bytes): the plan and its "
                             "predicted device peak per stage (default: no budget)")


def predicted_cost(duration: float, settings: SonicSettings, device: str, dtype: str, model: str,
                   memory: MemoryPlan | None = None) -> dict:
    """The cost model's prediction for a job as report fields (``None`` values when it cannot predict), with the
    memory plan ``memory`` (:meth:`MemoryPlan.to_dict`) when there is one."""
    frames = timing.generated_frames(duration)
    fields: dict = {"predicted_seconds": None, "predicted_peak_bytes": None,
                    "prediction": {"device": device, "dtype": dtype, "model": model}}
    if memory is not None:
        fields["memory_plan"] = memory.to_dict()
    if frames < 1:
        fields["prediction"]["unavailable"] = "no frame would be generated"
        return fields
    try:
        result = cost.predict(frames, settings.min_resolution, settings.steps, device, dtype, model=model,
                              interpolate=settings.interpolate)
    except SonicInputError as exc:
        fields["prediction"]["unavailable"] = str(exc)
        return fields
    fields.update(predicted_seconds=result.seconds, predicted_peak_bytes=result.peak_bytes)
    fields["prediction"].update(profile=result.profile, calibrated=result.calibrated, stages=result.stages)
    return fields


def estimate_report(duration: float, settings: SonicSettings, tiers: dict[str, Tier],
                    tier: str | None = None, prediction: dict | None = None) -> dict:
    """The estimate as a plain dict (the JSON output and the source of the table); ``prediction`` are the fields
    of :func:`predicted_cost`."""
    chosen = [tier] if tier else list(tiers)
    verdicts: list[PriceVerdict] = [price(settings, name, duration, tiers) for name in chosen]
    return {**(prediction or {}),
        "duration": duration,
        "resolution": settings.min_resolution,
        "steps": settings.steps,
        "dynamic_scale": settings.dynamic_scale,
        "motion_scale": settings.motion_scale,
        "tokens": verdicts[0].tokens,
        "frames": {
            "generated": timing.generated_frames(duration),
            "generated_fps": timing.GENERATED_FPS,
            "output": timing.output_frames(duration, settings.interpolate),
            "output_fps": settings.fps,
        },
        "verdicts": [{"tier": v.tier, "allowed": v.allowed, "metered": v.metered, "reason": v.reason}
                     for v in verdicts],
    }


def format_report(report: dict) -> str:
    fr = report["frames"]
    rows = [
        ("duration", f"{report['duration']:.3f} s"),
        ("resolution", f"{report['resolution']} px (short side)"),
        ("steps", str(report["steps"])),
        ("dynamic / motion", f"{report['dynamic_scale']:.2f} / {report['motion_scale']:.2f}"),
        ("frames", f"{fr['generated']} generated at {fr['generated_fps']:g} fps -> "
                   f"{fr['output']} at {fr['output_fps']:g} fps"),
        ("tokens", str(report["tokens"])),
    ]
    for v in report["verdicts"]:
        verdict = "metered" if v["allowed"] and v["metered"] else "allowed" if v["allowed"] else f"refused: {v['reason']}"
        rows.append((f"tier {v['tier']}", verdict))
    if "prediction" in report:
        assumed = report["prediction"]
        on = f"on {assumed['device']} {assumed['dtype']}, {assumed['model']} model"
        if report["predicted_seconds"] is None:
            rows.append(("predicted", f"unknown {on}: {assumed['unavailable']}"))
        else:
            note = "" if assumed["calibrated"] else " (uncalibrated profile: documented peak x stated efficiency)"
            rows.append(("predicted time", f"{report['predicted_seconds']:.1f} s {on}{note}"))
            rows.append(("predicted peak", f"{report['predicted_peak_bytes'] / 2**30:.2f} GiB "
                                           f"({'host RSS' if assumed['device'] == 'cpu' else 'device memory'})"))
    rows += memory_rows(report.get("memory_plan"))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"  {k.ljust(width)}  {v}" for k, v in rows)


def memory_rows(plan: dict | None) -> list[tuple[str, str]]:
    """Report rows of a memory plan (:meth:`MemoryPlan.to_dict`): its summary, and the refusal when none fits."""
    if plan is None:
        return []
    return [("memory plan", plan["summary"]), *((("memory", plan["refusal"]),) if not plan["fits"] else ())]


def job_plan(args: argparse.Namespace, duration: float, settings: SonicSettings) -> MemoryPlan | None:
    """The memory plan of the estimated job (``--memory-budget``, else no budget), or ``None`` without frames."""
    if timing.generated_frames(duration) < 1:
        return None
    budget = parse_budget(args.memory_budget) if args.memory_budget else None
    job = MemoryJob.for_duration(duration, settings.min_resolution, model=args.model, dtype=args.dtype,
                                 frames_per_window=settings.frames_per_window,
                                 decode_chunk_size=settings.decode_chunk_size, interpolate=settings.interpolate)
    return plan_memory(job, budget)


def _settings_from(args: argparse.Namespace, duration: float) -> SonicSettings:
    return SonicSettings(min_resolution=args.min_resolution, steps=args.steps, dynamic_scale=args.dynamic_scale,
                         motion_scale=args.motion_scale, duration=duration)


def _print_estimate(args: argparse.Namespace, duration: float, title: str) -> dict:
    settings = _settings_from(args, duration)
    tiers = load_tiers(args.tiers_file)
    prediction = (predicted_cost(duration, settings, args.device, args.dtype, args.model,
                                 job_plan(args, duration, settings))
                  if hasattr(args, "device") else None)
    report = estimate_report(duration, settings, tiers, args.tier, prediction)
    if args.json:
        print(json.dumps(report))
    else:
        print(title)
        print(format_report(report))
    return report


def cmd_estimate(args: argparse.Namespace) -> int:
    duration = audio_duration(args.audio) if args.audio else args.duration
    source = f" of {Path(args.audio).name}" if args.audio else ""
    _print_estimate(args, duration, f"Sonic cost estimate{source}")
    return 0


