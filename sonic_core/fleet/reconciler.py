"""The fleet's side of crash recovery: the ledger holds that nothing will settle any more, found from the job
records and settled through :func:`~sonic_core.metering.ledger.reconcile_holds` (each exactly once), by every
gateway replica every ``SONIC_FLEET_RECONCILE_S`` (:class:`ReconcileLoop`).

The gateway holds every job's tokens as :data:`FLEET_OWNER`. A hold is left alone while something will still settle
it:

- its job was handed to the broker (``sent_at``) and is queued: a worker will take it, however long the queue. A
  broker that loses its data (a Redis restarted without persistence) loses queued messages too, so a job queued for
  ``SONIC_FLEET_RESEND_S`` since it was last sent gets one more copy of its message (a duplicate runs nothing);
- its job is running and its lease is alive (the worker's heartbeat renews it), or ended less than the broker's
  redelivery delay ago (``SONIC_FLEET_VISIBILITY_TIMEOUT`` plus :data:`REDELIVERY_MARGIN_S`; RabbitMQ redelivers at
  once): the broker hands a dead worker's job to another worker, which takes it over (:mod:`.worker`);
- it is younger than ``SONIC_FLEET_ENQUEUE_GRACE_S`` and its job has no record yet, or one not yet sent: the
  gateway is still enqueueing it.

A job running with a lease that ended past the redelivery delay had a worker that died, and no worker has taken
it over. Whether a copy of its message is still on the broker cannot be told: the redelivered copy may wait behind
a long queue, or the broker may have lost it. So the job goes back to ``queued`` and a new copy of its message is
sent (whichever copy comes first runs it; a later one finds it taken or ended and runs nothing), and its hold stays;
when its video is already in the storage (its worker wrote it and died before the commit) it is ended done instead,
and after ``SONIC_FLEET_MAX_WORKER_DEATHS`` dead workers it is failed. A job put back whose new copy did not reach
the broker (the broker was away, or the pass died) is sent again on the next pass.

Every other hold's owner is dead:

- no record, or a record never sent, past the grace: the gateway died between the hold and the broker (its files
  are removed);
- a final record: whoever ended the job died before settling it (a gateway cancelling a queued job).

The job's record is ended first, atomically and only if it is still as judged (a worker that took the job over
meanwhile keeps it; a late copy of its message then runs nothing), then its hold is committed where its video is in
the storage and refunded otherwise.
"""

from __future__ import annotations

import logging
import threading
import time

from kombu.exceptions import OperationalError
from redis.exceptions import RedisError

from ..errors import SonicError
from ..metering.ledger import Charge, Ledger, open_ledger, reconcile_holds
from .config import FleetConfig
from .records import FINAL, JobRecords
from .storage import VIDEO, JobStorage
from .worker import make_app, send_job, worker_deaths_error

FLEET_OWNER = "sonic-fleet"
REDELIVERY_MARGIN_S = 60.0  # a broker restores unacknowledged messages on its consumers' next poll, not at once
LOG = logging.getLogger(__name__)


class FleetReconciler:
    """Judges the fleet's holds from the job records (module docstring) and settles those whose owner died."""

    def __init__(self, config: FleetConfig, records: JobRecords, storage: JobStorage) -> None:
        self.config, self.records, self.storage = config, records, storage
        self.celery = make_app(config)

    def run(self, ledger: Ledger, now: float | None = None) -> list[Charge]:
        """One pass at ``now`` (default the current time): the charges it settled."""
        now = time.time() if now is None else now
        seconds: dict[str, float | None] = {}

        def alive(hold: Charge) -> bool:
            dead, seconds[hold.job_id] = self._judge(hold, now)
            return not dead
        return reconcile_holds(ledger, alive, owner=FLEET_OWNER, seconds_run=lambda hold: seconds[hold.job_id])

    def _judge(self, hold: Charge, now: float) -> tuple[bool, float | None]:
        """``(dead, seconds)``: whether the hold's owner is dead (its record then ended), and the seconds to commit
        (``None``: refund)."""
        job_id, record = hold.job_id, self.records.get(hold.job_id)
        state = record["state"] if record else None
        if state in FINAL:
            return True, _seconds(record) if state == "done" else None
        if state == "queued" and not record.get("sent_at") and record.get("requeued_at"):
            self._send_again(record, now)  # a pass that put it back in the queue died or found the broker away
            return False, None
        if state is None or (state == "queued" and not record.get("sent_at")):
            if now - hold.reserved_at.timestamp() < self.config.enqueue_grace_seconds:
                return False, None
            if state is not None and self.records.transition(job_id, "failed", ("queued",), finished_at=now,
                                                             error="it never reached the queue") != "ok":
                return False, None
            self.storage.remove(job_id)
            return True, None
        if state == "queued":
            if self.config.resend_seconds and now - float(record["sent_at"]) >= self.config.resend_seconds:
                self._send_again(record, now)
            return False, None
        redelivered_by = now - self.config.visibility_timeout - REDELIVERY_MARGIN_S
        if state != "running" or float(record.get("lease_until") or 0) >= redelivered_by:
            return False, None
        if self.storage.exists(job_id, VIDEO):
            ended = self.records.transition(job_id, "done", ("running",), lease_before=redelivered_by,
                                            finished_at=now, progress=1)
            return (True, _seconds(record)) if ended == "ok" else (False, None)
        deaths = int(record.get("worker_deaths") or 0) + 1
        if deaths >= self.config.max_worker_deaths:
            ended = self.records.transition(job_id, "failed", ("running",), lease_before=redelivered_by,
                                            finished_at=now, worker_deaths=deaths, error=worker_deaths_error(deaths))
            return ended == "ok", None
        if self.records.transition(job_id, "queued", ("running",), lease_before=redelivered_by, worker="",
                                   lease_until=0, sent_at="", requeued_at=now, worker_deaths=deaths) == "ok":
            self._send_again(record, now)
        return False, None

    def _send_again(self, record: dict[str, str], now: float) -> None:
        send_job(self.celery, record["id"], record["pool"], float(record["soft_time_limit"]),
                 float(record["time_limit"]))
        self.records.update(record["id"], sent_at=now)


def _seconds(record: dict[str, str]) -> float:
    return float(record.get("seconds") or 0.0)


class ReconcileLoop:
    """A :class:`FleetReconciler` pass every ``config.reconcile_seconds`` (the first at start) in a thread of the
    gateway; every replica runs one (a hold is settled once whoever gets there first)."""

    def __init__(self, config: FleetConfig, records: JobRecords, storage: JobStorage) -> None:
        self.config, self.reconciler = config, FleetReconciler(config, records, storage)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="sonic-reconcile")

    def _loop(self) -> None:
        while True:
            try:
                with open_ledger(self.config.ledger) as ledger:
                    for charge in self.reconciler.run(ledger):
                        LOG.warning("job %s: its owner died; its hold of %d tokens is %s", charge.job_id,
                                    charge.tokens, charge.status)
            except (SonicError, RedisError, OperationalError, OSError) as exc:  # a service is away: next pass
                LOG.warning("hold reconciler: %s", exc)
            if self._stop.wait(self.config.reconcile_seconds):
                return

    def __enter__(self) -> "ReconcileLoop":
        if self.config.reconcile_seconds > 0:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=30)  # a pass stuck on an unreachable Redis must not hold the shutdown
