"""The ``rcm-realtime`` command line."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable, Sequence

from ._catalog_check import add_catalog
from ._config import load_catalog, settings_from_env
from ._diagnose_cli import add_diagnose
from ._flags import comma_list, port, positive_int
from ._load_cli import add_load
from ._logging import configure_logging
from ._serve import ServeOptions, serve
from ._tokens import issue_token, parse_duration
from .core import ConfigError, RealtimeError

Command = Callable[[argparse.Namespace], int]


def _add_serve(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser("serve", help="run the reference hub")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=port, default=8080)
    parser.add_argument("--replicas", type=positive_int, default=1)
    parser.add_argument("--bus", help="'memory' or an amqp:// URL")
    parser.add_argument("--replica-id", help="this replica's name (bus subscription)")
    parser.add_argument(
        "--dev",
        action="store_true",
        help="random key, ready-made tokens on stdout, in-process bus",
    )
    parser.add_argument("--catalog", help="path of the event catalog TOML")
    parser.add_argument("--queue-size", type=positive_int)
    parser.add_argument("--evict-after-s", type=float)
    parser.add_argument("--heartbeat-s", type=float)
    parser.add_argument("--batch-quiet-window-ms", type=positive_int)
    parser.set_defaults(run=_run_serve)


def _run_serve(args: argparse.Namespace) -> int:
    configure_logging()
    settings = settings_from_env().with_overrides(
        bus=args.bus,
        replica_id=args.replica_id,
        catalog_path=args.catalog,
        queue_size=args.queue_size,
        evict_after_s=args.evict_after_s,
        heartbeat_s=args.heartbeat_s,
        batch_quiet_window_ms=args.batch_quiet_window_ms,
    )
    for name in ("evict_after_s", "heartbeat_s"):
        value = getattr(args, name)
        if value is not None and value <= 0:
            raise ConfigError(f"--{name.replace('_', '-')} must be above zero")
    options = ServeOptions(
        host=args.host, port=args.port, replicas=args.replicas, dev=args.dev
    )
    return asyncio.run(serve(settings, options))


def _add_token(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "token", help="print a signed JWT (key from RCM_REALTIME_JWT_SECRET)"
    )
    parser.add_argument("--tenant", help="tenant slug (tenant_id claim)")
    parser.add_argument("--scopes", type=comma_list, default=[])
    parser.add_argument(
        "--roles",
        type=comma_list,
        default=[],
        help="roles; each also seeds its scopes from the catalog's role table",
    )
    parser.add_argument("--ttl", default="1h", help="lifetime: 90s, 15m, 1h, 7d")
    parser.add_argument("--sub", help="the user (sub claim)")
    parser.add_argument("--secret", help="HS256 key (default: RCM_REALTIME_JWT_SECRET)")
    parser.add_argument("--catalog", help="catalog whose role table seeds scopes")
    parser.set_defaults(run=_run_token)


def _run_token(args: argparse.Namespace) -> int:
    settings = settings_from_env()
    secret = args.secret or settings.jwt_secret
    if not secret:
        raise ConfigError(
            "no signing key: set RCM_REALTIME_JWT_SECRET or pass --secret"
        )
    catalog = load_catalog(args.catalog or settings.catalog_path)
    unknown = [role for role in args.roles if role not in catalog.roles]
    scopes = set(args.scopes) | catalog.scopes_for_roles(args.roles)
    if unknown and not {"PLATFORM_ADMIN"}.issuperset(unknown):
        print(
            f"note: roles {unknown} are not in the catalog's role table and seed "
            "no scopes",
            file=sys.stderr,
        )
    print(
        issue_token(
            secret=secret,
            tenant_id=args.tenant,
            scopes=scopes,
            roles=args.roles,
            ttl_s=parse_duration(args.ttl),
            subject=args.sub,
        )
    )
    return 0


def _add_tune_quiet_window(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
) -> None:
    parser = commands.add_parser(
        "tune-quiet-window",
        help="sweep realtimeBatchQuietWindowMs on the batch synthesizer",
        description=(
            "Replay a submission model or a log of real arrivals through the hub "
            "core's batch synthesizer for each quiet window, and recommend the "
            "smallest window that keeps premature batch.completed under a target."
        ),
    )
    source = parser.add_mutually_exclusive_group()
    source.add_argument(
        "--model", metavar="TOML", help="submission model (default: built-in)"
    )
    source.add_argument(
        "--log",
        metavar="CSV",
        help="real arrivals: tenant_id,trading_partner_id,isa13,occurred_at",
    )
    source.add_argument(
        "--print-default-model",
        action="store_true",
        help="print the built-in model, the documented format, and exit",
    )
    windows = parser.add_mutually_exclusive_group()
    windows.add_argument(
        "--windows", metavar="MS[,MS...]", help="windows to try, in milliseconds"
    )
    windows.add_argument(
        "--window-range",
        metavar="START:STOP:STEP",
        help="windows to try, in milliseconds, STOP included",
    )
    parser.add_argument(
        "--target",
        metavar="PERCENT",
        default="0.1",
        help="largest share of interchanges with a premature completion (0.1)",
    )
    parser.add_argument("--seed", type=int, help="model seed (default: the model's)")
    parser.add_argument(
        "--workers", type=positive_int, help="processes (default: every core)"
    )
    parser.add_argument("--json", action="store_true", help="JSON on stdout")
    parser.add_argument(
        "--plot",
        metavar="PNG",
        default="reports/tune-quiet-window.png",
        help="where to draw the plot (reports/tune-quiet-window.png)",
    )
    parser.add_argument("--no-plot", action="store_true", help="draw no plot")
    parser.add_argument("--quiet", action="store_true", help="no progress on stderr")
    parser.set_defaults(run=_run_tune_quiet_window)


def _run_tune_quiet_window(args: argparse.Namespace) -> int:
    # The tuner builds on the core and draws with matplotlib: loaded on use only,
    # so the hub never imports it.
    from tuning._command import run

    return run(args)


def _add_sim(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    # The simulator owns its flags; they are parsed there, so that the hub never
    # imports it (not even to build this parser).
    parser = commands.add_parser(
        "sim",
        help="simulate replicas, a bus, clients and deploys around the hub core",
        add_help=False,
        prefix_chars="\x00",
    )
    parser.add_argument("argv", nargs=argparse.REMAINDER)
    parser.set_defaults(run=_run_sim)


def _run_sim(args: argparse.Namespace) -> int:
    from sim._cli import main as sim_main

    return sim_main(args.argv)


def _add_capacity(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
) -> None:
    # The capacity tools sit above the hub, the simulator and the benchmarks, and own
    # their flags; they are imported only when the command runs.
    parser = commands.add_parser(
        "capacity",
        help="calibrate the hub's costs here, plan replicas for a workload",
        add_help=False,
        prefix_chars="\x00",
    )
    parser.add_argument("argv", nargs=argparse.REMAINDER)
    parser.set_defaults(run=_run_capacity)


def _run_capacity(args: argparse.Namespace) -> int:
    from capacity._command import main as capacity_main

    return capacity_main(args.argv)


# Each command module adds its parser here; the list is the CLI's table of contents.
def _add_scenarios(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
) -> None:
    # The scenario layer sits above the hub; it is imported only by the command line.
    from scenarios._runner import add_scenarios_command

    add_scenarios_command(commands)


def _add_soak(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    # The soak drives hub processes from outside; imported only by the command line.
    from soak import add_soak_command

    add_soak_command(commands)


REGISTRARS: list[
    Callable[[argparse._SubParsersAction[argparse.ArgumentParser]], None]
] = [
    _add_serve,
    _add_token,
    _add_tune_quiet_window,
    _add_scenarios,
    add_diagnose,
    add_catalog,
    add_load,
    _add_sim,
    _add_soak,
    _add_capacity,
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rcm-realtime",
        description="Reference hub, simulator and tools for the realtime SSE feed.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for register in REGISTRARS:
        register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.run(args))
    except RealtimeError as error:
        print(f"rcm-realtime {args.command}: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
