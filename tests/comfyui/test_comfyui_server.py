"""The pack inside a real ComfyUI 0.3.75 server (V3 schema path): /object_info, POST /prompt, /ws, /history."""

import json
import time
import urllib.parse
import urllib.request

import pytest
from sonic_testing import REPO, load_pack

from sonic_core.video import probe

pytestmark = pytest.mark.comfyui

API_WORKFLOWS = sorted((REPO / "workflows" / "api").glob("*.json"))
SPEECH_SECONDS = 105508 / 16000


def blank_video_prompt(size: int, frames: int, prefix: str, **combine: object) -> dict:
    """EmptyImage (node "1") → SonicVideoCombine (node "2"), Combine's defaults unless overridden."""
    inputs = {"images": ["1", 0], "fps": 25.0, "format": "mp4 (h264 + aac)", "crf": 18, "pix_fmt": "yuv420p",
              "filename_prefix": prefix, **combine}
    return {"1": {"class_type": "EmptyImage",
                  "inputs": {"width": size, "height": size, "batch_size": frames, "color": 0}},
            "2": {"class_type": "SonicVideoCombine", "inputs": inputs}}


def expected_nodes() -> dict:
    """The node declarations of the pack (the same specs the server builds its V3 classes from)."""
    return {node_id: cls.SONIC_SPEC for node_id, cls in load_pack().NODE_CLASS_MAPPINGS.items()}


def test_object_info_lists_every_node_with_its_declared_sockets(comfyui_server):
    info = comfyui_server.get("/object_info")
    assert "LoadAudio" in info and "EmptyImage" in info  # core nodes (audio ones need the torchaudio stub)
    specs = expected_nodes()
    assert {k for k, v in info.items() if v["python_module"].endswith("comfyui-sonic")} == set(specs)
    for node_id, spec in specs.items():
        node = info[node_id]
        assert node["display_name"] == spec.display_name and node["category"] == spec.category
        assert node["api_node"] is False  # the V3 schema's field: the server built V3 classes
        declared = {**node["input"]["required"], **node["input"].get("optional", {})}
        assert list(declared) == [p.name for p in spec.inputs]
        for param in spec.inputs:
            kind, options = declared[param.name]
            assert kind == param.kind
            assert set(node["input"]["optional" if param.optional else "required"]) >= {param.name}
            if param.kind == "COMBO":
                assert options["options"][:len(param.option_list())] == param.option_list()
            if param.default is not None:
                assert options["default"] == param.default
        assert node["output"] == [o.kind for o in spec.outputs]
        assert node["output_name"] == [o.name for o in spec.outputs]
        assert node["output_node"] is spec.output_node


def test_templates_are_listed_for_the_pack(comfyui_server):
    templates = comfyui_server.get("/api/workflow_templates")
    ui_names = sorted(p.stem for p in (REPO / "workflows").glob("*.json"))
    assert sorted(templates["comfyui-sonic"]) == ui_names  # each once; workflows/api/ is not a template
    for name in ui_names:  # the UI file and the thumbnail the template browser asks for, by its quoted file name
        url = f"/api/workflow_templates/comfyui-sonic/{urllib.parse.quote(name)}"
        assert comfyui_server.get(f"{url}.json") == json.loads((REPO / "workflows" / f"{name}.json").read_text())
        with urllib.request.urlopen(f"{comfyui_server.url}{url}.jpg", timeout=60) as response:
            assert response.read() == (REPO / "workflows" / f"{name}.jpg").read_bytes()


@pytest.mark.parametrize("workflow", API_WORKFLOWS, ids=lambda p: p.stem)
def test_api_template_runs_to_an_mp4_with_the_speech(comfyui_server, workflow):
    prompt = json.loads(workflow.read_text())
    prompt_id, messages = comfyui_server.run_prompt(prompt)
    assert messages[-1]["type"] == "execution_success", json.dumps(messages[-1])[:2000]
    outputs = comfyui_server.history(prompt_id)["outputs"]
    combine = next(out for out in outputs.values() if "animated" in out)
    preview = combine["images"][0]
    path = comfyui_server.output_dir / preview["subfolder"] / preview["filename"]
    info = probe(path)
    assert info["video"]["codec"] == "h264" and info["audio"]["codec"] == "aac"
    assert abs(info["audio"]["duration"] - min(SPEECH_SECONDS, info["video"]["duration"])) < 0.03
    reports = [text for out in outputs.values() for text in out.get("text", [])]
    cached = {node for m in messages if m["type"] == "execution_cached" for node in m["data"]["nodes"]}
    measured = {node for node, spec in prompt.items() if spec["class_type"] == "SonicLoadAudioDuration"}
    if measured - cached:  # a node ComfyUI took from its cache (an earlier template) reports nothing new
        assert any(f"audio is {SPEECH_SECONDS:.3f} s" in text for text in reports)
    for meter in (node for node, spec in prompt.items() if spec["class_type"] == "SonicTokenMeter"):
        status, estimate = comfyui_server.post("/sonic/estimate", {"prompt": prompt,
                                                                  "tier": prompt[meter]["inputs"]["tier"]})
        assert status == 200 and estimate["total_tokens"] > 0, estimate
        if meter not in cached:
            assert outputs[meter]["sonic_cost"][0]["total_tokens"] == estimate["total_tokens"]


