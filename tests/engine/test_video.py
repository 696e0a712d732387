import os
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch
from sonic_testing import REPO

from sonic_core.errors import SonicDependencyError, SonicInputError
from sonic_core.video import VideoWriter, frames_to_uint8, probe

SPEECH = REPO / "sonic_core" / "assets" / "speech.wav"


def _speech() -> tuple[np.ndarray, int]:
    import soundfile

    samples, rate = soundfile.read(SPEECH, dtype="float32")
    return samples, rate


def test_float_frames_are_truncated_not_rounded():
    frames = torch.full((2, 3, 4, 6), 0.999)
    frames[1] = 0.5
    out = frames_to_uint8(frames)
    assert out.shape == (2, 4, 6, 3) and out.dtype == np.uint8
    assert out[0].max() == out[0].min() == 254  # 254.745 truncated
    assert out[1].max() == 127  # 127.5 truncated
    assert frames_to_uint8(torch.tensor([[[[-1.0]], [[2.0]], [[0.0]]]]))[0, 0, 0].tolist() == [0, 255, 0]
    hwc = np.arange(4 * 6 * 3, dtype=np.uint8).reshape(4, 6, 3)
    assert np.array_equal(frames_to_uint8(hwc)[0], hwc)


def test_tensor_frames_quantised_in_place_equal_the_numpy_path():
    values = torch.rand(3, 3, 8, 5, generator=torch.Generator().manual_seed(0)) * 1.2 - 0.1
    values[0, 0, 0, :4] = torch.tensor([k / 255 for k in (1, 128, 254, 255)])  # exact multiples of 1/255
    assert np.array_equal(frames_to_uint8(values), frames_to_uint8(values.numpy()))
    assert np.array_equal(frames_to_uint8(values.half()), frames_to_uint8(values.half().float().numpy()))


def test_mp4_with_audio_samples_is_cut_to_the_video(tmp_path):
    samples, rate = _speech()
    target = tmp_path / "clip.mp4"
    with VideoWriter(target, 64, 48, 25, audio=(torch.from_numpy(samples), rate), frames=40) as writer:
        writer.write(torch.rand(25, 3, 48, 64))
        writer.write(np.zeros((15, 48, 64, 3), np.uint8))
    info = probe(target)
    assert [p.name for p in tmp_path.iterdir()] == ["clip.mp4"]
    assert info["video"]["codec"] == "h264" and info["video"]["frames"] == 40
    assert (info["video"]["width"], info["video"]["height"]) == (64, 48)
    assert info["video"]["fps"] == pytest.approx(25.0)
    assert info["audio"]["codec"] == "aac" and info["audio"]["sample_rate"] == rate
    assert info["audio"]["duration"] == pytest.approx(1.6, abs=0.03)  # 40 / 25 s of a 6.59 s speech track


def test_webm_with_audio_file_and_audio_shorter_than_video(tmp_path):
    target = tmp_path / "clip.webm"
    with VideoWriter(target, 32, 32, 12.5, audio=str(SPEECH), frames=100, codec="vp9", crf=40) as writer:
        writer.write(torch.rand(100, 3, 32, 32))
    info = probe(target)
    assert info["video"]["codec"] == "vp9" and info["video"]["frames"] == 100
    assert info["video"]["duration"] == pytest.approx(8.0, abs=0.01)
    assert info["audio"]["codec"] == "opus"
    assert info["audio"]["duration"] == pytest.approx(6.594, abs=0.03)  # the whole speech, not padded


def test_video_without_audio(tmp_path):
    with VideoWriter(tmp_path / "a.mp4", 16, 16, 25, pix_fmt="yuv444p") as writer:
        writer.write(torch.rand(5, 3, 16, 16))
    info = probe(tmp_path / "a.mp4")
    assert info["audio"] is None and info["video"]["frames"] == 5


@pytest.mark.parametrize("queued", [0, 2])
@pytest.mark.parametrize("failure", [RuntimeError, KeyboardInterrupt])
def test_failure_or_interrupt_leaves_nothing_behind(tmp_path, failure, queued):
    samples, rate = _speech()
    with pytest.raises(failure):
        with VideoWriter(tmp_path / "x.mp4", 32, 32, 25, audio=(samples, rate), frames=10, queued=queued) as writer:
            writer.write(torch.rand(4, 3, 32, 32))
            raise failure("stop")
    assert list(tmp_path.iterdir()) == []
    assert writer._feeder is None


def test_the_feeder_thread_writes_the_same_file(tmp_path):
    """Chunks fed to ffmpeg from the writer's own thread (a queue of one, so writes wait on it) give the bytes of
    the single-thread writer."""
    samples, rate = _speech()
    chunks = list(torch.rand(6, 3, 3, 48, 64, generator=torch.Generator().manual_seed(0)))
    for queued in (0, 1):
        with VideoWriter(tmp_path / f"{queued}.mp4", 64, 48, 25, audio=(samples, rate), frames=18,
                         queued=queued) as writer:
            for chunk in chunks:
                writer.write(chunk)
    assert (tmp_path / "0.mp4").read_bytes() == (tmp_path / "1.mp4").read_bytes()


