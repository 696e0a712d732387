"""Count the work of one call of every network and ship it as data: ``sonic_core/metering/network_counts.json``.

    python bench/network_counts.py        # count, fit, check on held-out sizes, write the file (~2 min, 2 cores)

The cost model (``sonic_core/metering/cost.py``) prices a job with arithmetic on that file alone: it never imports
torch nor builds a network. This script is where the networks are built (on the meta device: no memory, no
arithmetic) and counted. Run it after any change to the network code or configs; ``tests/test_cost.py`` fails,
naming this command, when the file's ``fingerprint`` no longer matches them.

What is counted, for one call of each network: ``unet`` (one sampler window, CFG batch of 3), ``unet_ff_streamed``
(the same call with every feed-forward's inner activations left out, only its output allocated: what the memory
planner adds one feed-forward chunk to, :mod:`sonic_core.memory`), ``vae_decode`` (one
decode chunk), ``vae_encode`` (the reference image), ``rife`` (one frame pair), ``whisper`` (one 30 s piece),
``image_encoder`` (one CLIP image) and ``adapters`` (audio2token + audio2bucket of one frame):

* FLOPs, from :class:`torch.utils.flop_counter.FlopCounterMode`, with attention counted as a fused kernel (no
  score matrix), as it runs on CPU and GPU;
* the peak of live activation bytes (float32): a dispatch mode adds the bytes of every fresh allocation, shares
  them between a tensor and its views, and subtracts them when the last of those dies.

How a count becomes data valid at every frame size: with the frame in 64-pixel tiles, m = height/64 and
n = width/64, every level of every network has a whole number of positions (a multiple of m·n, or of m and n
for padded and coordinate tensors), so each count is a polynomial with integer coefficients in m, n and f (frames
per call: the UNet window, the VAE decode chunk), of degree at most 2 in each (convolutions are linear in the
positions, spatial attention quadratic; temporal attention is quadratic in f). The coefficients are solved
exactly (integer arithmetic) from counts at 3 values of each variable, then the counts at held-out sizes, frame
counts and aspect ratios must agree exactly, or nothing is written.

The activation peak is the largest of the live totals after each allocation. The op sequence of a call does not
depend on the size, so each of those totals is itself such a polynomial; the file keeps the ones that are not
below another everywhere on m, n, f >= 1 (coefficient-wise in m-1, n-1, f-1), and the cost model takes the largest
of them at the job's size: the peak exactly.

The file also holds the exact element counts of every network's state dict (the weights' bytes), the latent shape
of each model, the sizes the memory planner adds to the calls (the widest UNet feed-forward's inner width, the
audio tokens of one frame, the whisper hidden states of one 30 s piece), the torch version and date of the run, and the sizes it was checked at.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import math
import sys
import time
import weakref
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves
from torch.utils.flop_counter import FlopCounterMode

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script
    sys.path.insert(0, str(ROOT))

from sonic_core.metering import cost  # noqa: E402

COMMAND = cost.NETWORK_COUNTS_COMMAND
TILE = cost.TILE_PIXELS
VARIABLES = {"unet": "mnf", "unet_ff_streamed": "mnf", "vae_decode": "mnf", "vae_encode": "mn", "rife": "mn",
             "whisper": "", "image_encoder": "", "adapters": ""}  # what each call's inputs depend on: m (height/64), n (width/64), f (frames per call)
FIT_POINTS = {"m": (4, 6, 9), "n": (4, 5, 8), "f": (2, 8, 25)}  # 256/384/576 px high, 256/320/512 px wide
# (m, n, f) checked after the fit: the default 25-frame window at the smallest, a common and the largest square,
# both extreme aspect ratios, odd tile counts, the longest window and the shortest decode chunk
HELD_OUT = ((4, 4, 25), (8, 8, 25), (20, 20, 25), (4, 20, 25), (20, 4, 8), (7, 5, 16), (16, 9, 25), (12, 12, 64),
            (13, 11, 1))
# sampler windows have at least 2 frames (SonicSettings.frames_per_window); at 1 frame a reshape of the streamed
# feed-forward's UNet call is a view, not a copy, and the live count falls below its polynomial
MIN_FRAMES = {"unet_ff_streamed": 2}
FINGERPRINTED = ("sonic_core/models/*.py", "sonic_core/configs/*.json", "sonic_core/weights/tiny.py",
                 "bench/network_counts.py")


@dataclass(frozen=True)
class Count:
    """FLOPs and peak live activation bytes of one call, and the live total after each of its allocations."""

    flops: int
    activation_bytes: int
    live_after_allocations: tuple[int, ...]


class LiveBytes(TorchDispatchMode):
    """Tracks the bytes of tensors allocated under it that are still alive, and their total after each allocation.

    Every freshly allocated output gets a token whose finalizer subtracts its bytes; an output that aliases an input
    (a view, an in-place op) shares the input's token, so storage stays counted while any view of it lives.
    """

    def __init__(self) -> None:
        super().__init__()
        self.live = 0
        self.after_allocations: list[int] = []

    def _release(self, nbytes: int) -> None:
        self.live -= nbytes

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        aliases = any(r.alias_info is not None for r in func._schema.returns)
        source = next((a for a in tree_leaves(args) if isinstance(a, torch.Tensor) and hasattr(a, "_sonic_live")),
                      None)
        for tensor in tree_leaves(out):
            if not isinstance(tensor, torch.Tensor) or hasattr(tensor, "_sonic_live"):
                continue
            if aliases:
                if source is not None:
                    tensor._sonic_live = source._sonic_live
                continue
            token = _Allocation()
            nbytes = tensor.untyped_storage().nbytes()
            weakref.finalize(token, self._release, nbytes)
            tensor._sonic_live = token
            self.live += nbytes
            self.after_allocations.append(self.live)
        return out


class _Allocation:
    """An object whose lifetime is that of one allocation (shared by the tensors that view it)."""


def count_cost(run: Callable[[], Any]) -> Count:
    """FLOPs and live bytes of ``run()`` (which must build its inputs on the meta device inside).

    On the meta device ``scaled_dot_product_attention`` would run its math fallback and materialise the attention
    matrix, which the fused kernels used on CPU and GPU never do. While counting, it is replaced by a shape-only
    stand-in that allocates what a fused kernel keeps (the output and one log-sum-exp per query) and adds the
    fused kernel's FLOPs: ``2·L_q·L_k·(d_qk + d_v)`` per batch and head.
    """
    counter, live = FlopCounterMode(display=False), LiveBytes()
    attention_flops = [0]
    real_attention = F.scaled_dot_product_attention

    def fused_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        batch = math.prod(q.shape[:-2])
        attention_flops[0] += 2 * batch * q.shape[-2] * k.shape[-2] * (q.shape[-1] + v.shape[-1])
        q.new_empty(q.shape[:-1])  # the log-sum-exp, freed at once (the kernel's scratch)
        return q.new_empty((*q.shape[:-1], v.shape[-1]))

    F.scaled_dot_product_attention = fused_attention
    try:
        with torch.no_grad(), counter, live:
            run()
    finally:
        F.scaled_dot_product_attention = real_attention
    trace = tuple(live.after_allocations)
    return Count(int(counter.get_total_flops()) + attention_flops[0], max(trace, default=0), trace)


def meta_networks(model: str) -> dict[str, torch.nn.Module]:
    """Every network of ``model`` built on the meta device (float32), keyed as :class:`SonicModels` fields."""
    from sonic_core.models.audio_adapters import Audio2BucketModel, AudioProjModel
    from sonic_core.models.clip_vision import CLIPVisionConfig, CLIPVisionModelWithProjection
    from sonic_core.models.unet import SonicUNet
    from sonic_core.models.vae import TemporalVAE
    from sonic_core.models.whisper import WhisperEncoder, WhisperEncoderConfig
    from sonic_core.weights import tiny

    with torch.device("meta"):
        if model == "sonic":
            nets = {"unet": SonicUNet.svd(), "vae": TemporalVAE(),
                    "image_encoder": CLIPVisionModelWithProjection(CLIPVisionConfig.vit_h14()),
                    "whisper": WhisperEncoder(WhisperEncoderConfig.tiny()),
                    "audio2token": AudioProjModel(), "audio2bucket": Audio2BucketModel()}
        elif model == "tiny":
            nets = {"unet": tiny.tiny_unet(), "vae": TemporalVAE(tiny.TINY_VAE),
                    "image_encoder": CLIPVisionModelWithProjection(CLIPVisionConfig.from_dict(tiny.TINY_CLIP)),
                    "whisper": WhisperEncoder(WhisperEncoderConfig.from_dict(tiny.TINY_WHISPER)),
                    "audio2token": AudioProjModel(**tiny.TINY_AUDIO2TOKEN),
                    "audio2bucket": Audio2BucketModel(**tiny.TINY_AUDIO2BUCKET)}
        else:
            raise ValueError(f"model {model!r}: use one of {', '.join(cost.MODELS)}")
        nets["rife"] = _rife()  # the same network for both: the real RIFE weights are small
    return {name: net.eval() for name, net in nets.items()}


def _rife() -> torch.nn.Module:
    from sonic_core.models.rife import IFNet

    with torch.device("meta"):
        return IFNet().eval()


def _streamed_feed_forward(module: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """What a chunked feed-forward holds before its first chunk: the flattened input and the whole output."""
    flat = x.reshape(-1, x.shape[-1])
    return flat.new_empty(flat.shape[0], module.net[2].out_features).reshape(*x.shape[:-1], -1)


def count_call(nets: dict[str, torch.nn.Module], network: str, height: int, width: int, frames: int) -> Count:
    """Count one call of ``network`` (a name of ``cost.NETWORK_CALLS``) for ``height × width`` frames; ``frames`` is
    the UNet window or the VAE decode chunk (ignored by the other calls)."""
    unet, vae, clip = nets["unet"], nets["vae"], nets["image_encoder"]
    down = vae.config.downscale
    h, w, c = height // down, width // down, vae.config.latent_channels
    token, bucket = nets["audio2token"], nets["audio2bucket"]
    whisper = nets["whisper"].config
    token_window = (token.proj1.in_features // (whisper.encoder_layers + 1) // whisper.d_model,
                    whisper.encoder_layers + 1, whisper.d_model)
    clip_dim = clip.config.projection_dim
    bucket_window = ((bucket.proj1.in_features - clip_dim) // whisper.d_model, 1, whisper.d_model)
    b = cost.CFG_SLOTS
    # a fresh RIFE for every count: it caches its sampling grid per frame size, which the first call allocates
    rife = _rife() if network == "rife" else None

    def meta(*shape: int) -> torch.Tensor:
        return torch.empty(shape, device="meta")

    runs = {
        "unet": lambda: unet(meta(b, frames, unet.conv_in.in_channels, h, w), meta(), meta(b * frames, 1, clip_dim),
                             meta(b * frames, token.context_tokens, token.output_dim), meta(b, 3),
                             meta(1, 1, height, width)),
        "vae_decode": lambda: vae.decode(meta(frames, c, h, w), frames),
        "vae_encode": lambda: vae.encode_mode(meta(1, 3, height, width)),
        "rife": lambda: rife.midpoint(meta(1, 3, height, width), meta(1, 3, height, width)),
        "whisper": lambda: nets["whisper"](meta(1, whisper.num_mel_bins, 2 * whisper.max_source_positions)),
        "image_encoder": lambda: clip(meta(1, 3, clip.config.image_size, clip.config.image_size)),
        "adapters": lambda: (token(meta(1, 1, *token_window)), bucket(meta(1, 1, *bucket_window), meta(1, clip_dim))),
    }
    if network == "unet_ff_streamed":
        from sonic_core.models.attention import FeedForward

        real_forward = FeedForward.forward
        FeedForward.forward = _streamed_feed_forward
        try:
            return count_cost(runs["unet"])
        finally:
            FeedForward.forward = real_forward
    return count_cost(runs[network])


def weights_elements(nets: dict[str, torch.nn.Module]) -> dict[str, int]:
    """Elements of every network's state dict (the checkpoints' tensors)."""
    return {name: sum(t.numel() for t in net.state_dict().values()) for name, net in nets.items()}


def code_fingerprint(root: Path = ROOT) -> str:
    """Digest of what shapes the counts: the network code and configs, the tiny model's configs, this script."""
    digest = hashlib.sha256()
    for path in sorted(p for pattern in FINGERPRINTED for p in root.glob(pattern)):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


