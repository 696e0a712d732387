"""Bad requests to the fleet's gateway (the real FastAPI app, in process): each is a 4xx whose JSON body is one line
naming the input and the fix, and leaves nothing behind: no stored file, no ledger charge or hold, no queued job
(the job records and the broker point at a Redis that is not running, so touching them would fail the request)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from fastapi.testclient import TestClient
from sonic_testing import PORTRAIT, REPO, SPEECH, assert_one_line, bad_audio, bad_image, files_in

from sonic_core.errors import SonicInputError
from sonic_core.fleet.config import FleetConfig
from sonic_core.fleet.gateway import create_app
from sonic_core.fleet.keys import KeyBook
from sonic_core.metering.ledger import open_ledger

KEY = "sk-test-studio-0001"
NOWHERE = "redis://127.0.0.1:1/0"  # nothing listens on port 1


@pytest.fixture
def gateway(tmp_path):
    keys = tmp_path / "keys.toml"
    keys.write_text(f'[keys."{KEY}"]\naccount = "studio"\ntier = "standard"\n')
    ledger_url = f"sqlite:///{tmp_path / 'ledger.db'}"
    open_ledger(ledger_url).credit("studio", 100_000)
    config = FleetConfig(broker=NOWHERE, records=NOWHERE, storage=str(tmp_path / "storage"), ledger=ledger_url,
                         comfy_url="http://127.0.0.1:1", lease_seconds=30, visibility_timeout=60)
    client = TestClient(create_app(config, KeyBook.load(keys), device="cpu"))
    client.storage, client.ledger_url = tmp_path / "storage", ledger_url
    return client


def post_job(client, *, portrait=PORTRAIT, speech=SPEECH, settings=None, graph=None, key=KEY):
    files = {"portrait": (portrait.name, portrait.read_bytes()), "speech": (speech.name, speech.read_bytes())}
    if graph is not None:
        files["graph"] = ("graph.json", graph.encode() if isinstance(graph, str) else graph)
    data = {"settings": settings} if settings is not None else {}
    return client.post("/v1/jobs", files=files, data=data, headers={"X-API-Key": key} if key else {})


def assert_refused(response, status: int, *needles: str) -> None:
    assert response.status_code == status, response.text
    assert_one_line(response.json()["error"], *needles)


def assert_nothing_left(client) -> None:
    assert {path for path in files_in(client.storage) if path.is_file()} == set()
    balance = open_ledger(client.ledger_url).balance("studio")
    assert (balance.balance, balance.held, balance.spent) == (100_000, 0, 0)


@pytest.mark.parametrize("settings, needles", [
    ('{"steps": 0}', ("steps",)),
    ('{"min_resolution": 100}', ("min_resolution",)),
    ('{"colour": 1}', ("colour",)),
    ('{"steps": ', ("settings is not JSON",)),
    ('[1, 2]', ("settings must be a JSON object",)),
    ('{"fit": "stretch"}', ("fit",)),
])
def test_bad_settings(gateway, settings, needles):
    assert_refused(post_job(gateway, settings=settings), 400, *needles)
    assert_nothing_left(gateway)


@pytest.mark.parametrize("kind, needle", [("no_face", "face"), ("truncated", "not a readable image"),
                                          ("text", "not a readable image")])
def test_bad_portraits(gateway, tmp_path, kind, needle):
    assert_refused(post_job(gateway, portrait=bad_image(kind, tmp_path)), 400, needle)
    assert_nothing_left(gateway)


@pytest.mark.parametrize("kind", ["empty", "10ms", "nan", "wrong_extension"])
def test_bad_speech(gateway, tmp_path, kind):
    response = post_job(gateway, speech=bad_audio(kind, tmp_path))
    assert_refused(response, 400)
    assert_nothing_left(gateway)


@pytest.mark.parametrize("graph, needle", [("{", "graph is not JSON"), ("[1]", "not an API-format graph"),
                                           (json.dumps({"1": {"class_type": "LoadImage", "inputs": {}}}),
                                            "has no SonicSampler node")])
def test_bad_graphs(gateway, graph, needle):
    assert_refused(post_job(gateway, graph=graph), 400, needle)
    assert_nothing_left(gateway)


def test_a_job_over_its_tier_is_refused_with_the_reason(gateway):
    assert_refused(post_job(gateway, settings='{"steps": 30}'), 403, "30 steps are above the tier's 20")
    assert_nothing_left(gateway)


@pytest.mark.parametrize("key", [None, "sk-unknown-0000000"])
def test_a_missing_or_unknown_key_is_refused(gateway, key):
    assert_refused(post_job(gateway, key=key), 401, "API key")
    assert_refused(gateway.get("/v1/estimate?duration=2", headers={"X-API-Key": key or ""}), 401, "API key")
    assert_nothing_left(gateway)


def test_missing_files_and_bad_estimates_are_one_line(gateway):
    response = gateway.post("/v1/jobs", data={"settings": "{}"}, headers={"X-API-Key": KEY})
    assert_refused(response, 400, "portrait")
    headers = {"X-API-Key": KEY}
    assert_refused(gateway.get("/v1/estimate", headers=headers), 400, "duration")
    assert_refused(gateway.get("/v1/estimate?duration=abc", headers=headers), 400, "duration")
    assert_refused(gateway.get("/v1/estimate?duration=-1", headers=headers), 400, "duration")
    assert_refused(gateway.get("/v1/estimate?duration=2&steps=0", headers=headers), 400, "steps")


def test_an_estimate_prices_like_the_token_meter_and_holds_nothing(gateway):
    from sonic_core.metering.tiers import price
    from sonic_core.settings import SonicSettings

    answer = gateway.get("/v1/estimate?duration=2&min_resolution=512&steps=10", headers={"X-API-Key": KEY})
    assert answer.status_code == 200, answer.text
    want = price(SonicSettings(min_resolution=512, steps=10), "standard", 2.0)
    assert answer.json()["tokens"] == want.tokens and answer.json()["allowed"] and answer.json()["pool"] == "lite"
    assert_nothing_left(gateway)


def test_the_openapi_document_lists_the_routes(gateway):
    paths = gateway.get("/openapi.json").json()["paths"]
    assert {"/v1/jobs", "/v1/jobs/{job_id}", "/v1/jobs/{job_id}/video", "/v1/estimate", "/metrics"} <= set(paths)


def test_a_good_job_with_no_queue_reachable_is_a_503_and_leaves_nothing(gateway):
    assert_refused(post_job(gateway, settings='{"min_resolution": 256, "steps": 1}'), 503, "queue is unavailable")
    assert_nothing_left(gateway)


@pytest.mark.parametrize(("variable", "value"), [
    ("SONIC_FLEET_LEASE_S", "abc"), ("SONIC_FLEET_LEASE_S", "0"), ("SONIC_FLEET_VISIBILITY_TIMEOUT", "-5"),
    ("SONIC_FLEET_MEMORY_REPORT_S", "inf"), ("SONIC_FLEET_RECONCILE_S", "nan"), ("SONIC_FLEET_ENQUEUE_GRACE_S", "-1"),
    ("SONIC_FLEET_RESEND_S", "1h"), ("SONIC_FLEET_MAX_WORKER_DEATHS", "2.5"), ("SONIC_FLEET_MAX_WORKER_DEATHS", "0")])
def test_a_bad_fleet_setting_is_one_line_naming_the_variable(monkeypatch, variable, value):
    monkeypatch.setenv(variable, value)
    with pytest.raises(SonicInputError) as refused:
        FleetConfig.from_env()
    assert_one_line(str(refused.value), variable, repr(value), "unset it for the default")


@pytest.mark.parametrize("command", [
    [sys.executable, "-m", "sonic_core", "gateway", "--keys", "KEYS"],
    [sys.executable, "-m", "celery", "-A", "sonic_core.fleet.worker", "worker", "-Q", "sonic.lite"]],
    ids=["gateway", "celery-worker"])
def test_the_gateway_and_a_worker_started_with_a_bad_setting_stop_in_one_line(tmp_path, command):
    keys = tmp_path / "keys.toml"
    keys.write_text(f'[keys."{KEY}"]\naccount = "studio"\ntier = "standard"\n')
    started = subprocess.run([str(keys) if part == "KEYS" else part for part in command], cwd=REPO, text=True,
                             capture_output=True, timeout=120, env={**os.environ, "SONIC_FLEET_LEASE_S": "soon"})
    assert started.returncode != 0
    assert_one_line(started.stderr, "SONIC_FLEET_LEASE_S='soon'", "a number of seconds above 0")
