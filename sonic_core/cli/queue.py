"""``python -m sonic_core queue submit|status|cancel``: many clips through one or more ComfyUI servers.

``submit JOBS --server URL [--server URL ...]`` checks every row (files, face, audio, settings: bad rows by line
number), prices every job on every server, prints the total, asks before it spends (``--yes``; ``--budget``
refuses beyond a token total), then dispatches, follows and downloads into ``--out``, resumably: run the same
command again and finished jobs are skipped, running ones followed, lost ones sent again.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

from ..errors import SonicInputError
from ..fleet.batch import BatchRunner, Server, price_jobs, write_summary
from ..fleet.comfy_client import ComfyClient
from ..fleet.jobs import check_jobs, load_template
from ..fleet.state import FINAL, BatchState

STATE_FILE = ".sonic-queue.sqlite"


def add_queue_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``queue`` and its subcommands on the CLI's subparsers."""
    queue = sub.add_parser("queue", help="run many clips on ComfyUI servers: submit, status, cancel")
    commands = queue.add_subparsers(dest="queue_command", required=True)

    submit = commands.add_parser("submit", help="check, price, dispatch, follow and download a batch of clips")
    submit.add_argument("jobs", metavar="JOBS", help="CSV (header: image,audio,output[,setting...]) or JSONL")
    _add_common(submit)
    submit.add_argument("--graph", metavar="API.json", help="API-format graph (default workflows/api/sonic_basic.json)")
    submit.add_argument("--api-key", help="metering API key (sent as X-Sonic-Key)")
    submit.add_argument("--tier", help="price against this tier (default: the server's for the key)")
    submit.add_argument("--budget", type=int, metavar="TOKENS", help="refuse the batch when it costs more")
    submit.add_argument("--yes", action="store_true", help="do not ask before spending")
    submit.add_argument("--skip-bad", action="store_true", help="run the good rows when some rows are bad")
    submit.add_argument("--depth", type=int, default=2, metavar="N", help="jobs queued per server at once (2)")
    submit.set_defaults(run=cmd_submit)

    status = commands.add_parser("status", help="what the state file knows of each job")
    _add_common(status)
    status.set_defaults(run=cmd_status)

    cancel = commands.add_parser("cancel", help="cancel queued jobs (by line number or output name) or --all")
    cancel.add_argument("which", nargs="*", metavar="JOB", help="line numbers or output names")
    cancel.add_argument("--all", action="store_true", help="every job not finished yet")
    _add_common(cancel)
    cancel.set_defaults(run=cmd_cancel)


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--server", action="append", default=[], metavar="URL",
                        help="a ComfyUI server with the pack, e.g. http://127.0.0.1:8188 (repeatable)")
    parser.add_argument("--out", default="sonic-queue-out", metavar="DIR", help="where videos and summary go")
    parser.add_argument("--state", metavar="FILE", help=f"state file (default OUT/{STATE_FILE})")


def _state(args: argparse.Namespace) -> BatchState:
    return BatchState(Path(args.state) if args.state else Path(args.out) / STATE_FILE)


def _servers(args: argparse.Namespace, api_key: str | None = None) -> list[Server]:
    if not args.server:
        raise SonicInputError("--server: give at least one ComfyUI server URL, e.g. --server http://127.0.0.1:8188")
    return [Server(ComfyClient(url, api_key=api_key)) for url in dict.fromkeys(args.server)]


def cmd_submit(args: argparse.Namespace) -> int:
    if args.depth < 1:
        raise SonicInputError(f"--depth {args.depth}: use 1 or more")
    servers = _servers(args, args.api_key)
    template = load_template(args.graph)
    jobs, bad = check_jobs(args.jobs)
    for row in bad:
        print(f"{args.jobs}, line {row.line}: {row.reason}", file=sys.stderr)
    if bad and not args.skip_bad:
        raise SonicInputError(f"{len(bad)} bad row(s) in {args.jobs} (listed above): fix them, or pass --skip-bad "
                              "to run the others")
    if not jobs:
        raise SonicInputError(f"{args.jobs} has no job to run")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    state = _state(args)
    done = {s.key for s in state.all() if s.status == "done"}
    todo = [job for job in jobs if job.key not in done]
    prices = price_jobs(todo, template, servers, args.tier)
    refused = [p for p in prices if not p.allowed]
    total = sum(p.tokens for p in prices)
    seconds = {s.url: sum(p.predicted_seconds.get(s.url) or 0.0 for p in prices) for s in servers}
    print(f"{len(jobs)} jobs, {len(jobs) - len(todo)} already done; {len(todo)} to run: {total} tokens"
          + "".join(f"; about {secs / 60:.1f} min of work on {url}" for url, secs in seconds.items()))
    for price in refused:
        print(f"  line {price.job.line}: {price.job.output} is refused by the tier: {price.reason}")
    if args.budget is not None and total > args.budget:
        raise SonicInputError(f"the batch costs {total} tokens, over --budget {args.budget}: raise the budget or "
                              "submit fewer rows")
    if todo and not args.yes and not _confirm(f"Spend up to {total} tokens? [y/N] "):
        print("nothing submitted")
        return 1
    from tqdm import tqdm

    bar = tqdm(total=len(jobs), initial=len(jobs) - len(todo), desc="clips", unit="clip")
    runner = BatchRunner(prices, template, servers, out, state, depth=args.depth, report=tqdm.write,
                         on_finished=lambda _: bar.update(1))
    try:
        states = runner.run()
    finally:
        bar.close()
    summary = [s for s in state.all() if s.key in {job.key for job in jobs}]
    csv_path, _ = write_summary(summary, out)
    failed = [s for s in states if s.status != "done"]
    print(f"{len(summary) - len(failed)} of {len(summary)} clips done; summary in {csv_path}")
    return 1 if failed else 0


def _confirm(question: str) -> bool:
    if not sys.stdin.isatty():
        raise SonicInputError("not asking on a non-interactive input: pass --yes to submit the batch")
    return input(question).strip().lower() in ("y", "yes")


def cmd_status(args: argparse.Namespace) -> int:
    states = _state(args).all()
    for s in states:
        where = f" on {s.server}" if s.server else ""
        detail = s.output_path or s.error or ""
        print(f"line {s.line:>4}  {s.status:<10} {s.output}{where}  {detail}".rstrip())
    counts = Counter(s.status for s in states)  # in the order the statuses first appear
    print(", ".join(f"{n} {status}" for status, n in counts.items()) or "no jobs")
    return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    state = _state(args)
    servers = {server.url: server for server in _servers(args)}
    chosen = [s for s in state.all() if s.status not in FINAL
              and (args.all or str(s.line) in args.which or s.output in args.which)]
    if not chosen:
        raise SonicInputError("no unfinished job matches: name line numbers or output names, or pass --all")
    for job_state in chosen:
        server = servers.get(job_state.server or "")
        if server is not None and job_state.prompt_id:
            running, _pending = server.client.queue()
            if job_state.prompt_id in running:
                server.client.interrupt()
            else:
                server.client.delete([job_state.prompt_id])
        state.update(job_state.key, status="cancelled")
        print(f"line {job_state.line}: {job_state.output} cancelled")
    return 0
