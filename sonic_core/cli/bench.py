"""``python -m sonic_core bench``: our lean paths against the naive official-style ones (MODEL.md §10), side by side.

Every comparison runs both paths on the embedded tiny model, in one process, on the same inputs, and reports the
two medians and their ratio (naive / lean; above 1 means the lean path is faster). The paths compared:

* ``whisper``: one encoder pass per 30 s piece vs the official two (§10.1);
* ``clip``: one CLIP image encode shared by audio2bucket and the UNet vs two (§10.2);
* ``adapters``: audio2token/audio2bucket on all frames at once vs one call per frame (§10.4);
* ``windows``: all windows of a step in one UNet call vs one call per window (§10.8; on a CPU the batched call
  can be the slower one: the ratio is measured, not assumed);
* ``rife``: RIFE on batches of pairs vs one pair at a time (§10.12).

Sizes are small so that the whole run takes seconds; ratios on full-size networks on a GPU differ.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch

from .. import conditioning, sampling
from ..errors import SonicInputError
from ..conditioning import AudioConditioning, ImageConditioning
from ..sampling import SamplerOptions, sample_latents

REPEATS = 3


@dataclass(frozen=True)
class Comparison:
    """Median seconds of the lean and the naive path of one piece of work, and naive / lean."""

    name: str
    what: str
    lean_s: float
    naive_s: float

    @property
    def ratio(self) -> float:
        return self.naive_s / self.lean_s if self.lean_s > 0 else float("inf")

    def to_dict(self) -> dict:
        return {**asdict(self), "ratio": self.ratio}


def median_seconds(run: Callable[[], object], repeats: int = REPEATS) -> float:
    """Median wall seconds of ``repeats`` calls of ``run`` (after one warm-up call), without autograd."""
    times = []
    with torch.no_grad():
        run()
        for _ in range(repeats):
            started = time.perf_counter()
            run()
            times.append(time.perf_counter() - started)
    return statistics.median(times)


def _compare(name: str, what: str, lean: Callable[[], object], naive: Callable[[], object],
             repeats: int) -> Comparison:
    return Comparison(name, what, median_seconds(lean, repeats), median_seconds(naive, repeats))


def run_bench(repeats: int = REPEATS, seed: int = 0) -> list[Comparison]:
    """Every comparison of the module docstring on the tiny model."""
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise SonicInputError(f"--repeats {repeats!r}: pass 1 or more timed runs per path")
    from ..interpolation import interpolate_x2
    from ..models.rife import IFNet
    from ..weights.tiny import tiny_models

    models = tiny_models(seed)
    gen = torch.Generator().manual_seed(seed)
    whisper = models.whisper
    mel = torch.randn(1, whisper.config.num_mel_bins, conditioning.MEL_FRAMES_PER_PIECE, generator=gen)
    clip_size = models.image_encoder.config.image_size
    pixels = torch.rand(1, 3, clip_size, clip_size, generator=gen)
    results = [
        _compare("whisper", "whisper encoder: 1 pass per piece vs 2",
                 lambda: conditioning.whisper_features(whisper, mel),
                 lambda: (whisper(mel), whisper(mel)), repeats),
        _compare("clip", "CLIP image encode: shared vs twice",
                 lambda: models.image_encoder(pixels),
                 lambda: (models.image_encoder(pixels), models.image_encoder(pixels)), repeats),
    ]

    frames, audio_len = 100, 200
    hidden, last = conditioning.whisper_features(whisper, mel)
    embeds = models.image_encoder(pixels)
    stride = conditioning.WHISPER_FRAMES_PER_AUDIO_FRAME * 2
    token_len = models.audio2token.proj1.in_features // hidden[0].numel()
    bucket_len = (models.audio2bucket.proj1.in_features - embeds.shape[-1]) // last[0].numel()
    tokens = conditioning.frame_windows(hidden, frames, stride, token_len)
    buckets = conditioning.frame_windows(last[:, None], frames, stride, bucket_len)

    def per_frame_adapters() -> None:
        for i in range(frames):
            models.audio2token(tokens[None, i:i + 1])
            models.audio2bucket(buckets[None, i:i + 1], embeds)

    results.append(_compare(
        "adapters", f"audio adapters, {frames} frames: batched vs per frame",
        lambda: conditioning.encode_audio(hidden, last, audio_len, 2, models.audio2token, models.audio2bucket,
                                          embeds),
        per_frame_adapters, repeats))

    n, latent = 50, (models.vae.config.latent_channels, 4, 4)
    audio = AudioConditioning(torch.randn(n, models.audio2token.context_tokens, models.audio2token.output_dim,
                                          generator=gen),
                              torch.randn(models.audio2token.context_tokens, models.audio2token.output_dim,
                                          generator=gen), 16 + torch.rand(n, 2, generator=gen))
    image = ImageConditioning(embeds, torch.randn(1, *latent, generator=gen), torch.randn(1, *latent, generator=gen),
                              torch.rand(1, 1, 64, 64, generator=gen))
    noise = torch.randn(n, *latent, generator=gen)
    schedule = sampling.Schedule.svd()

    def sample(windows_per_call: int) -> Callable[[], object]:
        options = SamplerOptions(steps=1, windows_per_call=windows_per_call)
        return lambda: sample_latents(models.unet, audio, image, noise, options, schedule)

    results.append(_compare("windows", f"UNet, {n} frames (2 windows): one call for both vs one call each",
                            sample(2), sample(1), repeats))

    rife = IFNet().eval()
    clip = torch.rand(9, 3, 64, 64, generator=gen)
    results.append(_compare("rife", "RIFE x2, 8 pairs at 64 px: batched vs one pair at a time",
                            lambda: interpolate_x2(clip, rife, batch_size=8),
                            lambda: interpolate_x2(clip, rife, batch_size=1), repeats))
    return results


def format_bench(results: list[Comparison]) -> str:
    width = max(len(r.what) for r in results)
    lines = [f"  {'comparison'.ljust(width)}  {'lean':>9}  {'naive':>9}  naive/lean"]
    lines += [f"  {r.what.ljust(width)}  {r.lean_s * 1e3:7.1f}ms  {r.naive_s * 1e3:7.1f}ms  {r.ratio:9.2f}x"
              for r in results]
    return "\n".join(lines)


def cmd_bench(args: argparse.Namespace) -> int:
    results = run_bench(args.repeats)
    if args.json:
        print(json.dumps({"device": "cpu", "model": "tiny", "torch": torch.__version__, "repeats": args.repeats,
                          "comparisons": [r.to_dict() for r in results]}))
    else:
        print(f"Sonic bench: lean vs naive paths on the tiny model (cpu, median of {args.repeats})")
        print(format_bench(results))
    return 0


def add_bench_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``bench`` on the CLI's subparsers."""
    bench = subparsers.add_parser("bench", help="side-by-side timings of our lean paths vs the naive ones (MODEL.md §10)")
    bench.add_argument("--repeats", type=int, default=REPEATS, help=f"timed runs per path (default {REPEATS})")
    bench.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    bench.set_defaults(run=cmd_bench)
    return bench
