"""Evaluate Lip-Sync Align and Motion Smooth on synthetic clips of known truth; print a table, write JSON.

    python bench/post_eval.py [--quick] [--out bench/results/post_eval.json]

Lip sync: the bundled portrait whose mouth opening follows the bundled speech's envelope, the video shifted by
known offsets in -0.2…+0.2 s (positive: audio leads), at two noise levels, face found by the Haar detector; then
silent clips (mouth closed while the speech plays, still or with head motion) that must not be corrected.
Motion: the portrait moved by slow intended motion plus high-passed jitter, smoothed by each filter at
strength "auto"; jitter and intended-motion amplitude are measured on input and output by the same tracker (the
kept share is output over input amplitude at each intended frequency; the true amplitudes are recorded beside it).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from eval_report import parse_eval_arguments, print_summary, write_result  # noqa: E402

from sonic_core.post import synthetic  # noqa: E402
from sonic_core.post.lipsync import DEFAULT_MIN_CONFIDENCE, align, measure_offset  # noqa: E402
from sonic_core.post.signals import second_difference_jitter  # noqa: E402
from sonic_core.post.smooth import METHODS, estimate_trajectory, smooth_motion  # noqa: E402

FPS = 25.0
OFFSETS = (-0.2, -0.17, -0.13, -0.1, -0.07, -0.05, -0.03, 0.0, 0.03, 0.05, 0.07, 0.1, 0.13, 0.17, 0.2)
STARTS = (0.0, 0.9, 1.8, 2.6)
TARGETS = {"offset_within_one_frame": 0.90, "jitter_reduction": 0.60, "amplitude_kept": 0.95}


def lipsync_rows(size: int, offsets: tuple[float, ...], starts: tuple[float, ...]) -> list[dict]:
    rows = []
    for start_index, start in enumerate(starts):
        noise = 0.01 if start_index % 2 == 0 else 0.03
        for offset in offsets:
            frames, audio, _ = synthetic.talking_clip(offset, duration=4.0, start=start, size=size, fps=FPS,
                                                      noise=noise, seed=start_index)
            _, corrected, report = align(frames, audio, FPS, mode="correct")
            residual = measure_offset(frames, corrected, FPS).offset_s if report.applied else report.offset_s
            rows.append({"kind": "talking", "start_s": start, "noise": noise, "true_offset_s": offset,
                         "measured_offset_s": round(report.offset_s, 4),
                         "error_ms": round((report.offset_s - offset) * 1000, 1),
                         "confidence": round(report.confidence, 3), "applied": report.applied,
                         "residual_after_correction_ms": round(residual * 1000, 1)})
    return rows


def silent_rows(size: int, starts: tuple[float, ...]) -> list[dict]:
    rows = []
    for index, start in enumerate(starts):
        for noise in (0.01, 0.03):
            frames, audio, _ = synthetic.talking_clip(0.0, duration=4.0, start=start, size=size, fps=FPS,
                                                      noise=noise, silent=True, seed=10 + index)
            rows.append(_silent_row("still, mouth closed", frames, audio, noise, start))
        frames, _, _ = synthetic.motion_clip(duration=4.0, size=size, fps=FPS, talking=False, seed=20 + index)
        audio = synthetic.talking_clip(0.0, duration=4.0, start=start, size=16)[1]
        rows.append(_silent_row("moving head, mouth closed", frames, audio, 0.005, start))
    return rows


def _silent_row(kind: str, frames, audio, noise: float, start: float) -> dict:
    _, _, report = align(frames, audio, FPS, mode="correct")
    return {"kind": kind, "start_s": start, "noise": noise, "measured_offset_s": round(report.offset_s, 4),
            "confidence": round(report.confidence, 3), "applied": report.applied, "reason": report.reason}


def motion_rows(size: int, duration: float, seeds: tuple[int, ...]) -> list[dict]:
    rows = []
    motions = {"jitter 1.5 px": synthetic.Motion(),
               "jitter 3 px": synthetic.Motion(jitter=(3.0, 3.0, 0.006, 0.004)),
               "jitter 0.7 px": synthetic.Motion(jitter=(0.7, 0.7, 0.002, 0.0015))}
    for name, motion in motions.items():
        for seed in seeds:
            frames, intended, _ = synthetic.motion_clip(motion, duration=duration, size=size, fps=FPS, seed=seed)
            intended[:, 2:] *= min(frames.shape[2:]) / 2  # angle and log-scale in pixels, as the tracker reports
            box = synthetic.face_box(size)
            before = estimate_trajectory(frames, box).params
            truth_amplitude = [synthetic.sinusoid_amplitude(intended[:, d], f, FPS)
                               for d, f in enumerate(motion.frequency)]
            before_amplitude = [synthetic.sinusoid_amplitude(before[:, d], f, FPS)
                                for d, f in enumerate(motion.frequency)]
            for method in METHODS:
                started = time.perf_counter()
                out, report = smooth_motion(frames, FPS, method=method, strength="auto", face_box=box)
                seconds = time.perf_counter() - started
                after = estimate_trajectory(out, box).params
                kept = [synthetic.sinusoid_amplitude(after[:, d], f, FPS) / before_amplitude[d]
                        for d, f in enumerate(motion.frequency)]
                jitter_in, jitter_out = second_difference_jitter(before), second_difference_jitter(after)
                rows.append({"motion": name, "seed": seed, "method": method, "size": size,
                             "frames_in": len(frames), "frames_out": len(out),
                             "strength": round(report.strength, 3),
                             "jitter_before_px": round(jitter_in, 4), "jitter_after_px": round(jitter_out, 4),
                             "jitter_reduction": round(1 - jitter_out / jitter_in, 4),
                             "amplitude_kept": [round(k, 4) for k in kept],
                             "amplitude_truth_px": [round(a, 3) for a in truth_amplitude],
                             "amplitude_measured_before_px": [round(a, 3) for a in before_amplitude],
                             "dark_border_before": round(synthetic.dark_border_fraction(frames), 5),
                             "dark_border_after": round(synthetic.dark_border_fraction(out), 5),
                             "seconds": round(seconds, 2)})
    return rows


def timing_row(size: int, duration: float) -> dict:
    frames, _, _ = synthetic.motion_clip(duration=duration, size=size, fps=FPS, seed=99)
    audio = synthetic.talking_clip(0.0, duration=duration, size=16)[1]
    started = time.perf_counter()
    report = measure_offset(frames, audio, FPS)
    lipsync_seconds = time.perf_counter() - started
    started = time.perf_counter()
    out, smooth = smooth_motion(frames, FPS)
    smooth_seconds = time.perf_counter() - started
    started = time.perf_counter()
    smooth_motion(frames, FPS, target_fps=50.0)
    retime_seconds = time.perf_counter() - started - smooth_seconds
    return {"size": size, "duration_s": duration, "frames": len(frames), "measure_offset_s": round(lipsync_seconds, 2),
            "smooth_motion_s": round(smooth_seconds, 2), "extra_for_50fps_linear_s": round(retime_seconds, 2),
            "face_found": report.face_box is not None, "auto_strength": round(smooth.strength, 3)}


def summarise(talking: list[dict], silent: list[dict], motion: list[dict]) -> dict:
    within = [abs(r["error_ms"]) <= 1000 / FPS for r in talking]
    corrected = [abs(r["residual_after_correction_ms"]) <= 1000 / FPS for r in talking if r["applied"]]
    return {
        "talking_clips": len(talking),
        "offset_within_one_frame": round(float(np.mean(within)), 4),
        "mean_abs_error_ms": round(float(np.mean([abs(r["error_ms"]) for r in talking])), 2),
        "max_abs_error_ms": round(float(np.max([abs(r["error_ms"]) for r in talking])), 2),
        "talking_corrected": sum(r["applied"] for r in talking),
        "residual_within_one_frame_after_correction": round(float(np.mean(corrected)), 4) if corrected else None,
        "silent_clips": len(silent),
        "silent_false_corrections": sum(r["applied"] for r in silent),
        "silent_max_confidence": max(r["confidence"] for r in silent),
        "min_confidence": DEFAULT_MIN_CONFIDENCE,
        "motion_runs": len(motion),
        "min_jitter_reduction": min(r["jitter_reduction"] for r in motion),
        "min_amplitude_kept_translation": min(min(r["amplitude_kept"][:2]) for r in motion),
        "min_amplitude_kept_all": min(min(r["amplitude_kept"]) for r in motion),
        "frame_count_unchanged": all(r["frames_in"] == r["frames_out"] for r in motion),
        "dark_border_increase_max": max(r["dark_border_after"] - r["dark_border_before"] for r in motion),
    }


def verdicts(summary: dict) -> dict:
    return {
        "offset within ±1 frame on ≥ 90% of clips":
            summary["offset_within_one_frame"] >= TARGETS["offset_within_one_frame"],
        "no false corrections on silent clips": summary["silent_false_corrections"] == 0,
        "jitter reduced by ≥ 60%": summary["min_jitter_reduction"] >= TARGETS["jitter_reduction"],
        "intended motion keeps ≥ 95% amplitude": summary["min_amplitude_kept_all"] >= TARGETS["amplitude_kept"],
        "frame count unchanged": summary["frame_count_unchanged"],
        "no black borders": summary["dark_border_increase_max"] <= 0.001,
    }


def print_tables(talking: list[dict], silent: list[dict], motion: list[dict], timing: dict, summary: dict) -> None:
    print("Lip sync (talking clips): error by true offset, mean over starts/noise")
    for offset in sorted({r["true_offset_s"] for r in talking}):
        rows = [r for r in talking if r["true_offset_s"] == offset]
        error = np.mean([abs(r["error_ms"]) for r in rows])
        confidence = np.mean([r["confidence"] for r in rows])
        print(f"  {offset * 1000:+5.0f} ms  mean |error| {error:5.1f} ms  confidence {confidence:.2f}  "
              f"applied {sum(r['applied'] for r in rows)}/{len(rows)}")
    print("Silent clips")
    for r in silent:
        print(f"  {r['kind']:<26} start {r['start_s']:.1f}  confidence {r['confidence']:.2f}  applied {r['applied']}")
    print("Motion smooth (auto strength)")
    print(f"  {'motion':<14} {'method':<9} {'seed':>4} {'jitter in':>9} {'out':>7} {'reduction':>9} "
          f"{'amp kept (x, y, angle, scale)':<32} {'s':>5}")
    for r in motion:
        kept = ", ".join(f"{k:.3f}" for k in r["amplitude_kept"])
        print(f"  {r['motion']:<14} {r['method']:<9} {r['seed']:>4} {r['jitter_before_px']:9.3f} "
              f"{r['jitter_after_px']:7.3f} {r['jitter_reduction']:9.1%} {kept:<32} {r['seconds']:5.2f}")
    print(f"Timing at {timing['size']} px, {timing['duration_s']} s ({timing['frames']} frames): "
          f"measure_offset {timing['measure_offset_s']} s, smooth_motion {timing['smooth_motion_s']} s, "
          f"+{timing['extra_for_50fps_linear_s']} s for 50 fps (linear midpoints)")
    print_summary(summary, verdicts(summary))


def main(argv: list[str] | None = None) -> int:
    args = parse_eval_arguments(__doc__, "post_eval", "fewer clips, small frames (a smoke run)", argv)
    if args.quick:
        talking = lipsync_rows(128, OFFSETS[::3], STARTS[:2])
        silent = silent_rows(128, STARTS[:1])
        motion = motion_rows(128, 3.0, (0,))
        timing = timing_row(128, 2.0)
    else:
        talking = lipsync_rows(256, OFFSETS, STARTS)
        silent = silent_rows(256, STARTS)
        motion = motion_rows(256, 6.0, (0, 1))
        timing = timing_row(512, 10.0)
    summary = summarise(talking, silent, motion)
    print_tables(talking, silent, motion, timing, summary)
    result = {"summary": summary, "verdicts": verdicts(summary), "targets": TARGETS, "fps": FPS, "timing": timing,
              "talking": talking, "silent": silent, "motion": motion}
    return write_result(args.out, result)


if __name__ == "__main__":
    sys.exit(main())
