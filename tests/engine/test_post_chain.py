"""Post-processing wired into generation: PostOptions validation, a tiny-model render with Lip-Sync Align and
Motion Smooth on, and one with paste-back, deflicker and colour match, checked through the written MP4."""

from __future__ import annotations

import subprocess

import numpy as np
import pytest
import torch
from PIL import Image
from sonic_testing import run_cli

from sonic_core.audio import Speech
from sonic_core.errors import SonicInputError
from sonic_core.face.box import FaceBox
from sonic_core.face.crop import Reference
from sonic_core.inputs import PreparedInputs
from sonic_core.pipeline import SonicPipeline
from sonic_core.post import synthetic
from sonic_core.post.chain import PostOptions
from sonic_core.render import render_video
from sonic_core.settings import SonicSettings
from sonic_core.video import ffmpeg_exe, probe
from sonic_core.weights.tiny import tiny_models


@pytest.mark.parametrize("kwargs, field", [({"lipsync": "fix"}, "lipsync"), ({"smooth": "gauss"}, "smooth"),
                                           ({"deflicker": "yes"}, "deflicker"), ({"paste_back": 1}, "paste_back"),
                                           ({"colour_strength": 1.2}, "colour_strength"),
                                           ({"colour_strength": "full"}, "colour_strength"),
                                           ({"paste_feather": -0.1}, "paste_feather")])
def test_post_options_reject_bad_values(kwargs, field) -> None:
    with pytest.raises(SonicInputError, match=field) as caught:
        PostOptions(**kwargs)
    assert "\n" not in str(caught.value)


def test_post_option_defaults() -> None:
    default = PostOptions()
    assert default.deflicker and default.colour_strength == 1.0 and not default.paste_back
    assert default.streaming and not default.whole_clip
    assert not PostOptions(deflicker=False, colour_strength=0.0).active
    assert PostOptions(deflicker=False, colour_strength=0.0, smooth="savgol").whole_clip


def _reference(original: Image.Image, crop_box: tuple[int, int, int, int], size: int) -> Reference:
    """A prepared portrait by hand: ``crop_box`` of ``original`` resized to ``size`` x ``size``."""
    image = original.crop(crop_box).resize((size, size), Image.Resampling.LANCZOS)
    pixels = torch.from_numpy(np.asarray(image, np.float32) / 255.0).permute(2, 0, 1)
    box = FaceBox(size / 4, size / 4, size / 2, size / 2)
    side = crop_box[2] - crop_box[0]
    return Reference(image=image, ref_image=pixels * 2 - 1, face_mask=torch.ones(1, size, size), face_box=box,
                     crop_box=crop_box, mask_box=box.scaled(side / size, side / size), expand_ratio=0.5,
                     clip_source=image, original=original)


def _speech(seconds: float) -> Speech:
    samples = (0.1 * np.random.default_rng(0).standard_normal(int(seconds * 16000))).astype(np.float32)
    return Speech(samples[None], 16000, samples)


def test_render_with_paste_back_writes_the_original_frame_size(tmp_path) -> None:
    original = Image.fromarray(np.asarray(synthetic.paste_case((0, 0, 1, 1), count=1, shot=(301, 203))[0]
                                          .permute(1, 2, 0).mul(255).round().byte()))
    reference = _reference(original, (120, 40, 184, 104), 64)
    out = tmp_path / "pasted.mp4"
    report = render_video(SonicPipeline(tiny_models()), PreparedInputs(_speech(1.0), reference), out,
                          SonicSettings(steps=1, interpolate=False),
                          post=PostOptions(paste_back=True, colour_strength=1.0))
    assert set(report.post) == {"deflicker", "colour", "paste"}
    assert (report.width, report.height) == (301, 203)
    assert report.post["paste"]["pasted_box"] == [120, 40, 184, 104] and report.post["paste"]["seam_ratio"] > 0
    assert report.post["deflicker"]["frames"] == report.post["colour"]["frames"] == report.frames_written
    info = probe(out)["video"]
    assert (info["width"], info["height"], info["frames"]) == (301, 203, report.frames_written)
    # outside the crop the video shows the original shot (up to the encoder's loss)
    raw = subprocess.run([ffmpeg_exe(), "-v", "error", "-i", str(out), "-frames:v", "1", "-f", "rawvideo",
                          "-pix_fmt", "rgb24", "-"], capture_output=True, check=True).stdout
    first = np.frombuffer(raw, np.uint8).reshape(203, 301, 3).astype(np.float32)
    assert np.abs(first[:30] - np.asarray(original, np.float32)[:30]).mean() < 0.03 * 255


def test_paste_back_without_the_original_is_refused_before_any_work(tmp_path) -> None:
    reference = _reference(Image.new("RGB", (96, 96), (90, 90, 90)), (16, 16, 80, 80), 64)
    reference.original = None
    out = tmp_path / "never.mp4"
    with pytest.raises(SonicInputError, match="paste_back"):
        render_video(SonicPipeline(tiny_models()), PreparedInputs(_speech(1.0), reference), out,
                     SonicSettings(steps=1, interpolate=False), post=PostOptions(paste_back=True),
                     on_step=lambda done, total: pytest.fail("the generation started"))
    assert not out.exists() and not list(tmp_path.iterdir())


def test_render_with_post_processing_reports_and_keeps_lengths(tmp_path) -> None:
    width, height, seconds = 128, 64, 2.0
    rng = np.random.default_rng(0)
    samples = (0.1 * rng.standard_normal(int(seconds * 16000))).astype(np.float32)
    image = Image.fromarray(np.full((height, width, 3), 128, np.uint8))
    box = FaceBox(width / 4, height / 4, width / 2, height / 2)
    reference = Reference(image=image, ref_image=torch.zeros(3, height, width), face_mask=torch.ones(1, height, width),
                          face_box=box, crop_box=(0, 0, width, height), mask_box=box, expand_ratio=0.5,
                          clip_source=image)
    inputs = PreparedInputs(Speech(samples[None], 16000, samples), reference)
    out = tmp_path / "post.mp4"
    report = render_video(SonicPipeline(tiny_models()), inputs, out, SonicSettings(steps=1, interpolate=False),
                          post=PostOptions(lipsync="correct", smooth="bezier"))
    assert set(report.post) == {"lipsync", "smooth", "deflicker", "colour"}  # both on by default
    # both steps track the face the generation found (no detection on the generated frames)
    assert tuple(report.post["lipsync"]["face_box"]) == box.xywh
    assert tuple(report.post["smooth"]["face_box"]) == box.xywh
    # the untrained model's mouth does not follow the speech: the offset is never applied on a guess
    assert not report.post["lipsync"]["applied"] and "not applied" in report.post["lipsync"]["reason"]
    assert report.post["smooth"]["frames_out"] == report.frames_generated == report.frames_written == 25
    info = probe(out)
    assert abs(info["video"]["duration"] - 25 / 12.5) < 0.05 and abs(info["audio"]["duration"] - 2.0) < 0.05
    assert "post" in report.seconds


def test_cli_rejects_a_bad_smooth_strength(tmp_path) -> None:
    result = run_cli("demo", "--out", str(tmp_path / "x.mp4"), "--smooth", "bezier", "--smooth-strength", "2")
    assert result.returncode == 2 and "between 0 and 1" in result.stderr
    assert not (tmp_path / "x.mp4").exists()

