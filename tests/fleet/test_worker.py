"""The fleet worker's guard against a job that kills its workers, on a real redis-server: the worker that takes such
a job over after its last allowed death ends it failed and refunded instead of running it again."""

from __future__ import annotations

from fleet_harness import start_redis

from sonic_core.fleet.config import FleetConfig
from sonic_core.fleet.reconciler import FLEET_OWNER
from sonic_core.fleet.records import JobRecords
from sonic_core.fleet.worker import JobRunner
from sonic_core.metering.ledger import open_ledger

TOKENS = 10


def test_a_job_whose_workers_keep_dying_is_failed_and_refunded_when_taken_over(tmp_path):
    service, url = start_redis(tmp_path)
    config = FleetConfig(broker=url, records=url, storage=str(tmp_path / "storage"), ledger=url,
                         comfy_url="http://127.0.0.1:1", lease_seconds=30, visibility_timeout=60)
    records, ledger = JobRecords(url), open_ledger(url)
    runner = JobRunner(config, "worker-next")
    try:
        ledger.credit("studio", 100)
        for job_id, deaths in (("poison", config.max_worker_deaths - 1), ("unlucky", config.max_worker_deaths - 2)):
            ledger.reserve("studio", job_id, TOKENS, "standard", FLEET_OWNER)
            records.create(job_id, "lite", TOKENS, worker_deaths=deaths, graph="{}", portrait="p.png",
                           speech="s.wav")
            assert records.claim(job_id, "worker-dead", 0) == "queued"  # its worker died at once
        assert runner.run("poison") == "failed"
        assert records.get("poison")["error"] == f"its workers died {config.max_worker_deaths} times running it"
        assert ledger.charge("poison").status == "refunded"
        assert runner.run("unlucky") == "retry"  # taken over: run again (its ComfyUI server is away here)
        assert records.get("unlucky")["state"] == "queued" and ledger.charge("unlucky").status == "reserved"
    finally:
        runner.close()
        records.close()
        ledger.close()
        service.stop()
