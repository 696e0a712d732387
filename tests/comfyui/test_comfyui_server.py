"""The pack inside a real ComfyUI 0.3.75 server (V3 nodes): /object_info, POST /prompt, /ws, /history."""

import json
import time
import urllib.parse
import urllib.request

import pytest
from sonic_testing import REPO, load_pack, pack_nodes

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


def expected_nodes() -> dict[str, dict]:
    """Each node's ``/object_info`` entry as the compat layer's stand-in ``io`` computes it outside ComfyUI (JSON
    round-tripped, as the server sends it)."""
    return {node_id: json.loads(json.dumps(cls.GET_NODE_INFO_V1())) for node_id, cls in pack_nodes(load_pack()).items()}


FOLDER_COMBOS = ("weights", "audio_file")  # option lists read from this server's folders, not the test's


def without_folder_options(info: dict) -> dict:
    """``info`` with the option lists of folder-fed combos removed (the server's folders differ from the test's)."""
    info = json.loads(json.dumps(info))
    for section in info["input"].values():
        for name in FOLDER_COMBOS:
            if name in section:
                section[name][1].pop("options")
    return info


def test_object_info_is_the_stand_in_schema_with_help_on_every_socket(comfyui_server):
    """The real server's view of every node equals the stand-in's (so the stand-in tests mean something), and
    every node has a description, every input and output a tooltip."""
    info = comfyui_server.get("/object_info")
    assert "LoadAudio" in info and "EmptyImage" in info  # core nodes (audio ones need the torchaudio stub)
    expected = expected_nodes()
    assert {k for k, v in info.items() if v["python_module"].endswith("comfyui-sonic")} == set(expected)
    for node_id, standin in expected.items():
        served = info[node_id]
        assert without_folder_options(served) == without_folder_options(standin) | {
            "python_module": served["python_module"]}, node_id
        assert len(served["description"]) > 80, node_id
        for section in ("required", "optional"):
            for name, (_, options) in served["input"].get(section, {}).items():
                assert options.get("tooltip"), f"{node_id}.{name} has no tooltip"
        assert len(served["output_tooltips"]) == len(served["output"]) and all(served["output_tooltips"]), node_id
    assert info["SonicLoader"]["input"]["required"]["weights"][1]["options"][0] == "demo (tiny, untrained)"
    assert info["SonicLoadAudioDuration"]["input"]["optional"]["audio_file"][1]["options"] == [
        "none", "speech.wav"]


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
    combine = next(out for out in outputs.values() if "animated" in out and out["images"][0]["type"] == "output")
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


def test_cheap_checks_refuse_the_prompt_before_the_queue(comfyui_server):
    status, answer = comfyui_server.post("/prompt", {"prompt": blank_video_prompt(32, 2, "../../escape")})
    assert status == 400, answer
    (error,) = answer["node_errors"]["2"]["errors"]  # once: validate_inputs names one input
    assert error["type"] == "custom_validation_failed" and error["details"].startswith("filename_prefix - ")
    assert "filename_prefix '../../escape': '..' is not allowed" in error["details"]
    assert not any(comfyui_server.base.glob("**/escape*"))


def test_node_errors_reach_the_user_as_one_line(comfyui_server):
    prompt = {"1": {"class_type": "EmptyImage", "inputs": {"width": 256, "height": 256, "batch_size": 1, "color": 0}},
              "2": {"class_type": "LoadAudio", "inputs": {"audio": "speech.wav"}},
              "3": {"class_type": "SonicPreData", "inputs": {"image": ["1", 0], "audio": ["2", 0], "duration": 0.0,
                                                             "min_resolution": 256, "expand_ratio": "auto",
                                                             "fit": "error"}},
              "4": {"class_type": "PreviewAny", "inputs": {"source": ["3", 2]}}}
    _, messages = comfyui_server.run_prompt(prompt)
    error = messages[-1]
    assert error["type"] == "execution_error"
    assert error["data"]["exception_type"].endswith("SonicFaceError")
    assert "\n" not in error["data"]["exception_message"].strip() and "face" in error["data"]["exception_message"]


def test_hostile_or_missing_audio_file_is_refused_before_the_queue(comfyui_server):
    for name, needle in (("../../../etc/passwd", "'..' is not allowed; only files inside ComfyUI's input folder"),
                         ("missing.wav", "is not in the input folder")):
        prompt = {"1": {"class_type": "SonicLoadAudioDuration", "inputs": {"audio_file": name}},
                  "2": {"class_type": "PreviewAny", "inputs": {"source": ["1", 1]}}}
        status, answer = comfyui_server.post("/prompt", {"prompt": prompt})
        assert status == 400 and needle in json.dumps(answer), answer


def _report(server, prompt: dict) -> dict:
    prompt_id, messages = server.run_prompt(prompt)
    assert messages[-1]["type"] == "execution_success", json.dumps(messages[-1])[:2000]
    outputs = server.history(prompt_id)["outputs"]
    return json.loads(outputs["1"]["text"][0])


def test_hidden_inputs_reach_the_node_and_the_entrypoint_registers_the_pack(comfyui_server):
    prompt = {"1": {"class_type": "SonicProbeHidden", "inputs": {"tag": "t"}},
              "7": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0}}}
    report = _report(comfyui_server, prompt)
    assert sorted(report.pop("entrypoint")) == sorted(expected_nodes())  # what comfy_entrypoint registered
    assert report == {"tag": "t", "prompt_nodes": ["1", "7"], "unique_id": "1", "real_io": True}


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
