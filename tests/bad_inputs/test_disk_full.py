"""A disk that fills while the Video Combine node writes the video: one SonicError line, and no file left behind.

The output folder is a small tmpfs mounted in a private mount namespace (``unshare --mount``, util-linux) of a
child process, so nothing is mounted on the host and the mount ends with the child. The frames are noise, which
h264 cannot compress, so the video outgrows the tmpfs; with a large enough tmpfs the same run succeeds (the
control case, which shows that the full disk is what fails the first one).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
from sonic_testing import REPO, assert_one_line

TESTS = REPO / "tests"

WRITE_VIDEO = f"""
import json, os, sys
sys.path.insert(0, {str(TESTS)!r})
import torch
from sonic_testing import load_pack, pack_nodes, run_node
from sonic_core.errors import SonicError

pack = load_pack()
node = pack_nodes(pack)["SonicVideoCombine"]
frames = torch.rand(50, 256, 256, 3, generator=torch.Generator().manual_seed(0))
audio = {{"waveform": torch.zeros(1, 1, 32000), "sample_rate": 16000}}
try:
    run_node(node, images=frames, audio=audio, fps=25.0, crf=0, pix_fmt="yuv444p")
    outcome = {{"error": None}}
except Exception as exc:
    outcome = {{"error": type(exc).__name__, "sonic": isinstance(exc, SonicError), "message": str(exc)}}
output = sys.argv[1]
outcome["left"] = sorted(os.path.relpath(os.path.join(d, f), output) for d, _, fs in os.walk(output) for f in fs)
print(json.dumps(outcome))
"""


def write_video_on_tmpfs(root, size: str) -> dict:
    """Run the node in a child whose ComfyUI output folder is a tmpfs of ``size``; what it reported."""
    if shutil.which("unshare") is None:
        pytest.fail("unshare is missing: install util-linux (scripts/apt-packages.txt)")
    for folder in ("input", "output", "temp"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    output = root / "output"
    mount_and_run = 'mount -t tmpfs -o size="$1" tmpfs "$2" && exec "$3" -c "$4" "$2"'
    as_root = [] if os.geteuid() == 0 else ["--map-root-user"]  # a user namespace lets a non-root user mount
    result = subprocess.run(["unshare", *as_root, "--mount", "--propagation", "private", "sh", "-c", mount_and_run,
                             "sh", size, str(output), sys.executable, WRITE_VIDEO],
                            capture_output=True, text=True, timeout=600, cwd=REPO,
                            env={"PATH": "/usr/bin:/bin", "SONIC_COMFY_ROOT": str(root), "HOME": str(root)})
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_disk_full_while_writing_the_video_is_one_line_and_leaves_no_file(tmp_path):
    full = write_video_on_tmpfs(tmp_path / "small", "256k")
    assert full["error"] is not None and full["sonic"], full
    assert_one_line(full["message"], "No space left on device")
    assert full["left"] == [], full

    roomy = write_video_on_tmpfs(tmp_path / "roomy", "256m")
    assert roomy["error"] is None, roomy
    assert len(roomy["left"]) == 1 and roomy["left"][0].endswith(".mp4"), roomy
