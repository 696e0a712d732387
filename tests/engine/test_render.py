"""End to end on the embedded tiny model: real face detection, real log-mel and whisper, sliding windows, RIFE and
the muxed MP4; cancellation leaves nothing behind; host memory stays flat in audio length (streamed decode)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
from sonic_testing import REPO

from sonic_core.errors import SonicInterrupted
from sonic_core.inputs import prepare_inputs
from sonic_core.pipeline import SonicPipeline
from sonic_core.render import render_video
from sonic_core.settings import SonicSettings
from sonic_core.video import probe
from sonic_core.weights.layout import RIFE_WEIGHTS, assets_dir
from sonic_core.weights.tiny import tiny_models

PORTRAIT = REPO / "sonic_core" / "assets" / "portrait.jpg"
SPEECH = REPO / "sonic_core" / "assets" / "speech.wav"
# 2.2 s: 55 audio frames -> 27 generated frames, i.e. two 25-frame windows per step (the shift is exercised)
CLIP_SECONDS = 2.2


@pytest.fixture(scope="module")
def pipeline() -> SonicPipeline:
    from sonic_core.weights.loader import load_rife

    weights = assets_dir() / RIFE_WEIGHTS
    if not weights.is_file():
        pytest.fail(f"real RIFE weights absent at {weights}: run scripts/fetch_assets.py")
    return SonicPipeline(tiny_models(rife=load_rife(weights)))


SETTINGS = SonicSettings(min_resolution=256, steps=2, duration=CLIP_SECONDS)


def test_generate_writes_a_lip_synced_mp4(pipeline, tmp_path) -> None:
    out = tmp_path / "clip.mp4"
    progress: list[tuple[int, int]] = []
    inputs = prepare_inputs(PORTRAIT, SPEECH, SETTINGS, fit="trim")
    report = render_video(pipeline, inputs, out, SETTINGS, on_step=lambda done, total: progress.append((done, total)))
    assert report.frames_generated == 27 and report.frames_written == 2 * 27 - 1
    assert (report.width, report.height, report.fps) == (256, 256, 25.0)
    assert progress[-1] == (4, 4)  # 2 steps x 2 windows
    assert set(report.seconds) >= {"audio", "face", "conditioning", "sampling", "decode", "interpolate", "encode"}
    info = probe(out)
    video, audio = info["video"], info["audio"]
    assert video["codec"] == "h264" and audio["codec"] == "aac"
    assert (video["width"], video["height"], video["frames"], video["fps"]) == (256, 256, 53, 25.0)
    assert abs(video["duration"] - 53 / 25) < 1e-3
    assert abs(audio["duration"] - video["duration"]) < 0.08
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4"]


def test_cancelled_generation_leaves_no_file(pipeline, tmp_path) -> None:
    checks: list[int] = []

    def stop_while_decoding() -> bool:  # two checks before the sampler's UNet calls, the third in the decode loop
        checks.append(1)
        return len(checks) == 3

    with pytest.raises(SonicInterrupted):
        render_video(pipeline, prepare_inputs(PORTRAIT, SPEECH, SETTINGS, fit="trim"), tmp_path / "clip.mp4",
                     SETTINGS.replace(steps=1), should_stop=stop_while_decoding)
    assert len(checks) == 3 and list(tmp_path.iterdir()) == []


# -- host memory is flat in audio length ------------------------------------------------------------------------

MEMORY_RUN = textwrap.dedent("""
    import json, sys
    import numpy as np, torch
    from PIL import Image
    from sonic_core.audio import Speech
    from sonic_core.face.box import FaceBox
    from sonic_core.face.crop import Reference
    from sonic_core.inputs import PreparedInputs
    from sonic_core.pipeline import SonicPipeline
    from sonic_core.render import render_video
    from sonic_core.settings import SonicSettings
    from sonic_core.weights.tiny import tiny_models

    seconds, out, width, height = float(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    torch.manual_seed(0)
    samples = np.float32(0.1) * np.sin(np.arange(int(seconds * 16000), dtype=np.float32) * np.float32(0.05))
    image = Image.fromarray(np.full((height, width, 3), 128, np.uint8))
    box = FaceBox(width / 4, height / 4, width / 2, height / 2)
    reference = Reference(image=image, ref_image=torch.rand(3, height, width) * 2 - 1,
                          face_mask=torch.ones(1, height, width), face_box=box, crop_box=(0, 0, width, height),
                          mask_box=box, expand_ratio=0.5, clip_source=image)
    inputs = PreparedInputs(Speech(samples[None], 16000, samples), reference)
    settings = SonicSettings(steps=1, interpolate=False)
    report = render_video(SonicPipeline(tiny_models()), inputs, out, settings, windows_per_call=8)
    print(json.dumps(report.to_dict()))
""")


def _peak_rss(seconds: float, out, width: int, height: int) -> dict:
    result = subprocess.run([sys.executable, "-c", MEMORY_RUN, str(seconds), str(out), str(width), str(height)],
                            cwd=REPO, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout.splitlines()[-1])


@pytest.mark.slow
def test_host_memory_is_flat_in_audio_length(tmp_path) -> None:
    width, height = 128, 64
    short = _peak_rss(10.0, tmp_path / "short.mp4", width, height)
    long = _peak_rss(60.0, tmp_path / "long.mp4", width, height)
    assert (short["frames_written"], long["frames_written"]) == (125, 750)
    # peak_host_mb is the child's own VmHWM: ru_maxrss would start at this (big) test process's peak
    print(f"peak RSS 10 s: {short['peak_host_mb']:.0f} MB, 60 s: {long['peak_host_mb']:.0f} MB")
    assert long["peak_host_mb"] <= 1.25 * short["peak_host_mb"]
