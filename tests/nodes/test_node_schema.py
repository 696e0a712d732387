"""The node classes' V3 declarations in plain Python (the compat layer's stand-in ``io``): named classes, help on
every socket, execute/validate/fingerprint signatures that match the schema, and the pre-queue checks."""

from __future__ import annotations

import importlib
import inspect
import os
import shutil

import pytest
from sonic_testing import REPO, load_pack, pack_nodes

SPEECH = REPO / "sonic_core" / "assets" / "speech.wav"
NODE_IDS = {"SonicLoadAudioDuration", "SonicLoader", "SonicPreData", "SonicSampler", "SonicSamplerToVideo",
            "SonicLipSyncAlign", "SonicMotionSmooth", "SonicTokenMeter", "SonicVideoCombine"}


@pytest.fixture()
def pack(tmp_path, monkeypatch):
    monkeypatch.setenv("SONIC_COMFY_ROOT", str(tmp_path))
    for folder in ("input", "output", "temp"):
        (tmp_path / folder).mkdir()
    return load_pack()


@pytest.fixture()
def io(pack):
    return importlib.import_module(f"{pack.__name__}.nodes.comfy_compat").io


def parameters(method) -> dict[str, inspect.Parameter]:
    return dict(inspect.signature(method).parameters)


def test_every_node_is_a_named_v3_class_registered_through_the_entrypoint(pack, io):
    nodes = pack_nodes(pack)
    assert set(nodes) == NODE_IDS and not hasattr(pack, "NODE_CLASS_MAPPINGS")
    for node_id, cls in nodes.items():
        assert issubclass(cls, io.ComfyNode) and cls.__name__ == node_id
        assert {"define_schema", "execute"} <= set(vars(cls)), node_id  # its own, not built from a table
        assert cls.__module__.startswith(f"{pack.__name__}.nodes.")


def test_every_node_has_a_description_and_every_socket_a_tooltip(pack):
    for node_id, cls in pack_nodes(pack).items():
        schema = cls.GET_SCHEMA()
        assert schema.display_name and schema.category.startswith("Sonic/")
        assert len(schema.description) > 80, node_id
        for socket in [*schema.inputs, *schema.outputs]:
            assert socket.tooltip and len(socket.tooltip) > 10, (node_id, socket.id or socket.display_name)
        assert all(output.display_name for output in schema.outputs), node_id


def test_execute_validate_and_fingerprint_take_the_declared_inputs(pack):
    for node_id, cls in pack_nodes(pack).items():
        schema = cls.GET_SCHEMA()
        declared = {i.id for i in schema.inputs}
        execute = parameters(cls.execute)
        named = {n for n, p in execute.items() if p.kind != p.VAR_KEYWORD}
        takes_rest = len(named) < len(execute)  # the Samplers take their shared knobs as **knobs
        assert named <= declared if takes_rest else named == declared, node_id
        for item in schema.inputs:  # an optional input may be left out of the prompt: it needs a default
            assert not item.optional or item.id not in execute or execute[item.id].default is not inspect.Parameter.empty, (node_id, item.id)
        if "validate_inputs" in vars(cls):  # ComfyUI repeats a refusal for every input named: name one
            assert len(parameters(cls.validate_inputs)) == 1, node_id
        for hook in ("validate_inputs", "fingerprint_inputs"):
            if hook in vars(cls):
                named = {n for n, p in parameters(getattr(cls, hook)).items() if p.kind != p.VAR_KEYWORD}
                assert named <= declared, (node_id, hook)
                # ComfyUI passes only the inputs present in the prompt: every named one needs a default
                assert all(p.default is not inspect.Parameter.empty
                           for p in parameters(getattr(cls, hook)).values() if p.kind != p.VAR_KEYWORD)


