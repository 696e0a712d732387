"""The ledger in Redis: every change one Lua script, so atomic across any number of workers (a single Redis
server, not Redis Cluster). The Redis client is imported only when a Redis ledger is opened."""

from __future__ import annotations

from datetime import datetime
from typing import Callable, Iterable
from urllib.parse import urlsplit

from ...errors import SonicDependencyError
from .base import LEDGER_ENV, Balance, Charge, Clock, Ledger, parse_timestamp, timestamp_text, utc_now

# Redis layout under a prefix P: P"acct:"KEY hash {balance, held, spent, metered}, P"job:"ID hash (the fields of
# Charge), P"committed" sorted set of committed job ids scored by commit time (epoch seconds), P"reserved" set of the
# job ids still reserved (the holds).
_RESERVE_LUA = """
local job = redis.call('HGETALL', KEYS[2])
if #job > 0 then return {1, job} end
local tokens = tonumber(ARGV[3])
local metered = redis.call('HGET', KEYS[1], 'metered') == '1'
if not metered then
    local balance = tonumber(redis.call('HGET', KEYS[1], 'balance') or '0')
    if balance < tokens then return {0, balance} end
    if tokens > 0 then redis.call('HINCRBY', KEYS[1], 'balance', -tokens) end
end
redis.call('HINCRBY', KEYS[1], 'held', tokens)
redis.call('HSET', KEYS[2], 'job_id', ARGV[2], 'key', ARGV[1], 'tier', ARGV[4], 'tokens', ARGV[3],
           'metered', metered and '1' or '0', 'status', 'reserved', 'reserved_at', ARGV[5], 'owner', ARGV[6])
redis.call('SADD', KEYS[3], ARGV[2])
return {1, redis.call('HGETALL', KEYS[2])}
"""

_SETTLE_LUA = """
local job = redis.call('HGETALL', KEYS[1])
if #job == 0 or redis.call('HGET', KEYS[1], 'status') ~= 'reserved' then return job end
local account = ARGV[5] .. redis.call('HGET', KEYS[1], 'key')
local tokens = tonumber(redis.call('HGET', KEYS[1], 'tokens'))
redis.call('SREM', KEYS[3], redis.call('HGET', KEYS[1], 'job_id'))
if tokens > 0 then redis.call('HINCRBY', account, 'held', -tokens) end
if ARGV[1] == 'committed' then
    redis.call('HINCRBY', account, 'spent', tokens)
    redis.call('HSET', KEYS[1], 'status', 'committed', 'seconds', ARGV[2], 'settled_at', ARGV[3])
    redis.call('ZADD', KEYS[2], ARGV[4], redis.call('HGET', KEYS[1], 'job_id'))
else
    if redis.call('HGET', KEYS[1], 'metered') ~= '1' then redis.call('HINCRBY', account, 'balance', tokens) end
    redis.call('HSET', KEYS[1], 'status', 'refunded', 'settled_at', ARGV[3])
end
return redis.call('HGETALL', KEYS[1])
"""

_NOTE_OUTPUT_LUA = """
if redis.call('HGET', KEYS[1], 'status') == 'reserved' then redis.call('HSET', KEYS[1], 'output', ARGV[1]) end
return redis.call('HGETALL', KEYS[1])
"""


def _import_redis():
    try:
        import redis
    except ModuleNotFoundError:
        raise SonicDependencyError("a redis:// ledger needs the Redis client: pip install 'redis>=5'") from None
    return redis


def _pairs(flat: list[str]) -> dict[str, str]:
    return dict(zip(flat[::2], flat[1::2]))


