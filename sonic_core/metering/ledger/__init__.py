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

A reserved charge is durable: it records the server that reserved it (``owner``) and, once its run has written it,
the output file. ``holds`` lists the charges still reserved, so that a server restarted after a crash settles what
its predecessor held: commit where the output exists, refund otherwise. :func:`reconcile_holds` (:mod:`.reconcile`)
does that for any runner that can tell whether a hold's owner is alive: a restarted ComfyUI server
(``Meter.reconcile`` in :mod:`sonic_core.metering.enforcement`), a fleet worker.

Per key: ``balance`` (tokens that can still be reserved), ``held`` (tokens of reserved jobs) and ``spent``
(committed tokens). reserve: balance -= t, held += t; commit: held -= t, spent += t; refund: held -= t,
balance += t. ``credit`` tops a balance up. All times are UTC; a charge belongs to the month of its commit.

Backends, chosen by URL (:func:`open_ledger`), one module each: :mod:`.sqlite` (the embedded default; one file in WAL
mode, every change one ``BEGIN IMMEDIATE`` transaction, safe across threads and processes) and :mod:`.redis` (every
change one Lua script, so atomic across any number of workers; a single Redis server, not Redis Cluster). What
they share (the :class:`Ledger` base class, the records, the conventions) is in :mod:`.base`.
"""

from __future__ import annotations

import os
from pathlib import Path

from ...errors import SonicInputError
from .base import (COMMITTED, DEFAULT_LEDGER_URL, LEDGER_ENV, MAX_TOKENS, REFUNDED, RESERVED, Balance, Charge, Clock,
                   Ledger, LedgerStateError, Usage, checked_credit, month_range, timestamp_text, utc_now)
from .reconcile import OwnerAlive, SecondsRun, reconcile_holds
from .redis import RedisLedger
from .sqlite import SQLiteLedger

__all__ = ["COMMITTED", "DEFAULT_LEDGER_URL", "LEDGER_ENV", "MAX_TOKENS", "REFUNDED", "RESERVED", "Balance", "Charge",
           "Clock", "Ledger", "LedgerStateError", "OwnerAlive", "RedisLedger", "SQLiteLedger", "SecondsRun", "Usage",
           "checked_credit", "month_range", "open_ledger", "reconcile_holds", "timestamp_text", "utc_now"]


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
