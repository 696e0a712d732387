"""``python -m sonic_core ledger {report,credit,balance,holds}``: the operator's view of the token ledger."""

from __future__ import annotations

import argparse
import csv
import io
import json
from dataclasses import asdict

from ..metering.ledger import (DEFAULT_LEDGER_URL, LEDGER_ENV, Charge, Usage, checked_credit, month_range, open_ledger,
                               timestamp_text)


def add_ledger_parser(sub: argparse._SubParsersAction) -> None:
    """Register the ``ledger`` command on the CLI's subparsers."""
    ledger = sub.add_parser("ledger", help="token balances and monthly usage of API keys")
    commands = ledger.add_subparsers(dest="ledger_command", required=True)
    url_help = f"ledger URL: sqlite:///PATH or redis://HOST:PORT/DB (default ${LEDGER_ENV}, else {DEFAULT_LEDGER_URL})"

    report = commands.add_parser("report", help="jobs, tokens and seconds per key of the charges committed in a month")
    report.add_argument("--month", required=True, metavar="YYYY-MM", help="calendar month in UTC")
    report.add_argument("--format", choices=("csv", "json"), default="csv", help="output format (default csv)")
    report.add_argument("--ledger", metavar="URL", help=url_help)
    report.set_defaults(run=cmd_report)

    credit = commands.add_parser("credit", help="top a key up")
    credit.add_argument("--key", required=True)
    credit.add_argument("--tokens", required=True, type=int, metavar="N")
    credit.add_argument("--ledger", metavar="URL", help=url_help)
    credit.set_defaults(run=cmd_credit)

    balance = commands.add_parser("balance", help="a key's balance, held and spent tokens (JSON)")
    balance.add_argument("--key", required=True)
    balance.add_argument("--ledger", metavar="URL", help=url_help)
    balance.set_defaults(run=cmd_balance)

    holds = commands.add_parser("holds", help="reservations still open (queued or running jobs, or jobs of a server "
                                              "that died and has not restarted), oldest first")
    holds.add_argument("--owner", metavar="SERVER", help="only the holds of this server (its server_id)")
    holds.add_argument("--format", choices=("csv", "json"), default="csv", help="output format (default csv)")
    holds.add_argument("--ledger", metavar="URL", help=url_help)
    holds.set_defaults(run=cmd_holds)


def format_usage(month: str, rows: list[Usage], fmt: str) -> str:
    """The report as CSV (a header and one row per key) or one JSON object with totals; seconds to the ms."""
    if fmt == "json":
        return json.dumps({"month": month, "keys": [{**asdict(row), "seconds": round(row.seconds, 3)} for row in rows],
                           "total": {"jobs": sum(r.jobs for r in rows), "tokens": sum(r.tokens for r in rows),
                                     "seconds": round(sum(r.seconds for r in rows), 3)}})
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["key", "jobs", "tokens", "seconds"])
    writer.writerows([row.key, row.jobs, row.tokens, f"{row.seconds:.3f}"] for row in rows)
    return out.getvalue().rstrip("\n")


HOLD_FIELDS = ("job_id", "key", "tier", "tokens", "owner", "reserved_at", "output")


def format_holds(holds: list[Charge], fmt: str) -> str:
    """Open reservations as CSV (a header and one row each) or one JSON object with the total held."""
    rows = [{**{name: getattr(hold, name) for name in HOLD_FIELDS}, "reserved_at": timestamp_text(hold.reserved_at),
             "output": hold.output or ""} for hold in holds]
    if fmt == "json":
        return json.dumps({"holds": rows, "total": {"jobs": len(rows), "tokens": sum(h.tokens for h in holds)}})
    out = io.StringIO()
    writer = csv.DictWriter(out, HOLD_FIELDS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue().rstrip("\n")


def cmd_report(args: argparse.Namespace) -> int:
    month_range(args.month)  # a bad month fails before any ledger is opened
    with open_ledger(args.ledger, create=False) as ledger:
        print(format_usage(args.month, ledger.usage(args.month), args.format))
    return 0


def cmd_credit(args: argparse.Namespace) -> int:
    checked_credit(args.key, args.tokens)  # a bad top-up fails before a new ledger file is created
    with open_ledger(args.ledger) as ledger:
        print(json.dumps(asdict(ledger.credit(args.key, args.tokens))))
    return 0


def cmd_holds(args: argparse.Namespace) -> int:
    with open_ledger(args.ledger, create=False) as ledger:
        print(format_holds(ledger.holds(args.owner), args.format))
    return 0


def cmd_balance(args: argparse.Namespace) -> int:
    with open_ledger(args.ledger, create=False) as ledger:
        print(json.dumps(asdict(ledger.balance(args.key))))
    return 0
