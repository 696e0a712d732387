"""The fleet's hold reconciler with real components: a hold whose owner died is settled once (refunded, or committed
where its video is stored) and its record ended, a hold that something will still settle is left alone; and a
gateway SIGKILLed between the hold and the queue (its records' Redis frozen mid-request) leaves a hold that the next
gateway refunds, so that ``ledger holds`` lists nothing."""

from __future__ import annotations

import ast
import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest
import redis
from fleet_harness import Gateway, start_redis
from sonic_testing import PORTRAIT, REPO, SPEECH

from sonic_core.fleet.config import FleetConfig
from sonic_core.fleet.reconciler import FLEET_OWNER, REDELIVERY_MARGIN_S, FleetReconciler
from sonic_core.fleet.records import JobRecords
from sonic_core.fleet.storage import VIDEO, JobStorage
from sonic_core.metering.ledger import open_ledger

CREDIT = 1000
TOKENS = 10
WAIT_S = 120.0


@pytest.fixture
def fleet(tmp_path):
    service, url = start_redis(tmp_path)
    config = FleetConfig(broker=url, records=url, storage=str(tmp_path / "storage"), ledger=url,
                         comfy_url="http://127.0.0.1:1", lease_seconds=30, visibility_timeout=60)
    records, ledger = JobRecords(url), open_ledger(url)
    ledger.credit("studio", CREDIT)
    try:
        yield config, records, JobStorage(config.storage), ledger
    finally:
        records.close()
        ledger.close()
        service.stop()


def test_holds_whose_owner_died_are_settled_once_and_live_ones_are_left(fleet, tmp_path):
    config, records, storage, ledger = fleet
    (tmp_path / "video.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42")
    jobs = ("queued", "running", "enqueueing", "unsent", "lost-with-video", "lost", "lost-thrice", "cancelled")
    for job_id in jobs:
        ledger.reserve("studio", job_id, TOKENS, "standard", FLEET_OWNER)
        storage.put(tmp_path / "video.mp4", job_id, "portrait.jpg")
        if job_id != "enqueueing":
            records.create(job_id, "lite", TOKENS, soft_time_limit=60, time_limit=120)
        if job_id not in ("enqueueing", "unsent"):
            records.update(job_id, sent_at=time.time())
    ledger.reserve("studio", "comfy-job", TOKENS, "standard", "comfy-server-1")  # not the fleet's: never touched
    assert records.claim("running", "worker-live", 10**6) == "queued"  # its heartbeat keeps the lease alive
    records.update("lost-thrice", worker_deaths=config.max_worker_deaths - 1)
    for job_id in ("lost-with-video", "lost", "lost-thrice"):  # their worker died; nobody took them over
        assert records.claim(job_id, "worker-dead", 0) == "queued"
    storage.put(tmp_path / "video.mp4", "lost-with-video", VIDEO)  # written just before its worker died
    records.transition("cancelled", "cancelled", ("queued",))  # its gateway died before the refund
    reconciler = FleetReconciler(config, records, storage)

    now = time.time()
    assert [charge.job_id for charge in reconciler.run(ledger, now)] == ["cancelled"]
    assert queued_messages(config.broker) == []
    later = now + max(config.enqueue_grace_seconds, config.visibility_timeout + REDELIVERY_MARGIN_S) + 1
    settled = {charge.job_id: charge.status for charge in reconciler.run(ledger, later)}
    assert settled == {"enqueueing": "refunded", "unsent": "refunded", "lost-with-video": "committed",
                       "lost-thrice": "refunded"}
    lost = records.get("lost")  # its message may wait behind a long queue or be gone: it is sent again
    assert (lost["state"], lost["worker_deaths"], lost["worker"]) == ("queued", "1", "") and float(lost["sent_at"])
    assert queued_messages(config.broker) == ["lost"]
    assert reconciler.run(ledger, later) == []  # settled once, sent once
    assert queued_messages(config.broker) == ["lost"]
    records.update("lost", sent_at="")  # the pass that sent it again died before it could say so
    assert reconciler.run(ledger, later) == [] and queued_messages(config.broker) == ["lost", "lost"]
    assert {hold.job_id for hold in ledger.holds()} == {"queued", "running", "lost", "comfy-job"}
    much_later = later + config.resend_seconds  # the broker may have lost what waited this long: one more copy
    assert reconciler.run(ledger, much_later) == []
    assert sorted(queued_messages(config.broker)[2:]) == ["lost", "queued"]
    assert reconciler.run(ledger, much_later) == [] and len(queued_messages(config.broker)) == 4
    assert {job_id: records.get(job_id)["state"] for job_id in ("unsent", "lost-with-video", "lost-thrice",
                                                                 "cancelled")} \
        == {"unsent": "failed", "lost-with-video": "done", "lost-thrice": "failed", "cancelled": "cancelled"}
    assert records.get("lost-thrice")["error"] == f"its workers died {config.max_worker_deaths} times running it"
    assert records.claim("lost-thrice", "worker-late", 30) == "failed"  # a late copy of its message runs nothing
    assert records.pool_counts()["lite"] == {"queued_jobs": 2, "queued_tokens": 2 * TOKENS, "running_jobs": 1}
    assert records.claim("lost", "worker-next", 30) == "queued"  # the first copy runs it, the second...
    assert records.claim("lost", "worker-other", 30) == "busy"  # ...finds it taken
    assert not storage.exists("unsent", "portrait.jpg") and not storage.exists("enqueueing", "portrait.jpg")
    balance = ledger.balance("studio")
    assert (balance.held, balance.spent) == (4 * TOKENS, TOKENS)


