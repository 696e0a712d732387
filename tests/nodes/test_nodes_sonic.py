"""Sonic Loader, PreData, Sampler, Lip-Sync Align and Motion Smooth in plain Python (no ComfyUI), on the demo model."""

import importlib
import subprocess

import numpy as np
import pytest
import soundfile
import torch
from PIL import Image
from sonic_testing import REPO, load_pack, pack_nodes, run_node

from sonic_core import timing
from sonic_core.errors import SonicAudioError, SonicFaceError, SonicInputError, SonicInterrupted, SonicWeightsError
from sonic_core.post import synthetic
from sonic_core.video import ffmpeg_exe, probe

PORTRAIT = REPO / "sonic_core" / "assets" / "portrait.jpg"
SPEECH = REPO / "sonic_core" / "assets" / "speech.wav"
DEMO = "demo (tiny, untrained)"
SHORT_S = 0.48  # 12 audio frames -> 6 generated frames: one sampler window, a quick decode


@pytest.fixture()
def pack(tmp_path, monkeypatch):
    monkeypatch.setenv("SONIC_COMFY_ROOT", str(tmp_path))
    monkeypatch.setenv("SONIC_WEIGHTS", str(tmp_path / "standalone"))
    monkeypatch.setenv("SONIC_ASSETS_DIR", str(tmp_path / "no-assets"))  # no RIFE: the demo model runs without it
    return load_pack()


def run(pack, node_id, **inputs):
    return run_node(pack_nodes(pack)[node_id], **inputs).args


def portrait_image() -> torch.Tensor:
    return torch.from_numpy(np.asarray(Image.open(PORTRAIT).convert("RGB"), dtype=np.float32) / 255)[None]


def speech_audio(seconds: float | None = None, stereo_rate: int | None = None) -> dict:
    samples, rate = soundfile.read(SPEECH, dtype="float32")
    if seconds is not None:
        samples = samples[:int(round(seconds * rate))]
    waveform = torch.from_numpy(samples)[None, None]
    if stereo_rate is not None:  # the same speech as a 2-channel clip at another rate
        import librosa

        resampled = librosa.resample(samples, orig_sr=rate, target_sr=stereo_rate)
        waveform, rate = torch.from_numpy(np.stack([resampled, resampled]))[None], stereo_rate
    return {"waveform": waveform, "sample_rate": rate}


@pytest.fixture()
def demo_model(pack):
    (model,) = run(pack, "SonicLoader", weights=DEMO, dtype="fp16", device="cpu")
    return model


@pytest.fixture()
def short_predata(pack):
    return run(pack, "SonicPreData", image=portrait_image(), audio=speech_audio(), duration=SHORT_S,
               min_resolution=256, expand_ratio="auto", fit="trim")[0]


SAMPLER_DEFAULTS = dict(steps=1, dynamic_scale=1.0, motion_scale=1.0, seed=5, audio_guidance=7.5,
                        appearance_guidance=2.0)


def test_loader_demo_model_is_managed_and_fp32_on_a_cpu(pack, demo_model):
    assert demo_model.label == DEMO and demo_model.dtype == torch.float32  # fp16 asked, fp32 on a CPU
    assert demo_model.models.rife is None  # no RIFE file anywhere here
    assert demo_model.load() == torch.device("cpu") and demo_model.managed.is_loaded()
    assert next(demo_model.models.unet.parameters()).dtype == torch.float32
    options = pack_nodes(pack)["SonicLoader"].INPUT_TYPES()["required"]
    assert options["weights"][1]["options"] == [DEMO]
    assert options["dtype"][1]["options"] == ["auto", "fp32", "fp16", "bf16"]
    assert options["device"][1]["options"][:2] == ["auto", "cpu"]


def test_loader_real_weights_fail_in_one_line_naming_every_missing_file(pack, tmp_path):
    sonic = tmp_path / "models" / "sonic"
    (sonic / "Sonic").mkdir(parents=True)
    (sonic / "Sonic" / "unet.pth").write_bytes(b"not a checkpoint")
    loader = importlib.import_module("sonic_pack.nodes.sonic")
    assert loader.weights_choices() == [DEMO]  # an incomplete set is not offered
    with pytest.raises(SonicWeightsError) as error:
        run(pack, "SonicLoader", weights=str(sonic), dtype="fp16", device="cpu")
    message = str(error.value)
    assert "\n" not in message and "unet" not in message.split("missing Sonic weights:")[1].split(",")[0]
    for component in ("audio2token", "audio2bucket", "whisper", "svd"):
        assert f"{component} ->" in message
    with pytest.raises(SonicWeightsError, match="pick one from the list") as error:
        run(pack, "SonicLoader", weights="/somewhere/else", dtype="fp16", device="cpu")
    assert f"not offered, incomplete: {sonic}: missing Sonic weights: audio2token -> " in str(error.value)
    with pytest.raises(SonicInputError, match="device"):
        run(pack, "SonicLoader", weights=DEMO, dtype="fp16", device="tpu:9")


