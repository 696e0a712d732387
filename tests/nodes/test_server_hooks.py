"""nodes/server_hooks.py over real aiohttp requests, without ComfyUI.

The app stands in for ComfyUI's PromptServer only where the hooks attach: ``post_prompt`` below reproduces what
ComfyUI 0.3.75's handler does with the body (on-prompt handlers, its prompt id, a 400 for a graph it rejects) and
the queue is a small object with PromptQueue's method names. The real server is exercised in
comfyui/test_comfyui_metering.py.
"""

from __future__ import annotations

import asyncio
import importlib
import threading
import uuid
from types import SimpleNamespace

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.parser import text_string_to_metric_families
from sonic_testing import basic_prompt, load_pack, seconds_of

from sonic_core.metering.enforcement import Meter, MeteringConfig
from sonic_core.metering.ledger import COMMITTED, REFUNDED, RESERVED, open_ledger

hooks = importlib.import_module(f"{load_pack().__name__}.nodes.server_hooks")


class Queue:
    """The PromptQueue surface the hooks wrap: get, task_done, wipe_queue, delete_queue_item, mutex, queue."""

    def __init__(self) -> None:
        self.mutex = threading.RLock()
        self.queue: list[tuple] = []
        self.currently_running: dict[int, tuple] = {}
        self.counter = 0

    def put(self, item: tuple) -> None:
        with self.mutex:
            self.queue.append(item)

    def get(self, timeout=None):
        with self.mutex:
            if not self.queue:
                return None
            item = self.queue.pop(0)
            self.counter += 1
            self.currently_running[self.counter] = item
            return item, self.counter

    def task_done(self, item_id, history_result, status, process_item=None):
        with self.mutex:
            self.currently_running.pop(item_id)

    def wipe_queue(self):
        with self.mutex:
            self.queue = []

    def delete_queue_item(self, function):
        with self.mutex:
            for index, item in enumerate(self.queue):
                if function(item):
                    if len(self.queue) == 1:
                        self.wipe_queue()
                    else:
                        self.queue.pop(index)
                    return True
        return False


class Server:
    """Where PromptServer exposes what install() uses: routes, app, add_on_prompt_handler, prompt_queue."""

    def __init__(self) -> None:
        self.routes = web.RouteTableDef()
        self.app = web.Application()
        self.prompt_queue = Queue()
        self.on_prompt_handlers = []
        self.routes.post("/prompt")(self.post_prompt)
        self.routes.post("/api/prompt")(self.post_prompt)  # ComfyUI serves every route under /api too

    def add_on_prompt_handler(self, handler):
        self.on_prompt_handlers.append(handler)

    async def post_prompt(self, request):
        json_data = await request.json()
        for handler in self.on_prompt_handlers:
            try:
                json_data = handler(json_data)
            except Exception:  # ComfyUI only logs a failing on-prompt handler
                pass
        if "prompt" not in json_data:
            return web.json_response({"error": {"type": "no_prompt", "message": "No prompt provided"}}, status=400)
        if any(node.get("class_type") == "Broken" for node in json_data["prompt"].values()):
            return web.json_response({"error": {"type": "invalid_prompt", "message": "invalid"}}, status=400)
        prompt_id = str(json_data.get("prompt_id", uuid.uuid4()))
        self.prompt_queue.put((0, prompt_id, json_data["prompt"], json_data.get("extra_data", {}), [], {}))
        return web.json_response({"prompt_id": prompt_id, "number": 0, "node_errors": {}})


@pytest.fixture
def ledger(tmp_path):
    with open_ledger(f"sqlite:///{tmp_path / 'ledger.db'}") as opened:
        opened.credit("local", 1000)
        yield opened


def serve(meter: Meter, scenario) -> None:
    """Install the hooks on a fresh app and run ``scenario(client, server)`` against it over HTTP."""
    async def main():
        server = Server()
        hooks.install(server, meter)
        server.app.add_routes(server.routes)
        async with TestClient(TestServer(server.app)) as client:
            await scenario(client, server)
    asyncio.run(main())


def enforced_meter(ledger) -> Meter:
    config = MeteringConfig(enforce=True, default_key="local", default_tier="standard", keys={"k-pro-1": "pro"})
    return Meter(config, audio_duration=seconds_of, ledger=ledger)


def status(outcome: str):
    messages = [("execution_start", {}), ("execution_interrupted", {})] if outcome == "interrupted" else []
    return SimpleNamespace(status_str="success" if outcome == "success" else "error", messages=messages)


