"""Metering in a real ComfyUI 0.3.75 server with enforcement on: the estimate route, refusals the client sees,
the ledger (reserve -> commit | refund) and the Prometheus scrape.

The server is started with ``$SONIC_METERING`` pointing at a config written here (its own instance, so the
shared unmetered ``comfyui_server`` is untouched). The tests that need a runnable Sonic graph run once the
``SonicSampler`` node is registered (``/object_info``), and skip, saying so, before.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest
from comfyui_harness import CHROMIUM, ComfyBrowser, ComfyServer, copy_demo_inputs, ensure_comfyui
from prometheus_client.parser import text_string_to_metric_families
from sonic_testing import REPO, basic_prompt, run_cli

from bench.load_http import run_load
from sonic_core.audio import audio_duration
from sonic_core.metering.ledger import COMMITTED, REFUNDED, open_ledger
from sonic_core.tokens import estimate_tokens

pytestmark = pytest.mark.comfyui

SPEECH = REPO / "sonic_core" / "assets" / "speech.wav"
BALANCE = 2000


@pytest.fixture(scope="module")
def metered(tmp_path_factory):
    """(server, ledger URL): ComfyUI with enforcement on, key 'local' (standard) holding BALANCE tokens."""
    base = tmp_path_factory.mktemp("comfyui-metered")
    ledger_url = f"sqlite:///{base / 'ledger.db'}"
    with open_ledger(ledger_url) as ledger:
        ledger.credit("local", BALANCE)
    config = base / "metering.toml"
    config.write_text(f'ledger = "{ledger_url}"\ndefault_key = "local"\ndefault_tier = "standard"\n'
                      '[keys]\n"k-pro-empty" = "pro"\n')
    server = ComfyServer(ensure_comfyui(), base)
    try:
        server.start(extra_env={"SONIC_METERING": str(config)})
        copy_demo_inputs(server)
        yield server, ledger_url
    finally:
        server.stop()


def request(server: ComfyServer, method: str, path: str, body: dict | None = None,
            headers: dict | None = None) -> tuple[int, str, str]:
    """(status, content type, body text) of one HTTP request, 4xx/5xx included."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(server.url + path, data=data, method=method,
                                 headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=60) as response:
            return response.status, response.headers.get("Content-Type", ""), response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.headers.get("Content-Type", ""), error.read().decode()


def post(server: ComfyServer, path: str, body: dict, headers: dict | None = None) -> tuple[int, dict]:
    status, _, text = request(server, "POST", path, body, headers)
    return status, json.loads(text)


def scrape(server: ComfyServer) -> dict[tuple[str, tuple], float]:
    status, content_type, text = request(server, "GET", "/sonic/metrics")
    assert status == 200 and content_type.startswith("text/plain")
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def speech_tokens(resolution: int = 512, steps: int = 20) -> int:
    return estimate_tokens(audio_duration(SPEECH), resolution, steps)


def test_estimate_route_prices_the_graph(metered):
    server, _ = metered
    for path in ("/sonic/estimate", "/api/sonic/estimate"):
        status, answer = post(server, path, {"prompt": basic_prompt(steps=25), "tier": "pro"})
        assert status == 200, answer
        assert answer["total_tokens"] == speech_tokens(steps=25) and answer["tier"] == "pro" and answer["allowed"]
        assert answer["jobs"][0]["duration"] == pytest.approx(audio_duration(SPEECH))
    status, answer = post(server, "/sonic/estimate", basic_prompt(resolution=1024))
    assert status == 200 and not answer["allowed"] and "1024 px" in answer["reason"]
    assert answer["available_tokens"] == BALANCE and answer["enforced"]


def test_refused_prompt_never_runs_and_the_client_sees_why(metered):
    server, ledger_url = metered
    before = scrape(server)
    cases = [({}, basic_prompt(resolution=1024), 403, "resolution 1024 px is above the tier's 768 px"),
             ({"X-Sonic-Key": "k-pro-empty"}, basic_prompt(), 402, "has 0 available"),
             ({"X-Sonic-Key": "k-not-configured"}, basic_prompt(), 403, "is not configured")]
    for headers, prompt, want_status, message in cases:
        prompt_id = f"refused-{uuid.uuid4()}"
        status, answer = post(server, "/prompt", {"prompt": prompt, "prompt_id": prompt_id}, headers)
        assert status == want_status and message in answer["error"]["message"], answer
        assert answer["error"]["type"] == "sonic_metering" and answer["node_errors"] == {}
        assert server.get(f"/history/{prompt_id}") == {}
        queue = server.get("/queue")
        assert prompt_id not in json.dumps(queue)
        with open_ledger(ledger_url) as ledger:
            assert ledger.charge(prompt_id) is None
    after = scrape(server)
    refusals = {reason: after.get(("sonic_refusals_total", (("reason", reason),)), 0)
                - before.get(("sonic_refusals_total", (("reason", reason),)), 0) for reason in ("tier", "budget",
                                                                                               "key")}
    assert refusals == {"tier": 1, "budget": 1, "key": 1}


