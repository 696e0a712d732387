"""The token ledger on both backends: state machine, exactly-once charges, no overdraw under concurrency.

The Redis backend runs against a real ``redis-server`` started here on 127.0.0.1 (scripts/apt-packages.txt).
"""

import json
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta, timezone

import pytest
import redis
from sonic_testing import REPO

from sonic_core.errors import BudgetExceeded, SonicDependencyError, SonicInputError
from sonic_core.metering.ledger import (COMMITTED, REFUNDED, RESERVED, LedgerStateError, SQLiteLedger, month_range,
                                        open_ledger, reconcile_holds)

UTC = timezone.utc


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory):
    """A private redis-server on loopback, no persistence; killed at the end of the session."""
    exe = shutil.which("redis-server")
    if exe is None:
        pytest.fail("redis-server is not installed: bash scripts/dev.sh setup (scripts/apt-packages.txt)")
    workdir = tmp_path_factory.mktemp("redis")
    port = _free_port()
    log = open(workdir / "redis.log", "w")
    proc = subprocess.Popen([exe, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no",
                             "--dir", str(workdir), "--daemonize", "no"], stdout=log, stderr=subprocess.STDOUT)
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"redis-server did not start: {(workdir / 'redis.log').read_text()}")
                time.sleep(0.02)
        yield url
    finally:
        client.close()
        proc.kill()
        proc.wait(timeout=10)
        log.close()


