"""A client of one ComfyUI server's HTTP API, importable without ComfyUI: upload inputs, submit API-format graphs,
follow them on ``/ws``, read ``/queue`` and ``/history``, download outputs, interrupt or delete, and read the pack's
``/sonic/estimate`` and ``/sonic/metrics`` routes.

Every call has a timeout and retries with exponential backoff when the server cannot be reached (connection refused
or reset, a timeout, 502/503/504); what the server answers is never retried. Each failure is one
:class:`ComfyError` line: the server is down, the server (or its metering) refused the prompt and why, or a node
failed while running and with which message.
"""

from __future__ import annotations

import json
import mimetypes
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import SonicError
from ..metering.enforcement import KEY_HEADER

RETRYABLE_STATUS = frozenset({502, 503, 504})
FINISHED = ("execution_success", "execution_error", "execution_interrupted")


class ComfyError(SonicError):
    """A ComfyUI server could not do what was asked; the message says which server and why."""


class ComfyUnavailable(ComfyError):
    """The server did not answer (down, restarting, unreachable) after every retry."""


class ComfyRefused(ComfyError):
    """The server answered no: ``status`` is its HTTP status, ``reason`` its (or its metering's) reason."""

    def __init__(self, message: str, *, status: int, reason: str) -> None:
        super().__init__(message)
        self.status, self.reason = status, reason


class ComfyExecutionError(ComfyError):
    """The prompt ran and a node failed (or it was interrupted)."""


@dataclass
class PromptResult:
    """How a prompt ended: ``status`` (success / error / interrupted), the files its output nodes wrote (as
    ``{"filename", "subfolder", "type"}``) and, for an error, the failing node and message."""

    prompt_id: str
    status: str
    outputs: list[dict[str, str]] = field(default_factory=list)
    error: str | None = None