def queued_messages(broker: str, queue: str = "sonic.lite") -> list[str]:
    """The job ids of the task messages waiting in a Redis broker's queue, oldest first."""
    client = redis.Redis.from_url(broker)
    try:
        return [ast.literal_eval(json.loads(message)["headers"]["argsrepr"])[0] for message in
                reversed(client.lrange(queue, 0, -1))]
    finally:
        client.close()


def test_a_job_taken_over_meanwhile_is_not_ended_by_the_reconciler(fleet):
    _, records, _, _ = fleet
    records.create("job", "lite", TOKENS)
    assert records.claim("job", "worker-new", 3600) == "queued"
    assert records.transition("job", "failed", ("running",), lease_before=time.time()) == "busy"
    assert records.get("job")["state"] == "running"


def test_a_gateway_killed_between_the_hold_and_the_queue_leaves_nothing_held(tmp_path):
    ledger_redis, ledger_url = start_redis(tmp_path)  # the ledger and the broker
    (tmp_path / "records").mkdir()
    records_redis, records_url = start_redis(tmp_path / "records")
    env = {"SONIC_FLEET_BROKER": ledger_url, "SONIC_FLEET_REDIS": records_url, "SONIC_LEDGER": ledger_url,
           "SONIC_FLEET_STORAGE": str(tmp_path / "storage")}
    services = [ledger_redis, records_redis]
    ledger = open_ledger(ledger_url)
    try:
        ledger.credit("studio", CREDIT)
        services.append(gateway := Gateway(env, tmp_path, "sk-fleet-test-studio-0001"))
        os.kill(records_redis.process.pid, signal.SIGSTOP)  # the gateway's write of the job record hangs
        submit = threading.Thread(target=_submit_ignoring_the_end, args=(gateway,))
        submit.start()
        deadline = time.monotonic() + WAIT_S
        while not ledger.holds():
            assert time.monotonic() < deadline and submit.is_alive(), "the gateway never held the job's tokens"
            time.sleep(0.05)
        (hold,) = ledger.holds()
        gateway.kill()  # between the hold and the queue
        submit.join()
        os.kill(records_redis.process.pid, signal.SIGCONT)
        assert (tmp_path / "storage" / "jobs" / hold.job_id).is_dir()

        services.append(Gateway({**env, "SONIC_FLEET_RECONCILE_S": "0.2", "SONIC_FLEET_ENQUEUE_GRACE_S": "0"},
                                tmp_path, "sk-fleet-test-studio-0002"))
        while ledger.charge(hold.job_id).status == "reserved":
            assert time.monotonic() < deadline, "the restarted gateway never settled the dead gateway's hold"
            time.sleep(0.05)
        assert ledger.charge(hold.job_id).status == "refunded"
        listed = subprocess.run([sys.executable, "-m", "sonic_core", "ledger", "holds", "--ledger", ledger_url,
                                 "--format", "json"], cwd=REPO, capture_output=True, text=True, check=True)
        assert json.loads(listed.stdout)["total"] == {"jobs": 0, "tokens": 0}
        balance = ledger.balance("studio")
        assert (balance.balance, balance.held, balance.spent) == (CREDIT, 0, 0)
        assert not (tmp_path / "storage" / "jobs" / hold.job_id).exists()
        records = JobRecords(records_url)
        assert all(count == 0 for counts in records.pool_counts().values() for count in counts.values())
        records.close()
    finally:
        ledger.close()
        for service in reversed(services):
            service.stop()


def _submit_ignoring_the_end(gateway: Gateway) -> None:
    """``POST /v1/jobs``; it never answers, as its gateway is killed in the middle."""
    try:
        gateway.submit(PORTRAIT, SPEECH, {"min_resolution": 256, "steps": 4})
    except (AssertionError, OSError):
        pass