@pytest.fixture(params=["sqlite", "redis"])
def ledger_url(request, tmp_path):
    """A fresh, empty ledger of each backend."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/ledger.db"
    url = request.getfixturevalue("redis_url")
    with redis.Redis.from_url(url) as client:
        client.flushdb()
    return url


class Clock:
    """A settable UTC clock, so that timestamps and month boundaries are deterministic."""

    def __init__(self, now: datetime = datetime(2026, 11, 15, 12, 0, tzinfo=UTC)) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def ledger(ledger_url, clock):
    with open_ledger(ledger_url, clock=clock) as opened:
        yield opened


def _counts(ledger, key):
    b = ledger.balance(key)
    return b.balance, b.held, b.spent


# --- state machine -------------------------------------------------------------------------------------------------

def test_reserve_then_commit(ledger, clock):
    assert _counts(ledger, "alice") == (0, 0, 0)
    assert ledger.credit("alice", 100).balance == 100
    reserved_at = clock.now
    charge = ledger.reserve("alice", "job-1", 30, "standard")
    assert (charge.job_id, charge.key, charge.tier, charge.tokens, charge.status, charge.metered) == \
        ("job-1", "alice", "standard", 30, RESERVED, False)
    assert charge.reserved_at == reserved_at and charge.settled_at is None and charge.seconds is None
    assert _counts(ledger, "alice") == (70, 30, 0)

    clock.now += timedelta(seconds=42)
    done = ledger.commit("job-1", 41.5)
    assert (done.status, done.seconds, done.reserved_at, done.settled_at) == (COMMITTED, 41.5, reserved_at, clock.now)
    assert _counts(ledger, "alice") == (70, 0, 30)
    assert ledger.charge("job-1") == done


def test_repeats_are_no_ops(ledger, clock):
    ledger.credit("alice", 100)
    first = ledger.reserve("alice", "job-1", 30, "pro")
    assert ledger.reserve("alice", "job-1", 30, "pro") == first
    assert _counts(ledger, "alice") == (70, 30, 0)
    committed = ledger.commit("job-1", 5.0)
    clock.now += timedelta(hours=1)
    assert ledger.commit("job-1", 99.0) == committed  # the first commit's seconds and time stay
    assert ledger.reserve("alice", "job-1", 30, "pro") == committed  # a late repeat of the reserve charges nothing
    assert _counts(ledger, "alice") == (70, 0, 30)


def test_reserve_then_refund(ledger):
    ledger.credit("bob", 50)
    ledger.reserve("bob", "job-2", 20)
    refunded = ledger.refund("job-2")
    assert refunded.status == REFUNDED and refunded.seconds is None and refunded.settled_at is not None
    assert _counts(ledger, "bob") == (50, 0, 0)
    assert ledger.refund("job-2") == refunded
    assert ledger.reserve("bob", "job-2", 20) == refunded
    assert _counts(ledger, "bob") == (50, 0, 0)


def test_final_states_do_not_cross(ledger):
    ledger.credit("carol", 100)
    ledger.reserve("carol", "ok", 10)
    ledger.reserve("carol", "bad", 20)
    ledger.commit("ok", 1.0)
    ledger.refund("bad")
    with pytest.raises(LedgerStateError, match="'ok' is already committed and cannot be refunded"):
        ledger.refund("ok")
    with pytest.raises(LedgerStateError, match="'bad' is already refunded and cannot be committed"):
        ledger.commit("bad", 1.0)
    assert (ledger.charge("ok").status, ledger.charge("bad").status) == (COMMITTED, REFUNDED)
    assert _counts(ledger, "carol") == (90, 0, 10)


def test_unknown_job_cannot_settle(ledger):
    for settle in (lambda: ledger.commit("ghost", 1.0), lambda: ledger.refund("ghost")):
        with pytest.raises(LedgerStateError, match="job 'ghost' has no reservation"):
            settle()
    assert ledger.charge("ghost") is None


def test_reused_job_id_with_other_terms_is_refused(ledger):
    ledger.credit("dave", 100)
    ledger.credit("erin", 100)
    ledger.reserve("dave", "job-3", 10, "standard")
    for args in (("erin", "job-3", 10, "standard"), ("dave", "job-3", 11, "standard"), ("dave", "job-3", 10, "pro")):
        with pytest.raises(LedgerStateError, match="already reserved for key 'dave'"):
            ledger.reserve(*args)
    assert _counts(ledger, "dave") == (90, 10, 0)
    assert _counts(ledger, "erin") == (100, 0, 0)


def test_insufficient_balance_names_key_needed_and_available(ledger):
    ledger.credit("frank", 25)
    with pytest.raises(BudgetExceeded) as info:
        ledger.reserve("frank", "job-4", 26)
    assert str(info.value) == ("key 'frank' needs 26 tokens for job 'job-4' but has 25 available: "
                               "top the key up or lower the job's cost")
    assert (info.value.tokens, info.value.limit) == (26, 25)
    assert ledger.charge("job-4") is None and _counts(ledger, "frank") == (25, 0, 0)
    with pytest.raises(BudgetExceeded, match="key 'stranger' needs 1 tokens .* has 0 available"):
        ledger.reserve("stranger", "job-5", 1)
    assert ledger.reserve("frank", "job-4", 25).tokens == 25  # the refused id stays usable
    assert _counts(ledger, "frank") == (0, 25, 0)


def test_metered_key_has_no_cap_but_every_charge_is_recorded(ledger):
    assert ledger.set_metered("api-key").available is None
    ledger.reserve("api-key", "m1", 10**6, "api")
    ledger.reserve("api-key", "m2", 500, "api")
    assert ledger.charge("m1").metered
    assert _counts(ledger, "api-key") == (0, 10**6 + 500, 0)
    ledger.commit("m1", 300.0)
    ledger.set_metered("api-key", False)  # the refund follows the terms the job was reserved under
    ledger.refund("m2")
    assert _counts(ledger, "api-key") == (0, 0, 10**6)
    with pytest.raises(BudgetExceeded):
        ledger.reserve("api-key", "m3", 1)
    ledger.credit("api-key", 5)
    assert ledger.balance("api-key").available == 5


def test_invalid_arguments(ledger):
    ledger.credit("gina", 10)
    for bad in (-1, 1.5, True, "3", None, 10**12 + 1):
        with pytest.raises(SonicInputError, match="tokens must be an integer from 0 to 1000000000000"):
            ledger.reserve("gina", "j", bad)
    for key, job in (("", "j"), ("gina", ""), (None, "j")):
        with pytest.raises(SonicInputError, match="must be a non-empty string"):
            ledger.reserve(key, job, 1)
    assert ledger.reserve("gina", "j", 0).tokens == 0
    for bad in (-0.1, float("nan"), float("inf"), None, True):
        with pytest.raises(SonicInputError, match="seconds must be a finite number >= 0"):
            ledger.commit("j", bad)
    with pytest.raises(SonicInputError, match="tokens must be an integer from 1 to"):
        ledger.credit("gina", 0)
    with pytest.raises(SonicInputError, match="metered must be True or False"):
        ledger.set_metered("gina", "yes")
    assert _counts(ledger, "gina") == (10, 0, 0)


def test_naive_clock_is_refused(ledger_url):
    with open_ledger(ledger_url, clock=lambda: datetime(2026, 1, 1)) as naive:
        with pytest.raises(SonicInputError, match="naive datetime"):
            naive.reserve("k", "j", 0)


# --- months ----------------------------------------------------------------------------------------------------------

def test_month_range():
    assert month_range("2026-11") == (datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 12, 1, tzinfo=UTC))
    assert month_range("2026-12") == (datetime(2026, 12, 1, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC))
    for bad in ("2026-13", "2026-00", "2026-1", "26-11", "2026-11-01", "2026/11", "", " 2026-11", "٢٠٢٦-11", None):
        with pytest.raises(SonicInputError, match="is not of the form YYYY-MM"):
            month_range(bad)
    with pytest.raises(SonicInputError, match="out of range"):
        month_range("1969-12")


def test_usage_counts_commits_by_their_utc_month(ledger, clock):
    ledger.credit("alice", 1000)
    ledger.set_metered("api-key")
    last_oct = datetime(2026, 10, 31, 23, 59, 59, 999999, tzinfo=UTC)
    first_nov = datetime(2026, 11, 1, tzinfo=UTC)
    last_nov = datetime(2026, 11, 30, 23, 59, 59, 999999, tzinfo=UTC)
    first_dec = datetime(2026, 12, 1, tzinfo=UTC)
    plan = [  # job, key, tokens, reserved at, settled at, committed?
        ("oct", "alice", 10, last_oct, last_oct, True),
        ("nov-early", "alice", 20, last_oct, first_nov, True),  # reserved in October, committed in November
        ("nov-late", "alice", 30, first_nov, last_nov, True),
        ("nov-api", "api-key", 700, first_nov, first_nov + timedelta(days=3), True),
        ("nov-refunded", "alice", 40, first_nov, first_nov, False),
        ("dec", "alice", 50, last_nov, first_dec, True),
    ]
    for job, key, tokens, reserved, settled, commit in plan:
        clock.now = reserved
        ledger.reserve(key, job, tokens, "api" if key == "api-key" else "standard")
        clock.now = settled
        ledger.commit(job, tokens / 10) if commit else ledger.refund(job)
    clock.now = last_nov
    ledger.reserve("alice", "nov-pending", 60)  # reserved, never settled: not billed

    nov = {u.key: (u.jobs, u.tokens, u.seconds) for u in ledger.usage("2026-11")}
    assert nov == {"alice": (2, 50, pytest.approx(5.0)), "api-key": (1, 700, pytest.approx(70.0))}
    assert [(u.key, u.jobs, u.tokens) for u in ledger.usage("2026-10")] == [("alice", 1, 10)]
    assert [(u.key, u.jobs, u.tokens) for u in ledger.usage("2026-12")] == [("alice", 1, 50)]
    assert ledger.usage("2026-09") == []
    assert [c.job_id for c in ledger.committed_between(first_nov, first_dec)] == ["nov-early", "nov-api", "nov-late"]


# --- URLs and backends ----------------------------------------------------------------------------------------------

def test_open_ledger_urls(tmp_path, monkeypatch):
    for bad, message in (("postgres://x/y", "unknown scheme"), ("sqlite://", "names no file"),
                         ("sqlite:///:memory:", "names no file"), ("sqlite:///", "names no file")):
        with pytest.raises(SonicInputError, match=message):
            open_ledger(bad)
    with pytest.raises(SonicInputError, match="does not exist: pass --ledger URL or set \\$SONIC_LEDGER"):
        open_ledger(f"sqlite:///{tmp_path}/missing.db", create=False)
    monkeypatch.setenv("SONIC_LEDGER", f"sqlite:///{tmp_path}/env/ledger.db")
    with open_ledger() as from_env:
        assert from_env.path == tmp_path / "env" / "ledger.db"
    monkeypatch.delenv("SONIC_LEDGER")
    monkeypatch.setenv("HOME", str(tmp_path))
    with open_ledger() as default:
        assert default.path == tmp_path / ".cache" / "sonic" / "ledger.db"


def test_holds_name_their_server_and_output_until_settled(ledger, clock):
    ledger.credit("alice", 100)
    ledger.reserve("alice", "a1", 10, "standard", owner="gpu-1")
    clock.now += timedelta(seconds=1)
    ledger.reserve("alice", "a2", 20, "standard", owner="gpu-2")
    clock.now += timedelta(seconds=1)
    ledger.reserve("alice", "a3", 30, "standard", owner="gpu-1")
    assert ledger.note_output("a3", "/out/Sonic_00001_.mp4").output == "/out/Sonic_00001_.mp4"
    assert [(h.job_id, h.owner, h.output) for h in ledger.holds()] == \
        [("a1", "gpu-1", None), ("a2", "gpu-2", None), ("a3", "gpu-1", "/out/Sonic_00001_.mp4")]
    assert [h.job_id for h in ledger.holds("gpu-1")] == ["a1", "a3"] and ledger.holds("gpu-9") == []
    ledger.commit("a3", 2.0)
    ledger.refund("a1")
    assert [h.job_id for h in ledger.holds()] == ["a2"]
    assert ledger.note_output("a1", "/out/late.mp4").output is None  # a settled charge is left as it is
    assert ledger.charge("a3").output == "/out/Sonic_00001_.mp4" and ledger.charge("a3").owner == "gpu-1"
    with pytest.raises(LedgerStateError, match="'nope' has no reservation"):
        ledger.note_output("nope", "/out/x.mp4")
    with pytest.raises(SonicInputError, match="owner must be a string"):
        ledger.reserve("alice", "a4", 1, "standard", owner=7)


def test_reconcile_settles_only_the_holds_of_dead_owners(ledger, clock):
    """The runner says which owners live; a dead owner's hold is committed where its work exists, else refunded;
    a hold committed meanwhile by someone else is not refunded, and a second pass finds nothing."""
    ledger.credit("alice", 1000)
    for job_id, owner in (("w1", "gpu-1"), ("w2", "gpu-2"), ("w3", "gpu-1"), ("w4", "gpu-3"), ("w5", "gpu-3")):
        ledger.reserve("alice", job_id, 100, "standard", owner=owner)
        clock.now += timedelta(seconds=1)
    ledger.note_output("w3", "/out/w3.mp4")

    def alive(hold):
        if hold.job_id == "w4":
            ledger.commit("w5", 3.0)  # an operator settles w5 while the reconciler walks the holds
        return hold.owner == "gpu-2"

    settled = reconcile_holds(ledger, alive, seconds_run=lambda hold: 7.5 if hold.output else None)
    assert [(c.job_id, c.status, c.seconds) for c in settled] == \
        [("w1", REFUNDED, None), ("w3", COMMITTED, 7.5), ("w4", REFUNDED, None)]
    assert [h.job_id for h in ledger.holds()] == ["w2"]
    assert ledger.charge("w5").status == COMMITTED and _counts(ledger, "alice") == (700, 100, 200)
    assert reconcile_holds(ledger, lambda hold: hold.owner == "gpu-2") == []
    assert [c.job_id for c in reconcile_holds(ledger, lambda hold: False, owner="gpu-9")] == []
    assert [c.status for c in reconcile_holds(ledger, lambda hold: False, owner="gpu-2")] == [REFUNDED]


def test_sqlite_ledger_made_before_holds_gains_their_columns(tmp_path):
    path = tmp_path / "ledger.db"
    with sqlite3.connect(path) as raw:  # the schema of the first release, with one reservation in it
        raw.executescript("""
            CREATE TABLE accounts (key TEXT PRIMARY KEY, balance INTEGER NOT NULL DEFAULT 0, held INTEGER NOT NULL
                DEFAULT 0, spent INTEGER NOT NULL DEFAULT 0, metered INTEGER NOT NULL DEFAULT 0);
            CREATE TABLE charges (job_id TEXT PRIMARY KEY, key TEXT NOT NULL, tier TEXT NOT NULL, tokens INTEGER NOT
                NULL, metered INTEGER NOT NULL, status TEXT NOT NULL, seconds REAL, reserved_at TEXT NOT NULL,
                settled_at TEXT);
            INSERT INTO accounts VALUES ('alice', 70, 30, 0, 0);
            INSERT INTO charges VALUES ('old', 'alice', 'standard', 30, 0, 'reserved', NULL,
                                        '2026-11-01T00:00:00.000000Z', NULL);
        """)
    with open_ledger(f"sqlite:///{path}") as ledger:
        assert [(h.job_id, h.owner, h.output) for h in ledger.holds()] == [("old", "", None)]
        ledger.reserve("alice", "new", 5, "standard", owner="gpu-1")
        assert ledger.note_output("new", "/out/v.mp4").owner == "gpu-1"
    with open_ledger(f"sqlite:///{path}") as again:  # opening a migrated file again changes nothing
        assert [h.job_id for h in again.holds()] == ["old", "new"]


def test_sqlite_file_is_wal_and_durable(tmp_path, clock):
    url = f"sqlite:///{tmp_path}/ledger.db"
    with open_ledger(url, clock=clock) as first:
        first.credit("alice", 100)
        first.reserve("alice", "job-1", 30)
        first.commit("job-1", 3.0)
    with sqlite3.connect(tmp_path / "ledger.db") as raw:
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert raw.execute("SELECT status, seconds, settled_at FROM charges").fetchall() == \
            [("committed", 3.0, "2026-11-15T12:00:00.000000Z")]
    with open_ledger(url, create=False) as again:
        assert _counts(again, "alice") == (70, 0, 30)
        assert again.charge("job-1").settled_at == clock.now


def test_redis_unreachable_and_client_missing(monkeypatch):
    with pytest.raises(SonicDependencyError, match=r"Redis ledger at redis://127\.0\.0\.1:\d+/0 is not reachable"):
        open_ledger(f"redis://:secret@127.0.0.1:{_free_port()}/0")
    monkeypatch.setitem(sys.modules, "redis", None)
    with pytest.raises(SonicDependencyError, match=r"pip install 'redis>=5'"):
        open_ledger("redis://127.0.0.1:6379/0")


def test_redis_keys_live_under_the_prefix(redis_url):
    from sonic_core.metering.ledger import RedisLedger

    with redis.Redis.from_url(redis_url, decode_responses=True) as client:
        client.flushdb()
        with RedisLedger(redis_url, prefix="tenant-a:") as a, RedisLedger(redis_url, prefix="tenant-b:") as b:
            a.credit("k", 10)
            a.reserve("k", "job", 4)
            a.commit("job", 1.0)
            assert _counts(b, "k") == (0, 0, 0) and b.charge("job") is None
        assert sorted(client.keys("*")) == ["tenant-a:acct:k", "tenant-a:committed", "tenant-a:job:job"]


# --- concurrency -----------------------------------------------------------------------------------------------------

BALANCE, PRICE, WORKERS = 1000, 30, 50  # 1000 // 30 = 33 reservations fit, 10 tokens stay


def _check_no_overdraw(ledger, outcomes):
    won = [o for o in outcomes if o["ok"]]
    lost = [o for o in outcomes if not o["ok"]]
    assert (len(won), len(lost)) == (BALANCE // PRICE, WORKERS - BALANCE // PRICE)
    assert all(0 <= o["available"] < PRICE for o in lost)
    assert _counts(ledger, "shared") == (BALANCE % PRICE, sum(o["tokens"] for o in won), 0)
    reserved = [ledger.charge(f"job-{i}") for i in range(WORKERS)]
    assert sum(c.tokens for c in reserved if c) == BALANCE - ledger.balance("shared").balance


class _Watch:
    """Samples the balance while the workers run; the lowest value seen must never be negative."""

    def __init__(self, url):
        self.lowest, self._stop = BALANCE, threading.Event()
        self._ledger = open_ledger(url)
        self._thread = threading.Thread(target=self._run)
        self._thread.start()

    def _run(self):
        while not self._stop.wait(0.001):
            self.lowest = min(self.lowest, self._ledger.balance("shared").balance)

    def stop(self):
        self._stop.set()
        self._thread.join()
        self._ledger.close()
        return self.lowest


def test_parallel_threads_never_overdraw(ledger, ledger_url):
    ledger.credit("shared", BALANCE)
    start = threading.Barrier(WORKERS)
    outcomes = [None] * WORKERS

    def worker(i):
        start.wait()
        try:
            outcomes[i] = {"ok": True, "tokens": ledger.reserve("shared", f"job-{i}", PRICE).tokens}
        except BudgetExceeded as exc:
            outcomes[i] = {"ok": False, "available": exc.limit}

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(WORKERS)]
    watch = _Watch(ledger_url)
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert watch.stop() >= 0
    _check_no_overdraw(ledger, outcomes)


_FORKING_WORKERS = """
import json, os, sys, multiprocessing as mp
from sonic_core.errors import BudgetExceeded
from sonic_core.metering.ledger import open_ledger
url, key, price, n = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
if url.startswith("redis"):
    import redis  # once here, not 50 times after the forks
