"""Fuzzing (hypothesis) of what users and clients send: settings, graphs for pricing and ``POST /sonic/estimate``,
and AUDIO/IMAGE values for the nodes. Whatever comes in, the answer is a result or ONE :class:`SonicError` line:
never another exception, a traceback, a 500, or held tokens.

The examples are derandomized (the same ones every run, so CI never flakes) and add up to
``sum(EXAMPLES.values())`` (over 10,000); a failing example is printed by hypothesis as a reproducible case.
"""

from __future__ import annotations

import asyncio
import copy
import importlib
import math

import pytest
import torch
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sonic_testing import SPEECH, assert_one_line, basic_prompt, load_pack, pack_nodes, run_node, seconds_of

from sonic_core import node_ids
from sonic_core.errors import SonicError, SonicInputError
from sonic_core.metering.enforcement import Meter, MeteringConfig
from sonic_core.metering.graph_pricing import GraphCost, price_graph
from sonic_core.metering.ledger import open_ledger
from sonic_core.settings import SonicSettings
from sonic_core.tokens import settings_tokens

pytestmark = pytest.mark.slow

EXAMPLES = {"settings": 4600, "graphs": 4000, "estimate_route": 1200, "audio_nodes": 150, "image_nodes": 120}
assert sum(EXAMPLES.values()) >= 10_000


def fuzz(name: str) -> settings:
    return settings(max_examples=EXAMPLES[name], deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def refused_or_done(call):
    """``call()``'s result, or the :class:`SonicError` it raised after checking that its message is one line."""
    try:
        return call()
    except SonicError as exc:
        assert_one_line(str(exc))
        return exc


# --- values a hostile or careless client sends ---------------------------------------------------------------------

# Numbers JSON can carry (Python's json refuses integers of more than 4300 digits, so no graph holds one) ...
JSON_NUMBERS = st.one_of(st.integers(), st.integers(min_value=-(2**2000), max_value=2**2000),
                         st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([0, -1, 1e308, -0.0, 2**64]))
# ... and what a Python caller can pass as well: integers beyond text conversion and the float range.
NUMBERS = st.one_of(JSON_NUMBERS, st.integers(4300, 5000).map(lambda digits: 10**digits))
TEXTS = st.one_of(st.text(max_size=12),
                  st.sampled_from(["auto", "nan", "inf", "1e400", "25", "", "\n", "\x00", "../../etc/passwd"]))
SCALARS = st.one_of(st.none(), st.booleans(), NUMBERS, TEXTS)
JSON_SCALARS = st.one_of(st.none(), st.booleans(), JSON_NUMBERS, TEXTS)
JSON_VALUES = st.recursive(JSON_SCALARS,
                           lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                   st.dictionaries(st.text(max_size=6), inner, max_size=3)),
                           max_leaves=8)


# --- settings and the token formula ---------------------------------------------------------------------------------

KNOBS = [SonicSettings.knob(name) for name in SonicSettings.knob_names()]


def in_range(knob) -> st.SearchStrategy:
    if knob.type is bool:
        return st.booleans()
    low = knob.min if knob.min is not None else -1e6
    high = knob.max if knob.max is not None else 1e6
    if knob.type is int:
        return st.integers(int(low), int(high))
    return st.floats(low, high)


KNOB_CHANGES = st.dictionaries(st.sampled_from([knob.name for knob in KNOBS]), st.just(None), max_size=6).flatmap(
    lambda chosen: st.fixed_dictionaries({name: st.one_of(in_range(SonicSettings.knob(name)), SCALARS)
                                          for name in chosen}))


@fuzz("settings")
@given(changes=KNOB_CHANGES, duration=st.one_of(NUMBERS, st.floats(0.01, 7200)))
def test_any_settings_are_valid_or_one_line_naming_the_knob(changes, duration):
    made = refused_or_done(lambda: SonicSettings(**changes))
    if isinstance(made, SonicError):
        assert isinstance(made, SonicInputError) and any(name in str(made) for name in changes), made
        return
    for knob in KNOBS:
        value = getattr(made, knob.name)
        if knob.min is not None and isinstance(value, (int, float)) and not isinstance(value, bool):
            assert knob.min <= value <= knob.max, (knob.name, value)
    tokens = refused_or_done(lambda: settings_tokens(made, duration))
    assert isinstance(tokens, SonicInputError) or (isinstance(tokens, int) and tokens >= 0), tokens


# --- graphs: the basic template, mutated -----------------------------------------------------------------------------

