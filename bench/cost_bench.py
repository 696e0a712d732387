"""Calibrate the cost model (``sonic_core/metering/cost.py``) on this machine and report its error on held-out jobs.

    python bench/cost_bench.py [--quick] [--no-sonic]

1. The real pipeline with the embedded tiny model, one fresh subprocess per grid point (so each point's peak RSS is
   its own), over a grid of (duration, resolution, steps). Wall seconds per stage come from the pipeline's own
   :class:`GenerationReport`. RIFE is off in the grid (it would dominate every point on this CPU) and measured on
   its own; one held-out point runs the whole pipeline with RIFE.
2. RIFE (the real HDv3 architecture, random weights) on a few frame sizes.
3. Unless ``--no-sonic``: the full-size UNet and temporal VAE (published architectures, random weights) for a
   single window forward / decode chunk at small latent sizes, to calibrate the ``sonic`` CPU throughputs.

The work of the pipeline and RIFE points comes from the shipped network counts
(``sonic_core/metering/network_counts.json``, made by ``bench/network_counts.py``); the single full-size calls of 3,
whose shapes are not the pipeline's, are counted with that script's meta-device counter. Each stage's coefficients
(``seconds = calls · per_call_s + work / throughput``, non-negative least squares) are fitted on the FIT points only;
the HELD-OUT points are predicted and compared. Writes ``bench/results/cost_model_cpu.json`` and ``.csv`` and updates
the CPU profiles of ``sonic_core/metering/cost_coefficients.json`` (other profiles are kept).
"""

from __future__ import annotations

import argparse
import csv
import datetime
import functools
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.network_counts import count_cost, meta_networks  # noqa: E402
from sonic_core.metering import cost  # noqa: E402
from sonic_core.paths import config_file  # noqa: E402

RESULTS = Path(os.environ.get("SONIC_BENCH_RESULTS", ROOT / "bench" / "results"))
PORTRAIT = ROOT / "sonic_core" / "assets" / "portrait.jpg"
SPEECH = ROOT / "sonic_core" / "assets" / "speech.wav"

# (duration s, resolution, steps, interpolate, role). Small: on this shared 2-core CPU the tiny VAE decodes a
# 256 px frame in seconds. The held-out points vary steps and resolution, add a second window and run RIFE.
PIPELINE_GRID = [
    (0.5, 256, 1, False, "fit"), (0.5, 320, 3, False, "fit"), (0.9, 256, 3, False, "fit"),
    (0.9, 320, 1, False, "fit"),
    (0.7, 256, 2, False, "held-out"), (0.6, 320, 2, False, "held-out"), (2.1, 256, 1, False, "held-out"),
    (0.5, 256, 2, True, "held-out"),
]
QUICK_GRID = [(0.5, 256, 1, False, "fit"), (0.5, 320, 2, False, "fit"), (0.6, 256, 3, False, "held-out")]
RIFE_GRID = [(3, 256, "fit"), (2, 320, "fit"), (3, 320, "held-out")]  # (frames, size, role)
UNET_GRID = [(8, 1, "fit"), (16, 1, "fit"), (8, 2, "held-out")]  # (latent side, frames per window, role)
VAE_GRID = [(8, 2, "fit"), (16, 2, "fit"), (12, 3, "held-out")]  # (latent side, chunk frames, role)


def speed_probe() -> float:
    """Seconds of a fixed float32 GEMM workload (about 16 GFLOP): this shared machine's speed right now.

    Other jobs on the machine change its speed during a bench run; each measurement is taken with a probe before
    and after it, and the fit compares work at the same machine speed (measured × reference probe / its probe).
    """
    a, b = torch.ones(512, 512), torch.ones(512, 512)
    started = time.perf_counter()
    for _ in range(60):
        torch.mm(a, b)
    return time.perf_counter() - started


