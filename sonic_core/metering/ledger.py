"""Token ledger: balances of API keys and per-job charges, reserve -> commit | refund, each exactly once.

State machine of one charge, keyed by its job (prompt) id::

    (none) --reserve(key, tokens)--> reserved --commit(seconds)--> committed
                                              \\--refund()--------> refunded

- ``reserve`` (queue time) holds the job's tokens against the key's balance, or raises :class:`BudgetExceeded`
  naming the key, the tokens needed and the tokens available. A *metered* key (e.g. one on the ``api`` tier) has
  no cap: its balance is neither checked nor touched, but the charge is recorded like any other.
- ``commit`` (the job succeeded) charges the reserved tokens, the price quoted at queue time, and records the
  measured seconds; ``refund`` (failure or interruption) gives the held tokens back.
- Repeating a transition is a no-op that returns the stored charge: a reserve of a known job id (whatever its
  state), a commit of a committed job, a refund of a refunded one. A repeated reserve whose key, tokens or tier
  differ from the stored ones is a :class:`LedgerStateError` (a job id is never reused).
- ``committed`` and ``refunded`` are final: commit after refund, refund after commit, and a commit or refund of
  an unknown job id raise :class:`LedgerStateError` and change nothing.

Per key: ``balance`` (tokens that can still be reserved), ``held`` (tokens of reserved jobs) and ``spent``
(committed tokens). reserve: balance -= t, held += t; commit: held -= t, spent += t; refund: held -= t,
balance += t. ``credit`` tops a balance up. All times are UTC; a charge belongs to the month of its commit.

Backends, chosen by URL (:func:`open_ledger`): SQLite (the embedded default; one file in WAL mode, every change
one ``BEGIN IMMEDIATE`` transaction, safe across threads and processes) and Redis (every change one Lua script,
so atomic across any number of workers; a single Redis server, not Redis Cluster).
"""

from __future__ import annotations

import math
import os
import re
import sqlite3
import threading
import weakref
from abc import ABC, abstractmethod
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterator
from urllib.parse import urlsplit

from ..errors import BudgetExceeded, SonicDependencyError, SonicInputError

LEDGER_ENV = "SONIC_LEDGER"
DEFAULT_LEDGER_URL = "sqlite:///~/.cache/sonic/ledger.db"
RESERVED, COMMITTED, REFUNDED = "reserved", "committed", "refunded"

Clock = Callable[[], datetime]


class LedgerStateError(SonicInputError):
    """A charge transition that the state machine forbids (unknown job, final state, reused job id)."""


@dataclass(frozen=True)
class Charge:
    """One job's charge as stored; ``seconds`` and ``settled_at`` are set by commit (``settled_at`` by refund)."""

    job_id: str
    key: str
    tier: str
    tokens: int
    status: str
    metered: bool
    reserved_at: datetime
    settled_at: datetime | None = None
    seconds: float | None = None


@dataclass(frozen=True)
class Balance:
    """Token counts of one key; a key the ledger has never seen has all zeros."""

    key: str
    balance: int
    held: int
    spent: int
    metered: bool

    @property
    def available(self) -> int | None:
        """Tokens a reserve may still take; ``None`` means no cap (metered key)."""
        return None if self.metered else self.balance


@dataclass(frozen=True)
class Usage:
    """Committed charges of one key in one month."""

    key: str
    jobs: int
    tokens: int
    seconds: float


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


_MONTH = re.compile(r"([0-9]{4})-(0[1-9]|1[0-2])")


