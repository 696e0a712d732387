"""The fleet's HTTP gateway (FastAPI): API keys, pricing, ledger holds, pool choice and the Celery queue of each
pool; job state, the video, cancel and refund, estimates and the metrics the autoscaler reads.

Routes (every one but ``/metrics``, ``/docs`` and ``/openapi.json`` needs an API key in ``X-API-Key`` or
``Authorization: Bearer``):

- ``POST /v1/jobs`` (multipart): ``portrait`` and ``speech`` files, ``settings`` (a JSON object of Sonic knobs and
  ``fit``), optional ``graph`` (an API-format graph JSON to use instead of the bundled template) -> 201 with the
  job's id, tokens, pool and predicted seconds;
- ``GET /v1/jobs/{id}``; ``GET /v1/jobs/{id}/video``; ``DELETE /v1/jobs/{id}`` (cancel; a queued job is refunded
  at once, a running one is interrupted on its server and refunded by its worker);
- ``GET /v1/estimate?duration=S&min_resolution=...`` (tokens, verdict, pool and seconds, nothing held);
- ``GET /metrics`` (Prometheus).

Bad input is a 4xx whose body is one line: ``{"error": "..."}``.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from fastapi import FastAPI, File, Form, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from kombu.exceptions import OperationalError
from redis.exceptions import RedisError

from ..errors import BudgetExceeded, SonicError, SonicInputError
from ..metering.ledger import open_ledger
from ..metering.tiers import Tier, load_tiers, resolve_tier
from ..settings import SonicSettings
from .comfy_client import ComfyClient, ComfyError
from .config import FleetConfig
from .fleet_metrics import render_metrics
from .jobs import Job, check_template, load_template, parse_job
from .keys import ApiKey, KeyBook
from .quotes import Quote, input_names, quote_job
from .reconciler import FLEET_OWNER, ReconcileLoop
from .records import FINAL, JobRecords
from .storage import VIDEO, JobStorage
from .worker import make_app, send_job

MAX_UPLOAD_BYTES = 64 * 2**20


class GatewayError(Exception):
    """A request the gateway refuses: ``status`` and a one-line ``message``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class Gateway:
    """What the routes share: the fleet's services and the gateway's own settings."""

    config: FleetConfig
    keys: KeyBook
    tiers: dict[str, Tier]
    device: str | None  # cost-model device of every pool's prediction (None: each pool's GPU profile)

    def __post_init__(self) -> None:
        self.records = JobRecords(self.config.records)
        self.storage = JobStorage(self.config.storage)
        self.celery = make_app(self.config)

    def key(self, request: Request) -> ApiKey:
        header = request.headers.get("x-api-key") or request.headers.get("authorization", "").removeprefix("Bearer ")
        found = self.keys.find(header.strip())
        if found is None:
            raise GatewayError(401, "missing or unknown API key: send it in the X-API-Key header")
        return found

    def quote(self, job: Job, template: dict[str, Any], api_key: ApiKey) -> Quote:
        return quote_job(uuid.uuid4().hex, job, template, resolve_tier(api_key.tier, self.tiers), self.device)

    def record(self, job_id: str, api_key: ApiKey) -> dict[str, str]:
        record = self.records.get(job_id)
        if record is None or record.get("account") != api_key.account:
            raise GatewayError(404, f"job {job_id!r} does not exist for this API key")
        return record

    def enqueue(self, quote: Quote, job: Job, api_key: ApiKey) -> None:
        """Store the inputs, hold the tokens, record the job and send it to its pool's queue; when the records or
        the broker cannot be reached nothing stays held or stored (a 503), and when this process dies on the way
        the reconciler (:mod:`.reconciler`) refunds the hold."""
        portrait, speech = input_names(job)
        self.storage.put(job.image, quote.job_id, portrait)
        self.storage.put(job.audio, quote.job_id, speech)
        with open_ledger(self.config.ledger) as ledger:
            try:
                ledger.reserve(api_key.account, quote.job_id, quote.cost.total_tokens, quote.cost.tier,
                               FLEET_OWNER)
            except SonicError:
                self.storage.remove(quote.job_id)
                raise
            try:
                self.records.create(quote.job_id, quote.pool.name, quote.cost.total_tokens, account=api_key.account,
                                    tier=quote.cost.tier, predicted_seconds=quote.predicted_seconds,
                                    portrait=portrait, speech=speech, graph=json.dumps(quote.graph), progress=0,
                                    soft_time_limit=quote.soft_time_limit, time_limit=quote.time_limit)
                send_job(self.celery, quote.job_id, quote.pool.name, quote.soft_time_limit, quote.time_limit)
                self.records.update(quote.job_id, sent_at=time.time())  # the reconciler leaves it to the workers
            except (RedisError, OperationalError) as exc:
                ledger.refund(quote.job_id)
                self.storage.remove(quote.job_id)
                self.records.forget(quote.job_id)
                raise GatewayError(503, f"the job queue is unavailable ({type(exc).__name__}): retry later") \
                    from None

    def cancel(self, record: dict[str, str]) -> str:
        """Cancel a job: refunded here if it had not started, else interrupted on its server (its worker
        refunds it when the prompt ends)."""
        job_id = record["id"]
        if self.records.transition(job_id, "cancelled", ("queued",), finished_at=time.time(),
                                   error="cancelled") == "ok":
            with open_ledger(self.config.ledger) as ledger:
                ledger.refund(job_id)
            return "cancelled"
        self.records.update(job_id, cancel_requested=1)
        current = self.records.get(job_id)
        if current["state"] == "running" and current.get("server"):
            client = ComfyClient(current["server"], retries=1)
            try:
                running, pending = client.queue()
                if job_id in running:
                    client.interrupt()
                elif job_id in pending:
                    client.delete([job_id])
            except ComfyError:
                pass  # its worker sees the cancel flag when it submits or settles
        return self.records.get(job_id)["state"]