class NotPolynomial(Exception):
    """Counts that are not a polynomial of the assumed form (the size changes the op sequence, or a degree is
    higher than 2)."""


def _inverse_vandermonde(points: tuple[int, ...]) -> tuple[np.ndarray, int]:
    """Integer matrix A and divisor d such that A / d is the inverse of [points[r] ** c] (Gauss-Jordan, exact)."""
    size = len(points)
    rows = [[Fraction(x) ** c for c in range(size)] + [Fraction(int(r == i)) for i in range(size)]
            for r, x in enumerate(points)]
    for col in range(size):
        pivot = next(r for r in range(col, size) if rows[r][col] != 0)
        rows[col], rows[pivot] = rows[pivot], rows[col]
        rows[col] = [v / rows[col][col] for v in rows[col]]
        for r in range(size):
            if r != col and rows[r][col] != 0:
                rows[r] = [a - rows[r][col] * b for a, b in zip(rows[r], rows[col])]
    inverse = [row[size:] for row in rows]
    divisor = math.lcm(*(v.denominator for row in inverse for v in row))
    return np.array([[int(v * divisor) for v in row] for row in inverse], dtype=object), divisor


def fit(samples: np.ndarray, axes: tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]) -> np.ndarray:
    """Integer coefficients ``c[..., i, j, k]`` with ``samples[..., a, b, d] = Σ c[..., i, j, k] · x_a^i · y_b^j ·
    z_d^k`` for the points ``axes = (x, y, z)``; raises :class:`NotPolynomial` when they are not integers."""
    coefficients, divisor = samples, 1
    for offset, points in enumerate(axes):
        axis = samples.ndim - 3 + offset
        inverse, scale = _inverse_vandermonde(points)
        coefficients = np.moveaxis(np.tensordot(inverse, coefficients, axes=([1], [axis])), 0, axis)
        divisor *= scale
    if any(value % divisor for value in coefficients.flat):
        raise NotPolynomial("the counts have no integer polynomial coefficients")
    return coefficients // divisor


