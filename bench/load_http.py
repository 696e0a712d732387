"""Bounded HTTP load on a ComfyUI server running this pack: ``POST /sonic/estimate`` (the basic template, priced
from the audio in the server's input folder) and ``GET /sonic/metrics``, alternately, at a fixed rate for a fixed
time. Open loop: request i is sent at ``i / rate`` seconds whether or not the earlier ones have been answered
(at most ``--in-flight`` at once), so a slow server shows up as latency, not as a lower offered rate.

    python bench/load_http.py --start --rate 100 --seconds 20 --out bench/results/load_comfyui.json
    python bench/load_http.py --url http://127.0.0.1:8188                # a server that is already running

``--start`` runs a metered ComfyUI (the tests' harness: a private install, input and ledger) for the run. Reports,
per route: requests, errors (any status other than 200, or no answer), and latency p50/p99/max in ms.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parents[1]
ESTIMATE, METRICS = "/sonic/estimate", "/sonic/metrics"
TEMPLATE = ROOT / "workflows" / "api" / "sonic_basic.json"


def percentile(sorted_values: list[float], fraction: float) -> float:
    """The nearest-rank percentile of an ascending list."""
    return sorted_values[max(1, math.ceil(fraction * len(sorted_values))) - 1]


def summary(latencies: list[float], errors: list[str]) -> dict[str, Any]:
    ordered = sorted(latencies)
    milliseconds = {name: round(percentile(ordered, fraction) * 1000, 2) if ordered else None
                    for name, fraction in (("p50_ms", 0.50), ("p99_ms", 0.99), ("max_ms", 1.0))}
    return {"requests": len(latencies) + len(errors), "errors": len(errors), **milliseconds,
            "first_errors": errors[:5]}


async def _load(url: str, rate: float, seconds: float, in_flight: int) -> dict[str, Any]:
    body = {"prompt": json.loads(TEMPLATE.read_text())}
    latencies: dict[str, list[float]] = {ESTIMATE: [], METRICS: []}
    errors: dict[str, list[str]] = {ESTIMATE: [], METRICS: []}
    gate = asyncio.Semaphore(in_flight)
    timeout = aiohttp.ClientTimeout(total=120)

    async def one(session: aiohttp.ClientSession, path: str) -> None:
        async with gate:
            began = time.perf_counter()
            try:
                if path == ESTIMATE:
                    response = await session.post(url + path, json=body)
                else:
                    response = await session.get(url + path)
                async with response:
                    text = await response.text()
                if response.status != 200:
                    errors[path].append(f"{response.status}: {text[:200]}")
                    return
                if path == ESTIMATE:
                    json.loads(text)["total_tokens"]
            except (aiohttp.ClientError, asyncio.TimeoutError, ValueError, KeyError) as exc:
                errors[path].append(f"{type(exc).__name__}: {exc}")
                return
            latencies[path].append(time.perf_counter() - began)

    count = round(rate * seconds)
    connector = aiohttp.TCPConnector(limit=in_flight)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        start = time.perf_counter()
        tasks = []
        for i in range(count):
            await asyncio.sleep(max(0.0, start + i / rate - time.perf_counter()))
            tasks.append(asyncio.create_task(one(session, ESTIMATE if i % 2 == 0 else METRICS)))
        sent = time.perf_counter() - start
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - start
    return {"rate_per_s": rate, "seconds": seconds, "in_flight": in_flight, "sent_in_s": round(sent, 2),
            "all_answered_in_s": round(elapsed, 2),
            "routes": {path: summary(latencies[path], errors[path]) for path in (ESTIMATE, METRICS)}}


def run_load(url: str, rate: float = 100.0, seconds: float = 20.0, in_flight: int = 64) -> dict[str, Any]:
    """Offer ``rate`` requests/s for ``seconds`` to the server at ``url``; the per-route summary."""
    return asyncio.run(_load(url.rstrip("/"), rate, seconds, in_flight))


def _started_server(base: Path):
    """A metered ComfyUI with the demo inputs, from the tests' harness."""
    sys.path.insert(0, str(ROOT / "tests" / "comfyui"))
    sys.path.insert(0, str(ROOT))
    from comfyui_harness import ComfyServer, copy_demo_inputs, ensure_comfyui

    from sonic_core.metering.ledger import open_ledger

    ledger_url = f"sqlite:///{base / 'ledger.db'}"
    with open_ledger(ledger_url) as ledger:
        ledger.credit("local", 10**6)
    config = base / "metering.toml"
    config.write_text(f'ledger = "{ledger_url}"\ndefault_key = "local"\ndefault_tier = "standard"\n')
    server = ComfyServer(ensure_comfyui(), base)
    server.start(extra_env={"SONIC_METERING": str(config)})
    copy_demo_inputs(server)
    return server


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--url", help="a running ComfyUI with this pack (and speech.wav in its input folder)")
    where.add_argument("--start", action="store_true", help="start a metered ComfyUI for the run")
    parser.add_argument("--rate", type=float, default=100.0, help="requests per second (default 100)")
    parser.add_argument("--seconds", type=float, default=20.0, help="how long to offer them (default 20)")
    parser.add_argument("--in-flight", type=int, default=64, help="most requests in flight at once (default 64)")
    parser.add_argument("--out", type=Path, help="write the JSON report here")
    args = parser.parse_args()
    if args.rate <= 0 or args.seconds <= 0 or args.in_flight < 1:
        parser.error("--rate and --seconds must be > 0 and --in-flight >= 1")
    with tempfile.TemporaryDirectory(prefix="sonic-load-") as scratch:
        server = _started_server(Path(scratch)) if args.start else None
        try:
            report = run_load(server.url if server else args.url, args.rate, args.seconds, args.in_flight)
        finally:
            if server is not None:
                server.stop()
    report |= {"measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "machine": platform.machine(),
               "cpus": os.cpu_count(), "load_average_1m": round(os.getloadavg()[0], 2)}
    text = json.dumps(report, indent=2)
    if args.out:
        args.out.write_text(text + "\n")
    print(text)
    return 0 if all(route["errors"] == 0 for route in report["routes"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