class ComfyClient:
    """One server at ``url`` (``http://host:port``). ``api_key`` goes in the metering header of every request."""

    def __init__(self, url: str, *, api_key: str | None = None, timeout: float = 30.0, retries: int = 4,
                 backoff: float = 0.5, client_id: str | None = None) -> None:
        self.url = url.rstrip("/")
        self.api_key = api_key
        self.timeout, self.retries, self.backoff = timeout, retries, backoff
        self.client_id = client_id or uuid.uuid4().hex

    # --- plumbing ----------------------------------------------------------------------------------------------
    def _request(self, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None,
                 retries: int | None = None) -> tuple[int, bytes]:
        """(status, body) of one request; retried with backoff while the server cannot be reached."""
        all_headers = {**(headers or {}), **({KEY_HEADER: self.api_key} if self.api_key else {})}
        request = urllib.request.Request(self.url + path, data=body, method=method, headers=all_headers)
        retries = self.retries if retries is None else retries
        delay, last = self.backoff, "no attempt"
        for attempt in range(retries + 1):
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    return response.status, response.read()
            except urllib.error.HTTPError as error:
                if error.code not in RETRYABLE_STATUS:
                    return error.code, error.read()
                last = f"HTTP {error.code}"
            except (urllib.error.URLError, ConnectionError, socket.timeout, TimeoutError) as error:
                last = str(getattr(error, "reason", error))
            if attempt < retries:
                time.sleep(delay)
                delay *= 2
        raise ComfyUnavailable(f"ComfyUI at {self.url} did not answer {method} {path} after {retries + 1} "
                               f"tries ({last}): check that the server is running and reachable")

    def _json(self, method: str, path: str, payload: Any = None) -> Any:
        body = None if payload is None else json.dumps(payload).encode()
        status, raw = self._request(method, path, body, {"Content-Type": "application/json"} if body else None)
        answer = _parse(raw)
        if status >= 400:
            raise _refusal(self.url, path, status, answer)
        return answer

    # --- the API -------------------------------------------------------------------------------------------------
    def alive(self) -> bool:
        """Whether the server answers right now (one try, no backoff)."""
        try:
            return self._request("GET", "/queue", retries=0)[0] == 200
        except ComfyUnavailable:
            return False

    def upload(self, path: str | Path, subfolder: str = "sonic-queue", name: str | None = None,
               overwrite: bool = True) -> str:
        """Upload a file into the server's input folder (``/upload/image`` takes audio too) as ``name`` (default
        its own); returns the name a loader node uses (``subfolder/name``)."""
        path = Path(path)
        name = name or path.name
        boundary = uuid.uuid4().hex
        content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
                 for name, value in (("subfolder", subfolder), ("overwrite", str(overwrite).lower()),
                                     ("type", "input"))]
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="{name}"\r\n'
                     f"Content-Type: {content_type}\r\n\r\n".encode() + path.read_bytes() + b"\r\n")
        body = b"".join(parts) + f"--{boundary}--\r\n".encode()
        status, raw = self._request("POST", "/upload/image", body,
                                    {"Content-Type": f"multipart/form-data; boundary={boundary}"})
        answer = _parse(raw)
        if status >= 400 or not isinstance(answer, dict) or "name" not in answer:
            raise ComfyRefused(f"ComfyUI at {self.url} refused the upload of {path.name!r} (HTTP {status})",
                               status=status, reason="upload")
        return f"{answer['subfolder']}/{answer['name']}" if answer.get("subfolder") else answer["name"]

    def submit(self, prompt: dict[str, Any], prompt_id: str | None = None) -> str:
        """Queue an API-format graph under this client's id; returns its prompt id. A refusal (invalid graph,
        metering) is a :class:`ComfyRefused` with the server's reason."""
        body = {"prompt": prompt, "client_id": self.client_id, **({"prompt_id": prompt_id} if prompt_id else {})}
        return self._json("POST", "/prompt", body)["prompt_id"]

    def queue(self) -> tuple[list[str], list[str]]:
        """The prompt ids (running, pending) in the server's queue."""
        running, pending = self.queue_items()
        return [item[1] for item in running], [item[1] for item in pending]

    def queue_items(self) -> tuple[list[list[Any]], list[list[Any]]]:
        """The server's queue items (running, pending): ``[number, prompt_id, prompt, extra_data, outputs]``."""
        answer = self._json("GET", "/queue")
        return answer.get("queue_running", []), answer.get("queue_pending", [])

    def find(self, predicate: Callable[[dict[str, Any]], bool]) -> str | None:
        """The id of a prompt in the queue or the history whose graph satisfies ``predicate``, else ``None``: how a
        batch learns whether a job it may have sent is on the server (the answer to its POST may have been lost)."""
        running, pending = self.queue_items()
        for item in running + pending:
            if isinstance(item[2], dict) and predicate(item[2]):
                return item[1]
        for prompt_id, entry in self._json("GET", "/history").items():
            prompt = entry.get("prompt", [None, None, None])[2]
            if isinstance(prompt, dict) and predicate(prompt):
                return prompt_id
        return None

    def history(self, prompt_id: str) -> dict[str, Any] | None:
        """The prompt's ``/history`` entry, ``None`` while it has none."""
        return self._json("GET", f"/history/{urllib.parse.quote(prompt_id)}").get(prompt_id)

    def result(self, prompt_id: str) -> PromptResult | None:
        """How the prompt ended, from ``/history``; ``None`` while it has not."""
        entry = self.history(prompt_id)
        if entry is None:
            return None
        status = entry.get("status", {})
        outputs = [item for node in entry.get("outputs", {}).values() for items in node.values()
                   if isinstance(items, list) for item in items
                   if isinstance(item, dict) and "filename" in item and item.get("type") == "output"]
        if status.get("status_str") == "success" or (status.get("completed") and not status.get("messages")):
            return PromptResult(prompt_id, "success", outputs)
        for kind, data in status.get("messages", []):
            if kind == "execution_error":
                return PromptResult(prompt_id, "error", outputs, _node_error(data))
            if kind == "execution_interrupted":
                return PromptResult(prompt_id, "interrupted", outputs, "interrupted")
        return PromptResult(prompt_id, "error", outputs, "the server recorded no result")

    def follow(self, prompt_id: str, on_progress: Callable[[str, int, int], None] | None = None,
               timeout: float = 3600.0, poll: float = 1.0) -> PromptResult:
        """Wait for the prompt to end: ``/ws`` progress (``on_progress(node, value, max)``) while it runs, its
        result from ``/history``. A dropped connection falls back to polling; a prompt that leaves the queue with no
        history (the server restarted) is a :class:`ComfyUnavailable`."""
        deadline = time.monotonic() + timeout
        socket_ = self._websocket()
        try:
            while time.monotonic() < deadline:
                result = self.result(prompt_id)
                if result is not None:
                    return result
                running, pending = self.queue()
                if prompt_id not in running and prompt_id not in pending:
                    result = self.result(prompt_id)  # it may have finished between the two reads
                    if result is not None:
                        return result
                    raise ComfyUnavailable(f"prompt {prompt_id} left the queue of {self.url} without a result "
                                           "(the server restarted?): submit it again")
                socket_ = self._wait_for_event(socket_, prompt_id, on_progress, min(poll, deadline - time.monotonic()))
        finally:
            if socket_ is not None:
                socket_.close()
        raise ComfyError(f"prompt {prompt_id} on {self.url} did not finish within {timeout:.0f} s")

    def _websocket(self) -> Any:
        """A ``/ws`` connection for this client id, or ``None`` when it cannot be opened (progress is optional)."""
        try:
            import websocket
        except ImportError:
            return None
        address = self.url.replace("http://", "ws://", 1).replace("https://", "wss://", 1)
        try:
            return websocket.create_connection(f"{address}/ws?clientId={self.client_id}", timeout=self.timeout)
        except (OSError, websocket.WebSocketException):
            return None

    def _wait_for_event(self, socket_: Any, prompt_id: str, on_progress: Callable[[str, int, int], None] | None,
                        wait: float) -> Any:
        """Read ``/ws`` messages for up to ``wait`` s (or sleep without a socket); returns the socket still usable."""
        if socket_ is None:
            time.sleep(max(wait, 0.0))
            return None
        import websocket

        socket_.settimeout(max(wait, 0.05))
        try:
            raw = socket_.recv()
        except websocket.WebSocketTimeoutException:
            return socket_
        except (OSError, websocket.WebSocketException):
            socket_.close()
            return None
        if isinstance(raw, str):
            message = json.loads(raw)
            data = message.get("data", {})
            if message.get("type") == "progress" and data.get("prompt_id") == prompt_id and on_progress:
                on_progress(str(data.get("node")), int(data.get("value", 0)), int(data.get("max", 0)))
        return socket_

    def download(self, output: dict[str, str], target: str | Path) -> Path:
        """Save one output file (an item of :attr:`PromptResult.outputs`) at ``target``, written whole or not at
        all (a temporary name, renamed when complete)."""
        query = urllib.parse.urlencode({"filename": output["filename"], "subfolder": output.get("subfolder", ""),
                                        "type": output.get("type", "output")})
        status, raw = self._request("GET", f"/view?{query}")
        if status >= 400:
            raise ComfyRefused(f"ComfyUI at {self.url} has no output {output['filename']!r} (HTTP {status})",
                               status=status, reason="download")
        target = Path(target)
        partial = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.partial")
        partial.write_bytes(raw)
        partial.replace(target)
        return target

    def interrupt(self) -> None:
        """Stop the prompt the server is running now."""
        self._json("POST", "/interrupt", {})

    def delete(self, prompt_ids: list[str]) -> None:
        """Remove pending prompts from the server's queue."""
        self._json("POST", "/queue", {"delete": list(prompt_ids)})

    def estimate(self, prompt: dict[str, Any], tier: str | None = None) -> dict[str, Any]:
        """``POST /sonic/estimate``: the graph's tokens, verdict and predicted seconds on this server's device."""
        return self._json("POST", "/sonic/estimate", {"prompt": prompt, **({"tier": tier} if tier else {})})

    def system_stats(self) -> dict[str, Any]:
        """``GET /system_stats``: the server's devices with their total and free memory."""
        return self._json("GET", "/system_stats")

    def metrics(self) -> str:
        """``GET /sonic/metrics`` (Prometheus text)."""
        status, raw = self._request("GET", "/sonic/metrics")
        if status >= 400:
            raise ComfyRefused(f"ComfyUI at {self.url} has no /sonic/metrics (HTTP {status}): is the pack installed?",
                               status=status, reason="metrics")
        return raw.decode()


