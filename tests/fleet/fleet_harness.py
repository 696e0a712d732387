"""The fleet's services as real processes on 127.0.0.1 for the service tests: a redis-server (job records, ledger
and, by default, the broker), optionally a rabbitmq-server as the broker and an S3-compatible server as the
storage, Celery workers each beside its own ComfyUI server, and the gateway under uvicorn (``python -m sonic_core
gateway``). Every process runs in its own session, so a test can SIGKILL a worker whole (its main process and its
pool child) like a lost node."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from comfyui_harness import ComfyServer, free_port
from sonic_testing import REPO

START_TIMEOUT_S = 120.0
QUEUES = "sonic.lite,sonic.standard,sonic.hq"


def wait_for(what: str, ready: Callable[[], bool], process: subprocess.Popen, log: Path,
             timeout: float = START_TIMEOUT_S) -> None:
    """Poll ``ready()`` until it holds; fail with the log's tail if ``process`` exits or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while not ready():
        if process.poll() is not None or time.monotonic() > deadline:
            tail = log.read_text(errors="replace")[-3000:] if log.exists() else ""
            pytest.fail(f"{what} did not start (exit {process.poll()}):\n{tail}")
        time.sleep(0.2)


class Service:
    """One process in its own session, its output in ``log``."""

    def __init__(self, name: str, cmd: list[str], log: Path, env: dict[str, str] | None = None,
                 cwd: Path = REPO) -> None:
        self.name, self.log = name, log
        with log.open("ab") as handle:
            self.process = subprocess.Popen(cmd, cwd=cwd, env={**os.environ, **(env or {})}, stdout=handle,
                                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                            start_new_session=True)

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` to the whole process group and wait for the leader."""
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, sig)
            except ProcessLookupError:
                pass
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def stop(self) -> None:
        self.kill(signal.SIGTERM)
        try:
            os.killpg(self.process.pid, signal.SIGKILL)  # a pool child that outlived its parent
        except ProcessLookupError:
            pass


def start_redis(folder: Path) -> tuple[Service, str]:
    exe = shutil.which("redis-server")
    if exe is None:
        pytest.fail("redis-server is not installed: bash scripts/dev.sh setup (scripts/apt-packages.txt)")
    import redis

    port = free_port()
    service = Service("redis", [exe, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly",
                                "no", "--dir", str(folder)], folder / "redis.log")
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url)

    def answers() -> bool:
        try:
            return bool(client.ping())
        except redis.ConnectionError:
            return False
    wait_for("redis-server", answers, service.process, service.log)
    client.close()
    return service, url


class RabbitMQ(Service):
    """A RabbitMQ node with its own Erlang port mapper (epmd), which outlives the node unless told to stop."""

    epmd_port = 0

    def stop(self) -> None:
        super().stop()
        subprocess.run(["epmd", "-port", str(self.epmd_port), "-kill"], capture_output=True, timeout=30)


def start_rabbitmq(folder: Path) -> tuple[Service, str]:
    """A private RabbitMQ node (its own name, ports, epmd, data and log folders) on 127.0.0.1."""
    # The server itself, not /usr/sbin's wrapper (which switches to the rabbitmq user, who cannot write here).
    exe = Path("/usr/lib/rabbitmq/bin/rabbitmq-server")
    if not exe.exists():
        pytest.fail("rabbitmq-server is not installed: bash scripts/dev.sh setup (scripts/apt-packages.txt)")
    port, dist_port, epmd_port = free_port(), free_port(), free_port()
    node = f"sonic-test-{uuid.uuid4().hex[:8]}@localhost"
    (folder / "enabled_plugins").write_text("[].\n")
    env = {"RABBITMQ_NODENAME": node, "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1", "RABBITMQ_NODE_PORT": str(port),
           "RABBITMQ_DIST_PORT": str(dist_port), "RABBITMQ_MNESIA_BASE": str(folder / "mnesia"),
           "RABBITMQ_LOG_BASE": str(folder / "logs"), "RABBITMQ_ENABLED_PLUGINS_FILE": str(folder / "enabled_plugins"),
           "RABBITMQ_CONFIG_FILE": str(folder / "rabbitmq"), "RABBITMQ_LOGS": "-", "HOME": str(folder),
           "ERL_CRASH_DUMP": str(folder / "erl_crash.dump"), "ERL_EPMD_PORT": str(epmd_port)}
    (folder / "rabbitmq.conf").write_text("loopback_users = none\n")
    service = RabbitMQ("rabbitmq", [str(exe)], folder / "rabbitmq.log", env=env, cwd=folder)
    service.epmd_port = epmd_port
    url = f"amqp://guest:guest@127.0.0.1:{port}//"

    def answers() -> bool:
        from kombu import Connection
        try:
            with Connection(url, connect_timeout=2) as connection:
                connection.connect()
            return True
        except Exception:  # amqp raises its own errors (not OSError) while the node boots
            return False
    wait_for("rabbitmq-server", answers, service.process, service.log, timeout=180)
    return service, url


def start_s3(folder: Path) -> tuple[Service, dict[str, str]]:
    """moto's S3-compatible server (``moto_server``: the S3 API over HTTP, objects in memory) on 127.0.0.1; returns
    it and the environment that points fsspec's s3fs at it (the one the README documents for MinIO)."""
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    service = Service("s3", [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                      folder / "s3.log")

    def answers() -> bool:
        try:
            with urllib.request.urlopen(endpoint, timeout=5) as response:
                return response.status == 200
        except OSError:
            return False
    wait_for("moto_server", answers, service.process, service.log)
    return service, {"FSSPEC_S3_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "fleet-test",
                     "AWS_SECRET_ACCESS_KEY": "fleet-test", "AWS_DEFAULT_REGION": "us-east-1"}


def start_worker(name: str, server: ComfyServer, env: dict[str, str], folder: Path) -> Service:
    """A Celery worker on every pool's queue, beside ``server``; returns once it has said it is ready."""
    cmd = [sys.executable, "-m", "celery", "-A", "sonic_core.fleet.worker", "worker", "-Q", QUEUES, "-n",
           f"{name}@%h", "--pool=prefork", "--concurrency=1", "--without-gossip", "--without-mingle",
           "--loglevel=INFO"]
    worker = Service(name, cmd, folder / f"worker-{name}.log",
                     env={**env, "SONIC_COMFY_URL": server.url, "PYTHONPATH": str(REPO)})
    wait_for(f"celery worker {name}", lambda: " ready." in worker.log.read_text(errors="replace"),
             worker.process, worker.log)
    worker.server = server
    return worker


class Gateway(Service):
    """``python -m sonic_core gateway`` with one API key; JSON helpers for its routes."""

    def __init__(self, env: dict[str, str], folder: Path, key: str) -> None:
        self.port, self.key = free_port(), key
        self.url = f"http://127.0.0.1:{self.port}"
        keys = folder / "keys.toml"
        keys.write_text(f'[keys."{key}"]\naccount = "studio"\ntier = "standard"\n')
        super().__init__("gateway", [sys.executable, "-m", "sonic_core", "gateway", "--port", str(self.port),
                                     "--keys", str(keys), "--device", "cpu"], folder / "gateway.log",
                         env={**env, "PYTHONPATH": str(REPO)})

        def answers() -> bool:
            try:
                return self.request("GET", "/openapi.json")[0] == 200
            except OSError:
                return False
        wait_for("gateway", answers, self.process, self.log)

    def request(self, method: str, path: str, body: bytes | None = None,
                content_type: str | None = None) -> tuple[int, bytes]:
        headers = {"X-API-Key": self.key, **({"Content-Type": content_type} if content_type else {})}
        request = urllib.request.Request(self.url + path, data=body, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def json(self, method: str, path: str) -> Any:
        status, body = self.request(method, path)
        assert status == 200, body
        return json.loads(body)

    def submit(self, portrait: Path, speech: Path, settings: dict[str, Any]) -> dict[str, Any]:
        """``POST /v1/jobs`` as multipart/form-data; the 201's job."""
        boundary = uuid.uuid4().hex
        parts = []
        for field, path in (("portrait", portrait), ("speech", speech)):
            parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; filename="{path.name}"'
                         f'\r\nContent-Type: application/octet-stream\r\n\r\n'.encode() + path.read_bytes() + b"\r\n")
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="settings"\r\n\r\n'
                     f'{json.dumps(settings)}\r\n--{boundary}--\r\n'.encode())
        status, body = self.request("POST", "/v1/jobs", b"".join(parts), f"multipart/form-data; boundary={boundary}")
        assert status == 201, body
        return json.loads(body)
