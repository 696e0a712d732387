"""Post-processing wired into generation: PostOptions validation and a tiny-model render with Lip-Sync Align and
Motion Smooth on, checked through the written MP4."""

from __future__ import annotations

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
from sonic_core.post.chain import PostOptions
from sonic_core.render import render_video
from sonic_core.settings import SonicSettings
from sonic_core.video import probe
from sonic_core.weights.tiny import tiny_models


@pytest.mark.parametrize("kwargs, field", [({"lipsync": "fix"}, "lipsync"), ({"smooth": "gauss"}, "smooth")])
def test_post_options_reject_unknown_modes(kwargs, field) -> None:
    with pytest.raises(SonicInputError, match=field):
        PostOptions(**kwargs)
    assert not PostOptions().active and PostOptions(smooth="savgol").active


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
    assert set(report.post) == {"lipsync", "smooth"}
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
