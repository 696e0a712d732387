"""``--devices D1,D2,...``: one clip sampled on several devices (:mod:`sonic_core.distributed`).

Started by a user, ``generate`` or ``demo`` with several devices becomes a launcher: one process per device runs the
same command line as one rank (env ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR=127.0.0.1`` and a free
``MASTER_PORT``); rank 0's report and progress reach the terminal, the other ranks' output is kept only to explain a
failure. The launcher waits on its children's exits (one event per child, no polling); the first rank that fails
stops the others (SIGTERM, which a rank turns into the interruption that removes its temporary files; SIGKILL after
a grace period as a backstop), and the run ends with one line naming the rank and its reason (its last error line,
exit status or signal), a non-zero status and no video file, partial or final.

Started by ``torchrun`` (``RANK``/``WORLD_SIZE`` set), the command is one rank: its device is ``--devices`` at
``LOCAL_RANK``, else ``--device`` (a bare ``cuda`` becomes ``cuda:LOCAL_RANK``).
"""

from __future__ import annotations

import argparse
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import torch

from ..device import parse_device
from ..distributed import RankGroup, join, leave, rank_environment
from ..errors import SonicInputError

RankRun = Callable[[torch.device, RankGroup | None], int]
LOOPBACK = "127.0.0.1"
# A rank asked to stop that still runs after this is killed: Python code takes the SIGTERM at once, but a rank blocked
# inside the rendezvous (waiting for a rank that died before joining) or a collective never returns to Python.
STOP_GRACE_SECONDS = 10.0
TAIL_BYTES = 8192
RANK_LOST_STATUS = 3  # a rank that stopped because another one did; cli.main's status for SonicRankLost


def add_devices_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--devices", metavar="D1,D2,...",
                        help="sample the clip on several devices at once, one process each (cuda:0,cuda:1 with "
                             "NCCL, or cpu,cpu with gloo); rank 0 decodes and writes the video. Also runs under "
                             "torchrun")


def parse_devices(text: str) -> list[torch.device]:
    """The devices of ``--devices``: of one kind; each CUDA device once (the CPU may repeat)."""
    names = [name.strip() for name in text.split(",")]
    if not all(names):
        raise SonicInputError(f"--devices {text!r}: list devices separated by commas, like cuda:0,cuda:1")
    devices = [parse_device(name, "--devices") for name in names]
    if len({device.type for device in devices}) > 1:
        raise SonicInputError(f"--devices {text!r} mixes device kinds: list only CUDA devices (NCCL) or only cpu "
                              "(gloo)")
    if devices[0].type == "cuda":
        devices = [torch.device("cuda", device.index or 0) for device in devices]
        count = torch.cuda.device_count()
        for device in devices:
            if device.index >= count:
                raise SonicInputError(f"--devices {text!r}: {device} does not exist here ({count} CUDA devices)")
        if len(set(devices)) < len(devices):
            raise SonicInputError(f"--devices {text!r} names a CUDA device twice: list each one once")
    return devices


def plan_devices(devices_flag: str | None, device_flag: str) -> list[torch.device]:
    """The devices of this process: several (it launches one rank per device), or its one device (alone, or as a
    rank of a launcher's or torchrun's run: ``--devices`` at ``LOCAL_RANK``, else ``--device``)."""
    devices = parse_devices(devices_flag) if devices_flag else None
    place = rank_environment()
    if place is None:
        return devices or [parse_device(device_flag, "--device")]
    _, _, local_rank = place
    if devices is None:
        device = parse_device(device_flag, "--device")
        return [torch.device("cuda", local_rank) if device.type == "cuda" and device.index is None else device]
    if local_rank >= len(devices):
        raise SonicInputError(f"--devices lists {len(devices)} devices but this is local rank {local_rank}: list "
                              "one device per process started on this machine")
    return [devices[local_rank]]


def run_on_devices(argv: Sequence[str], devices: list[torch.device], out: Path, run: RankRun) -> int:
    """Launch one process per device running ``argv`` (several ``devices``), or ``run(device, ranks)`` here: alone
    (``ranks`` None) or as this process's rank of a run."""
    if len(devices) > 1:
        return launch(argv, devices, out)
    if rank_environment() is None:
        return run(devices[0], None)
    signal.signal(signal.SIGTERM, _interrupt)  # the launcher's or torchrun's stop: leave no temporary file
    ranks = join(devices[0])
    try:
        return run(devices[0], ranks)
    finally:
        leave()


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


@dataclass
class RankProcess:
    """One launched rank: its process, the tail of its stderr, and whether the launcher asked it to stop."""

    rank: int
    device: torch.device
    process: subprocess.Popen
    tail: bytearray = field(default_factory=bytearray)
    asked_to_stop: bool = False
    mid_line: bool = False  # what was echoed of its output ends without a newline (a progress bar)

    def reason(self) -> str:
        """Why it ended: its last error line (the one-line error or an exception's last traceback line) with the
        exit status, or the signal that killed it."""
        code = self.process.returncode
        if code is not None and code < 0:
            try:
                return f"was killed by {signal.Signals(-code).name}"
            except ValueError:
                return f"was killed by signal {-code}"
        lines = [line.strip() for line in self.tail.decode(errors="replace").replace("\r", "\n").splitlines()]
        last = next((line for line in reversed(lines) if line), "")
        return f"failed (exit status {code})" + (f": {last.removeprefix('error: ')}" if last else "")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((LOOPBACK, 0))
        return probe.getsockname()[1]


