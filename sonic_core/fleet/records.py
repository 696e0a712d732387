"""The fleet's job records in Redis, shared by the gateway (which creates and cancels jobs and reports them) and
the workers (which claim, run and finish them).

A record is one hash; its ``state`` moves ``queued -> running -> done | failed | cancelled`` (``queued ->
cancelled`` for a job cancelled before it starts; ``running -> queued`` when its ComfyUI server was unreachable and
the job goes back to the broker). Every change of state is one Lua script that also moves the pool's counters
(queued jobs, queued tokens, running jobs), so the gauges the autoscaler reads are always the sum of the records.

A running job carries a lease (``worker``, ``lease_until``) that its worker renews while it runs: a re-delivered
job whose lease is alive belongs to a live worker and is not run twice; one whose lease has expired (the worker
died) is taken over. ``worker_deaths`` counts the workers that died running the job (each takeover, and each time
the reconciler sends a dead worker's job again), so a job that kills its workers is ended instead of killing them
one after another.
"""

from __future__ import annotations

import json
import time
from typing import Any

from ..errors import SonicDependencyError
from ..metering.metrics import JOB_SECONDS_BUCKETS

STATES = ("queued", "running", "done", "failed", "cancelled")
FINAL = frozenset({"done", "failed", "cancelled"})
HISTOGRAMS = ("job_seconds", "queue_delay_seconds")

_COUNT_MOVES = """
local function move(pool, old, new, tokens)
    -- 0 - tokens, not -tokens: Lua writes -0 as "-0", which HINCRBY refuses
    if old == new then return end
    if old == 'queued' then
        redis.call('HINCRBY', pool, 'queued_jobs', -1)
        redis.call('HINCRBY', pool, 'queued_tokens', 0 - tokens)
    elseif old == 'running' then
        redis.call('HINCRBY', pool, 'running_jobs', -1)
    end
    if new == 'queued' then
        redis.call('HINCRBY', pool, 'queued_jobs', 1)
        redis.call('HINCRBY', pool, 'queued_tokens', tokens)
    elseif new == 'running' then
        redis.call('HINCRBY', pool, 'running_jobs', 1)
    end
end
"""

# KEYS: job hash, pool-hash prefix. ARGV: new state, lease cutoff ('' for none), n allowed states, allowed...,
# field, value, ... Returns 'ok', the state that refused the move, or 'busy' (its lease lasts past the cutoff).
_TRANSITION_LUA = _COUNT_MOVES + """
local old = redis.call('HGET', KEYS[1], 'state')
if not old then return false end
local n = tonumber(ARGV[3])
local allowed = false
for i = 4, 3 + n do if ARGV[i] == old then allowed = true end end
if not allowed then return old end
if ARGV[2] ~= '' and tonumber(redis.call('HGET', KEYS[1], 'lease_until') or '0') >= tonumber(ARGV[2]) then
    return 'busy'
end
redis.call('HSET', KEYS[1], 'state', ARGV[1])
for i = 4 + n, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
move(KEYS[2] .. redis.call('HGET', KEYS[1], 'pool'), old, ARGV[1], tonumber(redis.call('HGET', KEYS[1], 'tokens')))
return 'ok'
"""

# KEYS: job hash, pool-hash prefix. ARGV: worker, now, lease_until. Returns the state before the claim, or 'busy'.
_CLAIM_LUA = _COUNT_MOVES + """
local old = redis.call('HGET', KEYS[1], 'state')
if not old then return false end
if old == 'running' and tonumber(redis.call('HGET', KEYS[1], 'lease_until') or '0') >= tonumber(ARGV[2]) then
    return 'busy'
end
if old ~= 'queued' and old ~= 'running' then return old end
redis.call('HSET', KEYS[1], 'state', 'running', 'worker', ARGV[1], 'lease_until', ARGV[3])
if old == 'running' then redis.call('HINCRBY', KEYS[1], 'worker_deaths', 1) end
if old == 'queued' then redis.call('HSET', KEYS[1], 'started_at', ARGV[2]) end
move(KEYS[2] .. redis.call('HGET', KEYS[1], 'pool'), old, 'running', tonumber(redis.call('HGET', KEYS[1], 'tokens')))
return old
"""

# KEYS: job hash. ARGV: worker, lease_until. Renews the lease only while this worker holds the running job.
_RENEW_LUA = """
if redis.call('HGET', KEYS[1], 'state') == 'running' and redis.call('HGET', KEYS[1], 'worker') == ARGV[1] then
    redis.call('HSET', KEYS[1], 'lease_until', ARGV[2])
    return 1
end
return 0
"""


def _import_redis():
    try:
        import redis
    except ModuleNotFoundError:
        raise SonicDependencyError("the fleet needs the Redis client: pip install -r requirements-service.txt") \
            from None
    return redis