def month_range(month: str) -> tuple[datetime, datetime]:
    """``"YYYY-MM"`` -> [first instant of the month, first instant of the next) in UTC."""
    match = _MONTH.fullmatch(month) if isinstance(month, str) else None
    if match is None:
        raise SonicInputError(f"month {month!r} is not of the form YYYY-MM: pass e.g. --month 2026-11")
    year, mon = int(match[1]), int(match[2])
    if not 1970 <= year <= 9998:
        raise SonicInputError(f"month {month!r} is out of range: pass a year from 1970 to 9998")
    start = datetime(year, mon, 1, tzinfo=timezone.utc)
    end = datetime(year + mon // 12, mon % 12 + 1, 1, tzinfo=timezone.utc)
    return start, end


def _text(name: str, value: object) -> str:
    if not isinstance(value, str) or not value:
        raise SonicInputError(f"{name} must be a non-empty string, got {value!r}")
    return value


MAX_TOKENS = 10**12  # far above any real job or top-up; keeps every count exact in Redis' Lua (doubles)


def _count(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= MAX_TOKENS:
        raise SonicInputError(f"{name} must be an integer from {minimum} to {MAX_TOKENS}, got {value!r}")
    return value


_TS_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"  # fixed width, so stored timestamps sort as text


def _ts(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime(_TS_FORMAT)


def _parse_ts(text: str | None) -> datetime | None:
    return datetime.strptime(text, _TS_FORMAT).replace(tzinfo=timezone.utc) if text else None


class Ledger(ABC):
    """Balances and charges; the public methods validate and enforce the state machine, backends store."""

    def __init__(self, clock: Clock = utc_now) -> None:
        self._clock = clock

    def _now(self) -> datetime:
        now = self._clock()
        if now.tzinfo is None:
            raise SonicInputError("the ledger clock returned a naive datetime: return an aware UTC one")
        return now.astimezone(timezone.utc)

    def reserve(self, key: str, job_id: str, tokens: int, tier: str = "") -> Charge:
        """Hold ``tokens`` of ``key`` for ``job_id``; see the module docstring for repeats and refusals."""
        key, job_id, tokens = _text("key", key), _text("job_id", job_id), _count("tokens", tokens, 0)
        if not isinstance(tier, str):
            raise SonicInputError(f"tier must be a string, got {tier!r}")
        charge, available = self._reserve(key, job_id, tokens, tier, self._now())
        if charge is None:
            raise BudgetExceeded(f"key {key!r} needs {tokens} tokens for job {job_id!r} but has {available} "
                                 "available: top the key up or lower the job's cost", tokens=tokens, limit=available)
        if (charge.key, charge.tokens, charge.tier) != (key, tokens, tier):
            raise LedgerStateError(f"job id {job_id!r} is already reserved for key {charge.key!r} ({charge.tokens} "
                                   f"tokens, tier {charge.tier!r}): give every job its own id")
        return charge

    def commit(self, job_id: str, seconds: float) -> Charge:
        """Charge the reserved tokens of a finished job and record how long it ran."""
        job_id = _text("job_id", job_id)
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not math.isfinite(seconds) \
                or seconds < 0:
            raise SonicInputError(f"seconds must be a finite number >= 0, got {seconds!r}")
        return self._final(job_id, COMMITTED, self._settle(job_id, COMMITTED, float(seconds), self._now()))

    def refund(self, job_id: str) -> Charge:
        """Give the held tokens of a failed or interrupted job back."""
        job_id = _text("job_id", job_id)
        return self._final(job_id, REFUNDED, self._settle(job_id, REFUNDED, None, self._now()))

    @staticmethod
    def _final(job_id: str, target: str, charge: Charge | None) -> Charge:
        if charge is None:
            raise LedgerStateError(f"job {job_id!r} has no reservation: reserve it before it is committed or refunded")
        if charge.status != target:
            raise LedgerStateError(f"job {job_id!r} is already {charge.status} and cannot be {target}: "
                                   "committed and refunded are final")
        return charge

    def credit(self, key: str, tokens: int) -> Balance:
        """Top ``key`` up by ``tokens`` (creates the key)."""
        return self._credit(_text("key", key), _count("tokens", tokens, 1))

    def set_metered(self, key: str, metered: bool = True) -> Balance:
        """Mark ``key`` metered (no balance cap, every charge recorded) or capped again (creates the key)."""
        if not isinstance(metered, bool):
            raise SonicInputError(f"metered must be True or False, got {metered!r}")
        return self._set_metered(_text("key", key), metered)

    def usage(self, month: str) -> list[Usage]:
        """Jobs, tokens and seconds of the charges committed in ``month`` ("YYYY-MM", UTC), one row per key."""
        start, end = month_range(month)
        totals: dict[str, tuple[int, int, float]] = {}
        for charge in self.committed_between(start, end):
            jobs, tokens, seconds = totals.get(charge.key, (0, 0, 0.0))
            totals[charge.key] = (jobs + 1, tokens + charge.tokens, seconds + (charge.seconds or 0.0))
        return [Usage(key, *totals[key]) for key in sorted(totals)]

    @abstractmethod
    def balance(self, key: str) -> Balance:
        """The key's token counts."""

    @abstractmethod
    def charge(self, job_id: str) -> Charge | None:
        """The stored charge of ``job_id``, or ``None``."""

    @abstractmethod
    def committed_between(self, start: datetime, end: datetime) -> list[Charge]:
        """Charges committed in [start, end), oldest first."""

    @abstractmethod
    def _reserve(self, key: str, job_id: str, tokens: int, tier: str,
                 now: datetime) -> tuple[Charge | None, int | None]:
        """Atomically: the stored charge if ``job_id`` exists, else a new reservation, else (None, available)."""

    @abstractmethod
    def _settle(self, job_id: str, status: str, seconds: float | None, now: datetime) -> Charge | None:
        """Atomically move a reserved charge to ``status``; return the stored charge (unchanged if final)."""

    @abstractmethod
    def _credit(self, key: str, tokens: int) -> Balance: ...

    @abstractmethod
    def _set_metered(self, key: str, metered: bool) -> Balance: ...

    def close(self) -> None:
        """Release connections; the ledger must not be used afterwards."""

    def __enter__(self) -> "Ledger":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_SCHEMA = """
CREATE TABLE IF NOT EXISTS accounts (
    key     TEXT PRIMARY KEY,
    balance INTEGER NOT NULL DEFAULT 0 CHECK (balance >= 0),
    held    INTEGER NOT NULL DEFAULT 0 CHECK (held >= 0),
    spent   INTEGER NOT NULL DEFAULT 0,
    metered INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS charges (
    job_id      TEXT PRIMARY KEY,
    key         TEXT NOT NULL,
    tier        TEXT NOT NULL,
    tokens      INTEGER NOT NULL,
    metered     INTEGER NOT NULL,
    status      TEXT NOT NULL CHECK (status IN ('reserved', 'committed', 'refunded')),
    seconds     REAL,
    reserved_at TEXT NOT NULL,
    settled_at  TEXT
);
CREATE INDEX IF NOT EXISTS charges_by_settlement ON charges (status, settled_at);
"""


class SQLiteLedger(Ledger):
    """The ledger in one SQLite file: WAL mode, one connection per thread and process, ``BEGIN IMMEDIATE``.

    A connection is opened by the thread that first uses the ledger and closed when a later thread finds its owner
    gone, or by :meth:`close`. A forked child opens its own connections and never touches (nor closes) the ones it
    inherited, as SQLite requires.
    """

    def __init__(self, path: str | os.PathLike, clock: Clock = utc_now, busy_timeout: float = 30.0) -> None:
        super().__init__(clock)
        self.path = Path(path)
        self._busy_timeout = busy_timeout
        self._local = threading.local()
        self._lock = threading.Lock()
        self._connections: list[tuple[int, threading.Thread, sqlite3.Connection]] = []
        me = weakref.ref(self)
        os.register_at_fork(after_in_child=lambda: me() is not None and me()._after_fork())
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = self._db()
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(_SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise SonicInputError(f"ledger file {self.path} cannot be used ({exc}): pass a writable SQLite file "
                                  f"(--ledger / ${LEDGER_ENV})") from None

    def _after_fork(self) -> None:
        self._lock = threading.Lock()  # the parent's may have been held by a thread that does not exist here

    def _db(self) -> sqlite3.Connection:
        """This thread's connection."""
        pid = os.getpid()
        if getattr(self._local, "pid", None) != pid:
            db = sqlite3.connect(self.path, timeout=self._busy_timeout, isolation_level=None,
                                 check_same_thread=False)
            db.row_factory = sqlite3.Row
            db.execute("PRAGMA synchronous=FULL")
            self._local.db, self._local.pid = db, pid
            with self._lock:
                keep, dead = [], []
                for entry in self._connections:
                    (dead if entry[0] == pid and not entry[1].is_alive() else keep).append(entry)
                self._connections = keep + [(pid, threading.current_thread(), db)]
            for _, _, old in dead:
                old.close()
        return self._local.db

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        db = self._db()
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise

    @staticmethod
    def _charge(row: sqlite3.Row | None) -> Charge | None:
        if row is None:
            return None
        return Charge(job_id=row["job_id"], key=row["key"], tier=row["tier"], tokens=row["tokens"],
                      status=row["status"], metered=bool(row["metered"]), reserved_at=_parse_ts(row["reserved_at"]),
                      settled_at=_parse_ts(row["settled_at"]), seconds=row["seconds"])

    @staticmethod
    def _balance(key: str, row: sqlite3.Row | None) -> Balance:
        if row is None:
            return Balance(key, 0, 0, 0, False)
        return Balance(key, row["balance"], row["held"], row["spent"], bool(row["metered"]))

    def _reserve(self, key: str, job_id: str, tokens: int, tier: str,
                 now: datetime) -> tuple[Charge | None, int | None]:
        with self._transaction() as db:
            stored = self._charge(db.execute("SELECT * FROM charges WHERE job_id = ?", (job_id,)).fetchone())
            if stored is not None:
                return stored, None
            account = self._balance(key, db.execute("SELECT * FROM accounts WHERE key = ?", (key,)).fetchone())
            if not account.metered and account.balance < tokens:
                return None, account.balance
            db.execute("INSERT INTO accounts (key) VALUES (?) ON CONFLICT (key) DO NOTHING", (key,))
            db.execute("UPDATE accounts SET balance = balance - ?, held = held + ? WHERE key = ?",
                       (0 if account.metered else tokens, tokens, key))
            db.execute("INSERT INTO charges (job_id, key, tier, tokens, metered, status, reserved_at) "
                       "VALUES (?, ?, ?, ?, ?, ?, ?)", (job_id, key, tier, tokens, account.metered, RESERVED, _ts(now)))
            return self._charge(db.execute("SELECT * FROM charges WHERE job_id = ?", (job_id,)).fetchone()), None

    def _settle(self, job_id: str, status: str, seconds: float | None, now: datetime) -> Charge | None:
        with self._transaction() as db:
            stored = self._charge(db.execute("SELECT * FROM charges WHERE job_id = ?", (job_id,)).fetchone())
            if stored is None or stored.status != RESERVED:
                return stored
            refund = 0 if status == COMMITTED or stored.metered else stored.tokens
            spent = stored.tokens if status == COMMITTED else 0
            db.execute("UPDATE accounts SET held = held - ?, balance = balance + ?, spent = spent + ? WHERE key = ?",
                       (stored.tokens, refund, spent, stored.key))
            db.execute("UPDATE charges SET status = ?, seconds = ?, settled_at = ? WHERE job_id = ?",
                       (status, seconds, _ts(now), job_id))
            return self._charge(db.execute("SELECT * FROM charges WHERE job_id = ?", (job_id,)).fetchone())

    def _credit(self, key: str, tokens: int) -> Balance:
        with self._transaction() as db:
            db.execute("INSERT INTO accounts (key, balance) VALUES (?, ?) "
                       "ON CONFLICT (key) DO UPDATE SET balance = balance + excluded.balance", (key, tokens))
            return self._balance(key, db.execute("SELECT * FROM accounts WHERE key = ?", (key,)).fetchone())

    def _set_metered(self, key: str, metered: bool) -> Balance:
        with self._transaction() as db:
            db.execute("INSERT INTO accounts (key, metered) VALUES (?, ?) "
                       "ON CONFLICT (key) DO UPDATE SET metered = excluded.metered", (key, metered))
            return self._balance(key, db.execute("SELECT * FROM accounts WHERE key = ?", (key,)).fetchone())

    def balance(self, key: str) -> Balance:
        return self._balance(key, self._db().execute("SELECT * FROM accounts WHERE key = ?", (key,)).fetchone())

    def charge(self, job_id: str) -> Charge | None:
        return self._charge(self._db().execute("SELECT * FROM charges WHERE job_id = ?", (job_id,)).fetchone())

    def committed_between(self, start: datetime, end: datetime) -> list[Charge]:
        rows = self._db().execute("SELECT * FROM charges WHERE status = ? AND settled_at >= ? AND settled_at < ? "
                                  "ORDER BY settled_at, job_id", (COMMITTED, _ts(start), _ts(end)))
        return [self._charge(row) for row in rows]

    def close(self) -> None:
        pid = os.getpid()
        with self._lock:
            mine = [db for owner, _, db in self._connections if owner == pid]
            self._connections = [entry for entry in self._connections if entry[0] != pid]
        for db in mine:
            db.close()
        self._local = threading.local()


# Redis layout under a prefix P: P"acct:"KEY hash {balance, held, spent, metered}, P"job:"ID hash (the fields of
# Charge), P"committed" sorted set of committed job ids scored by commit time (epoch seconds).
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
           'metered', metered and '1' or '0', 'status', 'reserved', 'reserved_at', ARGV[5])
return {1, redis.call('HGETALL', KEYS[2])}
"""

_SETTLE_LUA = """
local job = redis.call('HGETALL', KEYS[1])
if #job == 0 or redis.call('HGET', KEYS[1], 'status') ~= 'reserved' then return job end
local account = ARGV[5] .. redis.call('HGET', KEYS[1], 'key')
local tokens = tonumber(redis.call('HGET', KEYS[1], 'tokens'))
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
                      reserved_at=_parse_ts(fields["reserved_at"]), settled_at=_parse_ts(fields.get("settled_at")),
                      seconds=float(seconds) if seconds else None)

    @staticmethod
    def _balance(key: str, fields: dict[str, str]) -> Balance:
        return Balance(key, int(fields.get("balance", 0)), int(fields.get("held", 0)), int(fields.get("spent", 0)),
                       fields.get("metered") == "1")

    def _reserve(self, key: str, job_id: str, tokens: int, tier: str,
                 now: datetime) -> tuple[Charge | None, int | None]:
        found, payload = self._reserve_script(keys=[self._account_key(key), self._job_key(job_id)],
                                              args=[key, job_id, tokens, tier, _ts(now)])
        if not found:
            return None, int(payload)
        return self._charge(_pairs(payload)), None

    def _settle(self, job_id: str, status: str, seconds: float | None, now: datetime) -> Charge | None:
        flat = self._settle_script(keys=[self._job_key(job_id), f"{self.prefix}committed"],
                                   args=[status, "" if seconds is None else repr(seconds), _ts(now), now.timestamp(),
                                         f"{self.prefix}acct:"])
        return self._charge(_pairs(flat))

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
        pipe = self._redis.pipeline(transaction=False)
        for job_id in ids:
            pipe.hgetall(self._job_key(job_id))
        charges = [self._charge(fields) for fields in pipe.execute()]
        # the float scores only narrow the range; the stored UTC timestamps decide
        return sorted((c for c in charges if start <= c.settled_at < end), key=lambda c: (c.settled_at, c.job_id))

    def close(self) -> None:
        self._redis.close()


def open_ledger(url: str | None = None, *, create: bool = True, clock: Clock = utc_now) -> Ledger:
    """The ledger at ``url`` (default ``$SONIC_LEDGER``, else ``sqlite:///~/.cache/sonic/ledger.db``).

    ``sqlite:///PATH`` (``~`` expanded; an absolute path has four slashes: ``sqlite:////var/sonic/ledger.db``) or
    ``redis://HOST:PORT/DB`` (also ``rediss://`` and ``unix://``). With ``create=False`` a missing SQLite file is
    an error instead of a new, empty ledger.
    """
    url = url or os.environ.get(LEDGER_ENV) or DEFAULT_LEDGER_URL
    scheme = url.partition(":")[0].lower()
    if scheme == "sqlite":
        if not url.startswith("sqlite:///") or url[len("sqlite:///"):] in ("", ":memory:"):
            raise SonicInputError(f"ledger URL {url!r} names no file: use sqlite:///PATH/ledger.db")
        path = Path(url[len("sqlite:///"):]).expanduser()
        if not create and not path.is_file():
            raise SonicInputError(f"ledger file {path} does not exist: pass --ledger URL or set ${LEDGER_ENV}")
        return SQLiteLedger(path, clock=clock)
    if scheme in ("redis", "rediss", "unix"):
        return RedisLedger(url, clock=clock)
    raise SonicInputError(f"ledger URL {url!r} has an unknown scheme: use sqlite:///PATH or redis://HOST:PORT/DB")
