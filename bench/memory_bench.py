"""The memory planner side by side: one generation at full architecture under several device budgets, in one process
on one device, with each run's peak memory and the equality of its frames with the run without a budget.

The official-size networks (SVD-xt UNet, temporal VAE, ViT-H/14 CLIP, whisper-tiny, the adapters) get random
weights (nothing is downloaded); the portrait is a gradient and the speech is noise, which is all the networks need
to do their full work. Each budget goes through :func:`sonic_core.memory.plan_memory` (``smallest``: the smallest
budget any plan meets, so the most frugal plan: feed-forward chunks, offloading and latents in host memory) and the
pipeline runs under the plan it returns.

Peak memory, measured:

* on CUDA, ``torch.cuda.max_memory_allocated`` over the run (the networks included: they start on the device);
* on the CPU, where offloading moves nothing, the peak of the bytes of live tensors allocated during the run (the
  activations, latents and conditioning, without the weights), tracked by the same dispatch mode that counts
  ``network_counts.json`` (:class:`bench.network_counts.LiveBytes`); the planner's prediction of that part is its
  stage peak less the weights resident in that stage.

    python bench/memory_bench.py                          # this CPU: fp32, 64 px frames, 1 s of audio, 1 step
    python bench/memory_bench.py --device cuda --dtype fp16 --size 512 --seconds 10    # a GPU

writes ``memory_<device name>.json`` to ``--out`` (default ``bench/results``).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.network_counts import LiveBytes  # noqa: E402
from sonic_core.audio import Speech  # noqa: E402
from sonic_core.device import DTYPES  # noqa: E402
from sonic_core.face.box import FaceBox  # noqa: E402
from sonic_core.face.crop import Reference  # noqa: E402
from sonic_core.inputs import PreparedInputs  # noqa: E402
from sonic_core.memory import STAGE_NETWORKS, MemoryPlan, format_bytes, parse_budget, plan_memory  # noqa: E402
from sonic_core.metering import cost  # noqa: E402
from sonic_core.models.bundle import ModelConfigs, SonicModels  # noqa: E402
from sonic_core.pipeline import SonicPipeline, memory_job  # noqa: E402
from sonic_core.settings import SonicSettings  # noqa: E402

SMALLEST = "smallest"
SAMPLE_RATE = 16000


def official_models(seed: int, interpolate: bool) -> SonicModels:
    """Every official-size network with random weights drawn from ``seed`` (RIFE only when interpolating)."""
    torch.manual_seed(seed)
    factories = ModelConfigs.official().factories()
    networks = {name: make() for name, make in factories.items() if name != "rife" or interpolate}
    return SonicModels(**networks)


def prepared_inputs(size: int, seconds: float, seed: int) -> PreparedInputs:
    """A ``size``-pixel gradient portrait whose face is the middle half, and ``seconds`` of noise as speech."""
    samples = (np.random.default_rng(seed).standard_normal(int(SAMPLE_RATE * seconds)) * 0.1).astype(np.float32)
    box = FaceBox(size / 4, size / 4, size / 2, size / 2)
    pixels = torch.linspace(-1, 1, 3 * size * size).reshape(3, size, size)
    portrait = Image.new("RGB", (size, size), "gray")
    reference = Reference(image=portrait, ref_image=pixels, face_mask=torch.ones(1, size, size), face_box=box,
                          crop_box=(0, 0, size, size), mask_box=box, expand_ratio=0.5, clip_source=portrait)
    return PreparedInputs(Speech(samples[None], SAMPLE_RATE, samples), reference)


def device_name(device: torch.device) -> str:
    """The GPU's name, or the CPU's model name."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        return next(line.split(":", 1)[1].strip() for line in lines if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def run(pipeline: SonicPipeline, inputs: PreparedInputs, settings: SonicSettings,
        plan: MemoryPlan | None) -> tuple[torch.Tensor, int, float]:
    """The frames (on the host), the measured peak bytes and the seconds of one generation under ``plan``."""
    device = pipeline.device
    started = time.perf_counter()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        frames = torch.cat([chunk.cpu() for chunk in pipeline(inputs, settings, memory=plan)])
        torch.cuda.synchronize(device)
        peak = torch.cuda.max_memory_allocated(device)
    else:
        with LiveBytes() as live:
            frames = torch.cat(list(pipeline(inputs, settings, memory=plan)))
        peak = max(live.after_allocations, default=0)
    return frames, peak, time.perf_counter() - started


