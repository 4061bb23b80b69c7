"""``rcm-realtime diagnose``: read live replicas, then hand over to the analysis.

Every replica is read concurrently, twice, ``--interval`` seconds apart (measured
from the start of the first round), and each request has its own short timeout, so
the whole run takes about interval + timeout whatever the number of replicas.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from dataclasses import dataclass
from typing import Any

import aiohttp
from yarl import URL

from ._config import load_catalog, settings_from_env
from ._diagnose import (
    UNDIAGNOSABLE_EXIT,
    Diagnosis,
    ReplicaReading,
    Scrape,
    SubscriberView,
    diagnose,
    parse_scrape,
    render_text,
)
from .core import TENANT_PATTERN, Catalog, ConfigError, ScrapeError

METRICS_TOKEN_VARIABLES = ("METRICS_BEARER", "RCM_REALTIME_METRICS_BEARER")
ADMIN_TOKEN_VARIABLE = "RCM_REALTIME_ADMIN_TOKEN"
DEFAULT_INTERVAL_S = 2.0
DEFAULT_TIMEOUT_S = 1.0


class _Unread(Exception):
    """One request to one replica failed; the message is the line to print."""


@dataclass(frozen=True, slots=True)
class DiagnoseOptions:
    tenant: str
    urls: tuple[str, ...]
    metrics_token: str
    admin_token: str | None = None
    interval_s: float = DEFAULT_INTERVAL_S
    timeout_s: float = DEFAULT_TIMEOUT_S


def normalize_url(text: str) -> str:
    """``host:port``, ``http://host:port/`` or ``.../metrics`` as the replica's base."""
    raw = text.strip()
    if "://" not in raw:
        raw = "http://" + raw
    try:
        url = URL(raw)
    except (ValueError, TypeError) as error:
        raise ConfigError(f"--url {text!r} is not a URL ({error})") from error
    if url.scheme not in ("http", "https") or not url.host:
        raise ConfigError(f"--url {text!r} must look like http://host:port")
    path = url.path.rstrip("/")
    if path.endswith("/metrics"):
        path = path[: -len("/metrics")]
    return str(url.with_path(path or "/").with_query(None).with_fragment(None)).rstrip(
        "/"
    )


async def read_replicas(options: DiagnoseOptions) -> list[ReplicaReading]:
    """Two rounds of scrapes; the admin listing rides along with the second."""
    timeout = aiohttp.ClientTimeout(total=options.timeout_s)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        started = time.monotonic()
        firsts = await asyncio.gather(
            *(_first_round(session, url, options) for url in options.urls)
        )
        pause = options.interval_s - (time.monotonic() - started)
        if pause > 0 and any(reading.first is not None for reading in firsts):
            await asyncio.sleep(pause)
        return list(
            await asyncio.gather(
                *(_second_round(session, reading, options) for reading in firsts)
            )
        )


async def _first_round(
    session: aiohttp.ClientSession, url: str, options: DiagnoseOptions
) -> ReplicaReading:
    metrics, replica_id = await asyncio.gather(
        _scrape(session, url, options.metrics_token), _replica_id(session, url)
    )
    if isinstance(metrics, str):
        return ReplicaReading(url=url, replica_id=replica_id, problem=metrics)
    return ReplicaReading(url=url, replica_id=replica_id, first=metrics)


async def _second_round(
    session: aiohttp.ClientSession, reading: ReplicaReading, options: DiagnoseOptions
) -> ReplicaReading:
    if reading.first is None:
        return reading
    admin: Any = None
    if options.admin_token:
        metrics, admin = await asyncio.gather(
            _scrape(session, reading.url, options.metrics_token),
            _subscribers(session, reading.url, options.tenant, options.admin_token),
        )
    else:
        metrics = await _scrape(session, reading.url, options.metrics_token)
    problem = None
    second = None
    if isinstance(metrics, str):
        problem = f"second scrape failed, judged on the first alone: {metrics}"
    else:
        second = metrics
    subscribers = admin if isinstance(admin, tuple) else None
    admin_problem = admin if isinstance(admin, str) else None
    return ReplicaReading(
        url=reading.url,
        replica_id=reading.replica_id,
        first=reading.first,
        second=second,
        problem=problem,
        subscribers=subscribers,
        admin_problem=admin_problem,
    )


async def _get(
    session: aiohttp.ClientSession, url: str, token: str | None
) -> tuple[int, str]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        async with session.get(url, headers=headers) as response:
            return response.status, await response.text(errors="replace")
    except aiohttp.ClientConnectorError as error:
        code = error.os_error.errno
        reason = os.strerror(code) if code else str(error.os_error)
        raise _Unread(f"unreachable ({reason.lower()})") from error
    except TimeoutError as error:
        raise _Unread(
            f"unreachable (no answer within {_seconds(session)} s)"
        ) from error
    except aiohttp.ClientError as error:
        raise _Unread(f"unreachable ({error.__class__.__name__}: {error})") from error


def _seconds(session: aiohttp.ClientSession) -> str:
    total = session.timeout.total
    return f"{total:g}" if total is not None else "?"


def _message(body: str) -> str:
    """The hub's error sentence from a JSON error body, else the body's start."""
    try:
        parsed = json.loads(body)
    except ValueError:
        return body.strip()[:120]
    if isinstance(parsed, dict) and isinstance(parsed.get("message"), str):
        return str(parsed["message"])
    return body.strip()[:120]