def _parse(raw: bytes) -> Any:
    try:
        return json.loads(raw or b"null")
    except ValueError:
        return raw.decode(errors="replace")


def _refusal(url: str, path: str, status: int, answer: Any) -> ComfyRefused:
    """One line from ComfyUI's error shape (``{"error": {"message", "extra_info": {"reason"}}, "node_errors"}``)."""
    error = answer.get("error") if isinstance(answer, dict) else None
    message = error.get("message") if isinstance(error, dict) else str(answer)[:300]
    reason = (error.get("extra_info") or {}).get("reason") if isinstance(error, dict) else None
    nodes = answer.get("node_errors") if isinstance(answer, dict) else None
    if nodes:
        first_id, first = next(iter(nodes.items()))
        details = "; ".join(e.get("details") or e.get("message", "") for e in first.get("errors", []))
        message = f"{message} (node {first_id} {first.get('class_type', '')}: {details})"
    text = " ".join(str(message).split())
    return ComfyRefused(f"ComfyUI at {url} refused {path} (HTTP {status}): {text}", status=status,
                        reason=reason or (error.get("type") if isinstance(error, dict) else None) or "refused")


def _node_error(data: dict[str, Any]) -> str:
    message = " ".join(str(data.get("exception_message", "")).split())
    return f"node {data.get('node_id')} ({data.get('node_type')}): {message}"
