"""``python -m sonic_core queue`` against two real ComfyUI servers on 127.0.0.1 with the pack, the demo model and
metering on: a dozen short clips priced, dispatched, followed and downloaded; one server killed and restarted
mid-run without losing or duplicating a job; a rerun that does nothing; a job over its tier refused with the
server's reason and nothing charged."""

from __future__ import annotations

import csv
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest
import soundfile
from comfyui_harness import ComfyServer, ensure_comfyui
from sonic_testing import REPO, speech_clips

from sonic_core.fleet.comfy_client import ComfyClient
from sonic_core.metering.ledger import open_ledger
from sonic_core.video import probe

pytestmark = [pytest.mark.comfyui, pytest.mark.slow]
ASSETS = REPO / "sonic_core" / "assets"
CLIPS = 12
CREDIT = 1_000_000
METERING = """enforce = true
default_key = "studio"
default_tier = "standard"
ledger = "sqlite:///{ledger}"
"""


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    install = ensure_comfyui()
    started = []
    try:
        for name in ("a", "b"):
            base = tmp_path_factory.mktemp(f"comfy_{name}")
            config = base / "metering.toml"
            config.write_text(METERING.format(ledger=base / "ledger.db"))
            open_ledger(f"sqlite:///{base / 'ledger.db'}").credit("studio", CREDIT)
            server = ComfyServer(install, base)
            server.start(extra_env={"SONIC_METERING": str(config)})
            server.metering_env = {"SONIC_METERING": str(config)}
            server.ledger_url = f"sqlite:///{base / 'ledger.db'}"
            started.append(server)
        yield started
    finally:
        for server in started:
            server.stop()


@pytest.fixture(scope="module")
def batch(tmp_path_factory):
    """12 clips of 0.8 to 1.35 s cut from the bundled speech, the bundled portrait, 256 px, one step, 12.5 fps."""
    folder = tmp_path_factory.mktemp("batch")
    rows = [{"image": str(ASSETS / "portrait.jpg"), "audio": clip.name, "output": f"{clip.stem}.mp4",
             "min_resolution": 256, "steps": 1, "fps": 12.5, "seed": index}
            for index, clip in enumerate(speech_clips(folder, CLIPS))]
    with (folder / "jobs.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return folder


def submit(batch, servers, out, *extra: str, wait: bool = True) -> subprocess.Popen | subprocess.CompletedProcess:
    args = [sys.executable, "-m", "sonic_core", "queue", "submit", str(batch / "jobs.csv"), "--out", str(out),
            "--yes", *[arg for server in servers for arg in ("--server", server.url)], *extra]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    if wait:
        return subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=1800)
    return subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def count_jobs(state_file, status: str, server: str | None = None) -> int:
    if not state_file.exists():
        return 0
    with sqlite3.connect(state_file) as db:
        return db.execute("SELECT COUNT(*) FROM jobs WHERE status = ? AND (? IS NULL OR server = ?)",
                          (status, server, server)).fetchone()[0]


def written_videos(servers) -> dict[str, int]:
    """How many videos each job's key was written as, over every server's output folder."""
    counts: dict[str, int] = {}
    for server in servers:
        for video in (server.output_dir / "sonic-queue").glob("*.mp4"):
            key = video.name.split("_")[0]  # Video Combine writes KEY_00001_.mp4
            counts[key] = counts.get(key, 0) + 1
    return counts


def test_a_batch_survives_a_server_killed_mid_run_and_runs_each_job_once(servers, batch, tmp_path):
    out = tmp_path / "out"
    state_file = out / ".sonic-queue.sqlite"
    process = submit(batch, servers, out, wait=False)
    try:
        victim = servers[1]
        deadline = time.monotonic() + 900  # a safety net: the test waits for events, not for a time
        while count_jobs(state_file, "done") < 3 or count_jobs(state_file, "queued", victim.url) < 1:
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "no job finished"
            time.sleep(0.1)
        os.killpg(victim.process.pid, signal.SIGKILL)  # mid-run: jobs queued and running on it are lost
        victim.process.wait()
        victim.process = None
        victim.start(extra_env=victim.metering_env)
        stdout, stderr = process.communicate(timeout=1500)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, stderr[-3000:]
    assert f"{CLIPS} of {CLIPS} clips done" in stdout
    # the kill took jobs with it: sent again, or found finished in the output folder (its history went with it)
    assert f"was lost by {victim.url} (restarted)" in stdout or f"had finished on {victim.url}" in stdout
    summary = json.loads((out / "summary.json").read_text())
    assert len(summary) == CLIPS and all(row["status"] == "done" for row in summary)
    assert {row["server"] for row in summary} == {server.url for server in servers}  # both servers took jobs
    for row in summary:
        info = probe(row["output_path"])
        assert info["video"]["codec"] == "h264" and info["audio"]["codec"] == "aac"
        seconds = soundfile.info(batch / row["output"].replace(".mp4", ".wav")).duration
        assert abs(info["video"]["duration"] - seconds) < 2 / 12.5  # whole generated frames of the clip's audio
    assert sorted(written_videos(servers).values()) == [1] * CLIPS  # every job ran exactly once

    again = submit(batch, servers, out)
    assert again.returncode == 0, again.stderr[-2000:]
    assert f"{CLIPS} jobs, {CLIPS} already done; 0 to run" in again.stdout
    assert sorted(written_videos(servers).values()) == [1] * CLIPS  # the rerun sent nothing


