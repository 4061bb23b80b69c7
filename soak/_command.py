"""``rcm-realtime soak``: the command line around a soak run.

Only the parser is built when the command line starts; the run, its clients and
its plotting are loaded when the command runs.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections.abc import Mapping
from pathlib import Path

from hub import parse_duration
from hub.core import ConfigError

from ._model import (
    BROKER_LOCK,
    CI_DURATION_S,
    DEFAULT_BUS,
    DEFAULT_DURATION_S,
    SoakOptions,
)


def _duration(text: str) -> float:
    try:
        return float(parse_duration(text))
    except ConfigError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _whole(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None


def _rate(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None


def add_soak_command(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
) -> None:
    parser = commands.add_parser(
        "soak",
        help="run real hubs under load, churn and faults, then check nothing leaked",
        description=(
            "Run replicas as `rcm-realtime serve` processes on RabbitMQ under steady "
            "load with clients arriving, flapping and leaving, restart the broker "
            "and SIGKILL a replica on the way, then check every replica's ledger, "
            "client-received against delivered, memory after warm-up and the "
            "replicas' error logs. Exit 0 only when every check holds."
        ),
    )
    parser.add_argument(
        "--duration",
        type=_duration,
        help="load time: 90s, 10m, 1h (default 10m; 60s when CI is set)",
    )
    parser.add_argument("--replicas", type=_whole, default=3)
    parser.add_argument(
        "--clients", type=_whole, default=60, help="clients connected on average"
    )
    parser.add_argument("--events-per-s", type=_rate, default=100.0)
    parser.add_argument(
        "--bus", default=DEFAULT_BUS, help=f"RabbitMQ URL (default {DEFAULT_BUS})"
    )
    parser.add_argument(
        "--report-dir",
        default="reports/soak",
        help="where the summary, the plot and the replicas' logs go (reports/soak)",
    )
    parser.add_argument(
        "--port",
        type=_whole,
        default=0,
        help="first replica port, the others follow (default: free ports)",
    )
    parser.add_argument("--seed", type=_whole, default=0, help="seed of the load")
    parser.add_argument(
        "--broker-lock",
        default=str(BROKER_LOCK),
        help=(
            "file locked while the broker restarts; the RabbitMQ tests hold the "
            f"same one (default {BROKER_LOCK})"
        ),
    )
    parser.set_defaults(run=_run)


def default_duration_s(environ: Mapping[str, str]) -> float:
    """Ten minutes; 60 s in CI, where the suite must stay short."""
    return CI_DURATION_S if environ.get("CI") else DEFAULT_DURATION_S


def _run(args: argparse.Namespace) -> int:
    options = SoakOptions(
        duration_s=args.duration or default_duration_s(os.environ),
        replicas=args.replicas,
        clients=args.clients,
        events_per_s=args.events_per_s,
        bus_url=args.bus,
        report_dir=Path(args.report_dir),
        port=args.port,
        seed=args.seed,
        broker_lock=Path(args.broker_lock),
    )
    options.validate()

    from ._report import (
        PLOT_NAME,
        SUMMARY_NAME,
        plot_memory,
        text_report,
        write_summary,
    )
    from ._run import run_soak

    started = time.monotonic()

    def progress(line: str) -> None:
        print(
            f"[{time.monotonic() - started:6.1f} s] {line}", file=sys.stderr, flush=True
        )

    result = asyncio.run(run_soak(options, progress))
    write_summary(result, options.report_dir / SUMMARY_NAME)
    plot_memory(result, options.report_dir / PLOT_NAME)
    print(text_report(result, options.report_dir), flush=True)
    return 0 if result.passed else 1
