"""Host memory of a whole generation through the CLI: 10 s against 60 s of audio, each in a fresh process.

Runs ``python -m sonic_core demo`` (the embedded tiny model, the bundled portrait and speech trimmed or padded to
the length asked for) once per duration in a subprocess and records its peak resident memory (``ru_maxrss`` of that child
alone, from ``os.wait4``), the ratio of the longest to the shortest, and how large the written frames would be if a
run held them (uint8 and the float32 the decoder yields): at a size where frames would show, a ratio near 1 means
nothing grows with the clip's length.

    python bench/cli_rss.py                                     # 10 s and 60 s, 256 px, 1 step, 25 fps (RIFE)
    python bench/cli_rss.py --seconds 10,60 --size 512 --steps 2

writes ``cli_rss.json`` to ``--out`` (default ``bench/results``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SPEECH = REPO / "sonic_core" / "assets" / "speech.wav"  # the demo's speech


def run_demo(seconds: float, size: int, steps: int, folder: Path) -> dict:
    """One demo generation of ``seconds`` of speech in a child process: its report and peak RSS."""
    import soundfile

    out = folder / f"demo_{seconds:g}s.mp4"
    fit = "trim" if seconds <= soundfile.info(str(SPEECH)).duration else "pad"
    command = [sys.executable, "-m", "sonic_core", "demo", "--out", str(out), "--json", "--duration", f"{seconds:g}",
               "--fit", fit, "--min-resolution", str(size), "--steps", str(steps)]
    started = time.time()
    with tempfile.TemporaryFile("w+") as errors:
        child = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=errors, text=True)
        stdout = child.stdout.read()
        _, status, usage = os.wait4(child.pid, 0)  # this child's own peak (Popen.wait would reap it first)
        child.returncode = os.waitstatus_to_exitcode(status)
        if child.returncode != 0:
            errors.seek(0)
            raise SystemExit(f"demo of {seconds:g} s failed: {errors.read().strip()[-400:]}")
    report = json.loads(stdout[stdout.index("{"):])
    video = report["video"]
    frame_bytes = video["frames_written"] * video["width"] * video["height"] * 3
    return {"seconds": seconds, "wall_s": round(time.time() - started, 1), "peak_rss_bytes": usage.ru_maxrss * 1024,
            "frames_written": video["frames_written"], "width": video["width"], "height": video["height"],
            "frames_uint8_bytes": frame_bytes, "frames_float32_bytes": 4 * frame_bytes}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", default="10,60", help="comma-separated audio lengths (default 10,60)")
    parser.add_argument("--size", type=int, default=256, help="--min-resolution of the demo (default 256)")
    parser.add_argument("--steps", type=int, default=1, help="sampling steps (default 1)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()
    durations = [float(value) for value in args.seconds.split(",")]
    load = os.getloadavg()
    with tempfile.TemporaryDirectory() as folder:
        runs = [run_demo(seconds, args.size, args.steps, Path(folder)) for seconds in durations]
    shortest, longest = min(runs, key=lambda r: r["seconds"]), max(runs, key=lambda r: r["seconds"])
    record = {"command": "python -m sonic_core demo --duration S --fit pad|trim", "size": args.size, "steps": args.steps,
              "load_average_before": load, "runs": runs,
              "rss_ratio_longest_to_shortest": longest["peak_rss_bytes"] / shortest["peak_rss_bytes"],
              "rss_growth_bytes": longest["peak_rss_bytes"] - shortest["peak_rss_bytes"],
              "longest_frames_uint8_bytes": longest["frames_uint8_bytes"]}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "cli_rss.json").write_text(json.dumps(record, indent=2) + "\n")
    for r in runs:
        print(f"{r['seconds']:6g} s: peak RSS {r['peak_rss_bytes'] / 2**20:8.1f} MiB, {r['frames_written']} frames "
              f"{r['width']}x{r['height']} ({r['frames_uint8_bytes'] / 2**20:.0f} MiB as uint8), {r['wall_s']} s")
    print(f"ratio {record['rss_ratio_longest_to_shortest']:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
