"""``python -m sonic_core gateway``: the fleet's HTTP gateway under uvicorn (the fleet's services are configured by
the environment variables of :mod:`sonic_core.fleet.config`; install them with ``requirements-service.txt``)."""

from __future__ import annotations

import argparse

from ..errors import SonicDependencyError
from ..fleet.config import FleetConfig
from ..fleet.keys import KEYS_ENV, KeyBook
from ..metering.tiers import load_tiers


def add_gateway_parser(sub: argparse._SubParsersAction) -> None:
    """Register the ``gateway`` command on the CLI's subparsers."""
    gateway = sub.add_parser("gateway", help="serve the fleet's HTTP API (jobs, video, cancel, estimate, metrics)")
    gateway.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    gateway.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    gateway.add_argument("--keys", metavar="FILE", help=f"API keys file (TOML or JSON; default ${KEYS_ENV})")
    gateway.add_argument("--tiers-file", metavar="FILE", help="pricing tiers (default $SONIC_TIERS, else bundled)")
    gateway.add_argument("--device", metavar="PROFILE",
                         help="predict every job's seconds on this cost profile (e.g. cpu for CPU workers); "
                              "default: each pool's GPU")
    gateway.set_defaults(run=cmd_gateway)


def cmd_gateway(args: argparse.Namespace) -> int:
    keys = KeyBook.load(args.keys)
    try:
        import uvicorn

        from ..fleet.gateway import create_app
    except ModuleNotFoundError as exc:
        raise SonicDependencyError(f"the gateway needs {exc.name}: pip install -r requirements-service.txt") from None
    app = create_app(FleetConfig.from_env(), keys, load_tiers(args.tiers_file), args.device)
    uvicorn.run(app, host=args.host, port=args.port, log_level="info")
    return 0
