"""The fleet's Celery app and its one task: run a job's graph on the ComfyUI server beside this worker.

Start a worker per GPU, beside its ComfyUI server, on its pool's queue::

    celery -A sonic_core.fleet.worker worker -Q sonic.standard --pool=prefork --concurrency=1

Delivery is at least once (``acks_late``: a job is acknowledged only when it has ended; ``reject_on_worker_lost``:
a worker process that dies hands its job back; prefetch 1: a worker holds no job it is not running) and the work
is exactly once:

- a job whose record is final is acknowledged and not run again; a job whose video is already in the storage
  (its worker died after writing it) is only settled;
- a running job holds a lease its worker renews; a copy delivered to another worker while the lease is alive is
  retried later, one whose lease has expired (the worker died) is taken over, unless its workers died
  ``SONIC_FLEET_MAX_WORKER_DEATHS`` times running it (the job is then failed and refunded);
- the ComfyUI prompt id is the job id, so a worker re-attaches to a prompt its server already holds;
- the ledger settles each job once: commit on success, refund on failure or cancel (its reservation id is the job
  id, and repeating a settlement is a no-op).

The gateway sends each job with soft and hard time limits from the cost model's prediction; at the soft limit the
prompt is interrupted and the job refunded. Each pool process reports its server's device memory
(:class:`MemoryReporter`) in reports that expire when it stops.
"""

from __future__ import annotations

import json
import os
import socket
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from celery import Celery
from celery.exceptions import SoftTimeLimitExceeded
from celery.signals import worker_process_init
from celery.utils.log import get_task_logger
from redis.exceptions import RedisError

from ..errors import SonicInputError
from ..metering.ledger import Ledger, LedgerStateError, open_ledger
from .batch import run_seconds
from .comfy_client import ComfyClient, ComfyError, ComfyUnavailable, PromptResult
from .config import FleetConfig
from .pools import pool_named
from .quotes import INPUT_FOLDER
from .records import FINAL, JobRecords
from .storage import VIDEO, JobStorage

TASK_NAME = "sonic.run_job"
LOG = get_task_logger(__name__)
RETRY_SECONDS = 5.0
PROGRESS_EVERY = 0.5  # seconds between progress writes
MEMORY_REPORTS_KEPT = 3  # a memory report lives this many report intervals


def make_app(config: FleetConfig) -> Celery:
    app = Celery("sonic", broker=config.broker)
    app.conf.update(task_acks_late=True, task_reject_on_worker_lost=True, worker_prefetch_multiplier=1,
                    task_ignore_result=True, task_serializer="json", accept_content=["json"],
                    broker_connection_retry_on_startup=True, worker_hijack_root_logger=False,
                    broker_transport_options={"visibility_timeout": config.visibility_timeout})
    return app


try:
    CONFIG = FleetConfig.from_env()
except SonicInputError as exc:  # the worker is started by `celery -A`, which would print a traceback
    raise SystemExit(f"error: {exc}") from None
app = make_app(CONFIG)


def send_job(celery: Celery, job_id: str, pool: str, soft_time_limit: float, time_limit: float) -> None:
    """Put a job's message on its pool's queue (the gateway for a new job, the reconciler for a dead worker's)."""
    celery.send_task(TASK_NAME, args=[job_id], queue=pool_named(pool).queue, soft_time_limit=soft_time_limit,
                     time_limit=time_limit)


def worker_deaths_error(deaths: int) -> str:
    return f"its workers died {deaths} times running it"


