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
from sonic_core.pipeline import compiled_unet  # noqa: E402
from sonic_core.sampling import SamplerOptions, Schedule, sample_latents  # noqa: E402

FRAMES_PER_WINDOW = 25
CFG_SLOTS = 3


def alternate(paths: dict[str, Callable[[], torch.Tensor]],
              rounds: int) -> tuple[dict[str, float], dict[str, torch.Tensor]]:
    """Minimum seconds of each path over ``rounds`` alternating runs, and each path's output."""
    best = dict.fromkeys(paths, float("inf"))
    outputs: dict[str, torch.Tensor] = {}
    for _ in range(rounds):
        for name, run in paths.items():
            started = time.perf_counter()
            outputs[name] = run()
            best[name] = min(best[name], time.perf_counter() - started)
    return best, outputs


def relative_difference(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return float((actual.float() - expected.float()).abs().max() / expected.float().abs().max())


# dense fp16/bf16 tensor-core peaks (FLOP/s) by a name fragment, for model FLOP utilisation
DENSE_PEAKS = {"H200": 989e12, "H100 PCIe": 756e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "L4": 121e12,
               "A10G": 70e12, "A10": 125e12, "RTX 4090": 165e12, "T4": 65e12}


def unet_inputs(latent: int, device: torch.device, dtype: torch.dtype, gen: torch.Generator) -> tuple[tuple, tuple]:
    """One window's CFG batch as our sampler calls the UNet (the unconditional audio tokens given once, with the
    index of the token set each frame row uses) and as the literal design does (tokens repeated per row)."""
    frames = FRAMES_PER_WINDOW
    sample = torch.randn(CFG_SLOTS, frames, 8, latent, latent, generator=gen)
    clip = torch.randn(CFG_SLOTS * frames, 1, 1024, generator=gen)
    token_sets = torch.randn(1 + frames, 32, 1024, generator=gen)  # the unconditional set, then each frame's
    rows = torch.arange(1, 1 + frames)
    audio_index = torch.cat([torch.zeros(2 * frames, dtype=torch.long), rows])  # slots (uncond, drop-audio, cond)
    ids = torch.tensor([[12.5, 20.0, 30.0]]).repeat(CFG_SLOTS, 1)
    mask = (torch.rand(1, 1, 8 * latent, 8 * latent, generator=gen) > 0.5).float()
    shared = [x.to(device, dtype) for x in (sample, torch.tensor(0.5), clip)]
    tail = [x.to(device, dtype) for x in (ids, mask)]
    sets = token_sets.to(device, dtype)
    ours = (*shared, sets, *tail, audio_index.to(device))
    return ours, (*shared, sets[audio_index.to(device)], *tail)


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
            fp32_output: torch.Tensor | None, compiled: torch.nn.Module | None) -> tuple[dict, torch.Tensor]:
    """UNet forward and one sampler step, ours (eager, and ``compiled`` when given) against the literal design,
    for ``unet``'s dtype."""
    dtype = next(unet.parameters()).dtype
    gen = torch.Generator().manual_seed(latent)
    inputs, literal_inputs = unet_inputs(latent, device, dtype, gen)

    def literal_forward() -> torch.Tensor:
        with literal_unet(unet) as literal:
            return literal(*literal_inputs)

    forwards = {"ours": synchronized(lambda: unet(*inputs), device)}
    if compiled is not None:
        forwards["compiled"] = synchronized(lambda: compiled(*inputs), device)
    forwards["literal"] = synchronized(literal_forward, device)
    warm_up: dict[str, float] = {}
    for name, forward in forwards.items():
        started = time.perf_counter()
        forward()
        warm_up[name] = time.perf_counter() - started
    output = forwards["ours"]()
    seconds, outputs = alternate(forwards, rounds)
    frame_steps = CFG_SLOTS * FRAMES_PER_WINDOW
    flops = forward_flops(unet, inputs)
    unet_result = {**timings(seconds, outputs), "ours_ms_per_frame_step": 1e3 * seconds["ours"] / frame_steps,
                   "literal_ms_per_frame_step": 1e3 * seconds["literal"] / frame_steps, "ours_flops": flops,
                   "ours_peak_bytes": peak_bytes(forwards["ours"], device),
                   "literal_peak_bytes": peak_bytes(forwards["literal"], device)}
    if compiled is not None:
        unet_result["compile_s"] = warm_up["compiled"] - warm_up["ours"]
    if fp32_output is not None:
        unet_result["error_vs_fp32"] = relative_difference(output, fp32_output)
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        peak = next((value for key, value in DENSE_PEAKS.items() if key in name), None)
        if peak is not None and dtype != torch.float32:
            unet_result["model_flop_utilisation"] = flops / min(seconds.values()) / peak

    audio, image, noise = sampler_inputs(frames, latent, gen)
    options, schedule = SamplerOptions(steps=1), Schedule.svd()

    def literal_sampler() -> torch.Tensor:
        with literal_unet(unet) as literal:
            return literal_sample_latents(literal, audio, image, noise, options, schedule)

    samplers = {"ours": synchronized(lambda: sample_latents(unet, audio, image, noise, options, schedule), device)}
    if compiled is not None:
        samplers["compiled"] = synchronized(
            lambda: sample_latents(compiled, audio, image, noise, options, schedule), device)
    samplers["literal"] = synchronized(literal_sampler, device)
    seconds, outputs = alternate(samplers, rounds)
    video_seconds = frames / options.fps
    sampler_result = {**timings(seconds, outputs), "frames": frames,
                      **{f"{name}_s_per_video_second_25_steps": 25 * value / video_seconds
                         for name, value in seconds.items()}}
    return {"unet_forward": unet_result, "sampler_step": sampler_result}, output.float()


