"""Bad prompts through the HTTP routes (``POST /prompt`` with enforcement, ``POST /sonic/estimate``), over real
aiohttp requests without ComfyUI: a 400 whose message is one line naming the node or file, nothing queued, no
tokens held; the audio length comes from the real input-folder reader."""

from __future__ import annotations

import asyncio
import importlib
import math

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from sonic_testing import SPEECH, assert_one_line, basic_prompt, load_pack

from sonic_core.metering.enforcement import Meter, MeteringConfig
from sonic_core.metering.ledger import open_ledger

pack = load_pack()
hooks = importlib.import_module(f"{pack.__name__}.nodes.server_hooks")
cost = importlib.import_module(f"{pack.__name__}.nodes.cost")


@pytest.fixture
def comfy_root(tmp_path, monkeypatch):
    monkeypatch.setenv("SONIC_COMFY_ROOT", str(tmp_path))
    for folder in ("input", "output", "temp"):
        (tmp_path / folder).mkdir()
    (tmp_path / "input" / "speech.wav").write_bytes(SPEECH.read_bytes())
    return tmp_path


@pytest.fixture
def ledger(tmp_path):
    with open_ledger(f"sqlite:///{tmp_path / 'ledger.db'}") as opened:
        opened.credit("local", 10_000)
        yield opened


def post(meter: Meter, path: str, body) -> tuple[int, dict, list]:
    """POST ``body`` through the metering middleware (or to the estimate route); the queue is the list of bodies
    that reached ComfyUI's own handler."""
    queued = []

    async def comfy_prompt(request):
        queued.append(await request.json())
        return web.json_response({"prompt_id": "x"})

    async def main():
        app = web.Application(middlewares=[hooks.metering_middleware(meter)])
        app.router.add_post("/prompt", comfy_prompt)
        app.router.add_post("/sonic/estimate", hooks.estimate_handler(meter))
        async with TestClient(TestServer(app)) as client:
            response = await client.post(path, json=body)
            return response.status, await response.json()

    status, answer = asyncio.run(main())
    return status, answer, queued


def with_cycle(prompt):
    prompt["3"] = {"class_type": "SonicLoadAudioDuration", "inputs": {"audio": ["6", 0], "audio_file": "none"}}
    prompt["6"] = {"class_type": "SonicLoadAudioDuration", "inputs": {"audio": ["3", 0], "audio_file": "none"}}


ROUTE_ERRORS = [
    ("audio never uploaded", lambda p: p["3"]["inputs"].update(audio="never_uploaded.wav"), "never_uploaded.wav"),
    ("audio outside the folders", lambda p: p["3"]["inputs"].update(audio="../../etc/passwd"), "outside"),
    ("audio is a folder", lambda p: p["3"]["inputs"].update(audio="."), "is a directory"),
    ("link cycle", with_cycle, "3 -> 6 -> 3"),
    ("inputs not an object", lambda p: p["5"].update(inputs=["x"]), "node 5"),
    ("huge steps", lambda p: p["5"]["inputs"].update(steps=1e308), "steps"),
    ("nan duration", lambda p: p["4"]["inputs"].update(duration=math.nan), "duration"),
]


@pytest.mark.parametrize("change, needle", [case[1:] for case in ROUTE_ERRORS], ids=[case[0] for case in ROUTE_ERRORS])
@pytest.mark.parametrize("path", ["/prompt", "/sonic/estimate"])
def test_unpriceable_prompts_are_refused_with_one_line(comfy_root, ledger, path, change, needle):
    meter = Meter(MeteringConfig(enforce=True, default_key="local", default_tier="standard"),
                  audio_duration=cost.input_audio_seconds, ledger=ledger)
    prompt = basic_prompt()
    change(prompt)
    status, answer, queued = post(meter, path, {"prompt": prompt})
    assert status == 400, answer
    assert_one_line(answer["error"]["message"], needle)
    assert queued == [] and meter.pending() == set()
    balance = ledger.balance("local")
    assert (balance.balance, balance.held) == (10_000, 0)


def test_the_same_prompt_with_its_audio_uploaded_is_admitted(comfy_root, ledger):
    meter = Meter(MeteringConfig(enforce=True, default_key="local", default_tier="standard"),
                  audio_duration=cost.input_audio_seconds, ledger=ledger)
    status, _, queued = post(meter, "/prompt", {"prompt": basic_prompt()})
    assert status == 200 and len(queued) == 1 and ledger.balance("local").held > 0
