"""The pipeline nodes inside a real ComfyUI: model memory freed by POST /free and reloaded, cancel mid-sampling."""

import json

import pytest
from sonic_testing import REPO

from sonic_core.video import probe

pytestmark = pytest.mark.comfyui


def short_basic_prompt(prefix: str, steps: int = 1, duration: float = 0.48) -> dict:
    """workflows/api/sonic_basic.json cut to ``duration`` seconds and ``steps`` steps, saving under ``prefix``."""
    prompt = json.loads((REPO / "workflows" / "api" / "sonic_basic.json").read_text())
    node = {n["class_type"]: n for n in prompt.values()}
    node["SonicPreData"]["inputs"].update(duration=duration, fit="trim")
    node["SonicSampler"]["inputs"]["steps"] = steps
    node["SonicVideoCombine"]["inputs"]["filename_prefix"] = prefix
    return prompt


def video_frames(server, prompt_id: str) -> int:
    outputs = server.history(prompt_id)["outputs"]
    preview = next(out for out in outputs.values() if "animated" in out)["images"][0]
    return probe(server.output_dir / preview["subfolder"] / preview["filename"])["video"]["frames"]


def test_model_memory_is_freed_by_comfyui_and_the_graph_runs_again(comfyui_server):
    prompt = short_basic_prompt("free/Sonic")
    first_id, messages = comfyui_server.run_prompt(prompt)
    assert messages[-1]["type"] == "execution_success", json.dumps(messages[-1])[:2000]
    # unload_models only: "free_memory" also resets ComfyUI's node cache, and whether that happens before or after
    # the next prompt depends on when the worker next wakes up (a race), so the cached Loader could re-run or not
    assert comfyui_server.post("/free", {"unload_models": True})[0] == 200
    second_id, messages = comfyui_server.run_prompt(short_basic_prompt("free/Sonic", steps=2))
    assert messages[-1]["type"] == "execution_success", json.dumps(messages[-1])[:2000]
    ran = [m["data"]["node"] for m in messages if m["type"] == "executing" and m["data"].get("node")]
    assert "4" not in ran and "6" in ran  # the cached Loader's model was reloaded, not rebuilt
    assert video_frames(comfyui_server, first_id) == video_frames(comfyui_server, second_id) == 6


def test_cancel_during_sampling_is_an_interrupt_and_writes_nothing(comfyui_server):
    prompt = short_basic_prompt("cancelled_sampling/Sonic", steps=20)
    pressed = []

    def cancel_on_first_step(message):
        if message["type"] == "progress" and message["data"].get("node") == "6" and not pressed:
            pressed.append(message["data"]["value"])
            assert comfyui_server.post("/interrupt", {})[0] == 200

    _, messages = comfyui_server.run_prompt(prompt, on_message=cancel_on_first_step)
    assert messages[-1]["type"] == "execution_interrupted", json.dumps(messages[-1])[:2000]
    assert pressed and pressed[0] < 20
    assert not any((comfyui_server.output_dir / "cancelled_sampling").glob("*"))
