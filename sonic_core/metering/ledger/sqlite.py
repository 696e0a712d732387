"""The ledger in one SQLite file: WAL mode, every change one ``BEGIN IMMEDIATE`` transaction, safe across threads
and processes (the embedded default backend)."""

from __future__ import annotations

import os
import sqlite3
import threading
import weakref
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Iterator

from ...errors import SonicInputError
from .base import (COMMITTED, LEDGER_ENV, RESERVED, Balance, Charge, Clock, Ledger, parse_timestamp, timestamp_text,
                   utc_now)

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
    settled_at  TEXT,
    owner       TEXT NOT NULL DEFAULT '',
    output      TEXT
);
CREATE INDEX IF NOT EXISTS charges_by_settlement ON charges (status, settled_at);
"""
# Columns added after the first release: a ledger file created before them gains them when it is opened.
_ADDED_COLUMNS = {"owner": "TEXT NOT NULL DEFAULT ''", "output": "TEXT"}


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
            self._add_missing_columns(db)
        except (OSError, sqlite3.Error) as exc:
            raise SonicInputError(f"ledger file {self.path} cannot be used ({exc}): pass a writable SQLite file "
                                  f"(--ledger / ${LEDGER_ENV})") from None

    @staticmethod
    def _add_missing_columns(db: sqlite3.Connection) -> None:
        db.execute("BEGIN IMMEDIATE")
        try:
            present = {row["name"] for row in db.execute("PRAGMA table_info(charges)")}
            for name, declaration in _ADDED_COLUMNS.items():
                if name not in present:
                    db.execute(f"ALTER TABLE charges ADD COLUMN {name} {declaration}")
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

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
                      status=row["status"], metered=bool(row["metered"]),
                      reserved_at=parse_timestamp(row["reserved_at"]), settled_at=parse_timestamp(row["settled_at"]),
                      seconds=row["seconds"], owner=row["owner"], output=row["output"])

    @staticmethod
    def _balance(key: str, row: sqlite3.Row | None) -> Balance:
        if row is None:
            return Balance(key, 0, 0, 0, False)
        return Balance(key, row["balance"], row["held"], row["spent"], bool(row["metered"]))

    def _reserve(self, key: str, job_id: str, tokens: int, tier: str, owner: str,
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
            db.execute("INSERT INTO charges (job_id, key, tier, tokens, metered, status, reserved_at, owner) "
                       "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                       (job_id, key, tier, tokens, account.metered, RESERVED, timestamp_text(now), owner))
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
                       (status, seconds, timestamp_text(now), job_id))
            return self._charge(db.execute("SELECT * FROM charges WHERE job_id = ?", (job_id,)).fetchone())

    def _note_output(self, job_id: str, output: str) -> Charge | None:
        with self._transaction() as db:
            db.execute("UPDATE charges SET output = ? WHERE job_id = ? AND status = ?", (output, job_id, RESERVED))
            return self._charge(db.execute("SELECT * FROM charges WHERE job_id = ?", (job_id,)).fetchone())

    def _holds(self) -> list[Charge]:
        return [self._charge(row) for row in self._db().execute("SELECT * FROM charges WHERE status = ?",
                                                                  (RESERVED,))]

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
                                  "ORDER BY settled_at, job_id",
                                  (COMMITTED, timestamp_text(start), timestamp_text(end)))
        return [self._charge(row) for row in rows]

    def close(self) -> None:
        pid = os.getpid()
        with self._lock:
            mine = [db for owner, _, db in self._connections if owner == pid]
            self._connections = [entry for entry in self._connections if entry[0] != pid]
        for db in mine:
            db.close()
        self._local = threading.local()
