"""One generation path: ``python -m sonic_core generate`` on a weights tree in the official layout (the tiny
networks, so it runs here) walks the pipeline's modules once each, in pipeline order, reads the audio file once,
and muxes the user's own track (its rate and channels, trimmed to ``--duration``) into the MP4."""

from __future__ import annotations

import sys

import librosa
import numpy as np
import pytest
import soundfile
import torch
from sonic_testing import REPO, write_official_layout

from sonic_core import audio
from sonic_core.cli import main
from sonic_core.models.bundle import ModelConfigs
from sonic_core.models.rife import IFNet
from sonic_core.video import probe
from sonic_core.weights.tiny import TINY_CONFIGS, tiny_models

PORTRAIT = REPO / "sonic_core" / "assets" / "portrait.jpg"
SPEECH = REPO / "sonic_core" / "assets" / "speech.wav"
# The stages of one generation, in the order a frame meets them: the CLI, the prepared inputs (audio, face), the
# weights, then the render: the pipeline (conditioning, sampling, decode, interpolation) into the video writer.
STAGES = [("sonic_core.cli.generate", "cmd_generate"), ("sonic_core.inputs", "prepare_inputs"),
          ("sonic_core.audio", "load_speech"), ("sonic_core.face.crop", "prepare_reference"),
          ("sonic_core.weights.loader", "load_sonic_models"), ("sonic_core.render", "render_video"),
          ("sonic_core.pipeline", "SonicPipeline.condition"),
          ("sonic_core.sampling", "sample_latents"), ("sonic_core.pipeline", "SonicPipeline.decode"),
          ("sonic_core.interpolation", "retime_chunks"), ("sonic_core.video", "VideoWriter.write")]
# generators are entered on every pull, consumers first: for them the event that moves a frame on is a yield
GENERATORS = {"SonicPipeline.decode", "retime_chunks"}


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory):
    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("weights")
    write_official_layout(root, tiny_models(seed=1, rife=IFNet()))
    return root


@pytest.fixture(scope="module")
def stereo_speech(tmp_path_factory):
    """The bundled speech as a 44.1 kHz stereo file, 4 s of it."""
    mono, _ = librosa.load(SPEECH, sr=44100, duration=4.0)
    path = tmp_path_factory.mktemp("audio") / "speech_44k_stereo.wav"
    soundfile.write(path, np.stack([mono, 0.5 * mono], axis=1), 44100)
    return path


def test_generate_walks_the_pipeline_once_reads_the_audio_once_and_keeps_the_track(
        tiny_weights, stereo_speech, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(ModelConfigs, "official", classmethod(lambda cls: TINY_CONFIGS))  # the tiny networks' shapes
    opened: list[str] = []
    real_open = audio.soundfile.SoundFile
    monkeypatch.setattr(audio.soundfile, "SoundFile", lambda file, *a, **k: opened.append(str(file)) or
                        real_open(file, *a, **k))
    calls: list[tuple[str, str]] = []

    def record(frame, event, arg):
        name = frame.f_globals.get("__name__", "")
        if name.startswith("sonic_core") and event == ("return" if frame.f_code.co_qualname in GENERATORS else "call"):
            calls.append((name, frame.f_code.co_qualname))

    out = tmp_path / "clip.mp4"
    sys.setprofile(record)
    try:
        code = main(["generate", "--image", str(PORTRAIT), "--audio", str(stereo_speech), "--out", str(out),
                     "--weights", str(tiny_weights), "--device", "cpu", "--min-resolution", "256", "--steps", "1",
                     "--duration", "2", "--fit", "trim", "--json"])
    finally:
        sys.setprofile(None)
    assert code == 0, capsys.readouterr().err
    assert [path for path in opened if path == str(stereo_speech)] == [str(stereo_speech)]  # decoded once
    first_entries = [stage for index, stage in enumerate(calls) if stage in STAGES and stage not in calls[:index]]
    assert first_entries == STAGES
    once = [stage for stage in STAGES if stage[1] not in GENERATORS and stage[1] != "VideoWriter.write"]
    assert {stage: calls.count(stage) for stage in once} == {stage: 1 for stage in once}
    info = probe(out)
    assert info["audio"]["sample_rate"] == 44100 and info["audio"]["channels"] == "stereo"
    assert abs(info["audio"]["duration"] - info["video"]["duration"]) < 0.08
    assert info["video"]["frames"] == 2 * 25 - 1 and (info["video"]["width"], info["video"]["height"]) == (256, 256)
