"""Our UNet and sampler against the published design followed literally, side by side at full architecture.

Both run in this one process on the same randomly initialised full-size (SVD-xt) Sonic UNet, on the same inputs;
rounds alternate between the two paths so that a busy machine slows both alike, and each path's minimum over the
rounds is reported with the ratio (literal / ours: above 1 means ours is faster) and the relative output
difference. The literal baseline is ``bench/literal_reference.py``. Per dtype and size it also records the peak
device memory of each path (CUDA), the model FLOP utilisation against the card's dense peak where the card is
known, and the error of the low-precision output against fp32.

    python bench/speed_bench.py                                  # this CPU: fp32, 64 px
    python bench/speed_bench.py --device cuda --dtypes float16,bfloat16 --latents 64,128   # a GPU: 512, 1024 px

writes ``speed_<device name>.json`` and a bar chart ``speed_<device name>.png`` to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.literal_reference import literal_sample_latents, literal_unet  # noqa: E402
from sonic_core.conditioning import AudioConditioning, ImageConditioning  # noqa: E402
from sonic_core.models.unet import SonicUNet  # noqa: E402
from sonic_core.sampling import SamplerOptions, Schedule, sample_latents  # noqa: E402

FRAMES_PER_WINDOW = 25
CFG_SLOTS = 3


def alternate(ours: Callable[[], torch.Tensor], literal: Callable[[], torch.Tensor],
              rounds: int) -> tuple[float, float, float]:
    """Minimum seconds of each path over ``rounds`` alternating runs, and their outputs' relative difference."""
    best_ours = best_literal = float("inf")
    for _ in range(rounds):
        started = time.perf_counter()
        out = ours()
        best_ours = min(best_ours, time.perf_counter() - started)
        started = time.perf_counter()
        reference = literal()
        best_literal = min(best_literal, time.perf_counter() - started)
    difference = float((out - reference).abs().max() / reference.abs().max())
    return best_ours, best_literal, difference


# dense fp16/bf16 tensor-core peaks (FLOP/s) by a name fragment, for model FLOP utilisation
DENSE_PEAKS = {"H200": 989e12, "H100 PCIe": 756e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "L4": 121e12,
               "A10G": 70e12, "A10": 125e12, "RTX 4090": 165e12, "T4": 65e12}


def unet_inputs(latent: int, device: torch.device, dtype: torch.dtype, gen: torch.Generator) -> tuple:
    frames = FRAMES_PER_WINDOW
    sample = torch.randn(CFG_SLOTS, frames, 8, latent, latent, generator=gen)
    clip = torch.randn(CFG_SLOTS * frames, 1, 1024, generator=gen)
    audio = torch.randn(CFG_SLOTS * frames, 32, 1024, generator=gen)
    ids = torch.tensor([[12.5, 20.0, 30.0]]).repeat(CFG_SLOTS, 1)
    mask = (torch.rand(1, 1, 8 * latent, 8 * latent, generator=gen) > 0.5).float()
    return tuple(x.to(device, dtype) for x in (sample, torch.tensor(0.5), clip, audio, ids, mask))


def sampler_inputs(frames: int, latent: int, gen: torch.Generator):
    audio = AudioConditioning(torch.randn(frames, 32, 1024, generator=gen), torch.randn(32, 1024, generator=gen),
                              16 + 8 * torch.rand(frames, 2, generator=gen))
    shape = (4, latent, latent)
    mask = (torch.rand(1, 1, 8 * latent, 8 * latent, generator=gen) > 0.5).float()
    image = ImageConditioning(torch.randn(1, 1024, generator=gen), torch.randn(1, *shape, generator=gen),
                              torch.randn(1, *shape, generator=gen), mask)
    return audio, image, torch.randn(frames, *shape, generator=gen)


def synchronized(run: Callable[[], torch.Tensor], device: torch.device) -> Callable[[], torch.Tensor]:
    def call() -> torch.Tensor:
        out = run()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return out
    return call


def peak_bytes(run: Callable[[], torch.Tensor], device: torch.device) -> int | None:
    """Peak device memory allocated while ``run`` runs (CUDA only)."""
    if device.type != "cuda":
        return None
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    run()
    torch.cuda.synchronize(device)
    return torch.cuda.max_memory_allocated(device)


def forward_flops(unet: SonicUNet, inputs: tuple) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        unet(*inputs)
    return counter.get_total_flops()


