"""Running a batch of clips on one or more ComfyUI servers: price every job first, then dispatch each to the server
with the fewest queued tokens, follow them, download each video as it finishes and write a summary.

Exactly once across restarts (of this program or of a server): the state file (:mod:`.state`) records a job as
``submitting`` with its server before the POST, and the job's key is in its output prefix, so whatever happened to
the answer, the server's queue and history say whether it holds the job. A job is sent again only when its server
answers and holds it neither queued nor in its history.
"""

from __future__ import annotations

import csv
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .. import node_ids
from .comfy_client import ComfyClient, ComfyError, ComfyRefused, ComfyUnavailable, PromptResult
from .jobs import OUTPUT_FOLDER, Job, job_graph
from .state import FINAL, BatchState, JobState

VIDEO_SUFFIXES = (".mp4", ".webm")


@dataclass
class Server:
    """One server of the batch and what this batch has queued on it."""

    client: ComfyClient
    queued_tokens: int = 0
    in_flight: set[str] = field(default_factory=set)  # job keys
    down: bool = False

    @property
    def url(self) -> str:
        return self.client.url


@dataclass
class JobPrice:
    """A job's tokens (the same on every server) and its predicted seconds on each server's device."""

    job: Job
    tokens: int
    allowed: bool
    reason: str | None
    predicted_seconds: dict[str, float | None]


def price_jobs(jobs: list[Job], template: dict[str, Any], servers: list[Server],
               tier: str | None = None) -> list[JobPrice]:
    """Every job priced by every server's ``/sonic/estimate`` (the graph carries the audio's length, so nothing is
    uploaded); the tier verdict is the first server's."""
    prices = []
    for job in jobs:
        graph = job_graph(template, job, job.image.name, job.audio.name)
        answers = {server.url: server.client.estimate(graph, tier) for server in servers}
        first = answers[servers[0].url]
        prices.append(JobPrice(job, int(first["total_tokens"]), bool(first["allowed"]), first.get("reason"),
                               {url: answer.get("predicted_seconds") for url, answer in answers.items()}))
    return prices


def _holds_job(key: str) -> Callable[[dict[str, Any]], bool]:
    """Whether a queued or finished graph is this job's (its Video Combine writes under the job's key)."""
    prefix = f"{OUTPUT_FOLDER}/{key}"

    def check(prompt: dict[str, Any]) -> bool:
        return any(isinstance(node, dict) and node.get("class_type") == node_ids.VIDEO_COMBINE
                   and node.get("inputs", {}).get("filename_prefix") == prefix for node in prompt.values())

    return check