def predicted_without_weights(plan: MemoryPlan, dtype: str, interpolate: bool) -> int:
    """The plan's largest stage peak less the weights resident in that stage (what the CPU measurement sees)."""
    low = cost.dtype_bytes(dtype)
    elements = cost.model_counts("sonic").weights_elements
    weights = {name: count * (low if name in cost.LOW_PRECISION else 4) for name, count in elements.items()
               if name != "rife" or interpolate}

    def resident(stage: str) -> int:
        return sum(size for name, size in weights.items() if not plan.offload or name in STAGE_NETWORKS[stage])

    return max(peak - resident(stage) for stage, peak in plan.stage_peaks.items())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="torch device (cpu, cuda, cuda:N)")
    parser.add_argument("--dtype", choices=list(DTYPES), help="UNet/VAE/CLIP precision (default fp16 on CUDA, "
                                                              "fp32 on the CPU)")
    parser.add_argument("--size", type=int, default=64, help="frame side in pixels, a multiple of 64 (default 64)")
    parser.add_argument("--seconds", type=float, default=1.0, help="seconds of audio (default 1)")
    parser.add_argument("--steps", type=int, default=1, help="sampler steps (default 1)")
    parser.add_argument("--budgets", default=f"none,24GB,12GB,8GB,{SMALLEST}",
                        help=f"comma-separated budgets: none, sizes like 8GB, or {SMALLEST} (default %(default)s)")
    parser.add_argument("--interpolate", action="store_true", help="run RIFE x2 too (default off)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    args = parser.parse_args()
    device = torch.device(args.device)
    dtype = args.dtype or ("fp16" if device.type == "cuda" else "fp32")
    settings = SonicSettings(steps=args.steps, interpolate=args.interpolate, seed=args.seed)
    inputs = prepared_inputs(args.size, args.seconds, args.seed)
    job = memory_job(inputs, settings, DTYPES[dtype], "sonic")
    roomy = plan_memory(job)
    budgets = [None if text == "none" else roomy.smallest_budget if text == SMALLEST else parse_budget(text)
               for text in args.budgets.split(",")]
    print(f"building the official-size networks with random weights ({dtype}, {device})", flush=True)
    pipeline = SonicPipeline(official_models(args.seed, args.interpolate), device, DTYPES[dtype])
    rows: list[dict[str, Any]] = []
    reference = None
    for budget in budgets:
        plan = plan_memory(job, budget)
        frames, peak, seconds = run(pipeline, inputs, settings, None if budget is None else plan)
        reference = frames if reference is None else reference
        predicted = plan.peak_bytes if device.type == "cuda" else predicted_without_weights(plan, dtype,
                                                                                            args.interpolate)
        rows.append({"budget_bytes": budget, "plan": plan.knobs(), "fits": plan.fits,
                     "predicted_device_peak_bytes": plan.peak_bytes, "predicted_measured_part_bytes": predicted,
                     "measured_peak_bytes": peak, "seconds": round(seconds, 2),
                     "seconds_per_video_second": round(seconds / inputs.speech.seconds, 2),
                     "equal_to_no_budget": bool(torch.equal(frames, reference))})
        row = rows[-1]
        print(f"{'none' if budget is None else format_bytes(budget):>9}  measured {format_bytes(peak)}  "
              f"predicted {format_bytes(predicted)}  {row['seconds']:.1f} s  equal {row['equal_to_no_budget']}  "
              f"| {plan.knobs()}", flush=True)
    name = device_name(device)
    measured = ("torch.cuda.max_memory_allocated (weights included)" if device.type == "cuda" else
                "peak bytes of live tensors allocated during the run (LiveBytes dispatch mode; weights excluded, "
                "prediction = stage peak less that stage's resident weights)")
    result = {"device": name, "device_type": device.type, "torch": torch.__version__, "dtype": dtype,
              "frame_size": args.size, "audio_seconds": args.seconds, "generated_frames": inputs.num_frames,
              "steps": args.steps, "interpolate": args.interpolate, "measured": measured,
              "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "runs": rows}
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"memory_{'cpu' if device.type == 'cpu' else name.replace(' ', '_')}.json"
    path.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {path}")
    return 0 if all(row["equal_to_no_budget"] for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