class JobRunner:
    """Runs one job on this worker's ComfyUI server; every outcome settles the ledger and ends the record."""

    def __init__(self, config: FleetConfig, worker: str) -> None:
        self.config, self.worker = config, worker
        self.records = JobRecords(config.records)
        self.storage = JobStorage(config.storage)
        self.client = ComfyClient(config.comfy_url)

    def run(self, job_id: str) -> str:
        """The job's final state, or ``"retry"`` when it must be delivered again later."""
        claimed = self.records.claim(job_id, self.worker, self.config.lease_seconds)
        if claimed is None or claimed in FINAL:
            return claimed or "unknown"
        if claimed == "busy":
            return "retry"
        record = self.records.get(job_id)
        deaths = int(record.get("worker_deaths") or 0)
        if deaths >= self.config.max_worker_deaths:
            with open_ledger(self.config.ledger) as ledger:
                return self._fail(ledger, record, worker_deaths_error(deaths), "failed")
        if claimed == "queued":
            self.records.observe(record["pool"], "queue_delay_seconds",
                                 float(record["started_at"]) - float(record["created_at"]))
        with open_ledger(self.config.ledger) as ledger, _Heartbeat(self.records, job_id, self.worker,
                                                                   self.config.lease_seconds):
            if self.storage.exists(job_id, VIDEO):
                return self._succeed(ledger, record, float(record.get("seconds") or 0.0))
            try:
                return self._run_on_server(ledger, record)
            except ComfyUnavailable as exc:
                if self._cancel_requested(job_id):  # its prompt was deleted from the server's queue
                    return self._fail(ledger, record, "cancelled", "cancelled")
                self.records.transition(job_id, "queued", ("running",), worker="", lease_until=0, error=str(exc))
                return "retry"
            except ComfyError as exc:  # the server refused the graph or a file
                return self._fail(ledger, record, str(exc), "failed")
            except SoftTimeLimitExceeded:
                self._stop_prompt(job_id)
                return self._fail(ledger, record, "the job ran past its time limit", "failed")
            except Exception as exc:  # a fault here (storage, a bug): the job ends refunded, never left held
                LOG.exception("job %s failed on this worker", job_id)
                return self._fail(ledger, record, f"the worker failed: {type(exc).__name__}: {exc}", "failed")

    def _run_on_server(self, ledger: Ledger, record: dict[str, str]) -> str:
        job_id = record["id"]
        if self._cancel_requested(job_id):  # cancelled while it was handed to this worker
            return self._fail(ledger, record, "cancelled", "cancelled")
        self.records.update(job_id, server=self.client.url)
        if self.client.history(job_id) is None and job_id not in sum(self.client.queue(), []):
            with tempfile.TemporaryDirectory() as folder:
                for name in (record["portrait"], record["speech"]):
                    local = self.storage.get(job_id, name, Path(folder) / name)
                    self.client.upload(local, subfolder=INPUT_FOLDER, name=f"{job_id}-{name}")
            self.client.submit(json.loads(record["graph"]), prompt_id=job_id)
        if self._cancel_requested(job_id):
            self._stop_prompt(job_id)
        result = self.client.follow(job_id, on_progress=self._progress_writer(job_id), timeout=float("inf"))
        return self._settle(ledger, record, result)

    def _cancel_requested(self, job_id: str) -> bool:
        return bool(self.records.get(job_id).get("cancel_requested"))

    def _progress_writer(self, job_id: str):
        last = [0.0]

        def write(node: str, value: int, maximum: int) -> None:
            if maximum and time.monotonic() - last[0] >= PROGRESS_EVERY:
                last[0] = time.monotonic()
                self.records.update(job_id, progress=round(value / maximum, 3), progress_node=node)
        return write

    def _stop_prompt(self, job_id: str) -> None:
        running, pending = self.client.queue()
        if job_id in running:
            self.client.interrupt()
        elif job_id in pending:
            self.client.delete([job_id])

    def _settle(self, ledger: Ledger, record: dict[str, str], result: PromptResult) -> str:
        job_id = record["id"]
        cancelled = self._cancel_requested(job_id)
        if result.status == "interrupted":
            return self._fail(ledger, record, "cancelled" if cancelled else "interrupted on the server",
                              "cancelled" if cancelled else "failed")
        videos = [item for item in result.outputs if item["filename"].lower().endswith(".mp4")]
        if result.status != "success" or not videos:
            return self._fail(ledger, record, result.error or "the graph wrote no .mp4 video", "failed")
        with tempfile.TemporaryDirectory() as folder:
            local = self.client.download(videos[0], Path(folder) / VIDEO)
            self.storage.put(local, job_id, VIDEO)
        seconds = run_seconds(self.client.history(job_id) or {})
        return self._succeed(ledger, record, seconds if seconds is not None else time.time() -
                             float(record.get("started_at") or time.time()))

    def _succeed(self, ledger: Ledger, record: dict[str, str], seconds: float) -> str:
        job_id = record["id"]
        try:
            ledger.commit(job_id, seconds)
        except LedgerStateError as exc:  # refunded by someone else: the video is kept, the job is not charged
            return self._end(record, "failed", error=str(exc))
        return self._end(record, "done", seconds=seconds, progress=1)

    def _fail(self, ledger: Ledger, record: dict[str, str], reason: str, state: str) -> str:
        try:
            ledger.refund(record["id"])
        except LedgerStateError:
            pass  # already committed: the record below still ends the job
        return self._end(record, state, error=reason)

    def _end(self, record: dict[str, str], state: str, **fields: Any) -> str:
        ended = self.records.transition(record["id"], state, ("running",), finished_at=time.time(), **fields)
        if ended == "ok" and state == "done":
            self.records.observe(record["pool"], "job_seconds", fields["seconds"])
        return state

    def close(self) -> None:
        self.records.close()


