"""The fleet's job records on a real redis-server: the claim that makes a re-delivered job run once (a live lease
is busy, an expired one is taken over, a final job is never run again), and the pool counters the autoscaler reads
staying the sum of the records through every move, 0-token jobs included; worker memory reports that expire."""

from __future__ import annotations

import time

import pytest
from fleet_harness import start_redis

from sonic_core.fleet.fleet_metrics import render_metrics
from sonic_core.fleet.records import JobRecords


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    service, url = start_redis(tmp_path_factory.mktemp("redis"))
    records = JobRecords(url)
    try:
        yield records
    finally:
        records.close()
        service.stop()


def counts(records: JobRecords, pool: str) -> tuple[int, int, int]:
    values = records.pool_counts()[pool]
    return values["queued_jobs"], values["queued_tokens"], values["running_jobs"]


def test_a_job_is_claimed_once_while_its_lease_lives_and_taken_over_when_it_expires(records):
    records.create("job-1", "standard", 7)
    assert counts(records, "standard") == (1, 7, 0)
    assert records.claim("job-1", "worker-a", 60) == "queued"
    assert counts(records, "standard") == (0, 0, 1)
    assert records.claim("job-1", "worker-b", 60) == "busy"
    assert not records.renew("job-1", "worker-b", 60) and records.renew("job-1", "worker-a", 60)
    records.update("job-1", lease_until=0)  # worker-a died: its heartbeat stopped renewing the lease
    assert records.claim("job-1", "worker-b", 60) == "running"
    assert records.get("job-1")["worker"] == "worker-b" and records.get("job-1")["worker_deaths"] == "1"
    assert counts(records, "standard") == (0, 0, 1)
    assert records.transition("job-1", "done", ("running",)) == "ok"
    assert counts(records, "standard") == (0, 0, 0)
    assert records.claim("job-1", "worker-a", 60) == "done"  # a late copy of the message runs nothing
    assert records.transition("job-1", "failed", ("running",)) == "done"
    assert counts(records, "standard") == (0, 0, 0)


def test_zero_token_jobs_and_cancels_keep_the_counters_exact(records):
    records.create("job-free", "lite", 0)
    records.create("job-paid", "lite", 3)
    assert records.claim("job-free", "worker-a", 60) == "queued"
    assert records.transition("job-paid", "cancelled", ("queued",)) == "ok"
    assert counts(records, "lite") == (0, 0, 1)
    assert records.transition("job-free", "queued", ("running",)) == "ok"  # its server was down: back in line
    assert counts(records, "lite") == (1, 0, 0)
    assert records.claim("job-paid", "worker-a", 60) == "cancelled"
    assert records.claim("job-missing", "worker-a", 60) is None


def test_a_worker_memory_report_expires_unless_renewed(records):
    """A dead worker stops reporting: its last figures leave the gauge once the report's time to live is over,
    while a worker that keeps reporting stays."""
    records.set_worker_memory("worker-dead", 2**30, 2**34, 0.05)
    records.set_worker_memory("worker-live", 2**31, 2**34, 600)
    deadline = time.monotonic() + 30
    while "worker-dead" in records.worker_memory():
        assert time.monotonic() < deadline, "the dead worker's memory report never expired"
        time.sleep(0.02)
    assert records.worker_memory() == {"worker-live": (2**31, 2**34)}
    metrics = render_metrics(records)[0].decode()
    assert 'sonic_fleet_worker_memory_used_bytes{worker="worker-live"}' in metrics and "worker-dead" not in metrics