class JobRecords:
    """Job records and pool counters under ``prefix`` in the Redis at ``url``."""

    def __init__(self, url: str, prefix: str = "sonic:fleet:") -> None:
        self._redis = _import_redis().Redis.from_url(url, decode_responses=True)
        self.prefix = prefix
        self._transition = self._redis.register_script(_TRANSITION_LUA)
        self._claim = self._redis.register_script(_CLAIM_LUA)
        self._renew = self._redis.register_script(_RENEW_LUA)

    def _job(self, job_id: str) -> str:
        return f"{self.prefix}job:{job_id}"

    def _pools(self) -> str:
        return f"{self.prefix}pool:"

    def create(self, job_id: str, pool: str, tokens: int, **fields: Any) -> None:
        """A new queued job (its tokens join the pool's queued tokens)."""
        pipe = self._redis.pipeline(transaction=True)
        pipe.hset(self._job(job_id), mapping={"id": job_id, "pool": pool, "tokens": tokens, "state": "queued",
                                              "created_at": time.time(), **_flat(fields)})
        pipe.hincrby(self._pools() + pool, "queued_jobs", 1)
        pipe.hincrby(self._pools() + pool, "queued_tokens", tokens)
        pipe.sadd(f"{self.prefix}pools", pool)
        pipe.execute()

    def forget(self, job_id: str) -> None:
        """Remove a queued job that never reached the broker (its counts leave the pool's); a no-op when the
        records cannot be reached or the job was never created."""
        try:
            self.transition(job_id, "failed", ("queued",))
            self._redis.delete(self._job(job_id))
        except _import_redis().RedisError:
            pass

    def get(self, job_id: str) -> dict[str, str] | None:
        fields = self._redis.hgetall(self._job(job_id))
        return fields or None

    def update(self, job_id: str, **fields: Any) -> None:
        """Set fields other than ``state`` (progress, server, cancel flag...)."""
        if fields:
            self._redis.hset(self._job(job_id), mapping=_flat(fields))

    def transition(self, job_id: str, new: str, allowed: tuple[str, ...], *, lease_before: float | None = None,
                   **fields: Any) -> str | None:
        """Move the job to ``new`` if its state is one of ``allowed`` (and, with ``lease_before``, its lease ended
        before that time) and set ``fields``; returns ``"ok"``, else the state that refused the move, ``"busy"``
        (a lease lasting past ``lease_before``: a worker renewed or took it meanwhile) or ``None`` (no such job)."""
        args = [new, "" if lease_before is None else lease_before, len(allowed), *allowed]
        for name, value in _flat(fields).items():
            args += [name, value]
        return self._transition(keys=[self._job(job_id), self._pools()], args=args)

    def claim(self, job_id: str, worker: str, lease_seconds: float) -> str | None:
        """Take the job to run it: from ``queued``, or ``running`` with an expired lease (its worker died: one more
        of its ``worker_deaths``). Returns the state it was in (``queued``/``running``: claimed), ``"busy"`` (a live worker holds it), a
        final state, or ``None`` (no such job)."""
        now = time.time()
        return self._claim(keys=[self._job(job_id), self._pools()], args=[worker, now, now + lease_seconds])

    def renew(self, job_id: str, worker: str, lease_seconds: float) -> bool:
        return bool(self._renew(keys=[self._job(job_id)], args=[worker, time.time() + lease_seconds]))

    def observe(self, pool: str, histogram: str, value: float) -> None:
        """Count ``value`` in the pool's cumulative ``histogram`` (one of :data:`HISTOGRAMS`)."""
        name = f"{self.prefix}hist:{histogram}:{pool}"
        pipe = self._redis.pipeline(transaction=True)
        for bound in JOB_SECONDS_BUCKETS:
            if value <= bound:
                pipe.hincrby(name, str(bound), 1)
        pipe.hincrby(name, "+Inf", 1)
        pipe.hincrbyfloat(name, "sum", value)
        pipe.execute()

    def histogram(self, pool: str, histogram: str) -> tuple[list[tuple[str, int]], float]:
        """``([(upper bound, cumulative count)...], sum)`` of a pool's histogram."""
        fields = self._redis.hgetall(f"{self.prefix}hist:{histogram}:{pool}")
        buckets = [(str(bound), int(fields.get(str(bound), 0))) for bound in JOB_SECONDS_BUCKETS]
        return buckets + [("+Inf", int(fields.get("+Inf", 0)))], float(fields.get("sum", 0.0))

    def pool_counts(self) -> dict[str, dict[str, int]]:
        """Per pool that ever had a job: queued_jobs, queued_tokens, running_jobs."""
        counts = {}
        for pool in sorted(self._redis.smembers(f"{self.prefix}pools")):
            fields = self._redis.hgetall(self._pools() + pool)
            counts[pool] = {name: int(fields.get(name, 0)) for name in ("queued_jobs", "queued_tokens",
                                                                        "running_jobs")}
        return counts

    def _memory(self, worker: str) -> str:
        return f"{self.prefix}worker-memory:{worker}"

    def set_worker_memory(self, worker: str, used_bytes: int, total_bytes: int, ttl_seconds: float) -> None:
        """Report a worker's device memory; the report is gone after ``ttl_seconds`` unless reported again, so a
        worker that died drops out of the gauge instead of exporting its last figures forever."""
        self._redis.set(self._memory(worker), json.dumps([used_bytes, total_bytes]),
                        px=max(1, round(ttl_seconds * 1000)))

    def worker_memory(self) -> dict[str, tuple[int, int]]:
        """``worker -> (used, total)`` bytes of the device memory of its ComfyUI server, of the workers whose last
        report has not expired."""
        keys = sorted(self._redis.scan_iter(match=self._memory("*")))
        values = self._redis.mget(keys) if keys else []
        start = len(self._memory(""))
        return {key[start:]: tuple(json.loads(value)) for key, value in zip(keys, values) if value is not None}

    def close(self) -> None:
        self._redis.close()


def _flat(fields: dict[str, Any]) -> dict[str, str | int | float]:
    """Redis hash values: ``None`` as an empty string, everything else as it is (numbers) or its text."""
    return {name: "" if value is None else value if isinstance(value, (int, float, str)) else json.dumps(value)
            for name, value in fields.items()}