def test_ffmpeg_dying_under_the_feeder_is_one_error_and_leaves_nothing(tmp_path):
    with pytest.raises(SonicDependencyError, match="ffmpeg stopped while encoding"):
        with VideoWriter(tmp_path / "x.mp4", 64, 64, 25, queued=1) as writer:
            writer.write(torch.rand(2, 3, 64, 64))
            writer._process.kill()
            for _ in range(4):  # 96 KiB after the kill, more than a pipe holds: the feeder meets the dead pipe
                writer.write(torch.rand(2, 3, 64, 64))
    assert list(tmp_path.iterdir()) == []


def test_ffmpeg_runs_in_its_own_session_and_is_killed_when_the_writer_aborts(tmp_path):
    """A terminal's Ctrl-C goes to its foreground process group: ffmpeg is outside ours, so only Python gets it,
    and the abort (not the signal) ends ffmpeg."""
    with pytest.raises(KeyboardInterrupt):
        with VideoWriter(tmp_path / "x.mp4", 32, 32, 25) as writer:
            writer.write(torch.rand(2, 3, 32, 32))
            ffmpeg = writer._process
            assert os.getsid(ffmpeg.pid) == os.getpgid(ffmpeg.pid) == ffmpeg.pid != os.getpgid(0)
            raise KeyboardInterrupt
    assert ffmpeg.returncode == -signal.SIGKILL
    assert list(tmp_path.iterdir()) == []


def test_a_second_interrupt_while_aborting_still_removes_the_files(tmp_path):
    samples, rate = _speech()
    with pytest.raises(KeyboardInterrupt):
        with VideoWriter(tmp_path / "x.mp4", 32, 32, 25, audio=(samples, rate), frames=10) as writer:
            writer.write(torch.rand(4, 3, 32, 32))
            ffmpeg = writer._process
            real_wait = ffmpeg.wait

            def interrupted_wait(*args, **kwargs):  # Ctrl-C pressed again while the writer reaps ffmpeg
                ffmpeg.wait = real_wait
                raise KeyboardInterrupt

            ffmpeg.wait = interrupted_wait
            raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []
    assert ffmpeg.wait(timeout=60) == -signal.SIGKILL  # killed before the wait was interrupted


_CTRL_C_SCRIPT = """
import signal, sys, time, torch
from sonic_core.video import VideoWriter
signal.signal(signal.SIGINT, signal.default_int_handler)  # whatever disposition this test run inherited
try:
    with VideoWriter(sys.argv[1], 32, 32, 25) as writer:
        ffmpeg = writer._process
        writer.write(torch.rand(3, 3, 32, 32))
        print("writing", flush=True)
        while True:
            time.sleep(1)
except KeyboardInterrupt:
    print("interrupted, ffmpeg exit", ffmpeg.returncode, flush=True)
    sys.exit(130)
"""


def test_ctrl_c_to_the_foreground_group_mid_write_leaves_nothing(tmp_path):
    """A terminal's Ctrl-C, mid-write: SIGINT to the whole process group of a program holding an open writer."""
    proc = subprocess.Popen([sys.executable, "-c", _CTRL_C_SCRIPT, str(tmp_path / "x.mp4")], cwd=REPO,
                            env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert proc.stdout.readline() == "writing\n", proc.communicate()
        os.killpg(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, err[-2000:]
    assert out == f"interrupted, ffmpeg exit {-signal.SIGKILL}\n"  # killed by the abort, not stopped by the SIGINT
    assert list(tmp_path.iterdir()) == []


def test_wrong_frame_count_is_an_error_and_writes_nothing(tmp_path):
    samples, rate = _speech()
    with pytest.raises(SonicInputError, match="frames=10"):
        with VideoWriter(tmp_path / "x.mp4", 32, 32, 25, audio=(samples, rate), frames=10) as writer:
            writer.write(torch.rand(4, 3, 32, 32))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("kwargs, match", [
    ({"width": 33}, "even width"), ({"codec": "av1"}, "codec"), ({"crf": 52}, "crf"), ({"fps": 0}, "fps"),
    ({"pix_fmt": "rgb24"}, "pix_fmt"), ({"audio": str(SPEECH)}, "number of frames"),
])
def test_bad_settings_are_one_line_errors(tmp_path, kwargs, match):
    settings = {"path": tmp_path / "x.mp4", "width": 32, "height": 32, "fps": 25, **kwargs}
    with pytest.raises(SonicInputError, match=match) as info:
        VideoWriter(**settings)
    assert "\n" not in str(info.value)


def test_wrong_frame_size_is_refused(tmp_path):
    with pytest.raises(SonicInputError, match="opened for 32x32"):
        with VideoWriter(tmp_path / "x.mp4", 32, 32, 25) as writer:
            writer.write(torch.rand(1, 3, 16, 16))
    assert list(tmp_path.iterdir()) == []


def test_missing_ffmpeg_is_a_dependency_error(monkeypatch, tmp_path):
    import imageio_ffmpeg

    def no_binary():
        raise RuntimeError("No ffmpeg exe could be found")

    monkeypatch.setattr(imageio_ffmpeg, "get_ffmpeg_exe", no_binary)
    with pytest.raises(SonicDependencyError, match="IMAGEIO_FFMPEG_EXE"):
        with VideoWriter(tmp_path / "x.mp4", 32, 32, 25) as writer:
            writer.write(torch.rand(1, 3, 32, 32))
    assert list(tmp_path.iterdir()) == []


def test_probe_rejects_what_is_not_media(tmp_path):
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"not a video")
    with pytest.raises(SonicInputError, match="junk.mp4"):
        probe(junk)
    with pytest.raises(SonicInputError, match="does not exist"):
        probe(tmp_path / "missing.mp4")