def job_view(record: dict[str, str]) -> dict[str, Any]:
    """The public view of a job record."""
    def number(name: str) -> float | None:
        return float(record[name]) if record.get(name) not in (None, "") else None

    started, created = number("started_at"), number("created_at")
    return {"id": record["id"], "state": record["state"], "progress": number("progress") or 0.0,
            "tokens": int(record["tokens"]), "tier": record.get("tier"), "pool": record["pool"],
            "predicted_seconds": number("predicted_seconds"), "seconds": number("seconds"),
            "queue_delay_seconds": started - created if started is not None else None,
            "error": record.get("error") or None,
            "video": f"/v1/jobs/{record['id']}/video" if record["state"] == "done" else None}


def _knobs(settings: str) -> dict[str, Any]:
    try:
        knobs = json.loads(settings or "{}")
    except ValueError as exc:
        raise SonicInputError(f"settings is not JSON ({exc}): send an object such as "
                              '{"min_resolution": 512, "steps": 25}') from None
    if not isinstance(knobs, dict):
        raise SonicInputError("settings must be a JSON object of Sonic settings")
    return knobs


def _template(graph: UploadFile | None) -> dict[str, Any]:
    if graph is None:
        return load_template()
    try:
        return check_template(json.loads(graph.file.read()), "graph")
    except (ValueError, UnicodeDecodeError) as exc:
        raise SonicInputError(f"graph is not JSON ({exc}): send an API-format export") from None


def _save_upload(upload: UploadFile, name: str, folder: Path) -> str:
    """The upload saved as ``name`` + its own extension; returns the file name."""
    suffix = Path(upload.filename or "").suffix.lower()
    if not suffix:
        raise SonicInputError(f"{name} has no file name extension: send e.g. {name}.jpg / {name}.wav")
    target = folder / f"{name}{suffix}"
    with target.open("wb") as handle:
        shutil.copyfileobj(upload.file, handle)
    if target.stat().st_size > MAX_UPLOAD_BYTES:
        raise SonicInputError(f"{name} is larger than {MAX_UPLOAD_BYTES // 2**20} MiB: send a smaller file")
    return target.name


def _chunks(handle: IO[bytes], size: int = 2**20) -> Iterator[bytes]:
    """The file in ``size``-byte pieces, closed at the end (a binary file iterates by lines otherwise)."""
    with handle:
        while chunk := handle.read(size):
            yield chunk


