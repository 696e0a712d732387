"""The ``generate`` and ``demo`` commands as a user runs them: the no-download demo writes an MP4 whose audio is the
bundled speech (probed), Ctrl-C leaves no file, and every bad input, setting, output path or weights folder ends in
one ``error:`` line with exit status 2 and no file, before any weights are read. (The pipeline itself, end to end
on the tiny model and its flat memory, is tested in engine/test_render.py.)"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from PIL import Image
from sonic_testing import REPO, run_cli

from sonic_core import timing
from sonic_core.audio import audio_duration
from sonic_core.cli import main
from sonic_core.cli.demo import DEMO_DEFAULTS, DEMO_PORTRAIT, DEMO_SPEECH
from sonic_core.settings import SonicSettings
from sonic_core.tokens import settings_tokens
from sonic_core.video import probe
from sonic_core.weights.layout import RIFE_WEIGHTS, assets_dir

SPEECH_SECONDS = audio_duration(DEMO_SPEECH)


def needs_rife() -> None:
    if not (assets_dir() / RIFE_WEIGHTS).is_file():
        pytest.fail(f"real RIFE weights absent at {assets_dir() / RIFE_WEIGHTS}: run scripts/fetch_assets.py")


@pytest.mark.slow
def test_demo_writes_an_mp4_of_the_bundled_speech(tmp_path):
    needs_rife()
    out = tmp_path / "demo.mp4"
    r = run_cli("demo", "--out", str(out), "--json")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "untrained" in r.stderr and "fetch-weights" in r.stderr
    cost = json.loads(r.stdout)
    generated = timing.generated_frames(SPEECH_SECONDS)
    size = DEMO_DEFAULTS["min_resolution"]
    info = probe(out)
    video, audio = info["video"], info["audio"]
    assert video["codec"] == "h264" and audio["codec"] == "aac"
    assert (video["width"], video["height"], video["fps"]) == (size, size, 25.0)
    assert video["frames"] == cost["video"]["frames_written"] == 2 * generated - 1
    assert abs(video["duration"] - SPEECH_SECONDS) <= 0.08
    assert abs(audio["duration"] - SPEECH_SECONDS) <= 0.08
    settings = SonicSettings(**DEMO_DEFAULTS)
    assert cost["tokens"] == settings_tokens(settings, cost["video"]["audio_seconds"]) > 0
    assert cost["model"] == "embedded tiny model (untrained)"
    assert cost["prediction"]["device"] == "cpu" and "predicted_seconds" in cost
    assert set(cost["actual"]["seconds"]) >= {"sampling", "decode", "interpolate", "encode"}
    assert cost["actual"]["peak_host_mb"] > 0
    print(f"demo: {cost['actual']['total_seconds']:.1f} s ({cost['actual']['seconds']}), video "
          f"{video['duration']:.3f} s, audio {audio['duration']:.3f} s, speech {SPEECH_SECONDS:.3f} s")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo.mp4"]


def _partial_with_data(folder) -> bool:
    """The writer's hidden partial file holds encoded data: ffmpeg has been fed frames (decode and RIFE ran)."""
    for path in folder.glob("*.partial"):
        try:
            if path.stat().st_size > 0:
                return True
        except FileNotFoundError:  # removed by a run that just failed: the caller's poll() reports it
            pass
    return False


@pytest.mark.slow
@pytest.mark.parametrize("inherited", [signal.SIG_DFL, signal.SIG_IGN], ids=["sigint-default", "sigint-ignored"])
def test_ctrl_c_during_the_encode_leaves_no_file(tmp_path, inherited):
    """SIGINT once frames stream into the encoder ends the run with 130 and no file. ``sigint-ignored`` starts the
    CLI as a non-interactive shell starts a background job (``cmd &``, as a script or CI step does): SIGINT ignored,
    which Python keeps unless the program resets it; it then ignored the signal and wrote the whole video."""
    needs_rife()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-m", "sonic_core", "demo", "--out", str(tmp_path / "demo.mp4"),
                             "--steps", "1"], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, preexec_fn=lambda: signal.signal(signal.SIGINT, inherited))
    try:
        deadline = time.monotonic() + 600  # a safety net only: the event waited for is the encoder's first output
        while not _partial_with_data(tmp_path):  # past sampling, decoding and interpolating into the encoder
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the encoder never started"
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, stderr[-2000:]
    assert stderr.strip().splitlines()[-1] == "error: interrupted; no output file was written"
    assert list(tmp_path.iterdir()) == []


