"""Evaluate paste-back, deflicker and colour match on synthetic cases of known truth; print a table, write JSON.

    python bench/quality_eval.py [--quick] [--out bench/results/quality_eval.json]

Paste-back: the bundled portrait cut to a 512 x 448 shot is the original; its crop at a box (inside the image, past
the top-left corner, clamped to the top border, past the bottom-right corner) resized to the working size,
brightened by a known gain (a generated face is never the original's exact brightness) and with noise, is pasted
back at each feather width. Measured: the seam ratio (the largest, over 4 px strips along the inner edges, of the
pasted frame's mean gradient magnitude over the original's; 1 = no seam) and the frame size.
Flicker: the portrait with a mouth that follows the bundled speech (still, or with head motion), times a brightness
strobe 1 + A sin(2 pi t / T) of known amplitude A and period T; the strobe's amplitude in the mean luma before and
after, and the share of the mouth signal's energy kept (projection onto the clean clip's mouth signal) by the strobed
input and by the output.
Colour: the same clips with a per-channel gain/offset drift growing over the clip (or none); ΔE (CIE76) over the
frame less the mouth, before and after: to the portrait per pixel (on a still, noise-free clip that is the drift
itself; motion and noise add a floor the match cannot and should not remove) and of the mean colours (the cast), and
per pixel to the truth, the clip before the drift (the drift left, on every clip).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from eval_report import parse_eval_arguments, print_summary, write_result  # noqa: E402

from sonic_core.face.box import FaceBox  # noqa: E402
from sonic_core.post import synthetic  # noqa: E402
from sonic_core.post.chain import DEFAULT_COLOUR_STRENGTH, DEFAULT_DEFLICKER  # noqa: E402
from sonic_core.post.colour import ColourMatch, colour_error, delta_e_between  # noqa: E402
from sonic_core.post.paste import DEFAULT_FEATHER, PasteBack  # noqa: E402
from sonic_core.post.temporal import Deflicker, deflicker  # noqa: E402

FPS = 25.0
SHOT = (512, 448)
CROPS = {"inside": (132, 21, 316, 205), "past top-left": (-40, -30, 200, 210),
         "on top border": (100, 0, 348, 248), "past bottom-right": (330, 250, 560, 480)}
FEATHERS = (0.0, 0.05, DEFAULT_FEATHER, 0.2)
GAINS = (1.0, 1.1)
STROBES = ((0.03, 1.0), (0.05, 1.0), (0.1, 1.0), (0.05, 0.8), (0.05, 1.5), (0.1, 0.5))
DRIFTS = {"none": None, "warm": ((1.08, 1.0, 0.94), (0.0, 0.02, 0.03)),
          "cool + dark": ((0.9, 0.95, 1.1), (-0.02, 0.0, 0.03)), "brighter": ((1.12, 1.12, 1.12), (0.0, 0.0, 0.0))}
MOTIONS = {"sway": synthetic.Motion(),
           "large": synthetic.Motion(amplitude=(24.0, 14.0, 0.06, 0.05), frequency=(0.5, 0.35, 0.3, 0.25)),
           "fast": synthetic.Motion(amplitude=(8.0, 6.0, 0.02, 0.02), frequency=(1.1, 0.9, 0.7, 0.6),
                                    jitter=(3.0, 3.0, 0.008, 0.006)),
           "nod": synthetic.Motion(amplitude=(2.0, 16.0, 0.01, 0.01), frequency=(0.3, 0.8, 0.2, 0.2))}
MOTION_SECONDS = (3.0, 4.0, 8.0)
MOVING_STROBE = (0.05, 0.9)  # amplitude, period (s)
MOVING_DRIFT = "cool + dark"
TARGETS = {"seam_ratio_max": 1.10, "strobe_reduction": 0.80, "mouth_energy_kept": 0.95, "delta_e_reduction": 0.70,
           "delta_e_change_without_drift": 0.5}


def paste_rows(size: int) -> list[dict]:
    rows = []
    for name, box in CROPS.items():
        for gain in GAINS:
            original, frames = synthetic.paste_case(box, size=size, count=2, gain=gain, shot=SHOT)
            for feather in FEATHERS:
                paste = PasteBack(original, box, feather)
                pasted = paste.paste(frames)
                rows.append({"crop": name, "crop_box": list(box), "pasted_box": list(paste.visible_box),
                             "face_gain": gain, "feather": feather, "seam_ratio": round(paste.seam_ratio(pasted[0]), 4),
                             "frame_size": [int(pasted.shape[3]), int(pasted.shape[2])],
                             "size_matches_original": tuple(pasted.shape[2:]) == tuple(original.shape[1:])})
    return rows


def clips(size: int, duration: float) -> dict[str, tuple[torch.Tensor, FaceBox]]:
    """Clean clips to inject faults into: a still talking head, with and without noise, and one with head motion."""
    still, _, box = synthetic.talking_clip(0.0, duration=duration, start=0.5, size=size, fps=FPS, noise=0.0, seed=1)
    noisy, _, _ = synthetic.talking_clip(0.0, duration=duration, start=0.5, size=size, fps=FPS, noise=0.01, seed=2)
    moving, _, _ = synthetic.motion_clip(duration=duration, size=size, fps=FPS, seed=3)
    return {"still": (still, box), "still, noise 0.01": (noisy, box), "head motion": (moving, box)}


def flicker_rows(sources: dict) -> list[dict]:
    rows = []
    for clip, (clean, box) in sources.items():
        cases = [(0.0, 1.0)] + list(STROBES if clip != "still, noise 0.01" else STROBES[1:2])
        for amplitude, period in cases:
            strobing = synthetic.strobed(clean, amplitude, period, FPS) if amplitude else clean
            out, report = deflicker(strobing, FPS, box)
            before = synthetic.strobe_amplitude(strobing, period, FPS)
            after = synthetic.strobe_amplitude(out, period, FPS)
            rows.append({"clip": clip, "strobe_amplitude": amplitude, "strobe_period_s": period,
                         "measured_amplitude_before": round(before, 5), "measured_amplitude_after": round(after, 5),
                         "reduction": round(1 - after / before, 4) if amplitude else None,
                         "mouth_energy_kept": round(synthetic.mouth_energy_kept(out, clean, box), 4),
                         "mouth_energy_kept_by_input": round(synthetic.mouth_energy_kept(strobing, clean, box), 4),
                         "flicker_before_pct": report.flicker_before, "flicker_after_pct": report.flicker_after,
                         "mean_abs_change": round(float((out - strobing).abs().mean()), 5)})
    return rows


def colour_rows(sources: dict, reference: torch.Tensor) -> list[dict]:
    rows = []
    for clip, (clean, box) in sources.items():
        for drift, params in DRIFTS.items():
            frames = clean if params is None else synthetic.drifted(clean, *params)
            before, truth_before = colour_error(frames, reference, box), delta_e_between(frames, clean, box)
            for strength in (1.0, 0.5):
                out = ColourMatch(reference, box, strength).apply(frames)
                after, truth_after = colour_error(out, reference, box), delta_e_between(out, clean, box)
                rows.append({"clip": clip, "drift": drift, "strength": strength,
                             "delta_e_before": round(before[0], 4), "delta_e_after": round(after[0], 4),
                             "cast_before": round(before[1], 4), "cast_after": round(after[1], 4),
                             "truth_delta_e_before": round(truth_before, 4),
                             "truth_delta_e_after": round(truth_after, 4),
                             "truth_delta_e_reduction": round(1 - truth_after / truth_before, 4) if params else None})
    return rows


def moving_rows(size: int, seeds: tuple[int, ...]) -> list[dict]:
    """Moving heads of other motions, lengths and seeds: deflicker without and with a strobe, colour match without
    and with a drift (short clips give the deflicker's low-pass few seconds to tell head motion from flicker)."""
    rows = []
    amplitude, period = MOVING_STROBE
    box = synthetic.face_box(size)
    reference = torch.from_numpy(synthetic.portrait(size)).permute(2, 0, 1)
    for name, motion in MOTIONS.items():
        for seconds in MOTION_SECONDS:
            for seed in seeds:
                clean, _, _ = synthetic.motion_clip(motion, duration=seconds, size=size, fps=FPS, seed=seed)
                out, report = deflicker(clean, FPS, box)
                strobing = synthetic.strobed(clean, amplitude, period, FPS, phase=0.5)
                deflickered, _ = deflicker(strobing, FPS, box)
                drifting = synthetic.drifted(clean, *DRIFTS[MOVING_DRIFT])
                drift = delta_e_between(drifting, clean, box)
                rows.append({
                    "motion": name, "seconds": seconds, "seed": seed,
                    "mouth_energy_kept": round(synthetic.mouth_energy_kept(out, clean, box), 4),
                    "max_gain_change": report.max_gain_change,
                    "strobed_mouth_energy_kept": round(synthetic.mouth_energy_kept(deflickered, clean, box), 4),
                    "strobe_reduction": round(1 - synthetic.strobe_amplitude(deflickered, period, FPS)
                                              / synthetic.strobe_amplitude(strobing, period, FPS), 4),
                    "truth_delta_e_without_drift": round(
                        delta_e_between(ColourMatch(reference, box).apply(clean), clean, box), 4),
                    "truth_delta_e_before": round(drift, 4),
                    "truth_delta_e_reduction": round(
                        1 - delta_e_between(ColourMatch(reference, box).apply(drifting), clean, box) / drift, 4)})
    return rows


def timing_row(size: int, count: int) -> dict:
    """Seconds per frame of each step at the working size (the clock of this machine, shared or not)."""
    frames, _, box = synthetic.talking_clip(0.0, duration=count / FPS, start=0.5, size=size, fps=FPS, seed=4)
    original, _ = synthetic.paste_case(CROPS["inside"], size=size, count=1, shot=SHOT)
    reference = torch.from_numpy(synthetic.portrait(size)).permute(2, 0, 1)
    steps = {"deflicker": lambda: list(Deflicker(FPS, box).run(frames.split(8))),
             "colour": lambda: ColourMatch(reference, box).apply(frames),
             "paste": lambda: PasteBack(original, CROPS["inside"]).paste(frames)}
    row = {"size": size, "frames": count}
    for name, run in steps.items():
        started = time.perf_counter()
        run()
        row[f"{name}_ms_per_frame"] = round((time.perf_counter() - started) / count * 1000, 2)
    return row


def summarise(paste: list[dict], flicker: list[dict], colour: list[dict], moving: list[dict]) -> dict:
    feathered = [r for r in paste if r["feather"] == DEFAULT_FEATHER]
    strobed = [r for r in flicker if r["strobe_amplitude"]]
    period_1s = [r for r in strobed if r["strobe_period_s"] <= 1.0]
    full = [r for r in colour if r["strength"] == 1.0]
    summary = {
        "seam_ratio_max_default_feather": max(r["seam_ratio"] for r in feathered if r["face_gain"] == 1.0),
        "seam_ratio_max_default_feather_face_10pct_brighter": max(r["seam_ratio"] for r in feathered
                                                                  if r["face_gain"] != 1.0),
        "seam_ratio_max_hard_edge": max(r["seam_ratio"] for r in paste if r["feather"] == 0.0),
        "frame_size_always_original": all(r["size_matches_original"] for r in paste),
        "strobe_reduction_min_period_le_1s": min(r["reduction"] for r in period_1s),
        "strobe_reduction_min_all": min(r["reduction"] for r in strobed),
        "mouth_energy_kept_min": min(r["mouth_energy_kept"] for r in flicker),
        "mouth_energy_kept_min_without_strobe": min(r["mouth_energy_kept"] for r in flicker
                                                    if not r["strobe_amplitude"]),
        "mouth_signal_closer_to_clean_than_input": all(
            abs(1 - r["mouth_energy_kept"]) <= abs(1 - r["mouth_energy_kept_by_input"]) for r in strobed),
        "delta_e_reduction_min_still_noise_free": min(1 - r["delta_e_after"] / r["delta_e_before"]
                                                      for r in full if r["clip"] == "still" and r["drift"] != "none"),
    }
    for kind, still in (("still", True), ("head_motion", False)):
        rows = [r for r in full if (r["clip"] != "head motion") == still]
        summary[f"truth_delta_e_reduction_min_{kind}"] = min(r["truth_delta_e_reduction"] for r in rows
                                                             if r["drift"] != "none")
        summary[f"truth_delta_e_max_without_drift_{kind}"] = max(r["truth_delta_e_after"] for r in rows
                                                                 if r["drift"] == "none")
    summary["moving_mouth_energy_kept_min_without_strobe"] = min(r["mouth_energy_kept"] for r in moving)
    summary["moving_mouth_energy_kept_min_without_strobe_short"] = min(
        r["mouth_energy_kept"] for r in moving if r["seconds"] <= 4.0)
    summary["moving_mouth_energy_kept_min_strobed"] = min(r["strobed_mouth_energy_kept"] for r in moving)
    summary["moving_strobe_reduction_min"] = min(r["strobe_reduction"] for r in moving)
    summary["moving_truth_delta_e_reduction_min"] = min(r["truth_delta_e_reduction"] for r in moving)
    summary["moving_truth_delta_e_max_without_drift"] = max(r["truth_delta_e_without_drift"] for r in moving)
    return summary


def verdicts(summary: dict) -> dict:
    result = {
        "seam within 10 % of the original (default feather, face as bright as the portrait)":
            summary["seam_ratio_max_default_feather"] <= TARGETS["seam_ratio_max"],
        "seam within 10 % of the original (default feather, face 10 % brighter)":
            summary["seam_ratio_max_default_feather_face_10pct_brighter"] <= TARGETS["seam_ratio_max"],
        "pasted frame size = original": summary["frame_size_always_original"],
        "strobing (period <= 1 s) cut by >= 80 %":
            summary["strobe_reduction_min_period_le_1s"] >= TARGETS["strobe_reduction"],
        "mouth keeps >= 95 % of its energy (every clip)": summary["mouth_energy_kept_min"]
        >= TARGETS["mouth_energy_kept"],
        "mouth keeps >= 95 % of its energy (clips without strobing)": summary["mouth_energy_kept_min_without_strobe"]
        >= TARGETS["mouth_energy_kept"],
        "strobed clips: the mouth signal ends closer to the clean one than the input's":
            summary["mouth_signal_closer_to_clean_than_input"],
        "drift dE to the portrait cut by >= 70 % (still, noise-free)":
            summary["delta_e_reduction_min_still_noise_free"] >= TARGETS["delta_e_reduction"],
    }
    for kind in ("still", "head_motion"):
        result[f"drift dE to the truth cut by >= 70 % ({kind})"] = \
            summary[f"truth_delta_e_reduction_min_{kind}"] >= TARGETS["delta_e_reduction"]
        result[f"no drift: colour match moves dE <= 0.5 ({kind})"] = \
            summary[f"truth_delta_e_max_without_drift_{kind}"] <= TARGETS["delta_e_change_without_drift"]
    result["other motions, 3-8 s: mouth keeps >= 95 % of its energy (without strobing, and strobed)"] = min(
        summary["moving_mouth_energy_kept_min_without_strobe"], summary["moving_mouth_energy_kept_min_strobed"]) \
        >= TARGETS["mouth_energy_kept"]
    result["other motions, 3-8 s: strobing cut by >= 80 %"] = \
        summary["moving_strobe_reduction_min"] >= TARGETS["strobe_reduction"]
    result["other motions, 3-8 s: drift dE to the truth cut by >= 70 %"] = \
        summary["moving_truth_delta_e_reduction_min"] >= TARGETS["delta_e_reduction"]
    result["other motions, 3-8 s: no drift, colour match moves dE <= 0.5"] = \
        summary["moving_truth_delta_e_max_without_drift"] <= TARGETS["delta_e_change_without_drift"]
    return result


def print_tables(paste: list[dict], flicker: list[dict], colour: list[dict], moving: list[dict], timing: dict,
                 summary: dict) -> None:
    print("Paste-back: seam ratio (1 = like the original) by feather; frame size")
    print(f"  {'crop':<18} {'face gain':>9}  " + "  ".join(f"f={f:<5g}" for f in FEATHERS) + "  size")
    for name in CROPS:
        for gain in GAINS:
            rows = [r for r in paste if r["crop"] == name and r["face_gain"] == gain]
            print(f"  {name:<18} {gain:9.2f}  " + "  ".join(f"{r['seam_ratio']:7.3f}" for r in rows)
                  + f"  {rows[0]['frame_size'][0]}x{rows[0]['frame_size'][1]}")
    print("Deflicker: injected strobe amplitude (of mean luma) before -> after, mouth energy kept")
    print(f"  {'clip':<18} {'A':>5} {'T s':>4} {'before':>8} {'after':>8} {'cut':>6} {'mouth in':>8} {'out':>6} "
          f"{'flicker % in':>12} {'out':>6}")
    for r in flicker:
        cut = f"{r['reduction']:6.1%}" if r["reduction"] is not None else "     -"
        print(f"  {r['clip']:<18} {r['strobe_amplitude']:5.2f} {r['strobe_period_s']:4.1f} "
              f"{r['measured_amplitude_before']:8.4f} {r['measured_amplitude_after']:8.4f} {cut} "
              f"{r['mouth_energy_kept_by_input']:8.3f} {r['mouth_energy_kept']:6.3f} {r['flicker_before_pct']:12.3f} "
              f"{r['flicker_after_pct']:6.3f}")
    print("Colour match: dE to the portrait (per pixel | cast) and to the truth (the clip before the drift), "
          "before -> after")
    print(f"  {'clip':<18} {'drift':<12} {'s':>4} {'dE before':>9} {'after':>7} {'cast before':>11} {'after':>7} "
          f"{'truth before':>12} {'after':>7}")
    for r in colour:
        print(f"  {r['clip']:<18} {r['drift']:<12} {r['strength']:4.1f} {r['delta_e_before']:9.3f} "
              f"{r['delta_e_after']:7.3f} {r['cast_before']:11.3f} {r['cast_after']:7.3f} "
              f"{r['truth_delta_e_before']:12.3f} {r['truth_delta_e_after']:7.3f}")
    amplitude, period = MOVING_STROBE
    print(f"Other head motions: deflicker without strobe (mouth kept, largest gain change) and with a strobe "
          f"A={amplitude:g}, T={period:g} s (mouth kept, cut); colour match: dE to the truth without drift, and "
          f"'{MOVING_DRIFT}' drift before -> cut")
    print(f"  {'motion':<7} {'s':>4} {'seed':>4} {'mouth':>6} {'gain':>7} {'strobed':>7} {'cut':>6} {'dE none':>7} "
          f"{'drift':>6} {'cut':>6}")
    for r in moving:
        print(f"  {r['motion']:<7} {r['seconds']:4.1f} {r['seed']:4d} {r['mouth_energy_kept']:6.3f} "
              f"{r['max_gain_change']:7.4f} {r['strobed_mouth_energy_kept']:7.3f} {r['strobe_reduction']:6.1%} "
              f"{r['truth_delta_e_without_drift']:7.3f} {r['truth_delta_e_before']:6.3f} "
              f"{r['truth_delta_e_reduction']:6.1%}")
    print(f"Timing at {timing['size']} px ({timing['frames']} frames): deflicker {timing['deflicker_ms_per_frame']} "
          f"ms/frame, colour {timing['colour_ms_per_frame']} ms/frame, paste {timing['paste_ms_per_frame']} ms/frame")
    print_summary(summary, verdicts(summary))


def main(argv: list[str] | None = None) -> int:
    args = parse_eval_arguments(__doc__, "quality_eval", "small frames, short clips (a smoke run)", argv)
    size, duration = (128, 4.0) if args.quick else (192, 6.0)
    sources = clips(size, duration)
    reference = torch.from_numpy(synthetic.portrait(size)).permute(2, 0, 1)
    paste, flicker, colour = paste_rows(size), flicker_rows(sources), colour_rows(sources, reference)
    moving = moving_rows(size, (11,) if args.quick else (11, 12))
    timing = timing_row(128 if args.quick else 512, 25)
    summary = summarise(paste, flicker, colour, moving)
    print_tables(paste, flicker, colour, moving, timing, summary)
    defaults = {"deflicker": DEFAULT_DEFLICKER, "colour_strength": DEFAULT_COLOUR_STRENGTH, "paste_back": False,
                "paste_feather": DEFAULT_FEATHER}
    result = {"summary": summary, "verdicts": verdicts(summary), "targets": TARGETS, "defaults": defaults,
              "fps": FPS, "size": size,
              "clip_seconds": duration, "timing": timing, "paste": paste, "flicker": flicker, "colour": colour,
              "moving": moving}
    return write_result(args.out, result)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
