"""Metering inside a running ComfyUI server: ``POST /sonic/estimate``, ``GET /sonic/metrics`` and queue-time
enforcement with the ledger.

ComfyUI 0.3.75 facts this relies on (``server.py``/``execution.py``/``main.py``): ``trigger_on_prompt`` catches and
only logs an exception raised by an on-prompt handler, so a handler cannot refuse a prompt; the handler's return
value replaces the request body. Custom nodes are imported after ``PromptServer`` built its ``web.Application`` and
before the app starts, so a middleware can still be appended. The ``execution_success``/``execution_error``
messages reach ``send_sync`` only when the prompt has a ``client_id``, so settlement hooks the prompt queue
instead: ``get`` (a prompt starts), ``task_done`` (it ended; its status says success, error or interrupted),
``wipe_queue``/``delete_queue_item`` (queued prompts cancelled).

Hence: a middleware on ``POST /prompt`` (and ``/api/prompt``) prices the body, answers a refusal itself with a 4xx
JSON error in ComfyUI's ``{"error": {...}, "node_errors": {}}`` shape (so the prompt never reaches the queue), or
reserves the tokens under a prompt id and lets the request through; the on-prompt handler then writes that id into
the body ComfyUI queues and strips the API key from ``extra_data`` (which ComfyUI keeps in the queue and history).
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import os
import socket
from dataclasses import dataclass
from typing import Any, Awaitable, Callable

from aiohttp import web

from sonic_core.errors import SonicError, SonicInputError
from sonic_core.metering.enforcement import KEY_EXTRA_DATA, KEY_HEADER, Admission, Meter, PromptRefused, load_config

from .comfy_compat import METER_ATTRIBUTE, folder_paths
from .cost import device_note, input_audio_seconds, prediction_device

PROMPT_PATHS = frozenset({"/prompt", "/api/prompt"})
log = logging.getLogger("sonic.metering")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class _Gate:
    """Set by the middleware for the request it let through; ``admission`` is None for unmetered prompts."""

    admission: Admission | None


_GATE: contextvars.ContextVar[_Gate | None] = contextvars.ContextVar("sonic_metering_gate", default=None)


def error_response(message: str, status: int, reason: str) -> web.Response:
    """A JSON error in the shape ComfyUI's own ``POST /prompt`` errors have (its web UI shows ``message``)."""
    error = {"type": "sonic_metering", "message": message, "details": message, "extra_info": {"reason": reason}}
    return web.json_response({"error": error, "node_errors": {}}, status=status)


async def _json_body(request: web.Request) -> Any:
    try:
        return await request.json()
    except ValueError:
        return None


def metering_middleware(meter: Meter) -> Callable:
    """Admit or refuse every ``POST /prompt`` before ComfyUI validates and queues it."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.method != "POST" or request.path not in PROMPT_PATHS:
            return await handler(request)
        body = await _json_body(request)
        if not isinstance(body, dict):
            return await handler(request)
        try:
            admission = await asyncio.to_thread(meter.admit, body, request.headers.get(KEY_HEADER))
        except PromptRefused as exc:
            return error_response(str(exc), exc.status, exc.reason)
        except Exception as exc:  # e.g. the ledger's server is down: refuse when enforcing, else run unmetered
            log.exception("sonic metering could not price or reserve a prompt")
            if meter.config.enforce:
                meter.metrics.job_refused("unavailable")
                return error_response(f"Sonic metering is unavailable ({type(exc).__name__}: {exc}); try again "
                                      "later", 503, "unavailable")
            admission = None
        gate = _GATE.set(_Gate(admission))
        try:
            response = await handler(request)
        except BaseException:
            if admission is not None:
                meter.abandoned(admission.prompt_id)
            raise
        finally:
            _GATE.reset(gate)
        if admission is not None and response.status != 200:
            meter.abandoned(admission.prompt_id)
        return response

    return middleware


def refuse_all_middleware(message: str) -> Callable:
    """Fail closed: a metering config that cannot be loaded refuses every prompt with its error."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.method == "POST" and request.path in PROMPT_PATHS:
            return error_response(f"Sonic metering is misconfigured, no prompt is accepted: {message}", 503,
                                  "config")
        return await handler(request)

    return middleware


def on_prompt_handler(meter: Meter) -> Callable[[dict], dict]:
    """ComfyUI on-prompt handler: queue under the reserved id and keep the API key out of queue and history."""

    def handler(json_data: dict) -> dict:
        gate = _GATE.get()
        if gate is None:
            if meter.config.enforce:  # the middleware did not run: never let an unpriced prompt through
                log.error("sonic metering: a prompt arrived without passing the metering middleware; refused")
                json_data.pop("prompt", None)
            return json_data
        extra_data = json_data.get("extra_data")
        if isinstance(extra_data, dict):
            extra_data.pop(KEY_EXTRA_DATA, None)
        if gate.admission is not None:
            json_data["prompt_id"] = gate.admission.prompt_id
        return json_data

    return handler


def estimate_handler(meter: Meter) -> Handler:
    """``POST /sonic/estimate``: an API-format graph (bare, or as ``{"prompt": graph, "tier"?: name}``) in, its
    cost out; nothing is queued, reserved or run."""

    async def estimate(request: web.Request) -> web.Response:
        body = await _json_body(request)
        wrapped = isinstance(body, dict) and isinstance(body.get("prompt"), dict)
        graph = body["prompt"] if wrapped else body
        tier = body.get("tier") if wrapped else None
        try:
            if tier is not None and not isinstance(tier, str):
                raise SonicInputError(f"tier must be a tier name, got {tier!r}")
            key = meter.caller(request.headers.get(KEY_HEADER), body.get("extra_data") if wrapped else None) \
                if meter.config.enforce else None
            cost = await asyncio.to_thread(meter.estimate, graph, key, tier)
            available = await asyncio.to_thread(meter.available, key)
        except PromptRefused as exc:
            return error_response(str(exc), exc.status, exc.reason)
        except SonicInputError as exc:
            return error_response(str(exc), 400, "unpriced")
        return web.json_response(cost.to_dict() | {"summary": cost.summary(), "enforced": meter.config.enforce,
                                                    "available_tokens": available, "device": device_note()})

    return estimate