def undominated(shifted: np.ndarray) -> list[int]:
    """Indices of the rows not below another row coefficient-wise (one of equal rows), largest sums first.

    With coefficients in m-1, n-1, f-1, a row coefficient-wise at least another is at least as large everywhere on
    m, n, f >= 1, so the largest of the kept polynomials is the largest of all of them.
    """
    flat = shifted.reshape(len(shifted), -1)
    if max((abs(v) for v in flat.flat), default=0) >= 2**62:
        raise NotPolynomial("activation coefficients beyond int64")
    rows = flat.astype(np.int64)
    sums = [sum(int(v) for v in row) for row in flat]  # exact: a row above another has the larger sum
    order = sorted(range(len(sums)), key=lambda index: -sums[index])
    kept: list[int] = []
    for index in order:
        if kept and np.all(rows[kept] >= rows[index], axis=1).any():
            continue
        kept.append(int(index))
    return kept


def _grid(variables: str) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    """Fit points per variable; a variable the call does not depend on gets one (any) point."""
    return tuple(FIT_POINTS[v] if v in variables else (FIT_POINTS[v][0],) for v in "mnf")


def polynomial_terms(coefficients: np.ndarray) -> list[list[int]]:
    """``[coefficient, i, j, k]`` of the non-zero monomials m^i·n^j·f^k."""
    return [[int(c), i, j, k] for (i, j, k), c in np.ndenumerate(coefficients) if c]


