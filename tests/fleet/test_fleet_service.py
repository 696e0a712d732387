"""The fleet end to end on 127.0.0.1: the gateway under uvicorn, two real Celery workers each beside its own real
ComfyUI server with the pack and the demo model, redis-server for the job records and the ledger, and the broker
(Redis with the storage in a folder, then RabbitMQ with the storage in S3: moto's S3-compatible server over HTTP). A
dozen short clips go through the gateway, every video downloads and every job is charged once; then a worker is
SIGKILLed in the middle of a job and every job still ends done, charged exactly once, with nothing left held or
counted as queued or running, and the dead worker's memory report leaves the metrics."""

from __future__ import annotations

import time

import pytest
from comfyui_harness import ComfyServer, ensure_comfyui
from fleet_harness import Gateway, start_rabbitmq, start_redis, start_s3, start_worker
from sonic_testing import REPO, speech_clips

from sonic_core.fleet.records import JobRecords
from sonic_core.metering.ledger import open_ledger
from sonic_core.video import probe

pytestmark = [pytest.mark.comfyui, pytest.mark.slow]
ASSETS = REPO / "sonic_core" / "assets"
KEY = "sk-fleet-test-studio-0001"
CREDIT = 1_000_000
CLIPS = 12
JOB_TIMEOUT_S = 600.0
# The cheapest job priced above 0 tokens (1 each): 256 px, 4 steps; the scales cost tokens, not compute.
SETTINGS = {"min_resolution": 256, "steps": 4, "fps": 12.5, "dynamic_scale": 2.0, "motion_scale": 2.0}
LEASE_S = 3  # a dead worker's job is taken over this long after its last heartbeat...
VISIBILITY_S = 15  # ...once the Redis broker hands its unacknowledged message out again


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    return speech_clips(tmp_path_factory.mktemp("clips"), CLIPS)


@pytest.fixture(scope="module")
def comfy_servers(tmp_path_factory):
    """Two ComfyUI servers (no metering of their own: the fleet's ledger bills), shared by every broker."""
    install = ensure_comfyui()
    started = []
    try:
        for name in ("a", "b"):
            server = ComfyServer(install, tmp_path_factory.mktemp(f"comfy_{name}"))
            server.start()
            started.append(server)
        yield started
    finally:
        for server in started:
            server.stop()


@pytest.fixture(scope="module", params=["redis", "rabbitmq"])
def fleet(request, tmp_path_factory, comfy_servers):
    """redis-server, the broker, a worker beside each ComfyUI server and the gateway; torn down whole."""
    folder = tmp_path_factory.mktemp(f"fleet_{request.param}")
    services = []
    try:
        redis_service, redis_url = start_redis(folder)
        services.append(redis_service)
        env = {"SONIC_FLEET_BROKER": redis_url, "SONIC_FLEET_REDIS": redis_url, "SONIC_LEDGER": redis_url,
               "SONIC_FLEET_STORAGE": str(folder / "storage"), "SONIC_FLEET_LEASE_S": str(LEASE_S),
               "SONIC_FLEET_VISIBILITY_TIMEOUT": str(VISIBILITY_S), "SONIC_FLEET_MEMORY_REPORT_S": "1",
               "SONIC_FLEET_RECONCILE_S": "1"}  # a hold misjudged dead would be settled within the test
        if request.param == "rabbitmq":  # and the storage in S3: every job's inputs and video go over HTTP
            rabbit, env["SONIC_FLEET_BROKER"] = start_rabbitmq(folder)
            s3, s3_env = start_s3(folder)
            services += [rabbit, s3]
            env.update(s3_env, SONIC_FLEET_STORAGE="s3://sonic-fleet/jobs")
        open_ledger(redis_url).credit("studio", CREDIT)
        workers = [start_worker(name, server, env, folder) for name, server in zip(("a", "b"), comfy_servers)]
        services += workers
        gateway = Gateway(env, folder, KEY)
        services.append(gateway)
        gateway.workers, gateway.ledger_url, gateway.records_url = workers, redis_url, redis_url
        yield gateway
    finally:
        for service in reversed(services):
            service.stop()


def wait_final(gateway: Gateway, job_ids: list[str]) -> dict[str, dict]:
    """Each job's view once every one is final (done, failed or cancelled)."""
    deadline = time.monotonic() + JOB_TIMEOUT_S
    views = {}
    while True:
        views = {job_id: gateway.json("GET", f"/v1/jobs/{job_id}") for job_id in job_ids}
        if all(view["state"] in ("done", "failed", "cancelled") for view in views.values()):
            return views
        if time.monotonic() > deadline:
            pytest.fail(f"jobs not final after {JOB_TIMEOUT_S} s: {views}\n"
                        + "\n".join(worker.log.read_text(errors='replace')[-2000:] for worker in gateway.workers))
        time.sleep(0.2)