def test_graph_comfyui_rejects_after_reservation_is_refunded(metered):
    server, ledger_url = metered
    prompt = basic_prompt() | {"90": {"class_type": "NoSuchNodeAnywhere", "inputs": {}}}
    prompt_id = f"rejected-{uuid.uuid4()}"
    status, answer = post(server, "/prompt", {"prompt": prompt, "prompt_id": prompt_id})
    assert status == 400 and answer["error"]["type"] != "sonic_metering"  # ComfyUI's own validation error
    with open_ledger(ledger_url) as ledger:
        charge = ledger.charge(prompt_id)
        assert (charge.status, charge.tokens) == (REFUNDED, speech_tokens())
        assert ledger.balance("local").held == 0


def test_metrics_scrape_parses_and_moves_with_admissions(metered):
    server, _ = metered
    before = scrape(server)
    post(server, "/prompt", {"prompt": basic_prompt() | {"90": {"class_type": "NoSuchNodeAnywhere", "inputs": {}}}})
    after = scrape(server)
    tokens = ("sonic_tokens_total", (("tier", "standard"),))
    assert after[tokens] - before.get(tokens, 0) == speech_tokens()
    invalid = ("sonic_failures_total", (("reason", "invalid"),))
    assert after[invalid] - before.get(invalid, 0) == 1
    assert after[("sonic_queued_tokens", ())] == before[("sonic_queued_tokens", ())]
    assert ("sonic_job_seconds_count", ()) in after and ("sonic_running_jobs", ()) in after


def test_token_meter_node_reports_in_history(metered):
    server, _ = metered
    prompt_id, _ = server.run_prompt({"1": {"class_type": "SonicTokenMeter", "inputs": {"tier": "pro"}}})
    entry = server.history(prompt_id)
    assert entry["status"]["status_str"] == "success"
    (cost,) = entry["outputs"]["1"]["sonic_cost"]
    assert (cost["total_tokens"], cost["tier"], cost["jobs"]) == (0, "pro", [])


def require_sampler(server: ComfyServer) -> None:
    assert "SonicSampler" in server.get("/object_info"), \
        "SonicSampler is not registered: the pack failed to load in ComfyUI (see the server log)"


def sonic_template() -> dict:
    path = REPO / "workflows" / "api" / "sonic_basic.json"
    assert path.is_file(), f"{path.relative_to(REPO)} is missing"
    return json.loads(path.read_text())


def wait_for_history(server: ComfyServer, prompt_id: str, timeout: float = 600) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        entry = server.get(f"/history/{prompt_id}").get(prompt_id)
        if entry and entry.get("status", {}).get("completed") is not None:
            return entry
        time.sleep(0.5)
    raise AssertionError(f"prompt {prompt_id} did not finish within {timeout} s")


@pytest.mark.slow
def test_successful_sonic_prompt_is_committed(metered):
    server, ledger_url = metered
    require_sampler(server)
    prompt = sonic_template()
    status, estimate = post(server, "/sonic/estimate", {"prompt": prompt})
    assert status == 200 and estimate["total_tokens"] > 0, estimate
    status, answer = post(server, "/prompt", {"prompt": prompt})
    assert status == 200, answer
    entry = wait_for_history(server, answer["prompt_id"])
    assert entry["status"]["status_str"] == "success"
    with open_ledger(ledger_url) as ledger:
        charge = ledger.charge(answer["prompt_id"])
        assert (charge.status, charge.tokens) == (COMMITTED, estimate["total_tokens"]) and charge.seconds > 0


@pytest.mark.slow
def test_failing_sonic_prompt_is_refunded(metered):
    server, ledger_url = metered
    require_sampler(server)
    prompt = sonic_template()
    predata = next(node for node in prompt.values() if node["class_type"] == "SonicPreData")
    prompt["91"] = {"class_type": "EmptyImage", "inputs": {"width": 512, "height": 512, "batch_size": 1,
                                                           "color": 0}}
    predata["inputs"]["image"] = ["91", 0]  # a black image has no face: the run fails after it was queued
    status, answer = post(server, "/prompt", {"prompt": prompt})
    assert status == 200, answer
    entry = wait_for_history(server, answer["prompt_id"])
    assert entry["status"]["status_str"] == "error"
    with open_ledger(ledger_url) as ledger:
        assert ledger.charge(answer["prompt_id"]).status == REFUNDED
        assert ledger.balance("local").held == 0


def ledger_holds(ledger_url: str) -> dict:
    """``python -m sonic_core ledger holds --format json``, as an operator runs it."""
    result = run_cli("ledger", "holds", "--format", "json", "--ledger", ledger_url)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.mark.slow
