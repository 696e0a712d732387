"""Bad inputs through the nodes (the pack imported as ComfyUI imports it, nodes executed directly) and the config
readers: one SonicError line naming the input, no file left in the output folder."""

from __future__ import annotations

import math

import pytest
import torch
from sonic_testing import assert_one_line, basic_prompt, files_in, load_pack, pack_nodes, run_node, unwritable_folder

from sonic_core.errors import SonicAudioError, SonicInputError
from sonic_core.metering.cost import load_coefficients
from sonic_core.metering.enforcement import load_config
from sonic_core.metering.tiers import load_tiers


@pytest.fixture
def pack(tmp_path, monkeypatch):
    monkeypatch.setenv("SONIC_COMFY_ROOT", str(tmp_path))
    for folder in ("input", "output", "temp"):
        (tmp_path / folder).mkdir()
    return load_pack()


def run(pack, node_id, **inputs):
    return run_node(pack_nodes(pack)[node_id], **inputs)


AUDIO = {"waveform": torch.zeros(1, 1, 16000), "sample_rate": 16000}
FRAMES = torch.zeros(2, 16, 16, 3)

BAD_AUDIO = [
    ("rate 0", {"waveform": torch.zeros(1, 1, 16000), "sample_rate": 0}, "sample rate 0"),
    ("rate nan", {"waveform": torch.zeros(1, 1, 16000), "sample_rate": math.nan}, "sample rate nan"),
    ("rate text", {"waveform": torch.zeros(1, 1, 16000), "sample_rate": "fast"}, "sample rate 'fast'"),
    ("no waveform", {"sample_rate": 16000}, "not a ComfyUI AUDIO"),
    ("not a dict", [1, 2], "not a ComfyUI AUDIO"),
    ("nan samples", {"waveform": torch.full((1, 1, 16000), math.nan), "sample_rate": 16000}, "NaN"),
    ("empty", {"waveform": torch.zeros(1, 1, 0), "sample_rate": 16000}, "empty"),
    ("2-D waveform", {"waveform": torch.zeros(1, 16000), "sample_rate": 16000}, "waveform"),
]


@pytest.mark.parametrize("audio, needle", [case[1:] for case in BAD_AUDIO], ids=[case[0] for case in BAD_AUDIO])
@pytest.mark.parametrize("node_id", ["SonicLoadAudioDuration", "SonicVideoCombine", "SonicPreData"])
def test_every_audio_input_refuses_a_broken_audio(pack, tmp_path, node_id, audio, needle):
    inputs = {"SonicLoadAudioDuration": {"audio": audio},
              "SonicVideoCombine": {"images": FRAMES, "audio": audio},
              "SonicPreData": {"image": torch.zeros(1, 64, 64, 3), "audio": audio}}[node_id]
    with pytest.raises(SonicAudioError) as caught:
        run(pack, node_id, **inputs)
    assert_one_line(str(caught.value), needle)
    assert files_in(tmp_path / "output") == set()


