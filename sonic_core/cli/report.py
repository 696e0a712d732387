"""The cost report a generation prints: what it is charged (tokens), what the cost model predicted and what the run
actually took (seconds per stage, peak memory), with the video, the face and any post-processing results."""

from __future__ import annotations

from ..render import GenerationReport
from ..settings import SonicSettings
from ..tokens import settings_tokens
from .estimate import memory_rows


def cost_report(report: GenerationReport, settings: SonicSettings, model: str, wall_seconds: float,
                prediction: dict) -> dict:
    """The cost report of a finished run: what it is charged (tokens), what the cost model predicted
    (``prediction``, the fields of :func:`sonic_core.cli.estimate.predicted_cost`) and what the run took."""
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
        *memory_rows(cost.get("memory_plan")),
        *((name, _format_post(name, step)) for name, step in cost["post"].items()),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"  {k.ljust(width)}  {v}" for k, v in rows)


def _format_post(name: str, step: dict) -> str:
    if name == "lipsync":
        verdict = "applied" if step["applied"] else step["reason"]
        return f"offset {step['offset_s'] * 1000:+.0f} ms, confidence {step['confidence']:.2f}: {verdict}"
    if name == "deflicker":
        return (f"flicker {step['flicker_before']:.2f} -> {step['flicker_after']:.2f} % (largest gain change "
                f"{step['max_gain_change'] * 100:.1f} %)")
    if name == "colour":
        if not step["applied"]:
            return step.get("reason", "off")
        return (f"strength {step['strength']:.2f}, colour cast (dE of the mean colours) {step['cast_before']:.2f} -> "
                f"{step['cast_after']:.2f}, mean dE to the portrait {step['delta_e_before']:.2f} -> "
                f"{step['delta_e_after']:.2f}")
    if name == "paste":
        seam = "no inner edge" if step["seam_ratio"] is None else f"seam ratio {step['seam_ratio']:.3f}"
        return (f"into the {step['frame_size'][0]}x{step['frame_size'][1]} original at {step['pasted_box']}, "
                f"feather {step['feather_px']:.0f} px, {seam}")
    return (f"{step['method']} strength {step['strength']:.2f}, jitter {step['jitter_before']:.3f} -> "
            f"{step['jitter_after']:.3f} px")


def _format_prediction(cost: dict) -> str:
    if cost["predicted_seconds"] is None:
        return f"unavailable ({cost['prediction'].get('unavailable', 'no cost model')})"
    assumed = cost["prediction"]
    return (f"{cost['predicted_seconds']:.1f} s, peak {cost['predicted_peak_bytes'] / 2**20:.0f} MB "
            f"(on {assumed['device']} {assumed['dtype']})")