def test_server_killed_with_prompts_held_reconciles_them_on_restart(tmp_path_factory):
    """SIGKILL a metered server while one prompt has written its video (and blocks before task_done) and two wait
    in the queue; the restarted server (same ledger, same output folder) commits the first and refunds the others,
    and ``ledger holds`` is empty."""
    base = tmp_path_factory.mktemp("comfyui-killed")
    ledger_url = f"sqlite:///{base / 'ledger.db'}"
    with open_ledger(ledger_url) as ledger:
        ledger.credit("local", BALANCE)
    config = base / "metering.toml"
    config.write_text(f'ledger = "{ledger_url}"\ndefault_key = "local"\ndefault_tier = "standard"\n')
    env = {"SONIC_METERING": str(config)}
    marker = base / "video-written"
    server = ComfyServer(ensure_comfyui(), base)
    try:
        server.start(extra_env=env)
        copy_demo_inputs(server)
        require_sampler(server)
        blocked = sonic_template()
        combine = next(node_id for node_id, node in blocked.items() if node["class_type"] == "SonicVideoCombine")
        blocked["90"] = {"class_type": "SonicProbeHoldAfter", "inputs": {"path": [combine, 1], "marker": str(marker)}}
        ids = []
        for prompt in (blocked, sonic_template(), sonic_template()):
            status, answer = post(server, "/prompt", {"prompt": prompt})
            assert status == 200, answer
            ids.append(answer["prompt_id"])
        deadline = time.monotonic() + 600
        while not marker.exists():
            assert time.monotonic() < deadline and server.process.poll() is None, server.log_tail()
            time.sleep(0.2)
        video = Path(marker.read_text())
        assert video.is_file() and video.parent == server.output_dir
        open_holds = ledger_holds(ledger_url)
        assert [hold["job_id"] for hold in open_holds["holds"]] == ids
        assert open_holds["holds"][0]["output"] == str(video)
        held = open_holds["total"]["tokens"]

        server.kill()
        with open_ledger(ledger_url) as ledger:
            assert ledger.balance("local").held == held  # nothing settled them: the process is gone
        server.start(extra_env=env)
        assert ledger_holds(ledger_url) == {"holds": [], "total": {"jobs": 0, "tokens": 0}}
        with open_ledger(ledger_url) as ledger:
            assert [ledger.charge(job_id).status for job_id in ids] == [COMMITTED, REFUNDED, REFUNDED]
            first = ledger.charge(ids[0])
            assert ledger.balance("local").held == 0
            assert ledger.balance("local").balance == BALANCE - first.tokens
        assert "held" in server.log_tail(100_000) and ids[0] in server.log_tail(100_000)
    finally:
        server.stop()


@pytest.mark.slow
def test_estimate_and_metrics_under_a_bounded_load(metered):
    """100 requests/s for 20 s (estimate and metrics alternately, open loop, at most 64 in flight): every one is
    answered 200 with a priced estimate, and nothing is reserved. The latencies are reported, never judged here
    (bench/load_http.py records them in bench/results/)."""
    server, ledger_url = metered
    with open_ledger(ledger_url) as ledger:
        before = ledger.balance("local")
    report = run_load(server.url, rate=100, seconds=20)
    for path, route in report["routes"].items():
        assert (route["requests"], route["errors"]) == (1000, 0), (path, route["first_errors"], server.log_tail())
    with open_ledger(ledger_url) as ledger:
        assert ledger.balance("local") == before
    print(json.dumps(report))


@pytest.mark.browser
def test_token_meter_shows_the_figure_before_queueing_and_after_the_run(metered, tmp_path):
    server, _ = metered
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium (scripts/apt-packages.txt)")
    browser = ComfyBrowser(server, tmp_path / "chromium-profile")
    shown = ("() => window.app.graph._nodes.find((n) => n.comfyClass === 'SonicTokenMeter')"
             "?.widgets?.find((w) => w.name === 'cost')?.value || ''")
    try:
        browser.open()
        browser.ui_workflow_from_api({"1": {"class_type": "SonicTokenMeter", "inputs": {"tier": "pro"}}})
        browser.page.evaluate("() => { const node = window.app.graph._nodes[0]; node.pos = [320, 160]; "
                              "node.size = [520, 260]; window.app.graph.setDirtyCanvas(true, true); }")
        browser.page.wait_for_function(f"() => ({shown})().includes('tier pro')", timeout=60_000)
        assert browser.page.evaluate(shown).startswith("estimate: 0 tokens (0 Sonic Samplers), tier pro: allowed")
        browser.page.evaluate("() => { const node = window.app.graph._nodes.find((n) => n.comfyClass === "
                              "'SonicTokenMeter'); node.widgets.find((w) => w.name === 'tier').value = 'standard'; }")
        browser.page.wait_for_function(f"() => ({shown})().includes('tier standard')", timeout=30_000)
        assert browser.api_prompt()["1"]["inputs"] == {"tier": "standard"}  # the display is not an input
        entry = browser.queue_and_wait(timeout=120)
        assert entry["status"]["status_str"] == "success"
        browser.page.wait_for_function(f"() => ({shown})().startsWith('last run: 0 tokens')", timeout=30_000)
        browser.screenshot("token_meter")
    finally:
        browser.close()