def frames_with(value: float, frame: int = 1, count: int = 2, size: int = 16) -> torch.Tensor:
    """An IMAGE batch of mid-grey frames, one pixel of ``frame`` set to ``value``."""
    images = torch.full((count, size, size, 3), 0.5)
    images[frame, size // 2, size // 3, 1] = value
    return images


NON_FINITE = [("nan", math.nan), ("inf", math.inf), ("-inf", -math.inf)]
IMAGE_INPUTS = {
    "SonicPreData": lambda images: {"image": images[1:], "audio": AUDIO},
    "SonicVideoCombine": lambda images: {"images": images, "audio": AUDIO},
    "SonicLipSyncAlign": lambda images: {"images": images, "audio": AUDIO},
    "SonicMotionSmooth": lambda images: {"images": images},
}


@pytest.mark.parametrize("value", [case[1] for case in NON_FINITE], ids=[case[0] for case in NON_FINITE])
@pytest.mark.parametrize("node_id", list(IMAGE_INPUTS))
def test_every_image_input_refuses_nan_or_infinite_pixels(pack, tmp_path, node_id, value):
    """An IMAGE holding NaN or inf (an upstream node's bug) is refused in one line naming the input and the frame,
    not clamped into a plausible video."""
    name = "image" if node_id == "SonicPreData" else "images"
    with pytest.raises(SonicInputError) as caught:
        run(pack, node_id, **IMAGE_INPUTS[node_id](frames_with(value, count=20)))
    assert_one_line(str(caught.value), f"{name}: frame {0 if node_id == 'SonicPreData' else 1} holds NaN")
    assert files_in(tmp_path / "output") == set()


@pytest.mark.parametrize("rate", [1, 7, 999, 10_000_000])
@pytest.mark.parametrize("node_id", ["SonicLipSyncAlign", "SonicPreData"])
def test_nodes_that_resample_refuse_an_absurd_sample_rate(pack, node_id, rate):
    """The audio-node fuzz stalled in Lip-Sync Align on 4,000 samples at 1 Hz: resampled to 16 kHz they were 64
    million samples. A rate outside 1-768 kHz is refused in one line before any resampling."""
    audio = {"waveform": torch.zeros(1, 1, 4000), "sample_rate": rate}
    inputs = {"images": frames_with(0.5)} if node_id == "SonicLipSyncAlign" else {"image": frames_with(0.5)}
    with pytest.raises(SonicAudioError) as caught:
        run(pack, node_id, audio=audio, **inputs)
    assert_one_line(str(caught.value), f"sample rate {rate} Hz is outside 1,000-768,000 Hz")


@pytest.mark.parametrize("requested", [math.nan, math.inf, -1.0])
def test_load_audio_duration_refuses_a_nonsense_requested_duration(pack, requested):
    with pytest.raises(SonicInputError) as caught:
        run(pack, "SonicLoadAudioDuration", audio=AUDIO, requested_duration=requested)
    assert_one_line(str(caught.value), "requested_duration")


@pytest.mark.parametrize("duration", [math.nan, math.inf, -2.0])
def test_predata_refuses_a_nonsense_duration(pack, duration):
    with pytest.raises(SonicInputError) as caught:
        run(pack, "SonicPreData", image=torch.zeros(1, 64, 64, 3), audio=AUDIO, duration=duration)
    assert_one_line(str(caught.value), "duration")


@pytest.mark.parametrize("name, needle", [
    ("sp\x00eech.wav", "control character"), ("sp\neech.wav", "control character"), ("a" * 300 + ".wav", "longer"),
    ("../escape.wav", "'..'"), ("/etc/passwd", "absolute"), ("never.wav", "not in the input folder"),
])
def test_load_audio_duration_refuses_hostile_file_names(pack, name, needle):
    with pytest.raises(SonicInputError) as caught:
        run(pack, "SonicLoadAudioDuration", audio_file=name)
    assert_one_line(str(caught.value), "audio_file", needle)


def test_an_audio_file_linked_out_of_the_input_folder(pack, tmp_path):
    (tmp_path / "secret.wav").write_bytes(b"RIFF")
    (tmp_path / "input" / "link.wav").symlink_to(tmp_path / "secret.wav")
    with pytest.raises(SonicInputError) as caught:
        run(pack, "SonicLoadAudioDuration", audio_file="link.wav")
    assert_one_line(str(caught.value), "leads out of the input folder")


@pytest.mark.parametrize("prefix, needle", [
    ("So\x00nic", "control character"), ("So\nnic", "control character"), ("s" * 300, "longer"),
    ("../out", "'..'"), ("/tmp/out", "absolute"), ("", "relative name"), ("videos/", "folder"),
])
def test_video_combine_refuses_hostile_prefixes(pack, tmp_path, prefix, needle):
    with pytest.raises(SonicInputError) as caught:
        run(pack, "SonicVideoCombine", images=FRAMES, filename_prefix=prefix)
    assert_one_line(str(caught.value), "filename_prefix", needle)
    assert files_in(tmp_path / "output") == set()


def test_video_combine_into_an_unwritable_output_folder(pack, tmp_path):
    output = tmp_path / "output"
    output.rmdir()
    output.symlink_to(unwritable_folder(tmp_path / "locked"), target_is_directory=True)
    with pytest.raises(SonicInputError) as caught:
        run(pack, "SonicVideoCombine", images=FRAMES)
    assert_one_line(str(caught.value), "not writable")


@pytest.mark.parametrize("change, needle", [
    (lambda p: p["3"]["inputs"].update(audio="never.wav"), "never.wav"),
    (lambda p: p.update({"3": {"class_type": "SonicLoadAudioDuration", "inputs": {"audio": ["6", 0]}},
                         "6": {"class_type": "SonicLoadAudioDuration", "inputs": {"audio": ["3", 0]}}}), "cycle"),
    (lambda p: p["4"].update(inputs=7), "node 4"),
])
def test_token_meter_refuses_unpriceable_graphs(pack, change, needle):
    prompt = basic_prompt()
    change(prompt)
    with pytest.raises(SonicInputError) as caught:
        run_node(pack_nodes(pack)["SonicTokenMeter"], {pack.nodes.comfy_compat.io.Hidden.prompt: prompt},
                 tier="standard")
    assert_one_line(str(caught.value), needle)


# -- config files ------------------------------------------------------------------------------------------------

def config(tmp_path, kind: str, suffix: str):
    path = tmp_path / f"config.{suffix}"
    if kind == "directory":
        path.mkdir()
    elif kind == "invalid":
        path.write_text("this = is = not [valid" if suffix == "toml" else "{not json")
    elif kind == "list":
        path.write_text("[1, 2]" if suffix == "json" else "x = [1, 2]\ny = 'z'")
    elif kind == "binary":
        path.write_bytes(b"\xff\xfe\x00bad")
    elif kind == "long_name":
        path = tmp_path / ("c" * 300 + f".{suffix}")
    return path


READERS = {"tiers": (load_tiers, "toml", "tiers file"),
           "coefficients": (load_coefficients, "json", "cost coefficients file"),
           "metering": (load_config, "toml", "metering config")}


@pytest.mark.parametrize("kind", ["missing", "directory", "invalid", "binary", "long_name", "list"])
@pytest.mark.parametrize("reader", list(READERS))
def test_config_readers_refuse_bad_files_in_one_line(tmp_path, reader, kind):
    read, suffix, what = READERS[reader]
    with pytest.raises(SonicInputError) as caught:
        read(config(tmp_path, kind, suffix))
    assert_one_line(str(caught.value), what if kind != "list" else "config")  # the parser names the file


def test_tiers_from_the_environment_may_not_be_a_directory(tmp_path, monkeypatch):
    monkeypatch.setenv("SONIC_TIERS", str(tmp_path))
    with pytest.raises(SonicInputError) as caught:
        load_tiers()
    assert_one_line(str(caught.value), "is a directory")