class StderrWatch:
    """Reads a process's stderr on a thread and sets an event once ``marker`` has appeared in it."""

    def __init__(self, proc: subprocess.Popen, marker: str) -> None:
        self.proc, self.marker, self.text = proc, marker, ""
        self.seen = threading.Event()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        while char := self.proc.stderr.read(1):
            self.text += char
            if self.marker in self.text:
                self.seen.set()
        self.seen.set()  # the process ended: the waiter checks whether the marker came

    def wait(self) -> None:
        self.seen.wait()
        assert self.marker in self.text, f"the run ended before {self.marker!r}: {self.text[-2000:]}"

    def rest(self) -> str:
        self.thread.join()
        return self.text


@pytest.mark.parametrize("stage", ["sampling", "decoding"])
def test_ctrl_c_during_sampling_or_decoding_leaves_no_file(tmp_path, stage):
    """SIGINT once the stage's progress bar appears on stderr (the event the CLI itself prints when the stage
    begins) ends the run with 130 and leaves neither the video nor its hidden partial file. The bars show that the
    signal landed inside the stage: interrupted in sampling, decoding never began; in decoding, not every chunk was
    decoded (82 frames: 11 chunks)."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-m", "sonic_core", "demo", "--out", str(tmp_path / "demo.mp4"),
                             "--steps", "4", "--no-interpolate"], cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    watch = StderrWatch(proc, f"{stage}:")
    try:
        watch.wait()
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    stderr = watch.rest()
    assert proc.returncode == 130, stderr[-2000:]
    assert stderr.rstrip().endswith("error: interrupted; no output file was written")  # after the bar's clearing
    assert stderr.count("error:") == 1 and "Traceback" not in stderr
    if stage == "sampling":
        assert "decoding:" not in stderr
    else:
        assert "11/11" not in stderr
    assert list(tmp_path.iterdir()) == []


def run_main(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_one_line_error(code: int, err: str, *needles: str) -> None:
    assert code == 2, err
    assert err.startswith("error: ") and err.strip().count("\n") == 0, err
    for needle in needles:
        assert needle in err, err


@pytest.fixture
def gray_image(tmp_path):
    path = tmp_path / "gray.png"
    Image.fromarray(np.full((256, 256, 3), 128, np.uint8)).save(path)
    return path


@pytest.fixture
def corrupt_audio(tmp_path):
    path = tmp_path / "broken.wav"
    path.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk" * 10)
    return path


def generate(tmp_path, *extra: str, image=DEMO_PORTRAIT, audio=DEMO_SPEECH, out=None) -> list[str]:
    """``generate`` arguments for the bundled inputs with an empty weights folder."""
    (tmp_path / "weights").mkdir(exist_ok=True)
    if out is None:
        out = tmp_path / "out" / "clip.mp4"
        out.parent.mkdir(exist_ok=True)
    return ["generate", "--image", str(image), "--audio", str(audio), "--out", str(out),
            "--weights", str(tmp_path / "weights"), "--device", "cpu", *extra]


def no_mp4(tmp_path) -> bool:
    return not any(p.suffix in (".mp4", ".partial") for p in tmp_path.rglob("*") if p.is_file())


def test_empty_weights_folder_lists_every_missing_file(tmp_path, capsys):
    code, out, err = run_main(capsys, *generate(tmp_path))
    assert_one_line_error(code, err, "missing Sonic weights", "fetch-weights")
    for component in ("unet", "audio2token", "audio2bucket", "whisper", "svd", "rife"):
        assert f"{component} -> {tmp_path / 'weights'}" in err
    assert out == "" and no_mp4(tmp_path)


def test_without_interpolation_rife_is_not_asked_for(tmp_path, capsys):
    code, _, err = run_main(capsys, *generate(tmp_path, "--no-interpolate"))
    assert_one_line_error(code, err, "missing Sonic weights", "svd -> ")
    assert "rife" not in err


def test_no_face_in_the_portrait(tmp_path, gray_image, capsys):
    code, _, err = run_main(capsys, *generate(tmp_path, image=gray_image))
    assert_one_line_error(code, err, "face")
    assert no_mp4(tmp_path)


def test_corrupt_audio(tmp_path, corrupt_audio, capsys):
    code, _, err = run_main(capsys, *generate(tmp_path, audio=corrupt_audio))
    assert_one_line_error(code, err, "broken.wav")
    assert no_mp4(tmp_path)


def test_duration_mismatch_and_fit(tmp_path, capsys):
    code, _, err = run_main(capsys, *generate(tmp_path, "--duration", "3"))
    assert_one_line_error(code, err, "lasts 6.594 s", "requested duration is 3.000 s", "trim")
    code, _, err = run_main(capsys, *generate(tmp_path, "--duration", "3", "--fit", "trim"))
    assert_one_line_error(code, err, "missing Sonic weights")  # the audio passed; the weights are next


def test_unreadable_image(tmp_path, capsys):
    code, _, err = run_main(capsys, *generate(tmp_path, image=DEMO_SPEECH))
    assert_one_line_error(code, err, "--image", "not a readable image")


@pytest.mark.parametrize("flags, needle", [
    (("--steps", "0"), "steps=0"),
    (("--min-resolution", "100"), "min_resolution=100"),
    (("--min-resolution", "300"), "multiple of 64"),
    (("--dynamic-scale", "9"), "dynamic_scale=9.0"),
    (("--expand-ratio", "7"), "expand_ratio"),
    (("--expand-ratio", "wide"), "expand_ratio"),
    (("--fps", "30"), "--fps 30"),
    (("--crf", "99"), "crf=99"),
    (("--device", "quantum"), "--device 'quantum'"),
    (("--dtype", "fp16"), "fp16 on the CPU"),
    (("--memory-budget", "8XB"), "--memory-budget '8XB' is not a memory size"),
])
def test_absurd_settings(tmp_path, capsys, flags, needle):
    code, _, err = run_main(capsys, *generate(tmp_path, *flags))
    assert_one_line_error(code, err, needle)
    assert no_mp4(tmp_path)


@pytest.mark.parametrize("where, needle", [
    ("missing/clip.mp4", "does not exist"),
    ("adir.mp4", "is a directory"),
    ("clip.avi", "not an .mp4 path"),
])
def test_hostile_output_paths(tmp_path, capsys, where, needle):
    (tmp_path / "adir.mp4").mkdir()
    code, _, err = run_main(capsys, *generate(tmp_path, out=tmp_path / where))
    assert_one_line_error(code, err, "--out", needle)
    assert no_mp4(tmp_path)


def test_demo_without_the_rife_assets_says_how_to_fetch_them(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("SONIC_ASSETS_DIR", str(tmp_path / "no-assets"))
    code, _, err = run_main(capsys, "demo", "--out", str(tmp_path / "demo.mp4"))
    assert_one_line_error(code, err, "RIFE weights are missing", "scripts/fetch_assets.py", "--no-interpolate")
    assert no_mp4(tmp_path)


def test_errors_reach_the_user_as_one_line_and_status_2(tmp_path):
    r = run_cli(*generate(tmp_path, "--steps", "0"))
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.strip().count("\n") == 0 and r.stderr.startswith("error: steps=0")