def run_point(duration: float, resolution: int, steps: int, interpolate: bool) -> dict:
    """One generation in this process (called in a fresh subprocess): the pipeline's report as a dict."""
    from sonic_core.inputs import prepare_inputs
    from sonic_core.models.rife import IFNet
    from sonic_core.pipeline import SonicPipeline
    from sonic_core.render import render_video
    from sonic_core.settings import SonicSettings
    from sonic_core.weights.tiny import tiny_models

    pipeline = SonicPipeline(tiny_models(rife=IFNet() if interpolate else None))
    settings = SonicSettings(min_resolution=resolution, steps=steps, duration=duration, interpolate=interpolate)
    out = Path(os.environ.get("TMPDIR", "/tmp")) / f"sonic_cost_bench_{os.getpid()}.mp4"
    before = speed_probe()
    try:
        report = render_video(pipeline, prepare_inputs(PORTRAIT, SPEECH, settings, fit="trim"), out, settings)
    finally:
        out.unlink(missing_ok=True)
    return {**report.to_dict(), "probe_s": (before + speed_probe()) / 2}


def measure_pipeline(grid: list[tuple]) -> list[dict]:
    points = []
    for duration, resolution, steps, interpolate, role in grid:
        command = [sys.executable, __file__, "--point", str(duration), str(resolution), str(steps),
                   str(int(interpolate))]
        started = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True, check=True)
        report = json.loads(done.stdout.strip().splitlines()[-1])
        points.append({"kind": "pipeline", "role": role, "duration": duration, "resolution": resolution,
                       "steps": steps, "interpolate": interpolate, "frames": report["frames_generated"],
                       "width": report["width"], "height": report["height"],
                       "seconds": report["seconds"], "total_seconds": sum(report["seconds"].values()),
                       "peak_rss_bytes": int(report["peak_host_mb"] * 2**20), "probe_s": report["probe_s"],
                       "wall_seconds": time.perf_counter() - started, "loadavg": os.getloadavg()[0]})
        print(f"  pipeline {role:8s} {duration:4.1f} s {resolution} px {steps} steps rife={interpolate}: "
              f"{points[-1]['total_seconds']:7.1f} s, RSS {report['peak_host_mb']:.0f} MiB", flush=True)
    return points


def _timed(run) -> float:
    started = time.perf_counter()
    with torch.no_grad():
        run()
    return time.perf_counter() - started


def measure_rife(grid: list[tuple]) -> list[dict]:
    from sonic_core.interpolation import interpolate_x2
    from sonic_core.models.rife import IFNet

    model = IFNet().eval()
    points = []
    for frames, size, role in grid:
        clip = torch.rand(frames, 3, size, size)
        flops = cost.network_costs("tiny", size, size)["rife"].flops * (frames - 1)
        before = speed_probe()
        seconds = _timed(lambda: interpolate_x2(clip, model, batch_size=8))
        points.append({"kind": "rife", "role": role, "frames": frames, "size": size, "calls": 1, "work": flops,
                       "measured": seconds, "probe_s": (before + speed_probe()) / 2})
        print(f"  rife     {role:8s} {frames} frames {size} px: {seconds:6.1f} s", flush=True)
    return points


def _random_init(module: torch.nn.Module) -> torch.nn.Module:
    """Materialise a meta-built network with small uniform weights (timing does not depend on their values)."""
    module = module.to_empty(device="cpu")
    with torch.no_grad():
        for tensor in [*module.parameters(), *module.buffers()]:
            tensor.uniform_(-0.02, 0.02)
    return module.eval()


