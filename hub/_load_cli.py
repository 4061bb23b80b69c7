"""The ``rcm-realtime load`` command line; the work is in ``_load`` (imported late:
it needs psutil and matplotlib, which the other commands do not)."""

from __future__ import annotations

import argparse
from typing import Any

from ._flags import positive_float, positive_int
from ._tokens import parse_duration
from .core import ConfigError


def _duration(text: str) -> int:
    try:
        return parse_duration(text)
    except ConfigError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def add_load(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "load",
        help="Locust load with real SSE streams, reconciled with the hubs' counters",
        description=(
            "Run Locust headless against hub replicas (started here, or running ones "
            "given by --url), then reconcile what the clients received with what the "
            "hubs counted, and write an HTML and CSV report."
        ),
    )
    target = parser.add_mutually_exclusive_group()
    target.add_argument(
        "--replicas",
        type=positive_int,
        help="start this many replicas on the in-process bus (default 2)",
    )
    target.add_argument(
        "--url",
        action="append",
        default=[],
        metavar="URL",
        help="a running replica's base URL (repeat, or comma-separate); needs "
        "RCM_REALTIME_JWT_SECRET, and RCM_REALTIME_METRICS_BEARER or a key-signed "
        "metrics token",
    )
    parser.add_argument("--users", type=positive_int, default=50, help="SSE users")
    parser.add_argument(
        "--spawn-rate", type=positive_float, default=50.0, help="users started per s"
    )
    parser.add_argument(
        "--duration", type=_duration, default=30, help="publishing time: 30s, 5m"
    )
    parser.add_argument(
        "--events-per-s", type=positive_float, default=20.0, help="events published/s"
    )
    parser.add_argument(
        "--processes",
        type=positive_int,
        default=1,
        help="Locust processes on this machine (>1: a master and P workers)",
    )
    parser.add_argument(
        "--workers",
        type=positive_int,
        default=0,
        help="wait for this many Locust workers started on other machines (see "
        "the README) instead of forking --processes here",
    )
    parser.add_argument(
        "--master-port",
        type=positive_int,
        default=5557,
        help="with --workers: the port the Locust master listens on",
    )
    parser.add_argument(
        "--churn",
        action="store_true",
        help="open model: clients arrive (Poisson) and leave (exponential stays), "
        "about --users connected on average",
    )
    parser.add_argument(
        "--session-s",
        type=positive_float,
        default=20.0,
        help="with --churn: mean time a client stays",
    )
    parser.add_argument(
        "--tenants", type=positive_int, default=2, help="tenants the load spreads over"
    )
    parser.add_argument(
        "--publishers", type=positive_int, default=1, help="publishing Locust users"
    )
    parser.add_argument(
        "--report-dir",
        default="reports",
        help="where the report folder load-<timestamp> goes (default: reports)",
    )
    parser.add_argument(
        "--port",
        type=positive_int,
        help="first port of the started replicas (default: free ports)",
    )
    parser.add_argument(
        "--drain-timeout",
        type=_duration,
        default=30,
        help="how long to wait for the hubs to drain after publishing stops",
    )
    parser.add_argument("--catalog", help="catalog TOML (hubs and load users)")
    parser.set_defaults(run=_run_load)


def _run_load(args: Any) -> int:
    from ._load import LoadOptions, run_load

    return run_load(LoadOptions.from_args(args))