CLASS_TYPES = st.sampled_from([node_ids.SAMPLER, node_ids.PREDATA, node_ids.LOADER, node_ids.LOAD_AUDIO_DURATION,
                               node_ids.CORE_LOAD_AUDIO, node_ids.TOKEN_METER, "LoadImage", "Unknown"])
NODE_IDS = st.sampled_from(["1", "2", "3", "4", "5", "6", "99", "x", ""])
LINKS = st.tuples(NODE_IDS, st.one_of(st.integers(-1, 3), JSON_SCALARS)).map(list)
INPUT_NAMES = st.sampled_from(["weights", "dtype", "device", "image", "audio", "audio_file", "duration",
                               "min_resolution", "expand_ratio", "model", "predata", "steps", "dynamic_scale",
                               "motion_scale", "seed", "fps", "other"])
MUTATIONS = st.one_of(
    st.tuples(st.just("input"), NODE_IDS, INPUT_NAMES, st.one_of(LINKS, JSON_VALUES, st.floats(0, 4000))),
    st.tuples(st.just("class"), NODE_IDS, CLASS_TYPES),
    st.tuples(st.just("inputs"), NODE_IDS, JSON_VALUES),
    st.tuples(st.just("node"), NODE_IDS, JSON_VALUES),
    st.tuples(st.just("copy"), NODE_IDS, NODE_IDS),
    st.tuples(st.just("delete"), NODE_IDS),
)


def mutated(changes: list[tuple]) -> dict:
    prompt = basic_prompt()
    for change in changes:
        kind, node_id = change[0], change[1]
        node = prompt.get(node_id)
        if kind == "input" and isinstance(node, dict) and isinstance(node.get("inputs"), dict):
            node["inputs"][change[2]] = change[3]
        elif kind == "class" and isinstance(node, dict):
            node["class_type"] = change[2]
        elif kind == "inputs" and isinstance(node, dict):
            node["inputs"] = change[2]
        elif kind == "node":
            prompt[node_id] = change[2]
        elif kind == "copy" and node is not None:
            prompt[change[2]] = copy.deepcopy(node)
        elif kind == "delete":
            prompt.pop(node_id, None)
    return prompt


GRAPHS = st.one_of(st.lists(MUTATIONS, max_size=5).map(mutated), JSON_VALUES)


@fuzz("graphs")
@given(graph=GRAPHS, tier=st.sampled_from(["free", "standard", "pro", "api", "nope"]))
def test_any_graph_is_priced_or_refused_with_one_line(graph, tier):
    cost = refused_or_done(lambda: price_graph(graph, tier=tier, audio_duration=seconds_of))
    if isinstance(cost, GraphCost):
        assert cost.total_tokens >= 0 and all(job.tokens >= 0 for job in cost.jobs)
        cost.to_dict(), cost.summary()
    else:
        assert isinstance(cost, SonicInputError), cost


# --- POST /sonic/estimate on a real aiohttp server, the real input-folder audio reader -------------------------------

pack = load_pack()
hooks = importlib.import_module(f"{pack.__name__}.nodes.server_hooks")
cost_module = importlib.import_module(f"{pack.__name__}.nodes.cost")


@pytest.fixture(scope="module")
def estimate_client(tmp_path_factory):
    """One event loop and one server for every example: a metered Meter whose ledger must stay untouched."""
    root = tmp_path_factory.mktemp("comfy-root")
    for folder in ("input", "output", "temp"):
        (root / folder).mkdir()
    (root / "input" / "speech.wav").write_bytes(SPEECH.read_bytes())
    with pytest.MonkeyPatch.context() as patch, open_ledger(f"sqlite:///{root / 'ledger.db'}") as ledger:
        patch.setenv("SONIC_COMFY_ROOT", str(root))
        ledger.credit("local", 10_000)
        meter = Meter(MeteringConfig(enforce=True, default_key="local", default_tier="standard",
                                     keys={"k-pro": "pro"}),
                      audio_duration=cost_module.input_audio_seconds, ledger=ledger)
        app = web.Application()
        app.router.add_post("/sonic/estimate", hooks.estimate_handler(meter))
        loop = asyncio.new_event_loop()
        client = TestClient(TestServer(app), loop=loop)
        loop.run_until_complete(client.start_server())
        try:
            yield loop, client, ledger
        finally:
            loop.run_until_complete(client.close())
            loop.close()


BODIES = st.one_of(GRAPHS, st.fixed_dictionaries({"prompt": GRAPHS}, optional={"tier": JSON_SCALARS,
                                                                                 "extra_data": JSON_VALUES}))


