"""Sonic Loader, PreData, Sampler, Lip-Sync Align and Motion Smooth in plain Python (no ComfyUI), on the demo model."""

import importlib
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
from PIL import Image
from sonic_testing import (REPO, assert_one_line, load_pack, pack_nodes, run_node, svd_header_file,
                           write_findable_weight_set)

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
                        appearance_guidance=2.0, deflicker=False, colour_strength=0.0)  # raw frames: studio steps below


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
    svd_header_file(tmp_path / "models" / "checkpoints" / "video" / "svd_xt_image_decoder.safetensors", temporal=False)
    loader = importlib.import_module("sonic_pack.nodes.sonic")
    incomplete = f"{sonic} (incomplete, missing: audio2token.pth, audio2bucket.pth, whisper-tiny/, " \
                 "svd_xt.safetensors (checkpoints); not used: svd_xt_image_decoder.safetensors)"
    assert loader.weights_choices() == [DEMO, incomplete]  # listed with what it lacks; an empty folder is not
    with pytest.raises(SonicWeightsError) as chosen:
        run(pack, "SonicLoader", weights=incomplete, dtype="fp16", device="cpu")
    assert_one_line(str(chosen.value), f"audio2bucket -> {sonic / 'Sonic' / 'audio2bucket.pth'}",
                    f"svd -> {tmp_path / 'models' / 'checkpoints' / 'svd_xt.safetensors'}",
                    "svd_xt_image_decoder.safetensors (its VAE has no temporal decoder")
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


class FolderPaths:
    """ComfyUI's folder_paths as an extra_model_paths.yaml leaves it: several folders per name."""

    def __init__(self, folders: dict[str, list[Path]]) -> None:
        self.folders = folders

    def get_folder_paths(self, folder_name: str) -> list[str]:
        return [str(folder) for folder in self.folders[folder_name]]


def test_weights_list_covers_every_folder_comfyui_knows(pack, tmp_path, monkeypatch):
    models, extra = tmp_path / "models", tmp_path / "extra"
    folders = {"sonic": [models / "sonic", extra / "sonic"], "checkpoints": [models / "checkpoints", extra / "ckpt"]}
    monkeypatch.setattr(importlib.import_module("sonic_pack.nodes.comfy_compat"), "folder_paths",
                        FolderPaths(folders))
    svd = extra / "ckpt" / "video" / "svd_xt.safetensors"
    write_findable_weight_set(extra / "sonic", svd)
    svd_header_file(svd.with_name("svd_xt_image_decoder.safetensors"), temporal=False)
    write_findable_weight_set(models / "sonic", None, skip=("Sonic/audio2bucket.pth", "whisper-tiny/model.safetensors"))
    loader = importlib.import_module("sonic_pack.nodes.sonic")
    incomplete = f"{models / 'sonic'} (incomplete, missing: audio2bucket.pth, whisper-tiny/)"
    assert loader.weights_choices() == [DEMO, str(extra / "sonic"), incomplete]
    sets = loader.weight_sets()
    assert sets[str(models / "sonic")].svd == svd == sets[str(extra / "sonic")].svd  # any checkpoints folder
    assert [(r.path.name, "no temporal decoder" in r.reason) for r in sets[str(extra / "sonic")].rejected] == [
        ("svd_xt_image_decoder.safetensors", True)]
    with pytest.raises(SonicWeightsError) as chosen:
        run(pack, "SonicLoader", weights=incomplete, dtype="fp16", device="cpu")
    assert_one_line(str(chosen.value), f"audio2bucket -> {models / 'sonic' / 'Sonic' / 'audio2bucket.pth'}",
                    f"whisper -> {models / 'sonic' / 'whisper-tiny' / 'model.safetensors'}")
    assert "unet" not in str(chosen.value) and "svd ->" not in str(chosen.value)


class ImageVAE:
    """Shaped like a ComfyUI VAE of an image model: a first stage without SVD's temporal decoder."""

    def __init__(self) -> None:
        self.first_stage_model = torch.nn.ModuleDict({"encoder": torch.nn.ModuleDict(
            {"conv_in": torch.nn.Conv2d(3, 8, 3)})})