ctx = mp.get_context("fork")
ready, go, results = ctx.Barrier(n + 1), ctx.Event(), ctx.Queue()

def worker(i):
    ledger = open_ledger(url)  # every process opens its own connection
    ledger.balance(key)
    ready.wait()
    go.wait()
    try:
        results.put({"ok": True, "tokens": ledger.reserve(key, f"job-{i}", price).tokens, "pid": os.getpid()})
    except BudgetExceeded as exc:
        results.put({"ok": False, "available": exc.limit, "pid": os.getpid()})

procs = [ctx.Process(target=worker, args=(i,)) for i in range(n)]
for p in procs:
    p.start()
ready.wait()
print("ready", flush=True)
sys.stdin.readline()
go.set()
outcomes = [results.get(timeout=60) for _ in range(n)]
for p in procs:
    p.join()
print(json.dumps({"outcomes": outcomes, "exitcodes": [p.exitcode for p in procs]}))
"""


def test_parallel_processes_never_overdraw(ledger, ledger_url):
    """50 forked processes, each connected and waiting, released at once to reserve from one balance."""
    ledger.credit("shared", BALANCE)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    helper = subprocess.Popen([sys.executable, "-c", _FORKING_WORKERS, ledger_url, "shared", str(PRICE), str(WORKERS)],
                              env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert helper.stdout.readline().strip() == "ready"
        watch = _Watch(ledger_url)
        try:
            out, _ = helper.communicate("go\n", timeout=60)
        finally:
            lowest = watch.stop()
    finally:
        helper.kill()
        helper.wait()
    assert helper.returncode == 0
    report = json.loads(out)
    assert report["exitcodes"] == [0] * WORKERS
    assert len({o["pid"] for o in report["outcomes"]} - {helper.pid, os.getpid()}) == WORKERS
    assert lowest >= 0
    _check_no_overdraw(ledger, report["outcomes"])


def _hammer(n, call):
    """Run ``call()`` from ``n`` threads released together; return each result or exception."""
    start = threading.Barrier(n)
    results = [None] * n

    def worker(i):
        start.wait()
        try:
            results[i] = call(i)
        except Exception as exc:  # collected and checked by the caller
            results[i] = exc

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def test_same_job_from_many_threads_is_charged_once(ledger):
    ledger.credit("alice", 100)
    reserved = _hammer(20, lambda i: ledger.reserve("alice", "job-x", 30, "pro"))
    assert all(r == reserved[0] and r.status == RESERVED for r in reserved)
    assert _counts(ledger, "alice") == (70, 30, 0)
    committed = _hammer(20, lambda i: ledger.commit("job-x", 7.0 + i))
    assert all(c == committed[0] and c.status == COMMITTED for c in committed)
    assert _counts(ledger, "alice") == (70, 0, 30)
    assert ledger.usage("2026-11")[0].jobs == 1


def test_racing_commit_and_refund_settle_once(ledger):
    ledger.credit("alice", 100)
    ledger.reserve("alice", "job-y", 40)
    results = _hammer(20, lambda i: ledger.commit("job-y", 1.0) if i % 2 else ledger.refund("job-y"))
    final = ledger.charge("job-y").status
    winners = [r for r in results if not isinstance(r, Exception)]
    losers = [r for r in results if isinstance(r, Exception)]
    assert len(winners) == len(losers) == 10
    assert all(w.status == final for w in winners)
    assert all(isinstance(e, LedgerStateError) and f"already {final}" in str(e) for e in losers)
    assert _counts(ledger, "alice") == ((60, 0, 40) if final == COMMITTED else (100, 0, 0))


def test_sqlite_ledger_object_survives_fork(tmp_path):
    """A forked worker that inherits an opened ledger opens its own connection instead of sharing the parent's."""
    if not hasattr(os, "fork"):
        pytest.skip("no fork on this platform")
    ledger = SQLiteLedger(tmp_path / "ledger.db")
    ledger.credit("alice", 10)
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            ledger.reserve("alice", "child-job", 4)
            code = 0
        finally:
            os._exit(code)
    assert os.waitpid(pid, 0)[1] == 0
    assert ledger.charge("child-job").tokens == 4
    assert _counts(ledger, "alice") == (6, 4, 0)
    ledger.close()


def test_sqlite_connections_of_finished_threads_are_closed(tmp_path):
    ledger = SQLiteLedger(tmp_path / "ledger.db")
    for i in range(10):
        t = threading.Thread(target=ledger.credit, args=("alice", 1))
        t.start()
        t.join()
    assert len(ledger._connections) == 2  # the opener's and the last thread's; the 9 others were closed
    assert ledger.balance("alice").balance == 10
    ledger.close()
    assert ledger._connections == []


def test_sqlite_file_that_is_not_a_ledger(tmp_path):
    (tmp_path / "notes.db").write_text("not a database " * 100)
    with pytest.raises(SonicInputError, match="notes.db cannot be used .*: pass a writable SQLite file"):
        open_ledger(f"sqlite:///{tmp_path}/notes.db")