def fit_call(nets: dict[str, torch.nn.Module], network: str) -> tuple[dict[str, Any], int]:
    """Count ``network`` over its fit grid and solve its FLOPs and activation polynomials; also returns the number
    of allocations of one call."""
    axes = _grid(VARIABLES[network])
    shape = tuple(len(a) for a in axes)
    flops = np.empty(shape, dtype=object)
    traces: dict[tuple[int, int, int], tuple[int, ...]] = {}
    for index in np.ndindex(*shape):
        m, n, f = (axes[a][index[a]] for a in range(3))
        count = count_call(nets, network, m * TILE, n * TILE, f)
        flops[index], traces[index] = count.flops, count.live_after_allocations
    if len({len(t) for t in traces.values()}) != 1:
        raise NotPolynomial(f"{network}: the number of allocations changes with the size")
    events = len(next(iter(traces.values())))
    live = np.empty((events, *shape), dtype=object)
    for index, trace in traces.items():
        live[(slice(None), *index)] = trace
    shifted_axes = tuple(tuple(p - 1 for p in a) for a in axes)
    kept = undominated(fit(live, shifted_axes))
    peaks = fit(live[kept], axes)
    return {"flops": polynomial_terms(fit(flops, axes)), "activation_bytes": [polynomial_terms(p) for p in peaks]}, \
        events


def polynomial_value(terms: list[list[int]], m: int, n: int, f: int) -> int:
    """The value of :func:`polynomial_terms`' polynomial at (m, n, f)."""
    return sum(c * m ** i * n ** j * f ** k for c, i, j, k in terms)


def check_call(nets: dict[str, torch.nn.Module], network: str, fitted: dict[str, Any]) -> list[dict[str, Any]]:
    """Live counts at the held-out points against the fitted polynomials (one row per point)."""
    rows = []
    points = HELD_OUT if VARIABLES[network] else HELD_OUT[:1]
    fewest = MIN_FRAMES.get(network, 1)
    for m, n, f in ((m, n, max(f, fewest)) for m, n, f in points):
        count = count_call(nets, network, m * TILE, n * TILE, f)
        flops = polynomial_value(fitted["flops"], m, n, f)
        peak = max(polynomial_value(p, m, n, f) for p in fitted["activation_bytes"])
        rows.append({"network": network, "height": m * TILE, "width": n * TILE, "frames": f,
                     "flops": count.flops, "flops_error": flops - count.flops,
                     "activation_bytes": count.activation_bytes, "activation_error": peak - count.activation_bytes})
    return rows


