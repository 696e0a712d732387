"""The pack's nodes in plain Python (no ComfyUI): the same V3 classes on the compat layer's stand-in ``io``, run as
ComfyUI's executor runs them."""

import functools
import shutil

import pytest
import torch
from sonic_testing import REPO, load_pack, pack_nodes, run_node

from sonic_core.errors import SonicAudioError, SonicInputError
from sonic_core.video import probe

SPEECH = REPO / "sonic_core" / "assets" / "speech.wav"
SPEECH_SECONDS = 105508 / 16000


@pytest.fixture()
def pack(tmp_path, monkeypatch):
    monkeypatch.setenv("SONIC_COMFY_ROOT", str(tmp_path))
    (tmp_path / "input").mkdir()
    (tmp_path / "output").mkdir()
    return load_pack()


def execute(pack, node_id, **inputs):
    """Run the pack's node ``node_id`` as ComfyUI does; its io.NodeOutput."""
    return run_node(pack_nodes(pack)[node_id], **inputs)


def test_audio_file_list_and_upload_widget(pack, tmp_path):
    shutil.copy(SPEECH, tmp_path / "input" / "speech.wav")
    (tmp_path / "input" / "notes.txt").write_text("x")
    kind, options = pack_nodes(pack)["SonicLoadAudioDuration"].INPUT_TYPES()["optional"]["audio_file"]
    assert kind == "COMBO" and options["options"] == ["none", "speech.wav"] and options["audio_upload"] is True


def test_load_audio_duration_from_file_matches_librosa(pack, tmp_path):
    shutil.copy(SPEECH, tmp_path / "input" / "speech.wav")
    audio, seconds, ok, report = execute(pack, "SonicLoadAudioDuration", audio_file="speech.wav").args
    assert audio["waveform"].shape == (1, 1, 105508) and audio["sample_rate"] == 16000
    assert seconds == pytest.approx(SPEECH_SECONDS, abs=1e-9) and ok and "no duration requested" in report


def test_load_audio_duration_flags_a_mismatch_beyond_one_frame(pack):
    stereo = {"waveform": torch.zeros(1, 2, 48000 * 3), "sample_rate": 48000}
    run = functools.partial(execute, pack, "SonicLoadAudioDuration")
    out = run(audio=stereo, requested_duration=3.04)
    assert out.args[1:3] == (3.0, True)
    _, seconds, ok, report = run(audio=stereo, requested_duration=3.05).args
    assert not ok and report.startswith("MISMATCH") and "0.050 s shorter" in report
    assert out.ui["text"] == [out.args[3]]


@pytest.mark.parametrize("name, error", [("../../etc/passwd", SonicInputError), ("/etc/passwd", SonicInputError),
                                         ("missing.wav", SonicAudioError)])
def test_load_audio_duration_refuses_hostile_or_missing_files(pack, name, error):
    with pytest.raises(error, match="audio_file"):
        execute(pack, "SonicLoadAudioDuration", audio_file=name)


def test_load_audio_duration_needs_exactly_one_source(pack, tmp_path):
    run = functools.partial(execute, pack, "SonicLoadAudioDuration")
    with pytest.raises(SonicInputError, match="connect a Load Audio"):
        run()
    with pytest.raises(SonicInputError, match="give one of them"):
        run(audio={"waveform": torch.zeros(1, 1, 10), "sample_rate": 10}, audio_file="speech.wav")
    (tmp_path / "input" / "broken.wav").write_bytes(b"RIFF0000WAVEjunk")
    with pytest.raises(SonicAudioError, match="broken.wav"):
        run(audio_file="broken.wav")


def test_video_combine_writes_mp4_with_the_audio_cut_to_the_frames(pack, tmp_path):
    import soundfile

    samples, rate = soundfile.read(SPEECH, dtype="float32")
    audio = {"waveform": torch.from_numpy(samples)[None, None], "sample_rate": rate}
    images = torch.rand(30, 48, 64, 3)
    run = functools.partial(execute, pack, "SonicVideoCombine")
    out = run(images=images, fps=25.0, filename_prefix="talks/Sonic", audio=audio)
    video, path = out.args
    assert video == path == str(tmp_path / "output" / "talks" / "Sonic_00001_.mp4")
    assert out.ui == {"images": [{"filename": "Sonic_00001_.mp4", "subfolder": "talks", "type": "output",
                                     "format": "video/mp4"}], "animated": (True,)}
    info = probe(path)
    assert info["video"]["frames"] == 30 and (info["video"]["width"], info["video"]["height"]) == (64, 48)
    assert info["audio"]["codec"] == "aac" and info["audio"]["duration"] == pytest.approx(1.2, abs=0.03)
    second = run(images=images[:4], fps=12.5, format="webm (vp9 + opus)", filename_prefix="talks/Sonic")
    assert second.args[1].endswith("Sonic_00002_.webm") and probe(second.args[1])["audio"] is None


@pytest.mark.parametrize("prefix", ["../Sonic", "/tmp/Sonic", "a/../../b", "", "videos/"])
def test_video_combine_refuses_prefixes_that_leave_the_output_folder(pack, tmp_path, prefix):
    with pytest.raises(SonicInputError, match="filename_prefix"):
        execute(pack, "SonicVideoCombine", images=torch.rand(2, 16, 16, 3), filename_prefix=prefix)
    assert list((tmp_path / "output").iterdir()) == []


def test_video_combine_refuses_what_is_not_an_image_batch(pack):
    with pytest.raises(SonicInputError, match="IMAGE"):
        execute(pack, "SonicVideoCombine", images=torch.rand(2, 3, 16, 16))


def test_video_combine_interrupted_midway_leaves_no_file(pack, tmp_path, monkeypatch):
    import importlib

    from sonic_core.errors import SonicInterrupted

    video_nodes = importlib.import_module("sonic_pack.nodes.video")
    checks = []

    def cancel_on_second_chunk():
        checks.append(1)
        if len(checks) == 2:
            raise SonicInterrupted("cancelled by the user")

    monkeypatch.setattr(video_nodes, "throw_if_interrupted", cancel_on_second_chunk)
    with pytest.raises(SonicInterrupted):
        execute(pack, "SonicVideoCombine", images=torch.rand(3 * video_nodes.CHUNK_FRAMES, 16, 16, 3))
    assert len(checks) == 2 and list((tmp_path / "output").rglob("*")) == []