class MemoryReporter:
    """Reports the device memory of this worker's ComfyUI server (``/system_stats``) for the GPU-memory gauge,
    every ``memory_report_seconds``, from a thread of the worker's pool process. Each report expires after
    :data:`MEMORY_REPORTS_KEPT` intervals, so the gauge lists only workers that are alive."""

    def __init__(self, config: FleetConfig, worker: str) -> None:
        self.worker, self.interval = worker, config.memory_report_seconds
        self.records = JobRecords(config.records)
        self.client = ComfyClient(config.comfy_url, retries=0)
        self._thread = threading.Thread(target=self._loop, daemon=True, name="sonic-memory-report")

    def report(self) -> None:
        devices = self.client.system_stats().get("devices", [])
        if devices:
            total, free = int(devices[0].get("vram_total", 0)), int(devices[0].get("vram_free", 0))
            self.records.set_worker_memory(self.worker, total - free, total, MEMORY_REPORTS_KEPT * self.interval)

    def _loop(self) -> None:
        while True:
            try:
                self.report()
            except (ComfyError, RedisError) as exc:  # no report this time: the last one expires
                LOG.warning("no memory report of %s: %s", self.worker, exc)
            time.sleep(self.interval)

    def start(self) -> None:
        self._thread.start()


class _Heartbeat:
    """Renews the job's lease every third of its length while the job runs in this process."""

    def __init__(self, records: JobRecords, job_id: str, worker: str, lease_seconds: float) -> None:
        self.records, self.job_id, self.worker, self.lease = records, job_id, worker, lease_seconds
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, daemon=True)

    def _beat(self) -> None:
        while not self._stop.wait(self.lease / 3):
            self.records.renew(self.job_id, self.worker, self.lease)

    def __enter__(self) -> "_Heartbeat":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def worker_name() -> str:
    """This pool process: the owner of the leases it holds and of its memory reports."""
    return f"{socket.gethostname()}:{os.getpid()}"


@worker_process_init.connect
def start_memory_reports(**_: object) -> None:
    MemoryReporter(CONFIG, worker_name()).start()


@app.task(name=TASK_NAME, bind=True, acks_late=True, reject_on_worker_lost=True, max_retries=None)
def run_job(self, job_id: str) -> str:
    runner = JobRunner(CONFIG, worker_name())
    try:
        state = runner.run(job_id)
    finally:
        runner.close()
    if state == "retry":
        raise self.retry(countdown=RETRY_SECONDS)
    return state