class RedisLedger(Ledger):
    """The ledger in Redis: every change is one Lua script (atomic); keys live under ``prefix``."""

    def __init__(self, url: str, prefix: str = "sonic:ledger:", clock: Clock = utc_now) -> None:
        super().__init__(clock)
        redis = _import_redis()
        self.prefix = prefix
        self._redis = redis.Redis.from_url(url, decode_responses=True)
        try:
            self._redis.ping()
        except redis.RedisError as exc:
            where = urlsplit(url)._replace(netloc=urlsplit(url).netloc.rpartition("@")[2]).geturl()
            raise SonicDependencyError(f"the Redis ledger at {where} is not reachable ({exc}): start redis-server "
                                       f"or fix the URL (--ledger / ${LEDGER_ENV})") from None
        self._reserve_script = self._redis.register_script(_RESERVE_LUA)
        self._settle_script = self._redis.register_script(_SETTLE_LUA)
        self._note_output_script = self._redis.register_script(_NOTE_OUTPUT_LUA)

    def _account_key(self, key: str) -> str:
        return f"{self.prefix}acct:{key}"

    def _job_key(self, job_id: str) -> str:
        return f"{self.prefix}job:{job_id}"

    @staticmethod
    def _charge(fields: dict[str, str]) -> Charge | None:
        if not fields:
            return None
        seconds = fields.get("seconds")
        return Charge(job_id=fields["job_id"], key=fields["key"], tier=fields["tier"], tokens=int(fields["tokens"]),
                      status=fields["status"], metered=fields["metered"] == "1",
                      reserved_at=parse_timestamp(fields["reserved_at"]),
                      settled_at=parse_timestamp(fields.get("settled_at")), seconds=float(seconds) if seconds else None,
                      owner=fields.get("owner", ""), output=fields.get("output"))

    @staticmethod
    def _balance(key: str, fields: dict[str, str]) -> Balance:
        return Balance(key, int(fields.get("balance", 0)), int(fields.get("held", 0)), int(fields.get("spent", 0)),
                       fields.get("metered") == "1")

    def _reserve(self, key: str, job_id: str, tokens: int, tier: str, owner: str,
                 now: datetime) -> tuple[Charge | None, int | None]:
        found, payload = self._reserve_script(keys=[self._account_key(key), self._job_key(job_id),
                                                    f"{self.prefix}reserved"],
                                              args=[key, job_id, tokens, tier, timestamp_text(now), owner])
        if not found:
            return None, int(payload)
        return self._charge(_pairs(payload)), None

    def _settle(self, job_id: str, status: str, seconds: float | None, now: datetime) -> Charge | None:
        flat = self._settle_script(keys=[self._job_key(job_id), f"{self.prefix}committed", f"{self.prefix}reserved"],
                                   args=[status, "" if seconds is None else repr(seconds), timestamp_text(now),
                                         now.timestamp(), f"{self.prefix}acct:"])
        return self._charge(_pairs(flat))

    def _note_output(self, job_id: str, output: str) -> Charge | None:
        return self._charge(_pairs(self._note_output_script(keys=[self._job_key(job_id)], args=[output])))

    def _holds(self) -> list[Charge]:
        return self._charges(self._redis.smembers(f"{self.prefix}reserved"))

    def _charges(self, job_ids: Iterable[str]) -> list[Charge]:
        pipe = self._redis.pipeline(transaction=False)
        for job_id in job_ids:
            pipe.hgetall(self._job_key(job_id))
        return [charge for charge in map(self._charge, pipe.execute()) if charge is not None]

    def _update_account(self, key: str, update: Callable) -> Balance:
        pipe = self._redis.pipeline(transaction=True)
        update(pipe, self._account_key(key))
        pipe.hgetall(self._account_key(key))
        return self._balance(key, pipe.execute()[-1])

    def _credit(self, key: str, tokens: int) -> Balance:
        return self._update_account(key, lambda pipe, name: pipe.hincrby(name, "balance", tokens))

    def _set_metered(self, key: str, metered: bool) -> Balance:
        return self._update_account(key, lambda pipe, name: pipe.hset(name, "metered", "1" if metered else "0"))

    def balance(self, key: str) -> Balance:
        return self._balance(key, self._redis.hgetall(self._account_key(key)))

    def charge(self, job_id: str) -> Charge | None:
        return self._charge(self._redis.hgetall(self._job_key(job_id)))

    def committed_between(self, start: datetime, end: datetime) -> list[Charge]:
        ids = self._redis.zrangebyscore(f"{self.prefix}committed", start.timestamp(), f"({end.timestamp()}")
        charges = self._charges(ids)
        # the float scores only narrow the range; the stored UTC timestamps decide
        return sorted((c for c in charges if start <= c.settled_at < end), key=lambda c: (c.settled_at, c.job_id))

    def close(self) -> None:
        self._redis.close()