def run_next(server: Server, outcome: str) -> str:
    item, item_id = server.prompt_queue.get()
    server.prompt_queue.task_done(item_id, {}, status(outcome))
    return item[1]


def test_refused_prompt_never_reaches_the_queue_and_the_client_sees_why(ledger):
    async def scenario(client, server):
        response = await client.post("/prompt", json={"prompt": basic_prompt(duration=10.0, resolution=1024)})
        body = await response.json()
        assert response.status == 403
        assert body["error"]["type"] == "sonic_metering" and "1024 px is above the tier's 768 px" in \
            body["error"]["message"] and body["node_errors"] == {}
        response = await client.post("/prompt", json={"prompt": basic_prompt(duration=120.0)},
                                     headers={"X-Sonic-Key": "k-pro-1"})
        assert response.status == 402 and "needs 1200 tokens" in (await response.json())["error"]["message"]
        assert server.prompt_queue.queue == []
    serve(enforced_meter(ledger), scenario)
    assert ledger.balance("local").balance == 1000 and ledger.balance("local").held == 0


def test_admitted_prompt_is_queued_under_the_reserved_id_and_committed(ledger):
    async def scenario(client, server):
        body = {"prompt": basic_prompt(duration=10.0), "extra_data": {"sonic_api_key": "local", "x": 1}}
        response = await client.post("/prompt", json=body)
        answer = await response.json()
        assert response.status == 200
        (queued,) = server.prompt_queue.queue
        assert queued[1] == answer["prompt_id"] and queued[3] == {"x": 1}  # the key stays out of queue/history
        assert ledger.charge(answer["prompt_id"]).status == RESERVED
        assert run_next(server, "success") == answer["prompt_id"]
        assert ledger.charge(answer["prompt_id"]).status == COMMITTED
        # a prompt with its own id keeps it
        response = await client.post("/api/prompt", json={"prompt": basic_prompt(duration=5.0), "prompt_id": "p-7"})
        assert (await response.json())["prompt_id"] == "p-7" and ledger.charge("p-7").tokens == 50
    serve(enforced_meter(ledger), scenario)
    assert (ledger.balance("local").balance, ledger.balance("local").spent) == (850, 100)


@pytest.mark.parametrize("outcome", ["error", "interrupted"])
def test_failed_or_interrupted_run_is_refunded(ledger, outcome):
    async def scenario(client, server):
        response = await client.post("/prompt", json={"prompt": basic_prompt(duration=10.0)})
        prompt_id = (await response.json())["prompt_id"]
        run_next(server, outcome)
        assert ledger.charge(prompt_id).status == REFUNDED
        metrics = await (await client.get("/sonic/metrics")).text()
        families = {f.name: f for f in text_string_to_metric_families(metrics)}
        assert {s.labels["reason"]: s.value for s in families["sonic_failures"].samples
                if s.name == "sonic_failures_total"} == {outcome: 1}
    serve(enforced_meter(ledger), scenario)
    assert ledger.balance("local").balance == 1000


def test_graph_rejected_by_comfyui_and_cancelled_prompts_are_refunded(ledger):
    async def scenario(client, server):
        broken = basic_prompt(duration=10.0) | {"9": {"class_type": "Broken", "inputs": {}}}
        assert (await client.post("/prompt", json={"prompt": broken})).status == 400
        ids = []
        for _ in range(3):
            ids.append((await (await client.post("/prompt", json={"prompt": basic_prompt(duration=1.0)})).json())
                       ["prompt_id"])
        assert ledger.balance("local").held == 30
        server.prompt_queue.delete_queue_item(lambda item: item[1] == ids[0])
        server.prompt_queue.wipe_queue()
        assert {ledger.charge(i).status for i in ids} == {REFUNDED}
    serve(enforced_meter(ledger), scenario)
    assert (ledger.balance("local").balance, ledger.balance("local").held) == (1000, 0)


