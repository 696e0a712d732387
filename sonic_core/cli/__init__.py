"""Command line: ``python -m sonic_core {generate,demo,estimate,bench,fetch-weights,weights,ledger,queue,gateway} ...``.

Errors of the engine (:class:`SonicError`) end the program with their one-line message and exit status 2; Ctrl-C
(SIGINT) ends it with status 130 (an interrupted generation leaves no output file: the video is renamed into place
only when complete), also when the program was started with SIGINT ignored (see :func:`honour_interrupts`).
"""

from __future__ import annotations

import argparse
import signal
import sys
from typing import Sequence

from ..errors import SonicError, SonicRankLost
from .bench import add_bench_parser
from .demo import add_demo_parser
from .devices import RANK_LOST_STATUS
from .estimate import add_estimate_parser
from .fetch_weights import add_fetch_weights_parser
from .gateway import add_gateway_parser
from .generate import add_generate_parser
from .ledger import add_ledger_parser
from .queue import add_queue_parser
from .weights import add_weights_parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m sonic_core",
                                     description="Sonic talking-head generation and cost metering.")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (add_generate_parser, add_demo_parser, add_estimate_parser, add_bench_parser, add_ledger_parser,
                add_fetch_weights_parser, add_weights_parser, add_queue_parser, add_gateway_parser):
        add(sub)
    return parser


def honour_interrupts() -> None:
    """Make SIGINT raise KeyboardInterrupt even if this process inherited it as ignored.

    A non-interactive shell starts background jobs (``cmd &``: scripts, CI steps, job runners) with SIGINT ignored,
    and Python keeps an inherited SIG_IGN instead of installing its KeyboardInterrupt handler; such a run ignored
    Ctrl-C and ``kill -INT``, went on for minutes and wrote its video. Called by ``python -m sonic_core`` only, so
    importing or calling :func:`main` from another program leaves that program's signal handling alone.
    """
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # what --devices runs once per device
    try:
        return args.run(args)
    except SonicRankLost as exc:  # another rank failed first: the launcher names that one
        print(f"error: {exc}", file=sys.stderr)
        return RANK_LOST_STATUS
    except SonicError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted; no output file was written", file=sys.stderr)
        return 130