def test_object_info_of_the_stand_in_follows_comfyuis_shape(pack):
    nodes = pack_nodes(pack)
    meter = nodes["SonicTokenMeter"].GET_NODE_INFO_V1()
    assert meter["input"]["hidden"] == {"prompt": ("PROMPT",), "extra_pnginfo": ("EXTRA_PNGINFO",)}
    assert meter["output_node"] is True and meter["output_tooltips"][0] == "tokens of the whole prompt"
    audio = nodes["SonicLoadAudioDuration"].GET_NODE_INFO_V1()
    assert audio["input_order"] == {"required": [], "optional": ["audio", "audio_file", "requested_duration"]}
    kind, options = audio["input"]["optional"]["requested_duration"]
    assert kind == "FLOAT" and options["min"] == 0.0 and "tooltip" in options and "optional" not in options
    sampler = nodes["SonicSampler"].GET_NODE_INFO_V1()
    assert sampler["input"]["required"]["model"][0] == "SONIC_MODEL" and sampler["output"] == ["IMAGE", "FLOAT",
                                                                                              "AUDIO", "STRING"]
    assert sampler["input"]["optional"]["deflicker"][0] == "BOOLEAN"
    assert sampler["input"]["required"]["seed"][1]["control_after_generate"] is True


def test_stand_in_schema_refuses_duplicate_ids_and_names_unnamed_outputs(io):
    schema = io.Schema(node_id="X", inputs=[io.Int.Input("a"), io.Float.Input("a")], outputs=[io.Image.Output()])
    with pytest.raises(ValueError, match=r"Input ids must be unique, but \['a'\]"):
        schema.validate()
    schema.finalize()
    assert schema.outputs[0].id == "_0_IMAGE_"


def test_load_audio_duration_checks_its_file_before_the_queue(pack, tmp_path):
    cls = pack_nodes(pack)["SonicLoadAudioDuration"]
    assert cls.validate_inputs() is True and cls.validate_inputs(audio_file="none") is True
    assert "not in the input folder" in cls.validate_inputs(audio_file="missing.wav")
    hostile = cls.validate_inputs(audio_file="../x.wav")
    assert "audio_file '../x.wav'" in hostile and "input folder" in hostile
    shutil.copy(SPEECH, tmp_path / "input" / "speech.wav")
    assert cls.validate_inputs(audio_file="speech.wav") is True


def test_load_audio_duration_fingerprint_follows_the_file(pack, tmp_path):
    cls = pack_nodes(pack)["SonicLoadAudioDuration"]
    target = tmp_path / "input" / "speech.wav"
    shutil.copy(SPEECH, target)
    first = cls.fingerprint_inputs(audio_file="speech.wav", audio=None, requested_duration=0.0)
    assert cls.fingerprint_inputs(audio_file="speech.wav") == first  # unchanged file: ComfyUI may reuse the output
    target.write_bytes(SPEECH.read_bytes()[:-400])  # replaced under the same name
    os.utime(target, ns=(1, 1))
    assert cls.fingerprint_inputs(audio_file="speech.wav") != first


def test_loader_fingerprint_follows_the_weight_files(pack, tmp_path):
    cls = pack_nodes(pack)["SonicLoader"]
    sonic = tmp_path / "models" / "sonic"
    (sonic / "Sonic").mkdir(parents=True)
    unet = sonic / "Sonic" / "unet.pth"
    unet.write_bytes(b"one")
    first = cls.fingerprint_inputs(weights=str(sonic), dtype="auto", device="auto")
    assert str(unet) in repr(first)
    unet.write_bytes(b"other")
    os.utime(unet, ns=(1, 1))
    assert cls.fingerprint_inputs(weights=str(sonic), dtype="auto", device="auto") != first


@pytest.mark.parametrize("node_id, inputs, needle", [
    ("SonicPreData", {"duration": 0.05}, "duration"),
    ("SonicPreData", {"duration": -1.0}, "duration"),
    ("SonicPreData", {"duration": 4000.0}, "duration"),
    ("SonicVideoCombine", {"filename_prefix": "../../escape"}, "filename_prefix"),
    ("SonicMotionSmooth", {"strength": "lots"}, "strength"),
])
def test_cheap_checks_refuse_before_the_queue_in_one_line(pack, node_id, inputs, needle):
    cls = pack_nodes(pack)[node_id]
    assert cls.validate_inputs() is True
    message = cls.validate_inputs(**inputs)
    assert isinstance(message, str) and needle in message and "\n" not in message