def test_node_errors_reach_the_user_as_one_line(comfyui_server):
    _, messages = comfyui_server.run_prompt(blank_video_prompt(32, 2, "../../escape"))
    error = messages[-1]
    assert error["type"] == "execution_error"
    assert error["data"]["exception_type"].endswith("SonicInputError")
    assert "filename_prefix" in error["data"]["exception_message"]
    assert not any(comfyui_server.base.glob("**/escape*"))


def test_hostile_audio_file_name_is_refused(comfyui_server):
    """Refused by ComfyUI's option validation where it checks this combo, else by the node's own check."""
    prompt = {"1": {"class_type": "SonicLoadAudioDuration", "inputs": {"audio_file": "../../../etc/passwd"}},
              "2": {"class_type": "PreviewAny", "inputs": {"source": ["1", 1]}}}
    status, answer = comfyui_server.post("/prompt", {"prompt": prompt})
    if status == 400:
        assert "audio_file" in json.dumps(answer)
        return
    _, messages = comfyui_server.run_prompt(prompt)
    assert messages[-1]["type"] == "execution_error"
    assert messages[-1]["data"]["exception_type"].endswith("SonicInputError")
    assert "only files inside ComfyUI's input folder" in messages[-1]["data"]["exception_message"]


def _report(server, prompt: dict) -> dict:
    prompt_id, messages = server.run_prompt(prompt)
    assert messages[-1]["type"] == "execution_success", json.dumps(messages[-1])[:2000]
    outputs = server.history(prompt_id)["outputs"]
    return json.loads(outputs["1"]["text"][0])


@pytest.mark.parametrize("server_fixture, v3", [("comfyui_server", True), ("comfyui_server_v1", False)])
def test_hidden_inputs_reach_the_node_function_in_both_shapes(request, server_fixture, v3):
    server = request.getfixturevalue(server_fixture)
    prompt = {"1": {"class_type": "SonicProbeHidden", "inputs": {"tag": "t"}},
              "7": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0}}}
    report = _report(server, prompt)
    assert sorted(report.pop("entrypoint")) == sorted(expected_nodes())  # the V3 registration lists the same nodes
    assert report == {"tag": "t", "prompt_nodes": ["1", "7"], "unique_id": "1", "v3": v3}


def test_v1_shape_registers_and_runs_the_api_templates(comfyui_server_v1):
    info = comfyui_server_v1.get("/object_info")
    for node_id, spec in expected_nodes().items():
        assert "api_node" not in info[node_id]  # a V1 class: no V3-only fields
        assert info[node_id]["output_name"] == [o.name for o in spec.outputs]
    for workflow in API_WORKFLOWS:
        _, messages = comfyui_server_v1.run_prompt(json.loads(workflow.read_text()))
        assert messages[-1]["type"] == "execution_success", json.dumps(messages[-1])[:2000]


def test_managed_model_is_loaded_by_and_freed_with_comfyui(comfyui_server):
    graph = {"1": {"class_type": "SonicProbeManaged", "inputs": {"action": "load"}}}
    assert _report(comfyui_server, graph) == {"action": "load", "loaded": True}
    graph["1"]["inputs"]["action"] = "status"
    assert _report(comfyui_server, graph) == {"action": "status", "loaded": True}  # stays loaded between runs
    status, _ = comfyui_server.post("/free", {"unload_models": True, "free_memory": True})
    assert status == 200
    deadline = time.monotonic() + 20  # the server's worker applies /free between prompts
    while _report(comfyui_server, graph)["loaded"]:
        assert time.monotonic() < deadline, "the model stayed loaded after POST /free"
        time.sleep(0.5)


def test_video_output_is_a_core_video(comfyui_server):
    prompt = {**blank_video_prompt(32, 10, "core/video", fps=12.5, format="webm (vp9 + opus)", crf=30),
              "3": {"class_type": "GetVideoComponents", "inputs": {"video": ["2", 0]}},
              "4": {"class_type": "PreviewAny", "inputs": {"source": ["3", 2]}}}
    prompt_id, messages = comfyui_server.run_prompt(prompt)
    assert messages[-1]["type"] == "execution_success", json.dumps(messages[-1])[:2000]
    outputs = comfyui_server.history(prompt_id)["outputs"]
    assert float(outputs["4"]["text"][0]) == 12.5
    assert outputs["2"]["images"][0]["subfolder"] == "core"
    assert probe(comfyui_server.output_dir / "core" / outputs["2"]["images"][0]["filename"])["video"]["frames"] == 10


def test_cancel_during_video_combine_is_an_interrupt_and_leaves_no_file(comfyui_server):
    prompt = blank_video_prompt(256, 600, "cancelled/Sonic")

    def cancel_when_combine_starts(message):
        if message["type"] == "executing" and message["data"].get("node") == "2":
            assert comfyui_server.post("/interrupt", {})[0] == 200

    _, messages = comfyui_server.run_prompt(prompt, on_message=cancel_when_combine_starts)
    assert messages[-1]["type"] == "execution_interrupted", json.dumps(messages[-1])[:2000]
    assert not any((comfyui_server.output_dir / "cancelled").glob("*"))  # not even a hidden partial file