def test_loader_refuses_a_vae_or_clip_vision_it_cannot_share_in_one_line(pack):
    with pytest.raises(SonicInputError) as not_a_vae:
        run(pack, "SonicLoader", weights=DEMO, dtype="fp32", device="cpu", vae=torch.zeros(1))
    assert_one_line(str(not_a_vae.value), "vae: a Tensor is not a ComfyUI VAE", "Image Only Checkpoint Loader")
    with pytest.raises(SonicInputError) as not_a_clip:
        run(pack, "SonicLoader", weights=DEMO, dtype="fp32", device="cpu", clip_vision=ImageVAE())
    assert_one_line(str(not_a_clip.value), "clip_vision: a ImageVAE is not a ComfyUI CLIP_VISION")
    with pytest.raises(SonicWeightsError) as other_vae:
        run(pack, "SonicLoader", weights=DEMO, dtype="fp32", device="cpu", vae=ImageVAE())
    assert_one_line(str(other_vae.value), "VAE input", "svd_xt.safetensors (SVD's temporal VAE)")


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
    frames, fps, audio, _ = run(pack, "SonicSampler", model=demo_model, predata=short_predata, fps=12.5,
                                **SAMPLER_DEFAULTS)
    assert frames.shape == (6, 256, 256, 3) and frames.dtype == torch.float32 and fps == 12.5
    assert 0.0 <= frames.min() and frames.max() <= 1.0 and frames.std() > 0.01
    assert audio["waveform"].shape[-1] == round(6 / 12.5 * audio["sample_rate"])
    assert (bars[-1].current, bars[-1].total) == (2, 2)  # 1 step x 1 window, then 1 decoded chunk of 6 frames
    retimed, fps25, _, _ = run(pack, "SonicSampler", model=demo_model, predata=short_predata, fps=25.0,
                               **SAMPLER_DEFAULTS)
    assert fps25 == 25.0 and retimed.shape[0] == 12  # no RIFE: sonic_core.interpolation.retime's linear midpoints
    assert torch.equal(retimed[::2], frames)  # the same seed gives the same frames: nothing carried over


@pytest.mark.slow
def test_sampler_pastes_back_into_the_portrait_and_reports_the_studio_steps(pack, demo_model, short_predata):
    node = pack_nodes(pack)["SonicSampler"]
    optional = node.INPUT_TYPES()["optional"]
    assert optional["deflicker"][1]["default"] is True and optional["colour_strength"][1]["default"] == 1.0
    assert optional["paste_back"][1]["default"] is False
    out = run_node(node, model=demo_model, predata=short_predata, fps=12.5, steps=1, dynamic_scale=1.0,
                   motion_scale=1.0, seed=5, audio_guidance=7.5, appearance_guidance=2.0, paste_back=True,
                   paste_feather=0.05, colour_strength=0.5)
    frames, fps, _, box = out.args
    portrait = portrait_image()[0]
    assert frames.shape == (6, *portrait.shape) and fps == 12.5
    x1, y1, x2, y2 = (int(v) for v in box.split(","))
    assert (x1, y1, x2, y2) == short_predata.inputs.reference.crop_box
    # outside the crop box every frame is the portrait itself
    outside = torch.ones(portrait.shape[:2], dtype=torch.bool)
    outside[max(y1, 0):y2, max(x1, 0):x2] = False
    assert torch.allclose(frames[:, outside], portrait[outside].expand(6, -1, -1), atol=1e-6)
    text = out.ui["text"]
    assert [line.split(":")[0] for line in text] == ["deflicker", "colour", "paste"]
    assert '"frame_size": [512, 512]' in text[2]


@pytest.mark.parametrize("inputs, needle", [({"colour_strength": 2.0}, "colour_strength"),
                                            ({"paste_feather": 0.8}, "paste_feather")])
def test_sampler_refuses_bad_studio_options_before_generating(pack, demo_model, short_predata, inputs, needle):
    with pytest.raises(SonicInputError, match=needle):
        run(pack, "SonicSampler", model=demo_model, predata=short_predata, fps=12.5,
            **{**SAMPLER_DEFAULTS, **inputs})


def test_sampler_to_video_streams_the_same_generation_into_an_mp4(pack, demo_model, short_predata, tmp_path):
    frames, _, _, box = run(pack, "SonicSampler", model=demo_model, predata=short_predata, fps=12.5,
                            **SAMPLER_DEFAULTS)
    out = run_node(pack_nodes(pack)["SonicSamplerToVideo"], model=demo_model, predata=short_predata, fps=12.5,
                   **SAMPLER_DEFAULTS)
    path, video_box = out.args  # outside ComfyUI the VIDEO is the file's path
    assert video_box == box
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