def metrics_handler(meter: Meter) -> Handler:
    """``GET /sonic/metrics``: the Prometheus text exposition of the metering counters."""

    async def metrics(request: web.Request) -> web.Response:
        return web.Response(body=meter.metrics.render(), headers={"Content-Type": meter.metrics.content_type})

    return metrics


def _outcome(status: Any) -> str:
    """success / interrupted / error from the ``ExecutionStatus`` ComfyUI passes to ``task_done``."""
    if status is not None and getattr(status, "status_str", None) == "success":
        return "success"
    messages = getattr(status, "messages", None) or []
    if any(isinstance(m, (list, tuple)) and m and m[0] == "execution_interrupted" for m in messages):
        return "interrupted"
    return "error"


def _peak_memory(reset: bool = False) -> int | None:
    import torch

    if not torch.cuda.is_available():
        return None
    if reset:
        torch.cuda.reset_peak_memory_stats()
        return None
    return int(torch.cuda.max_memory_allocated())


def _quietly(action: Callable[..., Any], *args: Any) -> None:
    """Run a metering hook inside ComfyUI's worker without ever breaking the queue."""
    try:
        action(*args)
    except Exception:  # a metering bug must not stop ComfyUI from running prompts; it is logged in full
        log.exception("sonic metering hook %s failed", getattr(action, "__name__", action))


def watch_queue(queue: Any, meter: Meter) -> None:
    """Wrap the ``PromptQueue`` methods that start, finish and cancel prompts (instance attributes only)."""
    get, task_done = queue.get, queue.task_done
    wipe_queue, delete_queue_item = queue.wipe_queue, queue.delete_queue_item

    def queued_ids() -> set[str]:
        with queue.mutex:
            return {str(item[1]) for item in queue.queue}

    def watched_get(*args: Any, **kwargs: Any) -> Any:
        taken = get(*args, **kwargs)
        if taken is not None:
            _quietly(_peak_memory, True)
            _quietly(meter.started, str(taken[0][1]))
        return taken

    def watched_task_done(item_id: Any, history_result: Any, status: Any = None, *args: Any, **kwargs: Any) -> Any:
        running = queue.currently_running.get(item_id)
        try:
            return task_done(item_id, history_result, status, *args, **kwargs)
        finally:
            if running is not None:
                _quietly(lambda: meter.finished(str(running[1]), _outcome(status), _peak_memory()))

    def cancelling(remove: Callable[..., Any]) -> Callable[..., Any]:
        def watched(*args: Any, **kwargs: Any) -> Any:
            with queue.mutex:
                before = queued_ids()
                result = remove(*args, **kwargs)
                gone = before - queued_ids()
            for prompt_id in gone:
                _quietly(meter.abandoned, prompt_id, "cancelled")
            return result
        return watched

    queue.get, queue.task_done = watched_get, watched_task_done
    queue.wipe_queue, queue.delete_queue_item = cancelling(wipe_queue), cancelling(delete_queue_item)


def install(server: Any, meter: Meter) -> None:
    """Add the routes, the middleware, the on-prompt handler and the queue hooks to a ``PromptServer``."""
    server.routes.post("/sonic/estimate")(estimate_handler(meter))
    server.routes.get("/sonic/metrics")(metrics_handler(meter))
    try:
        server.app.middlewares.append(metering_middleware(meter))
    except RuntimeError:  # the app already started: the on-prompt handler then refuses metered prompts
        log.error("sonic metering: the server already started, refusals cannot reach clients")
    server.add_on_prompt_handler(on_prompt_handler(meter))
    watch_queue(server.prompt_queue, meter)


def server_owner(output_dir: str) -> str:
    """Who reserves this server's holds when the config names no ``server_id``: its host and output folder (a
    restarted server finds its predecessor's holds; two servers sharing a ledger never settle each other's)."""
    return f"{socket.gethostname()}:{output_dir}"


def register(server: Any) -> Meter | None:
    """Install metering on ComfyUI's ``PromptServer`` (at pack import); a broken config refuses every prompt.

    Once per server: a second import of the pack (under another module name) gets the installed meter, so a
    prompt is never priced, reserved or refused twice. The holds a previous process of this server left (it was
    killed with prompts queued or running) are settled first: see ``Meter.reconcile``.
    """
    if hasattr(server, METER_ATTRIBUTE):
        return getattr(server, METER_ATTRIBUTE)
    device, dtype = prediction_device()
    output_dir = os.path.realpath(folder_paths.get_output_directory())
    try:
        config = load_config()
        meter = Meter(config, audio_duration=input_audio_seconds, device=device, dtype=dtype,
                      owner=config.server_id or server_owner(output_dir))
        meter.reconcile(output_dir)
    except SonicError as exc:
        log.error("sonic metering: %s", exc)
        server.app.middlewares.append(refuse_all_middleware(str(exc)))
        setattr(server, METER_ATTRIBUTE, None)
        return None
    install(server, meter)
    setattr(server, METER_ATTRIBUTE, meter)
    log.info("sonic metering: %s", "enforced" if meter.config.enforce else "not enforced (set $SONIC_METERING)")
    return meter