def temporary_outputs(out: Path) -> set[Path]:
    """The video writer's temporary files for ``out`` (the partial video, the audio it muxes)."""
    folder = out.parent if str(out.parent) else Path(".")
    return set(folder.glob(f".{out.stem}.*.partial")) | set(folder.glob(f".{out.stem}.*.audio.wav"))


def launch(argv: Sequence[str], devices: list[torch.device], out: Path) -> int:
    """Run ``python -m sonic_core ARGV`` once per device as the ranks of one run; see the module docstring."""
    package_root = str(Path(__file__).resolve().parents[2])  # the ranks import this very sonic_core
    env = {**os.environ, "WORLD_SIZE": str(len(devices)), "LOCAL_WORLD_SIZE": str(len(devices)),
           "MASTER_ADDR": LOOPBACK, "MASTER_PORT": str(free_port()),
           "PYTHONPATH": os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")]))}
    before = temporary_outputs(out)
    exits: queue.Queue[RankProcess] = queue.Queue()
    ranks: list[RankProcess] = []
    failures: list[RankProcess] = []
    terminate = signal.signal(signal.SIGTERM, _interrupt)  # a launcher stopped by a job runner stops its ranks
    try:
        for rank, device in enumerate(devices):
            process = subprocess.Popen([sys.executable, "-m", "sonic_core", *argv],
                                       env={**env, "RANK": str(rank), "LOCAL_RANK": str(rank)},
                                       stdout=None if rank == 0 else subprocess.DEVNULL, stderr=subprocess.PIPE)
            ranks.append(RankProcess(rank, device, process))
            threading.Thread(target=_follow, args=(ranks[-1], exits, sys.stderr if rank == 0 else None, failures),
                             daemon=True).start()
        for _ in ranks:
            ended = exits.get()
            if ended.process.returncode != 0:
                failures.append(ended)
                _stop(ranks)
    finally:
        _stop(ranks)
        for path in temporary_outputs(out) - before:
            path.unlink(missing_ok=True)
        signal.signal(signal.SIGTERM, terminate)
    if not failures:
        return 0
    culprit = _first_cause(failures)
    if ranks[0].mid_line:
        print(file=sys.stderr)
    print(f"error: rank {culprit.rank} ({culprit.device}) {culprit.reason()}; the other ranks were stopped and no "
          "video was written", file=sys.stderr)
    code = culprit.process.returncode
    return code if code > 0 and code != RANK_LOST_STATUS else 1


def _follow(rank: RankProcess, exits: queue.Queue, echo: IO[str] | None, failures: list[RankProcess]) -> None:
    """Read the rank's stderr to its end, then report its exit. With ``echo`` its lines (and progress updates,
    which end in a carriage return) are passed on while the run is healthy, except its own ``error:`` line, which
    the launcher's line repeats with the rank."""
    stream, pending = rank.process.stderr, b""
    while chunk := os.read(stream.fileno(), 4096):
        rank.tail += chunk
        del rank.tail[:-TAIL_BYTES]
        if echo is not None:
            pending += chunk
            cut = max(pending.rfind(b"\n"), pending.rfind(b"\r")) + 1
            _echo(rank, echo, pending[:cut], failures)
            pending = pending[cut:]
    if echo is not None:
        _echo(rank, echo, pending, failures)
    rank.process.wait()
    exits.put(rank)


def _echo(rank: RankProcess, echo: IO[str], lines: bytes, failures: list[RankProcess]) -> None:
    kept = b"".join(line for line in re.split(rb"(?<=[\r\n])", lines) if not line.startswith(b"error: "))
    if kept and not failures:
        echo.write(kept.decode(errors="replace"))
        echo.flush()
        rank.mid_line = not kept.endswith(b"\n")


def _stop(ranks: list[RankProcess]) -> None:
    """Ask every running rank to stop, then make sure each has exited."""
    for rank in ranks:
        if rank.process.poll() is None:
            rank.asked_to_stop = True
            rank.process.send_signal(signal.SIGTERM)
            rank.process.send_signal(signal.SIGCONT)  # a stopped (SIGSTOP) rank handles the SIGTERM too
    for rank in ranks:
        try:
            rank.process.wait(STOP_GRACE_SECONDS)
        except subprocess.TimeoutExpired:
            rank.process.kill()
            rank.process.wait()


def _first_cause(failures: list[RankProcess]) -> RankProcess:
    """The rank that failed on its own: not one the launcher stopped, nor one that stopped because a peer was lost
    (in exit order; the first failure when none qualifies)."""
    own = [rank for rank in failures if not rank.asked_to_stop and rank.process.returncode != RANK_LOST_STATUS]
    return own[0] if own else failures[0]
