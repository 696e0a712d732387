"""Queue-time metering of a ComfyUI server: who pays, admit or refuse, and settle each prompt exactly once.

Framework-free (no aiohttp, no ComfyUI): ``nodes/server_hooks.py`` calls it from the ``POST /prompt`` middleware,
the on-prompt handler and the prompt-queue hooks. Lifecycle of one prompt::

    admit (priced; refused, or reserved in the ledger and queued) -> started -> finished(success | error |
    interrupted)        or        admit -> abandoned (ComfyUI rejected the graph) | cancelled (removed from the queue)
    admit -> (the server dies) -> reconcile at the next start: committed if the run wrote its output, else refunded

``finished``, ``abandoned`` and ``cancelled`` settle a prompt once: the first one wins and the others are no-ops,
and the ledger's own job-id rule makes its charge exactly-once even across processes.

Configuration (TOML, path in ``$SONIC_METERING``; without it nothing is enforced and the metrics still count)::

    enforce = true                                  # default true once a file is given
    ledger = "sqlite:///~/.cache/sonic/ledger.db"   # optional; without it only the tier limits are checked
    default_key = "local"                           # the caller when a request names no key (single-user)
    default_tier = "standard"                       # the tier of the default key and of estimates without a key
    tiers_file = "/etc/sonic/tiers.toml"            # optional, default: the bundled tiers
    server_id = "gpu-7"                             # optional: whose holds this server settles after a crash
                                                    # (default: host name and output folder)

    [keys]                                          # API key -> tier
    "k-alice" = "pro"
    "k-service" = "api"
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from ..errors import BudgetExceeded, SonicError, SonicInputError
from ..paths import config_file, read_config
from .graph_pricing import AudioDuration, GraphCost, GraphCostError, price_graph
from .ledger import Charge, Ledger, open_ledger, reconcile_holds
from .metrics import SonicMetrics
from .tiers import Tier, load_tiers

METERING_ENV = "SONIC_METERING"
KEY_HEADER = "X-Sonic-Key"
KEY_EXTRA_DATA = "sonic_api_key"

log = logging.getLogger("sonic.metering")


class PromptRefused(SonicError):
    """A prompt turned away before it is queued; ``status`` is the HTTP status, ``reason`` a metrics label."""

    def __init__(self, message: str, *, status: int, reason: str) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason


@dataclass(frozen=True)
class MeteringConfig:
    """Who may queue what. ``enforce=False`` (the default without a file) only prices and counts."""

    enforce: bool = False
    ledger_url: str | None = None
    default_key: str | None = None
    default_tier: str = "standard"
    keys: Mapping[str, str] = field(default_factory=dict)
    tiers: Mapping[str, Tier] = field(default_factory=load_tiers)
    server_id: str | None = None

    def __post_init__(self) -> None:
        for key, tier in {**self.keys, "(default_tier)": self.default_tier}.items():
            if tier not in self.tiers:
                raise SonicInputError(f"metering config: key {key!r} has unknown tier {tier!r}: choose one of "
                                      f"{sorted(self.tiers)}")

    def tier_of(self, key: str) -> Tier:
        """The tier of a caller; the default key has the default tier unless ``[keys]`` names it."""
        if key in self.keys:
            return self.tiers[self.keys[key]]
        if key == self.default_key:
            return self.tiers[self.default_tier]
        raise PromptRefused(f"API key {_masked(key)} is not configured: use a key listed in the metering config",
                            status=403, reason="key")


_CONFIG_KEYS = {"enforce": bool, "ledger": str, "default_key": str, "default_tier": str, "tiers_file": str,
                "keys": dict, "server_id": str}


def load_config(path: str | os.PathLike | None = None) -> MeteringConfig:
    """The config at ``path``, else at ``$SONIC_METERING``; no file at all means "not enforced"."""
    file = config_file(path, METERING_ENV)
    if file is None:
        return MeteringConfig()
    table = read_config(file, "metering config", "toml", f"fix ${METERING_ENV} or create the file")
    for name, value in table.items():
        want = _CONFIG_KEYS.get(name)
        if want is None:
            raise SonicInputError(f"metering config {file}: unknown key {name!r}; known keys: {sorted(_CONFIG_KEYS)}")
        if not isinstance(value, want):
            raise SonicInputError(f"metering config {file}: {name} = {value!r} must be of type {want.__name__}")
    keys = table.get("keys", {})
    if not all(isinstance(k, str) and k and isinstance(t, str) for k, t in keys.items()):
        raise SonicInputError(f"metering config {file}: [keys] must map API keys to tier names")
    return MeteringConfig(enforce=table.get("enforce", True), ledger_url=table.get("ledger"),
                          default_key=table.get("default_key"), default_tier=table.get("default_tier", "standard"),
                          keys=keys, tiers=load_tiers(table.get("tiers_file")), server_id=table.get("server_id"))


def _masked(key: str) -> str:
    """Enough of an API key to recognise it in a message, never the whole secret."""
    return repr(key[:4] + "…") if len(key) > 6 else repr("…")


@dataclass
class _Job:
    prompt_id: str
    key: str | None
    tier: str
    tokens: int
    reserved: bool
    started_at: float | None = None


@dataclass(frozen=True)
class Admission:
    """A prompt let into the queue: its id (set in the request body), caller, and cost."""

    prompt_id: str
    key: str | None
    cost: GraphCost


def _output_in(output: str | None, root: Path) -> Path | None:
    """The recorded output file when it exists inside ``root``, else None."""
    if not output:
        return None
    path = Path(output).resolve()
    return path if path.is_relative_to(root) and path.is_file() else None


class Meter:
    """Prices prompts, enforces the config, keeps the ledger and the metrics in step with the queue."""

    def __init__(self, config: MeteringConfig, *, audio_duration: AudioDuration, metrics: SonicMetrics | None = None,
                 ledger: Ledger | None = None, device: str = "cpu", dtype: str = "fp32",
                 clock: Callable[[], float] = time.monotonic, owner: str = "") -> None:
        self.config = config
        self.owner = owner
        self.metrics = metrics or SonicMetrics()
        self.ledger = ledger if ledger is not None else (
            open_ledger(config.ledger_url) if config.enforce and config.ledger_url else None)
        self._audio_duration = audio_duration
        self._device, self._dtype = device, dtype
        self._clock = clock
        self._jobs: dict[str, _Job] = {}
        self._running: str | None = None
        self._lock = threading.Lock()
        if self.ledger is not None:
            for key in {*config.keys, *([config.default_key] if config.default_key else [])}:
                if config.tier_of(key).metered:
                    self.ledger.set_metered(key)

    def caller(self, header_key: str | None, extra_data: Mapping[str, Any] | None) -> str | None:
        """The paying key: the header, else ``extra_data["sonic_api_key"]``, else the configured default."""
        sent = extra_data.get(KEY_EXTRA_DATA) if isinstance(extra_data, Mapping) else None
        key = header_key or sent or self.config.default_key
        if key is not None and not isinstance(key, str):
            raise PromptRefused(f"extra_data.{KEY_EXTRA_DATA} must be a string API key", status=400, reason="key")
        return key

    def estimate(self, prompt: Mapping[str, Any], key: str | None = None, tier: str | None = None) -> GraphCost:
        """The cost of a graph for ``tier``, else the key's tier, else the default tier."""
        if tier is None:
            tier = self.config.tier_of(key).name if key else self.config.default_tier
        return price_graph(prompt, tier=tier, tiers=self.config.tiers, audio_duration=self._audio_duration,
                           device=self._device, dtype=self._dtype)

    def available(self, key: str | None) -> int | None:
        """Tokens the key may still reserve; ``None`` for no ledger, no key or a metered key."""
        if self.ledger is None or key is None:
            return None
        return self.ledger.balance(key).available

    def admit(self, body: Mapping[str, Any], header_key: str | None = None) -> Admission | None:
        """Price a ``POST /prompt`` body and let it in (reserving its tokens) or raise :class:`PromptRefused`.

        Returns ``None`` for a prompt that is not metered (no Sonic Sampler, or not enforced and not priceable).
        The caller must put ``admission.prompt_id`` into the body ComfyUI queues.
        """
        prompt = body.get("prompt")
        if not isinstance(prompt, Mapping):
            return None
        key = self.caller(header_key, body.get("extra_data")) if self.config.enforce else None
        if self.config.enforce and key is None:
            raise self._refused(PromptRefused(f"no API key: send the {KEY_HEADER} header or extra_data."
                                              f"{KEY_EXTRA_DATA}, or set default_key in the metering config",
                                              status=401, reason="key"))
        try:
            cost = self.estimate(prompt, key)
        except GraphCostError as exc:
            if not self.config.enforce:
                return None
            raise self._refused(PromptRefused(f"cannot price this prompt before it runs: {exc}", status=400,
                                              reason="unpriced")) from None
        except PromptRefused as exc:
            raise self._refused(exc) from None
        if not cost.jobs:
            return None
        if self.config.enforce and not cost.allowed:
            raise self._refused(PromptRefused(f"tier '{cost.tier}' refuses this prompt: {cost.reason}", status=403,
                                              reason="tier"))
        prompt_id = str(body.get("prompt_id") or uuid.uuid4())
        job = _Job(prompt_id, key, cost.tier, cost.total_tokens, reserved=self.ledger is not None and key is not None)
        with self._lock:
            known = prompt_id in self._jobs
            if not known:
                self._jobs[prompt_id] = job
        try:
            self._reserve(job, known)
        except BaseException as exc:  # a refusal, or a ledger that is down: the prompt is not admitted
            if not known:
                self._settle(prompt_id)
            if isinstance(exc, PromptRefused):
                raise self._refused(exc) from None
            raise
        self.metrics.job_queued(cost.total_tokens, cost.tier)
        return Admission(prompt_id, key, cost)

    def _reserve(self, job: _Job, known: bool) -> None:
        """Hold the job's tokens; a prompt id seen before (here or in the ledger) is refused, never re-used."""
        if known or (job.reserved and self.ledger.charge(job.prompt_id) is not None):
            raise PromptRefused(f"prompt id {job.prompt_id!r} was already used: send a new prompt_id or none",
                                status=409, reason="prompt_id")
        if not job.reserved:
            return
        try:
            self.ledger.reserve(job.key, job.prompt_id, job.tokens, job.tier, self.owner)
        except BudgetExceeded as exc:
            raise PromptRefused(str(exc), status=402, reason="budget") from None
        except SonicInputError as exc:
            raise PromptRefused(str(exc), status=409, reason="prompt_id") from None

    def _refused(self, exc: PromptRefused) -> PromptRefused:
        self.metrics.job_refused(exc.reason)
        log.info("sonic metering refused a prompt: %s", exc)
        return exc

    def started(self, prompt_id: str) -> None:
        with self._lock:
            job = self._jobs.get(prompt_id)
            if job is None or job.started_at is not None:
                return
            job.started_at = self._clock()
            self._running = prompt_id
        self.metrics.job_started(job.tokens)

    def output_written(self, path: str | os.PathLike) -> None:
        """The running prompt wrote ``path``: noted on its hold, so that a crash before its commit still charges
        it at the next start (:meth:`reconcile`)."""
        with self._lock:
            job = self._jobs.get(self._running) if self._running is not None else None
        if job is not None and job.reserved:
            self._ledger_call("note_output", job.prompt_id, os.fspath(path))

    def reconcile(self, output_dir: str | os.PathLike) -> list[Charge]:
        """Settle the holds that this server's previous process left when it died with prompts queued or running.

        A hold whose output file exists in ``output_dir`` is committed (its seconds run from the reservation to
        the file's last write: an upper bound, queue time included); every other one is refunded. Call it at
        start, before any prompt is admitted: the holds of ``owner`` then all belong to a process that is gone.
        Returns the settled charges.
        """
        if self.ledger is None:
            return []
        root = Path(output_dir).resolve()

        def seconds_run(hold: Charge) -> float | None:
            output = _output_in(hold.output, root)
            return None if output is None else max(0.0, output.stat().st_mtime - hold.reserved_at.timestamp())

        settled = reconcile_holds(self.ledger, lambda hold: False, owner=self.owner, seconds_run=seconds_run)
        for charge in settled:
            log.warning("sonic metering: prompt %s held %d tokens of %r when this server last stopped: %s",
                        charge.job_id, charge.tokens, charge.key, charge.status)
        return settled

    def finished(self, prompt_id: str, outcome: str, peak_bytes: int | None = None) -> None:
        """A prompt ran to ``outcome`` ("success", "error" or "interrupted"): commit or refund its tokens."""
        with self._lock:
            if self._running == prompt_id:
                self._running = None
        job = self._settle(prompt_id)
        if job is None:
            return
        if job.started_at is None:  # settled without a start hook (cannot happen in ComfyUI's worker order)
            self.metrics.job_started(job.tokens)
            job.started_at = self._clock()
        seconds = max(0.0, self._clock() - job.started_at)
        if outcome == "success":
            if job.reserved:
                self._ledger_call("commit", prompt_id, seconds)
            self.metrics.job_finished(seconds, peak_bytes)
        else:
            if job.reserved:
                self._ledger_call("refund", prompt_id)
            self.metrics.job_failed(outcome)

    def abandoned(self, prompt_id: str, reason: str = "invalid") -> None:
        """An admitted prompt never entered the queue, or left it without running: give its tokens back."""
        job = self._settle(prompt_id)
        if job is None:
            return
        if job.reserved:
            self._ledger_call("refund", prompt_id)
        self.metrics.job_failed(reason, started=job.started_at is not None, tokens=job.tokens)

    def pending(self) -> set[str]:
        """Ids of the admitted prompts that have not started yet."""
        with self._lock:
            return {job_id for job_id, job in self._jobs.items() if job.started_at is None}

    def _settle(self, prompt_id: str) -> _Job | None:
        with self._lock:
            return self._jobs.pop(prompt_id, None)

    def _ledger_call(self, method: str, prompt_id: str, *args: Any) -> None:
        try:
            getattr(self.ledger, method)(prompt_id, *args)
        except SonicError as exc:  # the ledger already refuses double settlement; log instead of breaking a run
            log.error("sonic metering could not %s prompt %s: %s", method, prompt_id, exc)