def test_predata_crops_the_face_and_checks_the_duration(pack):
    audio = speech_audio(stereo_rate=44100)
    predata, preview, report = run(pack, "SonicPreData", image=portrait_image(), audio=audio, duration=2.0,
                                   min_resolution=256, expand_ratio="auto", fit="trim")
    reference, speech = predata.inputs.reference, predata.inputs.speech
    assert reference.ref_image.shape == (3, 256, 256) and preview.shape == (1, 256, 256, 3)
    assert len(speech.samples) == 2 * timing.SAMPLE_RATE
    # the original track is kept at its own rate and channels, trimmed to the same duration
    assert speech.sample_rate == 44100 and speech.waveform.shape == (2, 2 * 44100)
    np.testing.assert_array_equal(speech.waveform, audio["waveform"][0, :, :2 * 44100].numpy())
    assert "face box" in report and "(auto)" in report and "25 generated frames" in report
    crop = torch.from_numpy(np.asarray(reference.image) / 255.0).float()
    redness = lambda pixel: float(pixel[0] - pixel[1])  # noqa: E731
    assert redness(preview[0, 128, 128]) > redness(crop[128, 128]) + 0.1  # the face mask is tinted red
    assert torch.allclose(preview[0, 2, 2], crop[2, 2], atol=1 / 255)  # outside the mask: the crop as it is
    fixed = run(pack, "SonicPreData", image=portrait_image(), audio=audio, duration=0.0, min_resolution=320,
                expand_ratio="0.3", fit="error")
    assert fixed[0].inputs.reference.expand_ratio == 0.3 and fixed[0].inputs.reference.ref_image.shape[1:] == (320, 320)
    with pytest.raises(SonicAudioError, match="fit='trim'"):
        run(pack, "SonicPreData", image=portrait_image(), audio=audio, duration=2.0, min_resolution=256,
            expand_ratio="auto", fit="error")


@pytest.mark.parametrize("inputs, error, match", [
    ({"expand_ratio": "wide"}, SonicInputError, "expand_ratio"),
    ({"min_resolution": 300}, SonicInputError, "min_resolution"),
    ({"fit": "stretch"}, SonicInputError, "fit"),
    ({"image": torch.zeros(1, 256, 256, 3)}, SonicFaceError, "face"),
])
def test_predata_refuses_bad_input_in_one_line(pack, inputs, error, match):
    values = dict(image=portrait_image(), audio=speech_audio(1.0), duration=0.0, min_resolution=256,
                  expand_ratio="auto", fit="error") | inputs
    with pytest.raises(error, match=match):
        run(pack, "SonicPreData", **values)


@pytest.mark.slow
def test_sampler_frames_rate_audio_and_progress(pack, demo_model, short_predata, monkeypatch):
    sonic = importlib.import_module("sonic_pack.nodes.sonic")
    bars = []
    original_bar = sonic.ProgressBar

    def recording_bar(total):
        bars.append(original_bar(total))
        return bars[-1]

    monkeypatch.setattr(sonic, "ProgressBar", recording_bar)
    frames, fps, audio = run(pack, "SonicSampler", model=demo_model, predata=short_predata, fps=12.5,
                             **SAMPLER_DEFAULTS)
    assert frames.shape == (6, 256, 256, 3) and frames.dtype == torch.float32 and fps == 12.5
    assert 0.0 <= frames.min() and frames.max() <= 1.0 and frames.std() > 0.01
    assert audio["waveform"].shape[-1] == round(6 / 12.5 * audio["sample_rate"])
    assert (bars[-1].current, bars[-1].total) == (1, 1)  # 1 step x 1 window
    retimed, fps25, _ = run(pack, "SonicSampler", model=demo_model, predata=short_predata, fps=25.0,
                            **SAMPLER_DEFAULTS)
    assert fps25 == 25.0 and retimed.shape[0] == 12  # no RIFE: sonic_core.interpolation.retime's linear midpoints
    assert torch.equal(retimed[::2], frames)  # the same seed gives the same frames: nothing carried over


@pytest.mark.slow
def test_sampler_to_video_streams_the_same_generation_into_an_mp4(pack, demo_model, short_predata, tmp_path):
    frames, _, _ = run(pack, "SonicSampler", model=demo_model, predata=short_predata, fps=12.5, **SAMPLER_DEFAULTS)
    out = run_node(pack_nodes(pack)["SonicSamplerToVideo"], model=demo_model, predata=short_predata, fps=12.5,
                   **SAMPLER_DEFAULTS)
    (path,) = out.args  # outside ComfyUI the VIDEO is the file's path
    assert path == str(tmp_path / "temp" / "sonic" / "SonicSampler_00001_.mp4")
    assert out.ui == {"images": [{"filename": "SonicSampler_00001_.mp4", "subfolder": "sonic", "type": "temp",
                                  "format": "video/mp4"}], "animated": (True,)}
    info = probe(path)
    assert info["video"]["frames"] == len(frames) == 6 and (info["video"]["width"], info["video"]["height"]) == (256,
                                                                                                                256)
    assert info["audio"]["codec"] == "aac" and info["audio"]["duration"] == pytest.approx(6 / 12.5, abs=0.03)
    raw = subprocess.run([ffmpeg_exe(), "-v", "error", "-i", path, "-f", "rawvideo", "-pix_fmt", "rgb24", "-"],
                         capture_output=True, check=True).stdout
    decoded = torch.frombuffer(bytearray(raw), dtype=torch.uint8).reshape(-1, 256, 256, 3).float() / 255
    assert (decoded - frames).abs().mean() < 0.05  # the Sampler's frames, through h264 at crf 18


