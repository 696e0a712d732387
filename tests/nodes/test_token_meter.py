"""The Sonic Token Meter node in plain Python (stub folder_paths): prices the prompt it is part of."""

from __future__ import annotations

import importlib
import shutil
from types import SimpleNamespace

import pytest
from sonic_testing import REPO, basic_prompt, load_pack, run_node

from sonic_core.audio import audio_duration
from sonic_core.errors import SonicInputError
from sonic_core.tokens import estimate_tokens

cost = importlib.import_module(f"{load_pack().__name__}.nodes.cost")
SPEECH = REPO / "sonic_core" / "assets" / "speech.wav"


@pytest.fixture
def comfy_root(tmp_path, monkeypatch):
    (tmp_path / "input").mkdir()
    shutil.copy(SPEECH, tmp_path / "input" / "speech.wav")
    monkeypatch.setenv("SONIC_COMFY_ROOT", str(tmp_path))
    return tmp_path


def test_token_meter_prices_the_whole_prompt(comfy_root):
    prompt = basic_prompt(steps=25) | {"9": {"class_type": "SonicTokenMeter", "inputs": {"tier": "pro"}}}
    output = run_node(cost.SonicTokenMeter, {cost.io.Hidden.prompt: prompt}, tier="pro")
    tokens, report = output.args
    assert tokens == estimate_tokens(audio_duration(SPEECH), 512, 25)
    assert report.startswith(f"{tokens} tokens (1 Sonic Sampler), tier pro: allowed")
    (shown,) = output.ui[cost.UI_KEY]
    assert shown["total_tokens"] == tokens and shown["summary"] == report and shown["jobs"][0]["node_id"] == "5"
    assert shown["device"] == "this server's CPU" and shown["jobs"][0]["predicted_profile"] == "cpu/fp32/tiny"


def test_tier_choices_are_the_configured_tiers():
    (kind, options) = cost.SonicTokenMeter.INPUT_TYPES()["required"]["tier"]
    assert kind == "COMBO" and options["options"] == ["api", "pro", "standard"] and options["default"] == "standard"


def test_audio_outside_comfyuis_folders_is_refused(comfy_root):
    assert cost.input_audio_seconds("speech.wav") == pytest.approx(audio_duration(SPEECH))
    assert cost.input_audio_seconds("speech.wav [input]") == pytest.approx(audio_duration(SPEECH))
    with pytest.raises(SonicInputError, match="outside ComfyUI's input, output and temp folders"):
        cost.input_audio_seconds(f"../{comfy_root.name}-elsewhere/x.wav")
    with pytest.raises(SonicInputError, match="outside"):
        cost.input_audio_seconds(str(SPEECH))


@pytest.mark.parametrize("name, sms, compute, profile, says", [
    ("NVIDIA H100 80GB HBM3", 132, (9, 0), "h100", "its own h100 profile"),
    ("NVIDIA RTX 6000 Ada Generation", 142, (8, 9), "a100", "not in the cost model: priced as A100-class"),
])
def test_the_server_gpu_is_priced_by_its_profile_or_its_properties(monkeypatch, name, sms, compute, profile, says):
    """ComfyUI's device as a CUDA card: the meter's profile and its 'device' line come from the card itself."""
    import torch

    card = SimpleNamespace(name=name, total_memory=48 * 1024 ** 3, multi_processor_count=sms, major=compute[0],
                           minor=compute[1])
    monkeypatch.setattr(cost, "torch_device", lambda: torch.device("cuda", 0))
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device: card)
    cost.server_pricing.cache_clear()
    try:
        assert cost.prediction_device() == (profile, "fp16")
        assert cost.device_note().startswith(name) and says in cost.device_note()
    finally:
        cost.server_pricing.cache_clear()


def test_token_meter_shows_the_memory_plan_each_sampler_gets(comfy_root, monkeypatch):
    """Without a device budget (a CPU outside ComfyUI) the plan changes nothing; under ComfyUI's free-memory figure
    (here a 1 MB one, below what the tiny model needs) it says which budget would work."""
    prompt = basic_prompt(steps=25) | {"9": {"class_type": "SonicTokenMeter", "inputs": {"tier": "pro"}}}
    report = run_node(cost.SonicTokenMeter, {cost.io.Hidden.prompt: prompt}, tier="pro").args[1]
    assert report.splitlines()[1].startswith("node 5 memory: no budget: 3 guidance slots")
    monkeypatch.setattr(cost, "free_memory", lambda: 10**6)
    output = run_node(cost.SonicTokenMeter, {cost.io.Hidden.prompt: prompt}, tier="pro")
    (shown,) = output.ui[cost.UI_KEY]
    assert shown["memory_plans"] == output.args[1].splitlines()[1:]
    assert "--memory-budget 0.00 GB is below" in shown["memory_plans"][0]