def compare(unet: SonicUNet, latent: int, rounds: int, frames: int, device: torch.device,
            fp32_output: torch.Tensor | None) -> tuple[dict, torch.Tensor]:
    """UNet forward and one sampler step, ours against the literal design, for ``unet``'s dtype."""
    dtype = next(unet.parameters()).dtype
    gen = torch.Generator().manual_seed(latent)
    inputs = unet_inputs(latent, device, dtype, gen)

    def literal_forward() -> torch.Tensor:
        with literal_unet(unet) as literal:
            return literal(*inputs)

    ours_run = synchronized(lambda: unet(*inputs), device)
    literal_run = synchronized(literal_forward, device)
    output = ours_run()  # warm-up of both paths
    literal_run()
    ours_s, literal_s, diff = alternate(ours_run, literal_run, rounds)
    frame_steps = CFG_SLOTS * FRAMES_PER_WINDOW
    flops = forward_flops(unet, inputs)
    unet_result = {"ours_s": ours_s, "literal_s": literal_s, "ratio": literal_s / ours_s,
                   "relative_difference": diff, "ours_ms_per_frame_step": 1e3 * ours_s / frame_steps,
                   "literal_ms_per_frame_step": 1e3 * literal_s / frame_steps, "ours_flops": flops,
                   "ours_peak_bytes": peak_bytes(ours_run, device),
                   "literal_peak_bytes": peak_bytes(literal_run, device)}
    if fp32_output is not None:
        unet_result["error_vs_fp32"] = float((output.float() - fp32_output).abs().max() / fp32_output.abs().max())
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        peak = next((value for key, value in DENSE_PEAKS.items() if key in name), None)
        if peak is not None and dtype != torch.float32:
            unet_result["model_flop_utilisation"] = flops / ours_s / peak

    audio, image, noise = sampler_inputs(frames, latent, gen)
    options, schedule = SamplerOptions(steps=1), Schedule.svd()

    def literal_sampler() -> torch.Tensor:
        with literal_unet(unet) as literal:
            return literal_sample_latents(literal, audio, image, noise, options, schedule)

    ours_s, literal_s, diff = alternate(
        synchronized(lambda: sample_latents(unet, audio, image, noise, options, schedule), device),
        synchronized(literal_sampler, device), rounds)
    video_seconds = frames / options.fps
    sampler_result = {"ours_s": ours_s, "literal_s": literal_s, "ratio": literal_s / ours_s,
                      "relative_difference": diff, "frames": frames,
                      "ours_s_per_video_second_25_steps": 25 * ours_s / video_seconds,
                      "literal_s_per_video_second_25_steps": 25 * literal_s / video_seconds}
    return {"unet_forward": unet_result, "sampler_step": sampler_result}, output.float()


def run(latents: list[int], dtypes: list[torch.dtype], rounds: int, frames: int, device: torch.device) -> dict:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        master = SonicUNet.svd().eval()
    results: dict[str, dict] = {}
    with torch.no_grad():
        for latent in latents:
            fp32_output = None
            for dtype in dtypes:
                unet = master.to(device, dtype)
                result, output = compare(unet, latent, rounds, frames, device, fp32_output)
                if dtype == torch.float32:
                    fp32_output = output
                results[f"{str(dtype).removeprefix('torch.')} {latent * 8}px"] = result
    return results


def plot(results: dict, title: str, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    from matplotlib import pyplot

    bars = [(f"{case}\n{part}", numbers) for case, parts in results.items() for part, numbers in parts.items()]
    figure, axes = pyplot.subplots(figsize=(max(6, 2.2 * len(bars)), 3.8))
    xs = range(len(bars))
    axes.bar([x - 0.2 for x in xs], [b[1]["literal_s"] for b in bars], 0.4, label="published design, literal")
    axes.bar([x + 0.2 for x in xs], [b[1]["ours_s"] for b in bars], 0.4, label="sonic_core")
    for x, (_, numbers) in zip(xs, bars):
        axes.annotate(f"{numbers['ratio']:.2f}x", (x + 0.2, numbers["ours_s"]), ha="center", va="bottom")
    axes.set_xticks(list(xs), [b[0] for b in bars], fontsize=8)
    axes.set_ylabel("seconds (min over rounds)")
    axes.set_title(title, fontsize=9)
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=100)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu", help="torch device (default cpu)")
    parser.add_argument("--dtypes", default="float32",
                        help="comma-separated; float32 first if listed (the others' error is against it)")
    parser.add_argument("--latents", default="8", help="comma-separated latent sides (image side / 8); 8 = 64 px")
    parser.add_argument("--rounds", type=int, default=3, help="alternating timed rounds per path (default 3)")
    parser.add_argument("--frames", type=int, default=50, help="clip frames of the sampler step (default 50)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()
    device = torch.device(args.device)
    dtypes = [getattr(torch, name) for name in args.dtypes.split(",")]
    latents = [int(side) for side in args.latents.split(",")]
    started, load = time.time(), os.getloadavg()
    results = run(latents, dtypes, args.rounds, args.frames, device)
    name = device_name(device)
    record = {"device": name, "torch": torch.__version__, "model": "full-size SVD-xt Sonic UNet, random weights",
              "rounds": args.rounds, "load_average_before": load, "wall_s": time.time() - started,
              "host_peak_bytes": host_peak_bytes(), "results": results}
    slug = device.type if device.type == "cpu" else name.replace(" ", "_")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"speed_{slug}.json").write_text(json.dumps(record, indent=2) + "\n")
    plot(results, f"{name}: ours vs the published design, full architecture", args.out / f"speed_{slug}.png")
    for case, parts in results.items():
        for part, r in parts.items():
            print(f"{case:16s} {part:13s} ours {r['ours_s']:8.3f} s  literal {r['literal_s']:8.3f} s  "
                  f"literal/ours {r['ratio']:.2f}x  output difference {r['relative_difference']:.1e}")
    return 0


def host_peak_bytes() -> int | None:
    """This process's peak resident memory (Linux VmHWM)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


if __name__ == "__main__":
    raise SystemExit(main())