def create_app(config: FleetConfig, keys: KeyBook, tiers: dict[str, Tier] | None = None,
               device: str | None = None) -> FastAPI:
    gateway = Gateway(config, keys, tiers or load_tiers(), device)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        with ReconcileLoop(config, gateway.records, gateway.storage):
            yield

    app = FastAPI(title="Sonic fleet gateway", version="1", lifespan=lifespan,
                  description="Talking-head video jobs priced in tokens, held in the ledger and run by GPU workers.")

    @app.exception_handler(GatewayError)
    async def refused(_: Request, exc: GatewayError) -> JSONResponse:
        return JSONResponse({"error": str(exc)}, status_code=exc.status)

    @app.exception_handler(SonicError)
    async def bad_input(_: Request, exc: SonicError) -> JSONResponse:
        status = 402 if isinstance(exc, BudgetExceeded) else 400 if isinstance(exc, SonicInputError) else 503
        return JSONResponse({"error": " ".join(str(exc).split())}, status_code=status)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first.get("loc", ()) if part not in ("body", "query"))
        return JSONResponse({"error": f"{where or 'request'}: {first.get('msg', 'invalid')}"}, status_code=400)

    @app.post("/v1/jobs", status_code=201)
    def submit(request: Request, portrait: UploadFile = File(...), speech: UploadFile = File(...),
               settings: str = Form("{}"), graph: UploadFile | None = File(None)) -> dict[str, Any]:
        api_key = gateway.key(request)
        knobs = _knobs(settings)
        template = _template(graph)
        with tempfile.TemporaryDirectory() as folder:
            row = {"image": _save_upload(portrait, "portrait", Path(folder)),
                   "audio": _save_upload(speech, "speech", Path(folder)), "output": VIDEO, **knobs}
            job = parse_job(0, row, Path(folder))
            quote = gateway.quote(job, template, api_key)
            if not quote.cost.allowed:
                raise GatewayError(403, f"tier '{quote.cost.tier}' refuses this job: {quote.cost.reason}")
            gateway.enqueue(quote, job, api_key)
        return job_view(gateway.records.get(quote.job_id))

    @app.get("/v1/jobs/{job_id}")
    def status(request: Request, job_id: str) -> dict[str, Any]:
        return job_view(gateway.record(job_id, gateway.key(request)))

    @app.get("/v1/jobs/{job_id}/video")
    def video(request: Request, job_id: str) -> StreamingResponse:
        record = gateway.record(job_id, gateway.key(request))
        if record["state"] != "done":
            raise GatewayError(409, f"job {job_id} is {record['state']}, not done: its video is not ready")
        try:
            size = gateway.storage.size(job_id, VIDEO)
        except SonicInputError as exc:
            raise GatewayError(410, str(exc)) from None
        return StreamingResponse(_chunks(gateway.storage.open(job_id, VIDEO)), media_type="video/mp4",
                                 headers={"Content-Length": str(size),
                                          "Content-Disposition": f'attachment; filename="{job_id}.mp4"'})

    @app.delete("/v1/jobs/{job_id}")
    def cancel(request: Request, job_id: str) -> dict[str, Any]:
        record = gateway.record(job_id, gateway.key(request))
        if record["state"] in FINAL:
            raise GatewayError(409, f"job {job_id} is already {record['state']}: nothing to cancel")
        gateway.cancel(record)
        return job_view(gateway.records.get(job_id))

    @app.get("/v1/estimate")
    def estimate(request: Request, duration: float, min_resolution: int | None = None, steps: int | None = None,
                 dynamic_scale: float | None = None, motion_scale: float | None = None) -> dict[str, Any]:
        api_key = gateway.key(request)
        if not 0 < duration <= 3600:
            raise SonicInputError(f"duration={duration}: pass the speech length in seconds (0 < duration <= 3600)")
        knobs = {name: value for name, value in (("min_resolution", min_resolution), ("steps", steps),
                                                 ("dynamic_scale", dynamic_scale), ("motion_scale", motion_scale))
                 if value is not None}
        SonicSettings(**knobs)  # one line naming a knob out of range
        job = Job(0, Path("portrait.jpg"), Path("speech.wav"), VIDEO, knobs, "error", duration)
        quote = gateway.quote(job, load_template(), api_key)
        return {"tokens": quote.cost.total_tokens, "tier": quote.cost.tier, "allowed": quote.cost.allowed,
                "reason": quote.cost.reason, "pool": quote.pool.name, "predicted_seconds": quote.predicted_seconds}

    @app.get("/metrics")
    def metrics() -> Response:
        body, content_type = render_metrics(gateway.records)
        return Response(body, media_type=content_type)

    return app