def test_estimate_route_prices_without_queueing(ledger):
    async def scenario(client, server):
        graph = basic_prompt(duration=10.0, resolution=1024, steps=25)
        answer = await (await client.post("/sonic/estimate", json=graph)).json()
        assert (answer["total_tokens"], answer["tier"], answer["allowed"]) == (500, "standard", False)
        assert answer["available_tokens"] == 1000 and answer["enforced"] and answer["jobs"][0]["node_id"] == "5"
        answer = await (await client.post("/sonic/estimate", json={"prompt": graph, "tier": "pro"})).json()
        assert answer["allowed"] and answer["summary"].startswith("500 tokens (1 Sonic Sampler), tier pro")
        response = await client.post("/sonic/estimate", headers={"X-Sonic-Key": "k-pro-1"}, json={"prompt": graph})
        assert (await response.json())["tier"] == "pro"
        unpriceable = basic_prompt() | {"3": {"class_type": "SomeTextToSpeech", "inputs": {}}}
        response = await client.post("/sonic/estimate", json=unpriceable)
        assert response.status == 400 and "node 4 (SonicPreData)" in (await response.json())["error"]["message"]
        response = await client.post("/sonic/estimate", json={"prompt": graph, "tier": "gold"})
        assert response.status == 400 and "unknown tier 'gold'" in (await response.json())["error"]["message"]
        assert server.prompt_queue.queue == []
    serve(enforced_meter(ledger), scenario)
    assert ledger.balance("local").held == 0


def test_not_enforced_lets_everything_through_and_still_counts(ledger):
    meter = Meter(MeteringConfig(), audio_duration=seconds_of)

    async def scenario(client, server):
        response = await client.post("/prompt", json={"prompt": basic_prompt(duration=30.0, resolution=1280)})
        assert response.status == 200
        text = await (await client.get("/sonic/metrics")).text()
        values = {s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples}
        assert values["sonic_queued_tokens"] == 1875 and values["sonic_tokens_total"] == 1875
        run_next(server, "success")
        text = await (await client.get("/sonic/metrics")).text()
        values = {s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples}
        assert values["sonic_queued_tokens"] == 0 and values["sonic_job_seconds_count"] == 1
    serve(meter, scenario)


def test_without_the_middleware_an_enforced_server_fails_closed(ledger):
    handler = hooks.on_prompt_handler(enforced_meter(ledger))
    assert "prompt" not in handler({"prompt": basic_prompt(duration=10.0)})


def test_broken_config_refuses_every_prompt(tmp_path, monkeypatch):
    bad = tmp_path / "metering.toml"
    bad.write_text("default_tier = 'gold'")
    monkeypatch.setenv("SONIC_METERING", str(bad))

    async def main():
        server = Server()
        assert hooks.register(server) is None
        server.app.add_routes(server.routes)
        async with TestClient(TestServer(server.app)) as client:
            response = await client.post("/prompt", json={"prompt": basic_prompt()})
            assert response.status == 503 and "unknown tier 'gold'" in (await response.json())["error"]["message"]
            assert server.prompt_queue.queue == []
    asyncio.run(main())


def test_failing_ledger_refuses_instead_of_running_unmetered(tmp_path):
    path = tmp_path / "ledger.db"
    ledger = open_ledger(f"sqlite:///{path}")
    path.unlink()
    path.mkdir()  # the file is gone from under the server: every new connection fails with sqlite3's error
    config = MeteringConfig(enforce=True, default_key="local", default_tier="standard")
    meter = Meter(config, audio_duration=seconds_of, ledger=ledger)

    async def scenario(client, server):
        response = await client.post("/prompt", json={"prompt": basic_prompt(duration=10.0)})
        answer = await response.json()
        assert response.status == 503 and "Sonic metering is unavailable" in answer["error"]["message"]
        response = await client.post("/prompt", json={"prompt": basic_prompt(), "extra_data": ["not", "a", "map"]})
        assert response.status == 503  # a malformed extra_data is no reason to skip the ledger
        assert server.prompt_queue.queue == [] and meter.pending() == set()
        text = await (await client.get("/sonic/metrics")).text()
        values = {(s.name, tuple(s.labels.values())): s.value for f in text_string_to_metric_families(text)
                  for s in f.samples}
        assert values[("sonic_refusals_total", ("unavailable",))] == 2 and values[("sonic_queued_tokens", ())] == 0
    serve(meter, scenario)


def test_a_second_import_of_the_pack_reuses_the_installed_meter(tmp_path, monkeypatch):
    config = tmp_path / "metering.toml"
    config.write_text('default_key = "local"\ndefault_tier = "standard"\n')
    monkeypatch.setenv("SONIC_METERING", str(config))
    server = Server()
    meter = hooks.register(server)
    middlewares, handlers = len(server.app.middlewares), len(server.on_prompt_handlers)
    assert meter is not None and hooks.register(server) is meter  # e.g. the test probe pack imports it again
    assert (len(server.app.middlewares), len(server.on_prompt_handlers)) == (middlewares, handlers)