def measure_sonic(unet_grid: list[tuple], vae_grid: list[tuple]) -> list[dict]:
    """Full-size UNet window forwards and VAE decode chunks at small latent sizes (random weights)."""
    from sonic_core.models.unet import SonicUNet
    from sonic_core.models.vae import TemporalVAE

    torch.set_flush_denormal(True)  # random weights must not send activations into slow denormals
    points = []
    meta = meta_networks("sonic")  # shape-only twins, for counting FLOPs
    meta_unet, meta_vae = meta["unet"], meta["vae"]
    with torch.device("meta"):
        unet = SonicUNet.svd()
    unet = _random_init(unet)
    for side, frames, role in unet_grid:
        def inputs(device: str):
            with torch.device(device):
                return (torch.randn(1, frames, 8, side, side), torch.tensor(1.0), torch.randn(frames, 1, 1024),
                        torch.randn(frames, 32, 1024), torch.randn(1, 3), torch.rand(1, 1, side * 8, side * 8))
        meta_inputs = inputs("meta")
        flops = count_cost(lambda: meta_unet(*meta_inputs)).flops
        real = inputs("cpu")
        seconds = _timed(functools.partial(unet, *real))  # bound now: unet is deleted below
        points.append({"kind": "sonic_unet", "role": role, "latent": side, "frames": frames, "calls": 1,
                       "work": flops, "measured": seconds})
        print(f"  unet     {role:8s} latent {side}² × {frames} frames: {flops / 1e9:6.1f} GFLOP {seconds:6.1f} s",
              flush=True)
    del unet
    with torch.device("meta"):
        vae = TemporalVAE()
    vae = _random_init(vae)
    for side, frames, role in vae_grid:
        flops = count_cost(lambda: meta_vae.decode(torch.empty(frames, 4, side, side, device="meta"),
                                                   frames)).flops
        latents = torch.randn(frames, 4, side, side)
        seconds = _timed(lambda: vae.decode(latents, frames))
        points.append({"kind": "sonic_vae", "role": role, "latent": side, "frames": frames, "calls": 1,
                       "work": flops, "measured": seconds})
        print(f"  vae      {role:8s} latent {side}² × {frames} frames: {flops / 1e9:6.1f} GFLOP {seconds:6.1f} s",
              flush=True)
    return points


def fit_stage(calls: list[float], work: list[float], seconds: list[float]) -> cost.StageCoefficients:
    """Non-negative least squares for ``seconds = calls · per_call_s + work / throughput``."""
    a = np.array([calls, work], dtype=float).T
    y = np.array(seconds, dtype=float)
    best = None
    for columns in ([0, 1], [1], [0]):  # the full fit, then each term alone when a coefficient comes out < 0
        if not a[:, columns].any():
            continue
        solution = np.linalg.lstsq(a[:, columns], y, rcond=None)[0]
        if (solution >= 0).all():
            coefs = dict(zip(columns, solution))
            residual = float(np.sum((a[:, columns] @ solution - y) ** 2))
            if best is None or residual < best[0] - 1e-12:
                best = (residual, coefs)
            if columns == [0, 1]:
                break
    coefs = best[1] if best else {0: float(y.mean() / max(np.mean(calls), 1))}
    per_work = coefs.get(1, 0.0)
    return cost.StageCoefficients(float(coefs.get(0, 0.0)), float(1 / per_work) if per_work > 0 else 0.0)


def pipeline_workload(point: dict) -> cost.Workload:
    return cost.workload(point["frames"], point["resolution"], point["steps"], width=point["width"],
                         height=point["height"], model="tiny", dtype="fp32", interpolate=point["interpolate"])


def fit_pipeline(points: list[dict]) -> tuple[dict[str, cost.StageCoefficients], int, float]:
    fit = [p for p in points if p["role"] == "fit"]
    stages = {}
    for stage in cost.STAGES:
        rows = [(p["load"].stages[stage], p["seconds"].get(stage, 0.0) / p["slowdown"]) for p in fit
                if stage != "interpolate" or p["interpolate"]]
        if not rows:
            continue
        stages[stage] = fit_stage([w.calls for w, _ in rows], [w.work for w, _ in rows], [s for _, s in rows])
    # peak RSS - weights - latents = base + scale · activation
    extra = [p["peak_rss_bytes"] - p["load"].weights_bytes - p["load"].latent_bytes for p in fit]
    act = [p["load"].activation_bytes for p in fit]
    memory = fit_stage([1.0] * len(fit), act, extra)
    scale = 1 / memory.throughput if memory.throughput else 0.0
    return stages, int(memory.per_call_s), scale


# Documented dense peak throughputs (FLOP/s) of GPUs: fp16/bf16 tensor cores, and TF32 (RIFE runs in float32,
# whose convolutions PyTorch lets cuDNN run in TF32 by default). Sources: NVIDIA A10, L4, A100 and H100 SXM
# datasheets; the A10G is taken to be A10-class (same GA102 chip, 24 GB).
GPU_PEAKS = {"a10g": {"fp16": 125e12, "tf32": 62.5e12, "memory_gib": 24},
             "l4": {"fp16": 121e12, "tf32": 60e12, "memory_gib": 24},
             "a100": {"fp16": 312e12, "tf32": 156e12, "memory_gib": 80},
             "h100": {"fp16": 989e12, "tf32": 494.5e12, "memory_gib": 80}}