class BatchRunner:
    """Dispatch and follow the jobs of a batch; ``report(line)`` is told what happens, one line per event."""

    def __init__(self, jobs: list[JobPrice], template: dict[str, Any], servers: list[Server], out: Path,
                 state: BatchState, *, depth: int = 2, poll: float = 0.5,
                 report: Callable[[str], None] = print, on_finished: Callable[[JobState], None] | None = None) -> None:
        self.prices = {price.job.key: price for price in jobs}
        self.template, self.servers, self.out, self.state = template, servers, out, state
        self.depth, self.poll, self.report = depth, poll, report
        self.on_finished = on_finished
        for price in jobs:
            state.add(price.job.key, price.job.line, price.job.output, price.tokens,
                      price.predicted_seconds.get(servers[0].url))

    def _server(self, url: str | None) -> Server | None:
        return next((server for server in self.servers if server.url == url), None)

    def run(self) -> list[JobState]:
        """Until every job of the batch is done, failed or cancelled; returns their final states."""
        self._reattach()
        while True:
            states = {key: self.state.get(key) for key in self.prices}
            if all(s.status in FINAL for s in states.values()):
                return [states[key] for key in self.prices]
            for server in self.servers:
                server.down = server.down and not server.client.alive()
                if not server.down:
                    self._check_server(server)
            self._dispatch([key for key, s in states.items() if s.status == "pending"])
            for key, job_state in states.items():
                if job_state.status == "queued":
                    self._follow(key)
            time.sleep(self.poll)

    def _reattach(self) -> None:
        """Jobs a previous run left queued or submitting count on their servers again."""
        for key in self.prices:
            job_state = self.state.get(key)
            server = self._server(job_state.server)
            if job_state.status in ("queued", "submitting") and server is not None:
                server.in_flight.add(key)
                server.queued_tokens += self.prices[key].tokens
            elif job_state.status in ("queued", "submitting"):  # its server is not in this run: ask nobody, wait
                self.report(f"line {job_state.line}: {job_state.output} was sent to {job_state.server}, which is not "
                            "in this run's --server list; pass it again to follow the job")

    def _check_server(self, server: Server) -> None:
        """Settle the ``submitting`` jobs on a server that answers: held there -> queued, absent -> pending."""
        for key in list(server.in_flight):
            job_state = self.state.get(key)
            if job_state.status != "submitting":
                continue
            try:
                prompt_id = server.client.find(_holds_job(key))
            except ComfyUnavailable:
                server.down = True
                return
            server.down = False
            if prompt_id is not None:
                self.state.update(key, status="queued", prompt_id=prompt_id)
            elif not self._recover(server, key):
                self._release(server, key, status="pending", prompt_id=None)

    def _release(self, server: Server, key: str, **fields: object) -> JobState:
        server.in_flight.discard(key)
        server.queued_tokens -= self.prices[key].tokens
        return self.state.update(key, **fields)

    def _dispatch(self, pending: list[str]) -> None:
        for key in pending:
            open_servers = [s for s in self.servers if not s.down and len(s.in_flight) < self.depth]
            if not open_servers:
                return
            self._submit(min(open_servers, key=lambda s: (s.queued_tokens, len(s.in_flight))), key)

    def _submit(self, server: Server, key: str) -> None:
        price = self.prices[key]
        job = price.job
        try:
            image = server.client.upload(job.image, name=f"{key}-image{job.image.suffix.lower()}")
            audio = server.client.upload(job.audio, name=f"{key}-audio{job.audio.suffix.lower()}")
        except ComfyUnavailable:
            server.down = True
            return
        except ComfyRefused as exc:
            self._fail(key, str(exc))
            return
        graph = job_graph(self.template, job, image, audio)
        server.in_flight.add(key)
        server.queued_tokens += price.tokens
        self.state.update(key, status="submitting", server=server.url, prompt_id=None, error=None)
        try:
            prompt_id = server.client.submit(graph)
        except ComfyRefused as exc:
            self._release(server, key, status="failed", error=exc.args[0])
            self.report(f"line {job.line}: {job.output} refused by {server.url}: {exc.args[0]}")
            self._finished(key)
            return
        except ComfyUnavailable:
            server.down = True  # maybe sent, maybe not: the server's queue and history decide when it answers
            return
        self.state.update(key, status="queued", prompt_id=prompt_id)
        self.report(f"line {job.line}: {job.output} queued on {server.url} ({price.tokens} tokens)")

    def _follow(self, key: str) -> None:
        job_state = self.state.get(key)
        server = self._server(job_state.server)
        if server is None or server.down:
            return
        try:
            result = server.client.result(job_state.prompt_id)
            if result is None:
                running, pending = server.client.queue()
                if job_state.prompt_id in running or job_state.prompt_id in pending:
                    return
                result = server.client.result(job_state.prompt_id)
        except ComfyUnavailable:
            server.down = True
            return
        if result is None and not self._recover(server, key):  # the server restarted and holds the job nowhere
            self._release(server, key, status="pending", prompt_id=None)
            self.report(f"line {job_state.line}: {job_state.output} was lost by {server.url} (restarted); "
                        "sending it again")
        elif result is not None:
            self._complete(server, key, result)

    def _recover(self, server: Server, key: str) -> bool:
        """A job the server no longer knows (its queue and history went with a restart) may still have finished
        just before: its video under the job's key is then downloaded and the job is done, never run twice."""
        job_state = self.state.get(key)
        for suffix in VIDEO_SUFFIXES:
            output = {"filename": f"{key}_00001_{suffix}", "subfolder": OUTPUT_FOLDER, "type": "output"}
            try:
                path = server.client.download(output, self.out / job_state.output)
            except ComfyRefused:
                continue
            except ComfyUnavailable:
                server.down = True
                return True  # decide when the server answers again
            self._release(server, key, status="done", output_path=str(path))
            self.report(f"line {job_state.line}: {job_state.output} had finished on {server.url} before it "
                        "restarted; downloaded")
            self._finished(key)
            return True
        return False

    def _complete(self, server: Server, key: str, result: PromptResult) -> None:
        job_state = self.state.get(key)
        if result.status != "success":
            self._release(server, key, status="failed", error=result.error)
            self.report(f"line {job_state.line}: {job_state.output} failed on {server.url}: {result.error}")
            self._finished(key)
            return
        videos = [item for item in result.outputs if item["filename"].lower().endswith(VIDEO_SUFFIXES)]
        if not videos:
            self._release(server, key, status="failed", error="the graph wrote no video (no Video Combine output)")
            self._finished(key)
            return
        try:
            path = server.client.download(videos[0], self.out / job_state.output)
        except ComfyError as exc:
            server.down = isinstance(exc, ComfyUnavailable)
            return
        seconds = run_seconds(server.client.history(result.prompt_id) or {})
        self._release(server, key, status="done", output_path=str(path), seconds=seconds)
        self.report(f"line {job_state.line}: {job_state.output} done on {server.url}"
                    + (f" in {seconds:.1f} s" if seconds is not None else ""))
        self._finished(key)

    def _fail(self, key: str, reason: str) -> None:
        job_state = self.state.update(key, status="failed", error=reason)
        self.report(f"line {job_state.line}: {job_state.output} failed: {reason}")
        self._finished(key)

    def _finished(self, key: str) -> None:
        if self.on_finished is not None:
            self.on_finished(self.state.get(key))


def run_seconds(entry: dict[str, Any]) -> float | None:
    """Seconds between the prompt's execution_start and its end, from the history's status messages."""
    stamps = {kind: data.get("timestamp") for kind, data in entry.get("status", {}).get("messages", [])
              if isinstance(data, dict)}
    start, end = stamps.get("execution_start"), stamps.get("execution_success")
    return (end - start) / 1000 if start is not None and end is not None else None


def write_summary(states: list[JobState], out: Path) -> tuple[Path, Path]:
    """``summary.csv`` and ``summary.json`` in ``out``: job, server, tokens, seconds, output path, error."""
    rows = [asdict(state) for state in states]
    csv_path, json_path = out / "summary.csv", out / "summary.json"
    with csv_path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]) if rows else ["key"])
        writer.writeheader()
        writer.writerows(rows)
    json_path.write_text(json.dumps(rows, indent=1))
    return csv_path, json_path