def timings(seconds: dict[str, float], outputs: dict[str, torch.Tensor]) -> dict[str, float]:
    """``ours_s``, ``literal_s``, ``ratio`` (literal / ours) and ``relative_difference`` (to the literal output), and
    with a compiled path ``compiled_s``, ``compiled_ratio`` (literal / compiled), ``compiled_relative_difference``
    and ``compiled_vs_eager`` (the compiled output against ours eager)."""
    result = {"ours_s": seconds["ours"], "literal_s": seconds["literal"],
              "ratio": seconds["literal"] / seconds["ours"],
              "relative_difference": relative_difference(outputs["ours"], outputs["literal"])}
    if "compiled" in seconds:
        result.update(compiled_s=seconds["compiled"], compiled_ratio=seconds["literal"] / seconds["compiled"],
                      compiled_relative_difference=relative_difference(outputs["compiled"], outputs["literal"]),
                      compiled_vs_eager=relative_difference(outputs["compiled"], outputs["ours"]))
    return result


def run(latents: list[int], dtypes: list[torch.dtype], rounds: int, frames: int, device: torch.device,
        compile_unet: bool = False) -> dict:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        master = SonicUNet.svd().eval()
    results: dict[str, dict] = {}
    with torch.no_grad():
        for latent in latents:
            fp32_output = None
            for dtype in dtypes:
                unet = master.to(device, dtype)
                compiled = compiled_unet(unet) if compile_unet else None
                result, output = compare(unet, latent, rounds, frames, device, fp32_output, compiled)
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
    paths = [("literal", "published design, literal"), ("ours", "sonic_core"), ("compiled", "sonic_core, torch.compile")]
    paths = [(key, label) for key, label in paths if f"{key}_s" in bars[0][1]]
    width = 0.8 / len(paths)
    for i, (key, label) in enumerate(paths):
        offset = (i - (len(paths) - 1) / 2) * width
        axes.bar([x + offset for x in xs], [b[1][f"{key}_s"] for b in bars], width, label=label)
        if key != "literal":
            ratio = "ratio" if key == "ours" else "compiled_ratio"
            for x, (_, numbers) in zip(xs, bars):
                axes.annotate(f"{numbers[ratio]:.2f}x", (x + offset, numbers[f"{key}_s"]), ha="center", va="bottom",
                              fontsize=8)
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
    parser.add_argument("--compile", action="store_true",
                        help="also time our UNet under torch.compile (the pipeline's compile option)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()
    device = torch.device(args.device)
    dtypes = [getattr(torch, name) for name in args.dtypes.split(",")]
    latents = [int(side) for side in args.latents.split(",")]
    started, load = time.time(), os.getloadavg()
    results = run(latents, dtypes, args.rounds, args.frames, device, args.compile)
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
            if "compiled_s" in r:
                print(f"{'':30s} compiled {r['compiled_s']:8.3f} s  literal/compiled {r['compiled_ratio']:.2f}x  "
                      f"compiled vs eager {r['compiled_vs_eager']:.1e}")
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