# Stated fractions of peak that each stage is assumed to reach (not measured: no GPU was available).
GPU_EFFICIENCY = {"sampling": 0.40, "decode": 0.30, "conditioning": 0.20, "interpolate": 0.25}
GPU_PER_CALL_S = {"sampling": 0.005, "decode": 0.005, "conditioning": 0.05, "interpolate": 0.003}
# Host-side stages of a warm GPU worker (libraries imported, models loaded; stated, not measured): audio decode +
# log-mel and face detection under a second each; libx264 at 50 Mpixel/s (about 50 fps at 1024², a many-core host).
# This shared 2-core CPU's fits (first imports, a loaded encoder) would overstate them.
GPU_HOST_STAGES = {"audio": cost.StageCoefficients(1.0, 0.0), "face": cost.StageCoefficients(0.5, 0.0),
                   "encode": cost.StageCoefficients(0.2, 50e6)}


def provisional_gpu_profiles(date: str) -> dict[str, dict]:
    """Uncalibrated GPU profiles: peak × efficiency for the network stages, :data:`GPU_HOST_STAGES` for the host.
    Peak memory is ``torch.cuda.max_memory_allocated`` (no base, no slack)."""
    profiles = {}
    for gpu, peaks in GPU_PEAKS.items():
        stages = dict(GPU_HOST_STAGES)
        for stage, efficiency in GPU_EFFICIENCY.items():
            peak = peaks["tf32"] if stage == "interpolate" else peaks["fp16"]
            stages[stage] = cost.StageCoefficients(GPU_PER_CALL_S[stage], peak * efficiency)
        info = {"calibrated": False, "date": date, "memory_gib": peaks["memory_gib"],
                "source": f"documented dense peak {peaks['fp16'] / 1e12:g} TFLOP/s fp16, "
                          f"{peaks['tf32'] / 1e12:g} TFLOP/s TF32 × efficiency {GPU_EFFICIENCY}; "
                          "stated warm-worker host stages (audio 1 s, face 0.5 s, encode 50 Mpixel/s)"}
        for dtype in ("fp16", "bf16"):
            profiles[f"{gpu}/{dtype}/sonic"] = {**profile_entry(stages, 0, 1.0, info), "calibrated": False}
    return profiles


def _error(predicted: float, measured: float) -> float:
    return (predicted - measured) / measured


def profile_entry(stages: dict[str, cost.StageCoefficients], base: int, scale: float, info: dict) -> dict:
    return {"calibrated": True, **info,
            "stages": {s: {"per_call_s": c.per_call_s, "throughput": c.throughput} for s, c in stages.items()},
            "memory": {"base_bytes": base, "activation_scale": scale}}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--point", nargs=4, metavar=("DURATION", "RESOLUTION", "STEPS", "RIFE"),
                        help="internal: run one grid point and print its report as JSON")
    parser.add_argument("--quick", action="store_true", help="a smaller grid (a smoke run, ~2 minutes)")
    parser.add_argument("--no-sonic", action="store_true", help="skip the full-size UNet/VAE calibration")
    parser.add_argument("--no-update", action="store_true",
                        help="do not rewrite sonic_core/metering/cost_coefficients.json")
    parser.add_argument("--reuse-sonic", metavar="RAW",
                        help="take the full-size UNet/VAE measurements from an earlier raw file instead of measuring")
    parser.add_argument("--refit", metavar="RAW",
                        help="fit again from saved measurements (bench/results/cost_model_cpu_raw.json)")
    args = parser.parse_args()
    if args.point:
        duration, resolution, steps, rife = args.point
        print(json.dumps(run_point(float(duration), int(resolution), int(steps), bool(int(rife)))))
        return 0

    if args.refit:
        raw = json.loads(Path(args.refit).read_text())
    else:
        raw = measure(args)
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / "cost_model_cpu_raw.json").write_text(json.dumps(raw, indent=1) + "\n")
    return analyse(raw, update=not args.no_update)


