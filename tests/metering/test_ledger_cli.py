"""``python -m sonic_core ledger ...`` on a ledger the test fills, with charges on both sides of month boundaries."""

import csv
import io
import json
from datetime import datetime, timedelta, timezone

import pytest
from sonic_testing import run_cli

from sonic_core.metering.ledger import open_ledger

UTC = timezone.utc
LAST_OCT = datetime(2026, 10, 31, 23, 59, 59, 999999, tzinfo=UTC)
FIRST_NOV = datetime(2026, 11, 1, tzinfo=UTC)
LAST_NOV = datetime(2026, 11, 30, 23, 59, 59, 999999, tzinfo=UTC)
FIRST_DEC = datetime(2026, 12, 1, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = FIRST_NOV

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def filled(tmp_path):
    """A SQLite ledger URL holding commits at the edges of November 2026, a refund and a pending reservation."""
    url = f"sqlite:///{tmp_path}/ledger.db"
    clock = Clock()
    plan = [  # job, key, tokens, reserved at, settled at, seconds (None: refunded)
        ("a-oct", "alice", 10, LAST_OCT, LAST_OCT, 1.0),
        ("a-nov-1", "alice", 20, LAST_OCT, FIRST_NOV, 2.25),
        ("a-nov-2", "alice", 30, FIRST_NOV, LAST_NOV, 3.5),
        ("b-nov", "bob", 40, FIRST_NOV + timedelta(days=2), FIRST_NOV + timedelta(days=2, seconds=50), 50.0),
        ("b-refund", "bob", 45, FIRST_NOV, FIRST_NOV, None),
        ("api-nov", "api,key", 700, LAST_NOV, LAST_NOV, 120.125),
        ("a-dec", "alice", 50, LAST_NOV, FIRST_DEC, 5.0),
    ]
    with open_ledger(url, clock=clock) as ledger:
        ledger.credit("alice", 1000)
        ledger.credit("bob", 1000)
        ledger.set_metered("api,key")  # a comma in a key: the CSV must quote it
        for job, key, tokens, reserved, settled, seconds in plan:
            clock.now = reserved
            ledger.reserve(key, job, tokens)
            clock.now = settled
            ledger.refund(job) if seconds is None else ledger.commit(job, seconds)
        ledger.reserve("bob", "b-pending", 60)
    return url


def report(*args, env=None):
    r = run_cli("ledger", "report", *args, env=env)
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_report_csv(filled):
    rows = list(csv.DictReader(io.StringIO(report("--month", "2026-11", "--format", "csv", "--ledger", filled))))
    assert rows == [
        {"key": "alice", "jobs": "2", "tokens": "50", "seconds": "5.750"},
        {"key": "api,key", "jobs": "1", "tokens": "700", "seconds": "120.125"},
        {"key": "bob", "jobs": "1", "tokens": "40", "seconds": "50.000"},
    ]
    assert report("--month", "2026-10", "--ledger", filled).splitlines() == ["key,jobs,tokens,seconds",
                                                                              "alice,1,10,1.000"]
    assert report("--month", "2026-12", "--ledger", filled).splitlines() == ["key,jobs,tokens,seconds",
                                                                              "alice,1,50,5.000"]
    assert report("--month", "2027-01", "--ledger", filled).splitlines() == ["key,jobs,tokens,seconds"]


def test_report_json(filled):
    body = json.loads(report("--month", "2026-11", "--format", "json", "--ledger", filled))
    assert body == {
        "month": "2026-11",
        "keys": [{"key": "alice", "jobs": 2, "tokens": 50, "seconds": 5.75},
                 {"key": "api,key", "jobs": 1, "tokens": 700, "seconds": 120.125},
                 {"key": "bob", "jobs": 1, "tokens": 40, "seconds": 50.0}],
        "total": {"jobs": 4, "tokens": 790, "seconds": 175.875},
    }
    assert json.loads(report("--month", "2026-09", "--format", "json", "--ledger", filled)) == \
        {"month": "2026-09", "keys": [], "total": {"jobs": 0, "tokens": 0, "seconds": 0}}


def test_report_default_ledger(filled, tmp_path, monkeypatch):
    assert report("--month", "2026-12", env={"SONIC_LEDGER": filled}).splitlines()[1] == "alice,1,50,5.000"
    monkeypatch.delenv("SONIC_LEDGER", raising=False)
    home = tmp_path / "home"
    with open_ledger(f"sqlite:///{home}/.cache/sonic/ledger.db", clock=lambda: FIRST_DEC) as ledger:
        ledger.credit("carol", 5)
        ledger.reserve("carol", "c1", 5)
        ledger.commit("c1", 0.5)
    assert report("--month", "2026-12", env={"HOME": str(home)}).splitlines()[1] == "carol,1,5,0.500"


@pytest.mark.parametrize("month", ["2026-13", "2026-00", "2026-1", "November", "2026-11-01", "", "1969-12"])
def test_bad_month_is_a_one_line_error(filled, month):
    r = run_cli("ledger", "report", "--month", month, "--ledger", filled)
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.count("\n") == 1 and r.stderr.startswith(f"error: month {month!r} ")


def test_missing_ledger_file_is_a_one_line_error(tmp_path):
    r = run_cli("ledger", "report", "--month", "2026-11", "--ledger", f"sqlite:///{tmp_path}/none.db")
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr == f"error: ledger file {tmp_path}/none.db does not exist: pass --ledger URL or set $SONIC_LEDGER\n"
    assert not (tmp_path / "none.db").exists()


def test_holds_lists_open_reservations(filled):
    r = run_cli("ledger", "holds", "--ledger", filled)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["job_id,key,tier,tokens,owner,reserved_at,output",
                                     "b-pending,bob,,60,,2026-12-01T00:00:00.000000Z,"]
    r = run_cli("ledger", "holds", "--format", "json", "--ledger", filled)
    assert json.loads(r.stdout)["total"] == {"jobs": 1, "tokens": 60}
    r = run_cli("ledger", "holds", "--owner", "gpu-1", "--format", "json", "--ledger", filled)
    assert json.loads(r.stdout) == {"holds": [], "total": {"jobs": 0, "tokens": 0}}


def test_credit_and_balance(filled):
    r = run_cli("ledger", "credit", "--key", "bob", "--tokens", "5", "--ledger", filled)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == {"key": "bob", "balance": 1000 - 40 - 60 + 5, "held": 60, "spent": 40,
                                    "metered": False}
    r = run_cli("ledger", "balance", "--key", "api,key", "--ledger", filled)
    assert json.loads(r.stdout) == {"key": "api,key", "balance": 0, "held": 0, "spent": 700, "metered": True}
    r = run_cli("ledger", "credit", "--key", "bob", "--tokens", "0", "--ledger", filled)
    assert r.returncode == 2 and r.stderr.startswith("error: tokens must be an integer from 1 to")