def assert_charged_once(gateway: Gateway, jobs: dict[str, dict], spent_before: int) -> None:
    """Every job committed with the tokens it was quoted, the account's spend grew by exactly their sum, nothing
    is held, and the pools count no queued or running job."""
    with open_ledger(gateway.ledger_url) as ledger:
        for job_id, job in jobs.items():
            charge = ledger.charge(job_id)
            assert (charge.status, charge.tokens) == ("committed", job["tokens"]), (job_id, charge)
        balance = ledger.balance("studio")
    assert balance.held == 0
    assert balance.spent - spent_before == sum(job["tokens"] for job in jobs.values())
    metrics = gateway.request("GET", "/metrics")[1].decode()
    for gauge in ("sonic_fleet_queued_jobs", "sonic_fleet_queued_tokens", "sonic_fleet_running_jobs"):
        values = [float(line.split()[-1]) for line in metrics.splitlines() if line.startswith(gauge + "{")]
        assert values and all(value == 0 for value in values), (gauge, metrics)


def submit_clips(gateway: Gateway, clips) -> dict[str, dict]:
    jobs = {}
    for index, clip in enumerate(clips):
        job = gateway.submit(ASSETS / "portrait.jpg", clip, {**SETTINGS, "seed": index})
        assert job["state"] in ("queued", "running") and job["pool"] == "lite" and job["tokens"] > 0, job
        jobs[job["id"]] = job
    return jobs


def test_a_dozen_jobs_through_the_gateway_and_two_workers(fleet, clips, tmp_path):
    spent_before = open_ledger(fleet.ledger_url).balance("studio").spent
    jobs = submit_clips(fleet, clips)
    cancelled = fleet.submit(ASSETS / "portrait.jpg", clips[0], SETTINGS)  # last in the queue: never started
    assert fleet.json("DELETE", f"/v1/jobs/{cancelled['id']}")["state"] == "cancelled"
    assert fleet.request("GET", f"/v1/jobs/{cancelled['id']}/video")[0] == 409
    views = wait_final(fleet, list(jobs))
    assert {view["state"] for view in views.values()} == {"done"}, views
    for job_id, view in views.items():
        status, body = fleet.request("GET", view["video"])
        assert status == 200 and body[4:8] == b"ftyp", (job_id, status, body[:200])
        (tmp_path / f"{job_id}.mp4").write_bytes(body)
        assert probe(tmp_path / f"{job_id}.mp4")["video"]["width"] > 0
        assert view["seconds"] > 0 and view["progress"] == 1.0 and view["predicted_seconds"] > 0
    assert_charged_once(fleet, jobs, spent_before)
    assert open_ledger(fleet.ledger_url).charge(cancelled["id"]).status == "refunded"
    assert fleet.json("GET", f"/v1/jobs/{cancelled['id']}")["state"] == "cancelled"
    records = JobRecords(fleet.records_url)
    assert {records.get(job_id)["server"] for job_id in jobs} == {worker.server.url for worker in fleet.workers}
    metrics = fleet.request("GET", "/metrics")[1].decode()
    assert f'sonic_fleet_job_seconds_count{{pool="lite"}} {float(CLIPS)}' in metrics


def test_cancelling_a_running_job_interrupts_it_and_refunds_it_once(fleet, clips):
    job = fleet.submit(ASSETS / "portrait.jpg", clips[-1], {**SETTINGS, "steps": 20})  # long: caught mid-run
    records = JobRecords(fleet.records_url)
    deadline = time.monotonic() + JOB_TIMEOUT_S
    while not (records.get(job["id"])["state"] == "running" and float(records.get(job["id"]).get("progress") or 0)):
        assert time.monotonic() < deadline, "the job never ran"
        time.sleep(0.05)
    assert fleet.json("DELETE", f"/v1/jobs/{job['id']}")["state"] in ("running", "cancelled")
    view = wait_final(fleet, [job["id"]])[job["id"]]
    assert (view["state"], view["error"]) == ("cancelled", "cancelled"), view
    with open_ledger(fleet.ledger_url) as ledger:
        assert ledger.charge(job["id"]).status == "refunded" and ledger.balance("studio").held == 0
    assert fleet.request("DELETE", f"/v1/jobs/{job['id']}")[0] == 409


def test_a_worker_killed_mid_job_loses_no_job_and_charges_each_once(fleet, clips):
    spent_before = open_ledger(fleet.ledger_url).balance("studio").spent
    jobs = submit_clips(fleet, clips[:4])
    victim, records = fleet.workers[0], JobRecords(fleet.records_url)
    deadline = time.monotonic() + JOB_TIMEOUT_S
    running_on_victim = []
    while not running_on_victim:
        assert time.monotonic() < deadline, "no job ever ran on the first worker"
        time.sleep(0.05)
        running_on_victim = [job_id for job_id, record in zip(jobs, map(records.get, jobs))
                             if record["state"] == "running" and record.get("server") == victim.server.url
                             and float(record.get("progress") or 0) > 0]
    victim_process = records.get(running_on_victim[0])["worker"]
    assert victim_process in records.worker_memory()
    victim.kill()
    views = wait_final(fleet, list(jobs))
    assert {view["state"] for view in views.values()} == {"done"}, \
        {job_id: (view["state"], view.get("error")) for job_id, view in views.items()}
    for view in views.values():
        assert fleet.request("GET", view["video"])[0] == 200
    assert_charged_once(fleet, jobs, spent_before)
    taken_over = records.get(running_on_victim[0])
    assert taken_over["server"] == fleet.workers[1].server.url  # taken over by the other
    while victim_process in records.worker_memory():  # its last report expires: 3 report intervals
        assert time.monotonic() < deadline, "the dead worker's memory report never expired"
        time.sleep(0.1)
    assert taken_over["worker"] in records.worker_memory()