def test_sampler_interrupt_raises_before_any_output(pack, demo_model, short_predata, monkeypatch):
    compat = importlib.import_module("sonic_pack.nodes.comfy_compat")
    checks = []

    def cancel(*_):
        checks.append(1)
        raise SonicInterrupted("cancelled by the user")

    monkeypatch.setattr(compat, "throw_if_interrupted", cancel)
    with pytest.raises(SonicInterrupted):
        run(pack, "SonicSampler", model=demo_model, predata=short_predata, fps=12.5, **SAMPLER_DEFAULTS)
    assert checks == [1]  # checked before the first UNet call


def test_sampler_refuses_unconnected_inputs(pack, demo_model):
    with pytest.raises(SonicInputError, match="Sonic PreData"):
        run(pack, "SonicSampler", model=demo_model, predata=None, fps=25.0, **SAMPLER_DEFAULTS)


def test_samplers_refuse_an_input_they_do_not_declare(pack, demo_model, short_predata):
    for node_id in ("SonicSampler", "SonicSamplerToVideo"):
        with pytest.raises(SonicInputError, match=r"unknown Sampler input\(s\) \['duration'\]: .*'steps'"):
            run(pack, node_id, model=demo_model, predata=short_predata, duration=3.0, **SAMPLER_DEFAULTS)


def test_lipsync_align_corrects_a_known_offset_in_the_audio(pack):
    frames, samples, _ = synthetic.talking_clip(0.12, duration=3.0, start=0.5, size=128, seed=4)
    images = frames.permute(0, 2, 3, 1)
    audio = {"waveform": torch.from_numpy(np.stack([samples, samples]))[None], "sample_rate": 16000}
    out_images, out_audio, report = run(pack, "SonicLipSyncAlign", images=images, audio=audio, fps=25.0,
                                        mode="correct", max_offset=0.3, min_confidence=0.3)
    assert out_images is images and "applied: audio delayed" in report, report
    moved = out_audio["waveform"]
    assert moved.shape == audio["waveform"].shape and torch.equal(moved[0, 0], moved[0, 1])
    lag = int(np.argmax(np.correlate(moved[0, 0].numpy()[:16000], samples[:16000], "full"))) - 15999
    assert 0.09 * 16000 < lag < 0.15 * 16000, report  # the audio was delayed by about the 0.12 s offset
    _, kept, measured = run(pack, "SonicLipSyncAlign", images=images, audio=audio, fps=25.0, mode="measure",
                            max_offset=0.3, min_confidence=0.3)
    assert kept is audio and measured.split(":")[0] == report.split(":")[0]  # same measurement, nothing applied


def test_motion_smooth_reduces_jitter_and_retimes(pack):
    frames, _, _ = synthetic.motion_clip(duration=2.0, size=128, seed=8)
    images, fps, report = run(pack, "SonicMotionSmooth", images=frames.permute(0, 2, 3, 1), fps=25.0,
                              method="bezier", strength="auto", target_fps=50.0, border="reflect")
    assert images.shape == (100, 128, 128, 3) and fps == 50.0
    before, after = (float(x) for x in report.split("jitter ")[1].split(" px")[0].split(" -> "))
    assert after < before / 2 and "50 frames at 25 fps -> 100 at 50 fps" in report
    with pytest.raises(SonicInputError, match="strength"):
        run(pack, "SonicMotionSmooth", images=frames.permute(0, 2, 3, 1), fps=25.0, method="bezier",
            strength="lots", target_fps=0.0, border="reflect")


def test_speech_from_waveform_is_load_speechs_duration_check_for_audio_in_memory():
    from sonic_core.audio import speech_from_waveform

    second = np.ones((1, 16000), np.float32)
    assert speech_from_waveform(second, 16000, 1.03).samples.size == 16000  # within one 25-fps frame: kept
    padded = speech_from_waveform(second, 16000, 1.5, "pad")
    assert padded.samples.size == 24000 and not padded.samples[16000:].any() and padded.waveform.shape == (1, 24000)
    trimmed = speech_from_waveform(second, 16000, 0.5, "trim")
    assert trimmed.samples.size == 8000 and speech_from_waveform(second, 16000).samples.size == 16000
    with pytest.raises(SonicAudioError, match="fit='pad'"):
        speech_from_waveform(second, 16000, 1.5)
    with pytest.raises(SonicAudioError, match="duration mode"):
        speech_from_waveform(second, 16000, 1.5, "stretch")


def test_loader_dtype_auto_is_fp32_on_a_cpu(pack):
    (model,) = run(pack, "SonicLoader", weights=DEMO, dtype="auto", device="cpu")
    assert model.dtype == torch.float32
    assert next(model.models.unet.parameters()).dtype == torch.float32
