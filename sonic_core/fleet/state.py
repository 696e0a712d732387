"""The batch's memory across runs (SQLite): every job's status, server and prompt id, written before and after each
step that touches a server, so a rerun skips finished jobs, re-attaches to running ones and resubmits a job only
when its server has confirmed the job is not there.

Statuses: ``pending`` (not on any server), ``submitting`` (being sent: the server may or may not hold it; the job's
key is in its output prefix, so the server's queue and history can tell), ``queued`` (the server answered with a
prompt id), ``done``, ``failed`` (the server refused it or a node failed; the reason is kept), ``cancelled``.
"""

from __future__ import annotations

import sqlite3
from contextlib import closing
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from ..errors import SonicInputError

STATUSES = ("pending", "submitting", "queued", "done", "failed", "cancelled")
FINAL = frozenset({"done", "failed", "cancelled"})
_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    key TEXT PRIMARY KEY, line INTEGER NOT NULL, output TEXT NOT NULL, status TEXT NOT NULL,
    server TEXT, prompt_id TEXT, tokens INTEGER, predicted_seconds REAL, seconds REAL, output_path TEXT,
    error TEXT, updated TEXT NOT NULL
)"""


@dataclass
class JobState:
    """One job's row in the state file."""

    key: str
    line: int
    output: str
    status: str
    server: str | None = None
    prompt_id: str | None = None
    tokens: int | None = None
    predicted_seconds: float | None = None
    seconds: float | None = None
    output_path: str | None = None
    error: str | None = None


class BatchState:
    """The state file of one batch (``--state``, default ``OUT/.sonic-queue.sqlite``)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if self.path.is_dir():
            raise SonicInputError(f"state file {str(self.path)!r} is a directory: pass a file path")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with closing(self._connect()) as db, db:
            db.execute(_SCHEMA)

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=30)

    def add(self, key: str, line: int, output: str, tokens: int | None = None,
            predicted_seconds: float | None = None) -> JobState:
        """Record a job as pending unless the file already knows it; returns its state."""
        with closing(self._connect()) as db, db:
            db.execute("INSERT OR IGNORE INTO jobs (key, line, output, status, tokens, predicted_seconds, updated) "
                       "VALUES (?, ?, ?, 'pending', ?, ?, ?)", (key, line, output, tokens, predicted_seconds, _now()))
            db.execute("UPDATE jobs SET line = ?, tokens = COALESCE(?, tokens), predicted_seconds = "
                       "COALESCE(?, predicted_seconds) WHERE key = ?", (line, tokens, predicted_seconds, key))
        return self.get(key)

    def get(self, key: str) -> JobState:
        with closing(self._connect()) as db:
            row = db.execute(f"SELECT {_COLUMNS} FROM jobs WHERE key = ?", (key,)).fetchone()
        if row is None:
            raise SonicInputError(f"job {key} is not in the state file {self.path}")
        return JobState(*row)

    def all(self) -> list[JobState]:
        with closing(self._connect()) as db:
            return [JobState(*row) for row in db.execute(f"SELECT {_COLUMNS} FROM jobs ORDER BY line")]

    def update(self, key: str, **fields: object) -> JobState:
        """Set some fields of a job (``status`` must be one of :data:`STATUSES`)."""
        if "status" in fields and fields["status"] not in STATUSES:
            raise SonicInputError(f"job status {fields['status']!r} is not one of {', '.join(STATUSES)}")
        names = ", ".join(f"{name} = ?" for name in fields)
        with closing(self._connect()) as db, db:
            db.execute(f"UPDATE jobs SET {names}, updated = ? WHERE key = ?", (*fields.values(), _now(), key))
        return self.get(key)


_COLUMNS = "key, line, output, status, server, prompt_id, tokens, predicted_seconds, seconds, output_path, error"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
