"""Where the fleet's services find each other, read from the environment (the same variables for the gateway and
every worker, so one ``.env`` or Kubernetes ConfigMap configures the whole fleet).

- ``SONIC_FLEET_BROKER``: the Celery broker, ``redis://`` (default ``redis://127.0.0.1:6379/0``) or ``amqp://``
  (RabbitMQ).
- ``SONIC_FLEET_REDIS``: the Redis of the job records (state, progress, pool counters); default the broker's URL
  when that is Redis, else ``redis://127.0.0.1:6379/0``.
- ``SONIC_FLEET_STORAGE``: inputs and videos, a local folder or any fsspec URL (``s3://bucket/prefix``);
  default ``~/.cache/sonic/fleet``.
- ``SONIC_LEDGER``: the token ledger (``redis://`` for a fleet; a ``sqlite:///`` file works on one host).
- ``SONIC_COMFY_URL`` (workers): the ComfyUI server beside the worker, default ``http://127.0.0.1:8188``.
- ``SONIC_FLEET_LEASE_S``: how long a running job's lease lasts without the worker's heartbeat (default 30).
- ``SONIC_FLEET_VISIBILITY_TIMEOUT``: seconds before a Redis broker hands an unacknowledged job (its worker died)
  to another worker (default 300; jobs running longer are protected by their lease, see :mod:`.worker`).
- ``SONIC_FLEET_MEMORY_REPORT_S`` (workers): seconds between reports of the device memory of the worker's ComfyUI
  server (default 15); a report expires after three of them, so a dead worker's memory leaves the metrics.
- ``SONIC_FLEET_RECONCILE_S`` (gateway): seconds between passes of the hold reconciler (default 60; 0: none), see
  :mod:`.reconciler`.
- ``SONIC_FLEET_ENQUEUE_GRACE_S``: how long a hold may wait for its job to reach the broker before the reconciler
  takes its gateway for dead (default 60).
- ``SONIC_FLEET_RESEND_S``: a job queued this long since its message was sent gets another copy, in case the
  broker lost it (default 3600; 0: never), see :mod:`.reconciler`.
- ``SONIC_FLEET_MAX_WORKER_DEATHS``: a job whose workers died this many times while running it is failed and
  refunded instead of being handed to another worker (default 3).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import SonicInputError
from ..metering.ledger import DEFAULT_LEDGER_URL, LEDGER_ENV

DEFAULT_REDIS = "redis://127.0.0.1:6379/0"


@dataclass(frozen=True)
class FleetConfig:
    broker: str
    records: str
    storage: str
    ledger: str
    comfy_url: str
    lease_seconds: float
    visibility_timeout: float
    memory_report_seconds: float = 15.0
    reconcile_seconds: float = 60.0
    enqueue_grace_seconds: float = 60.0
    resend_seconds: float = 3600.0
    max_worker_deaths: int = 3

    @classmethod
    def from_env(cls) -> "FleetConfig":
        broker = os.environ.get("SONIC_FLEET_BROKER") or DEFAULT_REDIS
        default_records = broker if broker.startswith(("redis://", "rediss://")) else DEFAULT_REDIS
        return cls(broker=broker,
                   records=os.environ.get("SONIC_FLEET_REDIS") or default_records,
                   storage=os.environ.get("SONIC_FLEET_STORAGE") or str(Path("~/.cache/sonic/fleet").expanduser()),
                   ledger=os.environ.get(LEDGER_ENV) or DEFAULT_LEDGER_URL,
                   comfy_url=os.environ.get("SONIC_COMFY_URL") or "http://127.0.0.1:8188",
                   lease_seconds=_env_number("SONIC_FLEET_LEASE_S", 30.0),
                   visibility_timeout=_env_number("SONIC_FLEET_VISIBILITY_TIMEOUT", 300.0),
                   memory_report_seconds=_env_number("SONIC_FLEET_MEMORY_REPORT_S", cls.memory_report_seconds),
                   reconcile_seconds=_env_number("SONIC_FLEET_RECONCILE_S", cls.reconcile_seconds, zero=True),
                   enqueue_grace_seconds=_env_number("SONIC_FLEET_ENQUEUE_GRACE_S", cls.enqueue_grace_seconds,
                                                     zero=True),
                   resend_seconds=_env_number("SONIC_FLEET_RESEND_S", cls.resend_seconds, zero=True),
                   max_worker_deaths=int(_env_number("SONIC_FLEET_MAX_WORKER_DEATHS", cls.max_worker_deaths,
                                                     whole=True)))


def _env_number(name: str, default: float, *, zero: bool = False, whole: bool = False) -> float:
    """The number in environment variable ``name`` (``default`` when unset or empty), or one line naming it."""
    text = os.environ.get(name) or ""
    if not text:
        return float(default)
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0 or (value == 0 and not zero) or (whole and value != int(value)):
        kind = "a whole number" if whole else "a number of seconds"
        raise SonicInputError(f"{name}={text!r} is not valid: set it to {kind} "
                              f"{'of 0 or more' if zero else 'above 0'}, or unset it for the default {default:g}")
    return value
