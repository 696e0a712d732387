"""What every ledger backend shares: the charge state machine (:class:`Ledger`, whose public methods validate and
enforce it; a backend only stores), the records it returns, and the URL and time conventions.

See :mod:`sonic_core.metering.ledger` for the state machine of one charge.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Callable

from ...errors import BudgetExceeded, SonicInputError
from ...finite import is_finite_number, shown

LEDGER_ENV = "SONIC_LEDGER"
DEFAULT_LEDGER_URL = "sqlite:///~/.cache/sonic/ledger.db"
RESERVED, COMMITTED, REFUNDED = "reserved", "committed", "refunded"

Clock = Callable[[], datetime]


class LedgerStateError(SonicInputError):
    """A charge transition that the state machine forbids (unknown job, final state, reused job id)."""


@dataclass(frozen=True)
class Charge:
    """One job's charge as stored; ``seconds`` and ``settled_at`` are set by commit (``settled_at`` by refund).

    ``owner`` names the server that reserved it and ``output`` the file its run wrote while it was still reserved:
    enough for that server, restarted after a crash, to settle the holds its dead predecessor left
    (:meth:`Ledger.holds`).
    """

    job_id: str
    key: str
    tier: str
    tokens: int
    status: str
    metered: bool
    reserved_at: datetime
    settled_at: datetime | None = None
    seconds: float | None = None
    owner: str = ""
    output: str | None = None


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


def checked_credit(key: object, tokens: object) -> tuple[str, int]:
    """The key and token count of a top-up, validated as :meth:`Ledger.credit` validates them, so that a caller
    can refuse a bad top-up before it opens (and so creates) a ledger."""
    return _text("key", key), _count("tokens", tokens, 1)


TIMESTAMP_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"  # fixed width, so stored timestamps sort as text


def timestamp_text(moment: datetime) -> str:
    """``moment`` as the fixed-width UTC text the backends store (it sorts as text)."""
    return moment.astimezone(timezone.utc).strftime(TIMESTAMP_FORMAT)


def parse_timestamp(text: str | None) -> datetime | None:
    """The aware UTC datetime of :func:`timestamp_text`'s text (``None`` for none)."""
    return datetime.strptime(text, TIMESTAMP_FORMAT).replace(tzinfo=timezone.utc) if text else None


class Ledger(ABC):
    """Balances and charges; the public methods validate and enforce the state machine, backends store."""

    def __init__(self, clock: Clock = utc_now) -> None:
        self._clock = clock

    def _now(self) -> datetime:
        now = self._clock()
        if now.tzinfo is None:
            raise SonicInputError("the ledger clock returned a naive datetime: return an aware UTC one")
        return now.astimezone(timezone.utc)

    def reserve(self, key: str, job_id: str, tokens: int, tier: str = "", owner: str = "") -> Charge:
        """Hold ``tokens`` of ``key`` for ``job_id`` (repeats and refusals: :mod:`sonic_core.metering.ledger`);
        ``owner`` names the server that will run the job (see :meth:`holds`)."""
        key, job_id, tokens = _text("key", key), _text("job_id", job_id), _count("tokens", tokens, 0)
        for name, value in (("tier", tier), ("owner", owner)):
            if not isinstance(value, str):
                raise SonicInputError(f"{name} must be a string, got {value!r}")
        charge, available = self._reserve(key, job_id, tokens, tier, owner, self._now())
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
        if not is_finite_number(seconds) or seconds < 0:
            raise SonicInputError(f"seconds must be a finite number >= 0, got {shown(seconds)}")
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

    def note_output(self, job_id: str, output: str) -> Charge:
        """Record the file a reserved job has written, so that a restart can commit it if its server dies before
        the commit (a settled job is left as it is)."""
        job_id, output = _text("job_id", job_id), _text("output", output)
        charge = self._note_output(job_id, output)
        if charge is None:
            raise LedgerStateError(f"job {job_id!r} has no reservation: reserve it before it writes an output")
        return charge

    def holds(self, owner: str | None = None) -> list[Charge]:
        """The charges still reserved (of ``owner`` only, if given), oldest first."""
        if owner is not None and not isinstance(owner, str):
            raise SonicInputError(f"owner must be a string, got {owner!r}")
        held = self._holds()
        return sorted((c for c in held if owner is None or c.owner == owner), key=lambda c: (c.reserved_at, c.job_id))

    def credit(self, key: str, tokens: int) -> Balance:
        """Top ``key`` up by ``tokens`` (creates the key)."""
        return self._credit(*checked_credit(key, tokens))

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
    def _reserve(self, key: str, job_id: str, tokens: int, tier: str, owner: str,
                 now: datetime) -> tuple[Charge | None, int | None]:
        """Atomically: the stored charge if ``job_id`` exists, else a new reservation, else (None, available)."""

    @abstractmethod
    def _note_output(self, job_id: str, output: str) -> Charge | None:
        """Atomically set ``output`` of a reserved charge; return the stored charge (``None`` if unknown)."""

    @abstractmethod
    def _holds(self) -> list[Charge]:
        """Every charge in the reserved state."""

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