def measure(args: argparse.Namespace) -> dict:
    """Every measurement of the bench, as plain data (saved before any fit, so a fit can be redone)."""
    started, load_before = time.perf_counter(), os.getloadavg()
    print(f"cost bench on {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"torch {torch.__version__}, load {load_before[0]:.1f}", flush=True)
    pipeline = measure_pipeline(QUICK_GRID if args.quick else PIPELINE_GRID)
    rife = measure_rife(RIFE_GRID[:1] + RIFE_GRID[2:] if args.quick else RIFE_GRID)
    if args.reuse_sonic:
        sonic = json.loads(Path(args.reuse_sonic).read_text())["sonic"]
    else:
        sonic = [] if args.no_sonic else measure_sonic(UNET_GRID, VAE_GRID)
    load_after = os.getloadavg()
    info = {"machine": f"{platform.machine()} {platform.processor()} {os.cpu_count()} cores".strip(),
            "torch": torch.__version__,
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "load_average": [round(load_before[0], 2), round(load_after[0], 2)],
            "threads": torch.get_num_threads(), "bench_seconds": round(time.perf_counter() - started, 1)}
    return {"info": info, "pipeline": pipeline, "rife": rife, "sonic": sonic}


def analyse(raw: dict, update: bool) -> int:
    """Fit on the FIT points, predict every point, print the table, write the results and the coefficients."""
    info, pipeline, rife, sonic = raw["info"], raw["pipeline"], raw["rife"], raw["sonic"]
    probes = sorted(p["probe_s"] for p in pipeline if p["role"] == "fit" and "probe_s" in p)
    reference = probes[len(probes) // 2] if probes else None
    for point in [*pipeline, *rife, *sonic]:
        point["slowdown"] = point["probe_s"] / reference if reference and "probe_s" in point else 1.0
    for point in pipeline:
        point["load"] = pipeline_workload(point)
    stages, base, scale = fit_pipeline(pipeline)
    fit_rife = [p for p in rife if p["role"] == "fit"]
    stages["interpolate"] = fit_stage([p["calls"] for p in fit_rife], [p["work"] for p in fit_rife],
                                      [p["measured"] / p["slowdown"] for p in fit_rife])
    info = {**info, "speed_probe_reference_s": reference}
    tiny_profile = cost.Profile("cpu/fp32/tiny", True, stages, base, scale)

    rows = []
    for p in pipeline:
        predicted = cost.predict_workload(p["load"], tiny_profile)
        rows.append({"kind": "pipeline", "role": p["role"], "config": f"{p['duration']} s {p['resolution']} px "
                     f"{p['steps']} steps{' +rife' if p['interpolate'] else ''} (N={p['frames']})",
                     "measured_s": p["total_seconds"], "predicted_s": predicted.seconds * p["slowdown"],
                     "slowdown": p["slowdown"], "error": _error(predicted.seconds * p["slowdown"], p["total_seconds"]),
                     "error_without_probe": _error(predicted.seconds, p["total_seconds"]),
                     "measured_peak_bytes": p["peak_rss_bytes"], "predicted_peak_bytes": predicted.peak_bytes,
                     "peak_error": _error(predicted.peak_bytes, p["peak_rss_bytes"]),
                     "stage_measured_s": p["seconds"], "stage_predicted_s": predicted.stages, "loadavg": p["loadavg"]})
    for p in rife:
        predicted = stages["interpolate"].seconds(cost.StageWork(p["calls"], p["work"]))
        rows.append({"kind": "rife", "role": p["role"], "config": f"{p['frames']} frames {p['size']} px",
                     "measured_s": p["measured"], "predicted_s": predicted * p["slowdown"], "slowdown": p["slowdown"],
                     "error": _error(predicted * p["slowdown"], p["measured"]),
                     "error_without_probe": _error(predicted, p["measured"])})

    sonic_stages = dict(stages)
    for kind, stage in (("sonic_unet", "sampling"), ("sonic_vae", "decode")):
        measured = [p for p in sonic if p["kind"] == kind]
        if not measured:
            continue
        fitted = fit_stage(*([p[k] for p in measured if p["role"] == "fit"] for k in ("calls", "work", "measured")))
        sonic_stages[stage] = fitted
        for p in measured:
            predicted = fitted.seconds(cost.StageWork(p["calls"], p["work"]))
            rows.append({"kind": kind, "role": p["role"], "config": f"latent {p['latent']}² × {p['frames']} frames",
                         "measured_s": p["measured"], "predicted_s": predicted,
                         "error": _error(predicted, p["measured"])})
    if sonic:
        # Conditioning of the full model (CLIP ViT-H, whisper, VAE encode) is dense convs/GEMMs like the VAE:
        # its throughput is taken to be the VAE decoder's (not measured separately: CLIP alone would take minutes).
        sonic_stages["conditioning"] = cost.StageCoefficients(stages["conditioning"].per_call_s,
                                                              sonic_stages["decode"].throughput)

    held = [r for r in rows if r["role"] == "held-out"]
    print("\n  kind        role      config                                  measured  predicted   error  slowdown")
    for r in rows:
        print(f"  {r['kind']:10s}  {r['role']:8s}  {r['config']:38s} {r['measured_s']:8.1f} s "
              f"{r['predicted_s']:8.1f} s {100 * r['error']:+6.1f}%  {r.get('slowdown', 1.0):5.2f}x"
              + (f"   peak {r['measured_peak_bytes'] / 2**20:6.0f} MiB vs {r['predicted_peak_bytes'] / 2**20:6.0f} "
                 f"MiB {100 * r['peak_error']:+5.1f}%" if "peak_error" in r else ""))
    worst = max(abs(r["error"]) for r in held) if held else float("nan")
    unprobed = max(abs(r.get("error_without_probe", r["error"])) for r in held) if held else float("nan")
    print(f"  held-out without the machine-speed probe: max |error| {100 * unprobed:.1f}%")
    print(f"\n  held-out: max |error| {100 * worst:.1f}% on {len(held)} configurations not used in the fit "
          f"(load average {info['load_average']})")
    residuals = {"held_out_max_abs_error": worst, "held_out_max_abs_error_without_probe": unprobed,
                 "held_out": {r["kind"] + " " + r["config"]: round(r["error"], 4) for r in held},
                 "fit": {r["kind"] + " " + r["config"]: round(r["error"], 4) for r in rows if r["role"] == "fit"}}
    RESULTS.mkdir(parents=True, exist_ok=True)
    result = {**info, "rows": rows, "residuals": residuals,
              "model_form": "seconds = sum_stage calls*per_call_s + work/throughput; "
                            "peak = base + weights + latents + activation_scale*activation"}
    (RESULTS / "cost_model_cpu.json").write_text(json.dumps(result, indent=1, default=float) + "\n")
    with open(RESULTS / "cost_model_cpu.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["kind", "role", "config", "measured_s", "predicted_s", "error", "measured_peak_bytes",
                         "predicted_peak_bytes", "peak_error", "loadavg"])
        for r in rows:
            writer.writerow([r["kind"], r["role"], r["config"], f"{r['measured_s']:.3f}", f"{r['predicted_s']:.3f}",
                             f"{r['error']:.4f}", r.get("measured_peak_bytes", ""), r.get("predicted_peak_bytes", ""),
                             f"{r['peak_error']:.4f}" if "peak_error" in r else "", r.get("loadavg", "")])
    if update:
        target = config_file(None, cost.COEFFICIENTS_ENV, cost.COEFFICIENTS_FILE)
        data = json.loads(target.read_text()) if target.exists() else {}
        profiles = data.setdefault("profiles", {})
        profiles["cpu/fp32/tiny"] = profile_entry(stages, base, scale, {**info, "residuals": residuals})
        if sonic:
            note = ("sampling/decode fitted on full-size UNet/VAE calls at small latents; conditioning uses the "
                    "VAE throughput; audio/face/encode/interpolate and memory as cpu/fp32/tiny")
            profiles["cpu/fp32/sonic"] = profile_entry(sonic_stages, base, scale, {**info, "note": note,
                                                                                   "residuals": residuals})
        profiles.update(provisional_gpu_profiles(info["date"]))
        data["aliases"] = {"cuda": "a10g", "gpu": "a10g"}
        cost.parse_coefficients(data, "bench output")  # never write a file the cost model would refuse
        target.write_text(json.dumps(data, indent=1) + "\n")
        print(f"  updated {target}")
    print(f"  wrote {RESULTS / 'cost_model_cpu.json'} (+ .csv); measuring took "
          f"{info['bench_seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