async def _scrape(
    session: aiohttp.ClientSession, base: str, token: str
) -> Scrape | str:
    """The parsed scrape, or the line that says why there is none."""
    try:
        status, body = await _get(session, f"{base}/metrics", token)
    except _Unread as error:
        return str(error)
    taken_at = time.monotonic()
    if status == 401:
        return f"refused the metrics token (401: {_message(body)})"
    if status != 200:
        return f"answered {status} on /metrics ({_message(body)})"
    try:
        return parse_scrape(body, taken_at=taken_at)
    except ScrapeError as error:
        return f"/metrics answer unusable: {error}"


async def _replica_id(session: aiohttp.ClientSession, base: str) -> str | None:
    try:
        status, body = await _get(session, f"{base}/healthz", None)
        answer = json.loads(body) if status == 200 else None
    except (_Unread, ValueError):
        return None
    if isinstance(answer, dict) and isinstance(answer.get("replicaId"), str):
        return str(answer["replicaId"])
    return None


async def _subscribers(
    session: aiohttp.ClientSession, base: str, tenant: str, token: str
) -> tuple[SubscriberView, ...] | str:
    url = f"{base}/v1/realtime/admin/subscribers?tenant_id={tenant}"
    try:
        status, body = await _get(session, url, token)
    except _Unread as error:
        return f"admin listing: {error}"
    if status in (401, 403):
        return f"refused the admin token ({status}: {_message(body)})"
    if status != 200:
        return f"admin listing answered {status} ({_message(body)})"
    try:
        listing = json.loads(body)
        if not isinstance(listing, list):
            raise ScrapeError("the subscriber listing is not a JSON list")
        return tuple(SubscriberView.from_json(item) for item in listing)
    except (ValueError, ScrapeError) as error:
        return f"admin listing unusable: {error}"


async def diagnose_live(options: DiagnoseOptions, catalog: Catalog) -> Diagnosis:
    """Read the replicas and diagnose: what the command does, for other callers
    (a scenario that wants the operator's verdict on the hubs it runs)."""
    return diagnose(options.tenant, await read_replicas(options), catalog)


# -- command line ------------------------------------------------------------------


def _interval(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a number of seconds"
        ) from None
    if not 0 < value <= 60:
        raise argparse.ArgumentTypeError(f"{text!r} must be above 0 and at most 60")
    return value


def add_diagnose(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "diagnose",
        help="why a tenant's dashboards are stale, read from live replicas",
        description=(
            "Scrape every replica twice, a few seconds apart, and follow the "
            "stale-dashboard escalation: subscribers, permission drops, backpressure, "
            "lagging replicas, unknown types. Exit 0 healthy, 1 a problem found, 2 "
            "could not diagnose."
        ),
    )
    parser.add_argument("--tenant", required=True, help="the tenant slug")
    parser.add_argument(
        "--url",
        action="append",
        required=True,
        metavar="URL",
        help="a replica's base URL (http://host:port); repeat for each replica",
    )
    parser.add_argument(
        "--token",
        help="metrics bearer (default: METRICS_BEARER or RCM_REALTIME_METRICS_BEARER)",
    )
    parser.add_argument(
        "--admin-token",
        help="a PLATFORM_ADMIN token, to list each subscriber's state (default: "
        f"{ADMIN_TOKEN_VARIABLE})",
    )
    parser.add_argument(
        "--interval",
        type=_interval,
        default=DEFAULT_INTERVAL_S,
        help="seconds between the two scrapes (default 2)",
    )
    parser.add_argument(
        "--timeout",
        type=_interval,
        default=DEFAULT_TIMEOUT_S,
        help="seconds to wait for each answer (default 1)",
    )
    parser.add_argument(
        "--catalog",
        help="the catalog the replicas run (default: RCM_REALTIME_CATALOG or the "
        "shipped one)",
    )
    parser.add_argument("--json", action="store_true", help="one JSON document")
    parser.set_defaults(run=run_diagnose)


def options_from_args(args: argparse.Namespace) -> DiagnoseOptions:
    if not TENANT_PATTERN.match(args.tenant):
        raise ConfigError(f"--tenant {args.tenant!r} is not a tenant slug")
    admin = args.admin_token or os.environ.get(ADMIN_TOKEN_VARIABLE) or None
    token = args.token or next(
        (os.environ[name] for name in METRICS_TOKEN_VARIABLES if os.environ.get(name)),
        None,
    )
    # An admin token usually carries metrics.read too; use it rather than refuse.
    token = token or admin
    if not token:
        raise ConfigError(
            "no metrics token: pass --token or set METRICS_BEARER "
            "(or RCM_REALTIME_METRICS_BEARER)"
        )
    urls = tuple(dict.fromkeys(normalize_url(url) for url in args.url))
    return DiagnoseOptions(
        tenant=args.tenant,
        urls=urls,
        metrics_token=token,
        admin_token=admin,
        interval_s=args.interval,
        timeout_s=args.timeout,
    )


def run_diagnose(args: argparse.Namespace) -> int:
    options = options_from_args(args)
    catalog = load_catalog(args.catalog or settings_from_env().catalog_path)
    if not args.json:
        print(
            f"diagnose: reading {len(options.urls)} replica(s) twice, "
            f"{options.interval_s:g} s apart ...",
            file=sys.stderr,
            flush=True,
        )
    result = asyncio.run(diagnose_live(options, catalog))
    if args.json:
        print(json.dumps(result.as_json(), indent=2))
    else:
        print(render_text(result), end="")
    return result.exit_status


__all__ = [
    "UNDIAGNOSABLE_EXIT",
    "DiagnoseOptions",
    "add_diagnose",
    "diagnose_live",
    "normalize_url",
    "read_replicas",
]