@fuzz("estimate_route")
@given(body=BODIES, key=st.one_of(st.none(), st.sampled_from(["k-pro", "k-unknown", ""])))
def test_estimate_route_answers_every_body_without_a_500(estimate_client, body, key):
    loop, client, ledger = estimate_client
    headers = {} if key is None else {"X-Sonic-Key": key}

    async def ask():
        response = await client.post("/sonic/estimate", json=body, headers=headers)
        return response.status, await response.json()

    status, answer = loop.run_until_complete(ask())
    assert status in (200, 400, 401, 403), (status, answer)
    if status != 200:
        assert_one_line(answer["error"]["message"])
    balance = ledger.balance("local")
    assert (balance.balance, balance.held) == (10_000, 0)


# --- AUDIO and IMAGE values into the nodes (executed as ComfyUI executes them) ----------------------------------------

DTYPES = st.sampled_from([torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.int16, torch.uint8,
                          torch.bool])
FILLS = st.sampled_from(["rand", "zeros", "ones", "nan", "inf", "huge", "negative"])


@st.composite
def tensors(draw, shape: st.SearchStrategy) -> torch.Tensor:
    size, dtype, fill = draw(shape), draw(DTYPES), draw(FILLS)
    generator = torch.Generator().manual_seed(draw(st.integers(0, 2**16)))
    values = {"rand": lambda: torch.rand(size, generator=generator), "zeros": lambda: torch.zeros(size),
              "ones": lambda: torch.ones(size), "nan": lambda: torch.full(size, math.nan),
              "inf": lambda: torch.full(size, math.inf), "huge": lambda: torch.full(size, 3e38),
              "negative": lambda: -torch.rand(size, generator=generator)}[fill]()
    return values.to(dtype)


ANY_SHAPES = st.lists(st.integers(0, 6), max_size=5).map(tuple)
WAVEFORM_SHAPES = st.tuples(st.integers(1, 2), st.integers(1, 2), st.integers(0, 4000))
AUDIO_VALUES = st.one_of(
    st.fixed_dictionaries({"waveform": tensors(WAVEFORM_SHAPES),
                           "sample_rate": st.one_of(st.sampled_from([8000, 16000, 44100]), SCALARS)}),
    st.fixed_dictionaries({}, optional={"waveform": st.one_of(tensors(ANY_SHAPES), JSON_VALUES),
                                        "sample_rate": SCALARS}),
    JSON_VALUES)
IMAGE_SHAPES = st.tuples(st.integers(0, 3), st.integers(0, 40), st.integers(0, 40), st.sampled_from([3, 3, 1, 4]))
IMAGE_VALUES = st.one_of(tensors(IMAGE_SHAPES), tensors(ANY_SHAPES), JSON_VALUES)
SPEECH_AUDIO = {"waveform": torch.rand(1, 1, 8000) - 0.5, "sample_rate": 16000}


@pytest.fixture(scope="module")
def nodes(tmp_path_factory):
    root = tmp_path_factory.mktemp("comfy-nodes")
    for folder in ("input", "output", "temp"):
        (root / folder).mkdir()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SONIC_COMFY_ROOT", str(root))
        yield pack_nodes(pack)


@fuzz("audio_nodes")
@given(audio=AUDIO_VALUES, requested=st.one_of(NUMBERS, st.floats(0, 10)), images=IMAGE_VALUES,
       fps=st.one_of(NUMBERS, st.floats(1, 60)), which=st.sampled_from(["duration", "align"]))
def test_audio_nodes_take_any_audio(nodes, audio, requested, images, fps, which):
    if which == "duration":
        refused_or_done(lambda: run_node(nodes[node_ids.LOAD_AUDIO_DURATION], audio=audio,
                                         requested_duration=requested))
    else:
        refused_or_done(lambda: run_node(nodes[node_ids.LIPSYNC_ALIGN], images=images, audio=audio, fps=fps))


@fuzz("image_nodes")
@given(image=IMAGE_VALUES, fps=st.one_of(NUMBERS, st.floats(1, 60)),
       strength=st.one_of(st.text(max_size=12), st.sampled_from(["auto", "nan", "inf", "-1", "2", "1e400", ""]),
                          st.floats(0, 1).map(str)),
       target_fps=st.one_of(NUMBERS, st.floats(0, 60)), which=st.sampled_from(["predata", "smooth"]))
def test_image_nodes_take_any_image(nodes, image, fps, strength, target_fps, which):
    if which == "predata":
        refused_or_done(lambda: run_node(nodes[node_ids.PREDATA], image=image, audio=SPEECH_AUDIO, min_resolution=256))
    else:
        refused_or_done(lambda: run_node(nodes[node_ids.MOTION_SMOOTH], images=image, fps=fps, strength=strength,
                                         target_fps=target_fps))
