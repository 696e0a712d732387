"""The pack inside a real ComfyUI 0.3.75 server (V3 schema path): /object_info, POST /prompt, /ws, /history."""

import json

import pytest

from conftest import REPO, load_pack
from sonic_core.video import probe

pytestmark = pytest.mark.comfyui

API_WORKFLOWS = sorted((REPO / "workflows" / "api").glob("*.json"))
SPEECH_SECONDS = 105508 / 16000


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
    served = comfyui_server.get(f"/api/workflow_templates/comfyui-sonic/{ui_names[0]}.json")
    assert served == json.loads((REPO / "workflows" / f"{ui_names[0]}.json").read_text())


@pytest.mark.parametrize("workflow", API_WORKFLOWS, ids=lambda p: p.stem)
def test_api_template_runs_to_an_mp4_with_the_speech(comfyui_server, workflow):
    prompt_id, messages = comfyui_server.run_prompt(json.loads(workflow.read_text()))
    assert messages[-1]["type"] == "execution_success", json.dumps(messages[-1])[:2000]
    outputs = comfyui_server.history(prompt_id)["outputs"]
    combine = next(out for out in outputs.values() if "animated" in out)
    preview = combine["images"][0]
    path = comfyui_server.output_dir / preview["subfolder"] / preview["filename"]
    info = probe(path)
    assert info["video"]["codec"] == "h264" and info["audio"]["codec"] == "aac"
    frames = info["video"]["frames"]
    assert abs(info["audio"]["duration"] - min(SPEECH_SECONDS, frames / 25)) < 0.03
    reports = [text for out in outputs.values() for text in out.get("text", [])]
    assert any(f"audio is {SPEECH_SECONDS:.3f} s" in text for text in reports)


def test_node_errors_reach_the_user_as_one_line(comfyui_server):
    prompt = {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 32, "height": 32, "batch_size": 2, "color": 0}},
        "2": {"class_type": "SonicVideoCombine",
              "inputs": {"images": ["1", 0], "fps": 25.0, "format": "mp4 (h264 + aac)", "crf": 18,
                         "pix_fmt": "yuv420p", "filename_prefix": "../../escape"}},
    }
    _, messages = comfyui_server.run_prompt(prompt)
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