def test_a_job_over_its_tier_is_refused_with_the_servers_reason_and_nothing_charged(servers, batch, tmp_path):
    before = metric_totals(servers[0])
    balance_before = open_ledger(servers[0].ledger_url).balance("studio")
    jobs = batch / "over.csv"
    jobs.write_text(f"image,audio,output,steps,min_resolution,fps\n{ASSETS / 'portrait.jpg'},clip00.wav,"
                    "over.mp4,30,256,12.5\n")
    (batch / "jobs.csv").rename(batch / "jobs.keep")
    try:
        jobs.rename(batch / "jobs.csv")
        result = submit(batch, servers[:1], tmp_path / "out")
    finally:
        (batch / "jobs.csv").rename(jobs)
        (batch / "jobs.keep").rename(batch / "jobs.csv")
    assert result.returncode == 1
    assert "refused by the tier" in result.stdout and "30 steps are above the tier's 20" in result.stdout
    (row,) = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert row["status"] == "failed" and "30 steps are above the tier's 20" in row["error"]
    after = metric_totals(servers[0])
    assert after.get("sonic_tokens_total", 0) == before.get("sonic_tokens_total", 0)  # nothing accepted or charged
    assert after["sonic_refusals_total"] == before.get("sonic_refusals_total", 0) + 1
    assert row["key"] not in written_videos(servers)
    balance = open_ledger(servers[0].ledger_url).balance("studio")
    assert (balance.balance, balance.held, balance.spent) == (balance_before.balance, 0, balance_before.spent)


def metric_totals(server: ComfyServer) -> dict[str, float]:
    """Each sample of the server's /sonic/metrics summed over its labels."""
    from prometheus_client.parser import text_string_to_metric_families

    totals: dict[str, float] = {}
    for family in text_string_to_metric_families(ComfyClient(server.url).metrics()):
        for sample in family.samples:
            totals[sample.name] = totals.get(sample.name, 0.0) + sample.value
    return totals


def test_refusals_and_node_errors_are_one_line_with_the_servers_reason(servers):
    from sonic_core.fleet.comfy_client import ComfyRefused

    client = ComfyClient(servers[0].url)
    with pytest.raises(ComfyRefused) as refused:
        client.submit({"1": {"class_type": "NoSuchNode", "inputs": {}}})
    assert refused.value.status == 400 and "NoSuchNode" in str(refused.value) and "\n" not in str(refused.value)


def test_status_and_cancel_act_on_the_state_file(servers, batch, tmp_path):
    from sonic_core.fleet.jobs import check_jobs, job_graph, load_template
    from sonic_core.fleet.state import BatchState

    server = servers[0]
    client = ComfyClient(server.url)
    jobs, _ = check_jobs(batch / "jobs.csv")
    first, second = jobs[:2]
    graph = job_graph(load_template(), first, client.upload(first.image, name=f"{first.key}.jpg"),
                      client.upload(first.audio, name=f"{first.key}.wav"))
    state = BatchState(tmp_path / "state.sqlite")
    state.add(first.key, first.line, first.output)
    state.add(second.key, second.line, second.output)
    busy = jobs[2]
    busy.knobs["steps"] = 8  # keeps the server busy, so the job below waits in the queue
    blocker = client.submit(job_graph(load_template(), busy, client.upload(busy.image, name=f"{busy.key}.jpg"),
                                      client.upload(busy.audio, name=f"{busy.key}.wav")))
    prompt_id = client.submit(graph)
    state.update(first.key, status="queued", server=server.url, prompt_id=prompt_id)
    common = ["--state", str(tmp_path / "state.sqlite"), "--server", server.url]
    run = lambda *args: subprocess.run([sys.executable, "-m", "sonic_core", "queue", *args, *common], cwd=REPO,  # noqa: E731
                                       env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True,
                                       timeout=300)
    status = run("status")
    assert status.returncode == 0 and "1 queued, 1 pending" in status.stdout
    cancel = run("cancel", "--all")
    assert cancel.returncode == 0, cancel.stderr
    assert f"line {first.line}: {first.output} cancelled" in cancel.stdout
    assert {s.status for s in state.all()} == {"cancelled"}
    running, pending = client.queue()
    assert prompt_id not in pending  # deleted from the queue, or interrupted if it had started
    if prompt_id in running:
        assert client.follow(prompt_id, timeout=300).status == "interrupted"
    assert run("cancel", "--all").returncode == 2  # nothing left to cancel: one line, exit 2
    client.interrupt()
    assert client.follow(blocker, timeout=300).status in ("interrupted", "success")
