"""``--devices``: the demo on two CPU ranks (gloo) writes a playable video with rank 0's report; a rank killed with
SIGKILL stops the run with one line naming it, a non-zero status and no file; a rank's own error names that rank.
(That the ranks sample the latents of one process is tested in engine/test_distributed.py.)"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from sonic_testing import PORTRAIT, run_cli, started_cli

from sonic_core.cli import main
from sonic_core.video import probe

# half a second of the bundled speech: 6 generated frames, one window a step (rank 1 samples none and still sums)
SHORT_DEMO = ("--no-interpolate", "--steps", "1", "--duration", "0.5", "--fit", "trim", "--devices", "cpu,cpu")
STOPPED = "the other ranks were stopped and no video was written"


def test_demo_on_two_cpu_ranks_writes_the_video(tmp_path):
    out = tmp_path / "clip.mp4"
    r = run_cli("demo", "--out", str(out), "--json", *SHORT_DEMO)
    assert r.returncode == 0, r.stderr[-2000:]
    cost = json.loads(r.stdout)  # rank 0's report alone: the other rank's output does not reach the terminal
    info = probe(out)
    assert info["video"]["codec"] == "h264" and info["audio"]["codec"] == "aac"
    assert info["video"]["frames"] == cost["video"]["frames_written"] == 6
    assert r.stderr.count("untrained") == 1 and "error" not in r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4"]


def rank_pid(launcher: int, rank: int) -> int | None:
    """The pid of the launcher's child running as ``rank`` (its environment says so once it has started)."""
    for child in Path(f"/proc/{launcher}/task/{launcher}/children").read_text().split():
        try:
            environ = Path(f"/proc/{child}/environ").read_bytes().split(b"\0")
        except (FileNotFoundError, ProcessLookupError):
            continue
        if f"RANK={rank}".encode() in environ:
            return int(child)
    return None


def wait_for_rank(proc: subprocess.Popen, rank: int) -> int:
    deadline = time.monotonic() + 300  # a safety net only: the event waited for is the rank's start
    while (pid := rank_pid(proc.pid, rank)) is None:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, f"rank {rank} never started"
        time.sleep(0.02)
    return pid


def test_a_killed_rank_stops_the_run_with_its_rank_and_no_file(tmp_path):
    """Rank 0 is frozen (SIGSTOP) as soon as it starts, so rank 1, which cannot get past the rendezvous or any
    all-reduce without it, cannot finish before it is killed: no timing decides the outcome."""
    with started_cli("demo", "--out", str(tmp_path / "clip.mp4"), *SHORT_DEMO) as proc:
        frozen = wait_for_rank(proc, 0)
        os.kill(frozen, signal.SIGSTOP)
        os.kill(wait_for_rank(proc, 1), signal.SIGKILL)
        _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 1, stderr[-2000:]
    assert stderr.strip().splitlines()[-1] == f"error: rank 1 (cpu) was killed by SIGKILL; {STOPPED}"
    with pytest.raises(ProcessLookupError):  # the frozen rank was stopped too (and reaped)
        os.kill(frozen, 0)
    assert list(tmp_path.iterdir()) == []


def test_a_rank_that_fails_is_named_with_its_error(tmp_path, capsys):
    """Every rank reads the (corrupt) speech; the first to fail is named with its one-line error and status."""
    speech = tmp_path / "broken.wav"
    speech.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk" * 10)
    (tmp_path / "weights").mkdir()
    code = main(["generate", "--image", str(PORTRAIT), "--audio", str(speech), "--out", str(tmp_path / "clip.mp4"),
                 "--weights", str(tmp_path / "weights"), "--devices", "cpu,cpu"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.count("\n") == 1 and err.startswith("error: rank "), err
    assert "(cpu) failed (exit status 2): " in err and "broken.wav" in err and err.strip().endswith(STOPPED)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken.wav", "weights"]


@pytest.mark.parametrize("devices, needle", [("cpu,,cpu", "separated by commas"), ("cpu,quantum", "'quantum'")])
def test_bad_device_lists_are_one_line_before_any_rank_starts(tmp_path, capsys, devices, needle):
    code = main(["demo", "--out", str(tmp_path / "clip.mp4"), "--devices", devices])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: --devices") and err.count("\n") == 1 and needle in err, err
    assert list(tmp_path.iterdir()) == []