def count_model(model: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The shipped entry of one model and its held-out check rows."""
    nets = meta_networks(model)
    calls, checks = {}, []
    for network in cost.NETWORK_CALLS:
        started = time.perf_counter()
        calls[network], allocations = fit_call(nets, network)
        rows = [{"model": model, **row} for row in check_call(nets, network, calls[network])]
        checks += rows
        wrong = [row for row in rows if row["flops_error"] or row["activation_error"]]
        print(f"  {model:5s} {network:13s} {len(calls[network]['activation_bytes']):3d} activation polynomials of "
              f"{allocations} allocations, {'MISMATCH' if wrong else 'exact'} on {len(rows)} held-out points "
              f"({time.perf_counter() - started:.0f} s)", flush=True)
    vae = nets["vae"].config
    token, whisper = nets["audio2token"], nets["whisper"].config
    entry = {"latent_channels": vae.latent_channels, "latent_downscale": vae.downscale,
             "feed_forward_inner": nets["unet"].feed_forward_inner,
             "frame_token_elements": token.context_tokens * token.output_dim,
             "whisper_piece_elements": whisper.max_source_positions * (whisper.encoder_layers + 1) * whisper.d_model,
             "weights_elements": weights_elements(nets), "calls": calls}
    return entry, checks


def _dump(value: Any, indent: str = "") -> str:
    """JSON with every list of numbers (and list of such lists of 4) on one line."""
    inner = indent + " "
    if isinstance(value, dict):
        items = [f"{inner}{json.dumps(k)}: {_dump(v, inner)}" for k, v in value.items()]
        return "{\n" + ",\n".join(items) + "\n" + indent + "}" if items else "{}"
    if isinstance(value, list) and value and not all(isinstance(v, (int, float)) for v in value) \
            and not all(isinstance(v, list) and len(v) == 4 and all(isinstance(x, int) for x in v) for v in value):
        return "[\n" + ",\n".join(inner + _dump(v, inner) for v in value) + "\n" + indent + "]"
    return json.dumps(value, separators=(", ", ": "))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=cost.NETWORK_COUNTS_FILE,
                        help=f"where to write (default {cost.NETWORK_COUNTS_FILE.relative_to(ROOT)})")
    args = parser.parse_args()
    started = time.perf_counter()
    print(f"counting on the meta device, torch {torch.__version__}", flush=True)
    models, checks = {}, []
    try:
        for model in cost.MODELS:
            models[model], rows = count_model(model)
            checks += rows
    except NotPolynomial as exc:
        print(f"error: {exc}: the counts are not polynomials of degree <= 2 in height/64, width/64 and frames per "
              "call, so nothing was written (see this script's docstring for what it assumes)")
        return 1
    wrong = [row for row in checks if row["flops_error"] or row["activation_error"]]
    if wrong:
        print(f"error: {len(wrong)} held-out counts differ from the fitted polynomials, nothing written: {wrong[:3]}")
        return 1
    data = {
        "about": "FLOPs and peak live activation bytes (float32) of one call of each network, as polynomials in "
                 "m = height/64, n = width/64 and f = frames per call (the UNet window, the VAE decode chunk): "
                 "a polynomial is a list of [coefficient, i, j, k] terms, coefficient * m^i * n^j * f^k; the "
                 "activation peak is the largest of its polynomials. checked_exactly_at lists the [height, width, "
                 "frames] where live counts were compared with the polynomials (all equal). Written by the command "
                 "below: do not edit.",
        "command": COMMAND,
        "fingerprint": code_fingerprint(),
        "fingerprinted": list(FINGERPRINTED),
        "torch": torch.__version__,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "cfg_batch": cost.CFG_SLOTS,
        "fit_points": {v: list(p) for v, p in FIT_POINTS.items()},
        "checked_exactly_at": [[m * TILE, n * TILE, f] for m, n, f in HELD_OUT],
        "models": models,
    }
    args.output.write_text(_dump(data) + "\n")
    cost.load_network_counts(args.output)  # never ship a file the cost model would refuse
    print(f"wrote {args.output}: {len(checks)} held-out counts agree exactly "
          f"({time.perf_counter() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
