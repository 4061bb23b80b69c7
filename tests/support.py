"""Helpers shared by the tests: running replicas, tokens, stream readers, waiting."""

from __future__ import annotations

import asyncio
import re
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

import aiohttp
from prometheus_client import generate_latest

from hub import (
    Bus,
    MemoryBus,
    Replica,
    Settings,
    TokenVerifier,
    issue_token,
    load_catalog,
)
from hub.core import Catalog

from .sse import SseEvent, SseParser

SECRET = "test-secret-key-that-is-long-enough-for-hs256"
METRICS_BEARER = "static-metrics-bearer"
ALL_READ_SCOPES = (
    "claims.read",
    "denials.read",
    "remittance.read",
    "authorizations.read",
    "batches.read",
)


def token(
    tenant: str | None = "acme",
    scopes: Iterable[str] = ALL_READ_SCOPES,
    roles: Iterable[str] = (),
    ttl_s: int = 3600,
    subject: str = "tester",
) -> str:
    return issue_token(
        secret=SECRET,
        tenant_id=tenant,
        scopes=scopes,
        roles=roles,
        ttl_s=ttl_s,
        subject=subject,
    )


PUBLISHER = token(tenant=None, scopes=["realtime.publish"])
ADMIN = token(tenant=None, scopes=["metrics.read"], roles=["PLATFORM_ADMIN"])


def hub_settings(**overrides: Any) -> Settings:
    base = Settings(
        jwt_secret=SECRET,
        metrics_bearer=METRICS_BEARER,
        heartbeat_s=15.0,
        shutdown_grace_s=2.0,
    )
    return base.with_overrides(**overrides)


async def wait_until(
    condition: Callable[[], bool], *, timeout: float = 5.0, what: str = "condition"
) -> None:
    """Wait for ``condition`` to hold, failing with ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.005)


async def wait_until_async(
    condition: Callable[[], Awaitable[bool]],
    *,
    timeout: float = 5.0,
    what: str = "condition",
    interval: float = 0.05,
) -> None:
    """``wait_until`` for conditions that must await (scrapes, HTTP probes)."""
    deadline = time.monotonic() + timeout
    while not await condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(interval)


@asynccontextmanager
async def running_replicas(
    count: int = 1,
    *,
    settings: Settings | None = None,
    catalog: Catalog | None = None,
    bus: Bus | None = None,
) -> AsyncIterator[list[Replica]]:
    settings = settings or hub_settings()
    catalog = catalog or load_catalog()
    bus = bus or MemoryBus()
    verifier = TokenVerifier(secret=settings.jwt_secret)
    replicas = [
        Replica(
            replica_id=f"r{n}",
            settings=settings,
            catalog=catalog,
            bus=bus,
            verifier=verifier,
        )
        for n in range(1, count + 1)
    ]
    for replica in replicas:
        await replica.start("127.0.0.1", 0)
    try:
        yield replicas
    finally:
        for replica in replicas:
            await replica.close()


class Reachable(Protocol):
    """Anything with a port on 127.0.0.1: a ``Replica`` or a hub process."""

    @property
    def port(self) -> int | None: ...


def url(replica: Reachable, path: str) -> str:
    return f"http://127.0.0.1:{replica.port}{path}"


@dataclass
class StreamReader:
    """An SSE client over a real connection, parsing with the tests' parser."""

    response: aiohttp.ClientResponse
    parser: SseParser = field(default_factory=SseParser)
    ended: bool = False
    _task: asyncio.Task[None] | None = None

    @property
    def events(self) -> list[SseEvent]:
        return self.parser.events

    def of_type(self, event_type: str) -> list[SseEvent]:
        return [e for e in self.parser.events if e.type == event_type]

    def start(self) -> None:
        self._task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        try:
            async for chunk in self.response.content.iter_any():
                self.parser.feed_bytes(chunk)
        except (aiohttp.ClientError, asyncio.CancelledError):
            pass
        finally:
            self.ended = True

    async def wait_for_events(self, count: int, timeout: float = 5.0) -> None:
        await wait_until(
            lambda: len(self.events) >= count,
            timeout=timeout,
            what=f"{count} events (have {len(self.events)})",
        )

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
        self.response.close()


@asynccontextmanager
async def open_stream(
    session: aiohttp.ClientSession,
    replica: Reachable,
    bearer: str,
    *,
    headers: dict[str, str] | None = None,
    via_query: bool = False,
) -> AsyncIterator[StreamReader]:
    all_headers = dict(headers or {})
    path = "/v1/realtime/stream"
    if via_query:
        path += f"?access_token={bearer}"
    else:
        all_headers["Authorization"] = f"Bearer {bearer}"
    response = await session.get(url(replica, path), headers=all_headers)
    assert response.status == 200, await response.text()
    reader = StreamReader(response)
    reader.start()
    await reader.wait_for_events(1)
    assert reader.events[0].type == "ready"
    try:
        yield reader
    finally:
        await reader.close()


async def publish(
    session: aiohttp.ClientSession,
    replica: Reachable,
    body: Any,
    *,
    bearer: str = PUBLISHER,
) -> list[str]:
    async with session.post(
        url(replica, "/v1/realtime/events"),
        json=body,
        headers={"Authorization": f"Bearer {bearer}"},
    ) as response:
        assert response.status == 202, await response.text()
        ids: list[str] = (await response.json())["ids"]
        return ids


METRIC_LINE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)$")
LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(
    session: aiohttp.ClientSession, replica: Reachable
) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    async with session.get(
        url(replica, "/metrics"),
        headers={"Authorization": f"Bearer {METRICS_BEARER}"},
    ) as response:
        assert response.status == 200
        text = await response.text()
    return parse_metrics(text)


def metrics_now(replica: Replica) -> Samples:
    """The replica's exposition rendered right now, without an await in between."""
    return parse_metrics(generate_latest(replica.registry).decode())


def parse_metrics(text: str) -> Samples:
    samples: Samples = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = METRIC_LINE.match(line)
        assert match, line
        labels = frozenset(LABEL.findall(match.group(2) or ""))
        samples[(match.group(1), labels)] = float(match.group(3))
    return samples


def sample(
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float],
    name: str,
    **labels: str,
) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def dispatched(samples: Samples, tenant: str = "acme") -> float:
    """Events the replica took from its bus subscription, summed over types."""
    return sum(
        value
        for (name, labels), value in samples.items()
        if name == "rcm_realtime_events_dispatched_total"
        and dict(labels).get("tenant_id") == tenant
    )


def event_ids(reader: StreamReader, event_type: str | None = None) -> list[str]:
    """Ids of the events a stream received (not the ready frame), in order."""
    return [
        event.last_event_id
        for event in reader.events
        if event.type != "ready" and (event_type is None or event.type == event_type)
    ]


def assert_ledger(samples: dict[tuple[str, frozenset[tuple[str, str]]], float]) -> None:
    """fanout = delivered + dropped{permission,backpressure,disconnected} + queued."""
    tenants = {
        dict(labels)["tenant_id"]
        for (name, labels) in samples
        if name == "rcm_realtime_fanout_total"
    }
    for tenant in tenants:
        fanout = sample(samples, "rcm_realtime_fanout_total", tenant_id=tenant)
        accounted = (
            sample(samples, "rcm_realtime_delivered_total", tenant_id=tenant)
            + sum(
                sample(
                    samples, "rcm_realtime_dropped_total", tenant_id=tenant, reason=r
                )
                for r in ("permission", "backpressure", "disconnected")
            )
            + sample(samples, "rcm_realtime_queued", tenant_id=tenant)
        )
        assert fanout == accounted, (
            f"ledger broken for {tenant}: {fanout} != {accounted}"
        )


def stall_consumption(replica: Replica) -> None:
    """Stop ``replica`` taking events from its bus subscription, as a stalled
    subscription does: events pile up in its backlog and reach none of its streams."""
    for task in replica._tasks:
        if task.get_name() == "consume":
            task.cancel()
            return
    raise AssertionError(f"replica {replica.replica_id} has no consume task")


@dataclass
class StalledClient:
    """A stream whose client read the ready frame and then stopped reading;
    ``reader`` reads the rest when the test lets it."""

    writer: asyncio.StreamWriter
    head: bytes
    reader: asyncio.StreamReader | None = None

    def close(self) -> None:
        self.writer.transport.abort()


@asynccontextmanager
async def stalled_client(replica: Replica, bearer: str) -> AsyncIterator[StalledClient]:
    """Open a stream over a socket with a tiny receive buffer and stop reading
    after the ready frame, so the hub's writes back up into the subscriber queue."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    await loop.sock_connect(sock, ("127.0.0.1", replica.port or 0))
    reader, writer = await asyncio.open_connection(sock=sock, limit=1024)
    writer.write(
        (
            "GET /v1/realtime/stream HTTP/1.1\r\n"
            f"Host: 127.0.0.1:{replica.port}\r\n"
            f"Authorization: Bearer {bearer}\r\n"
            "Accept: text/event-stream\r\n\r\n"
        ).encode()
    )
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"event: ready"), 5.0)
    assert head.startswith(b"HTTP/1.1 200"), head[:200]
    client = StalledClient(writer, head, reader)
    try:
        yield client
    finally:
        client.close()


def require_binary(name: str, package: str) -> str:
    """The path of ``name``; missing, it fails the test under CI and skips it
    elsewhere (tools/install-browser.sh installs what the tests need)."""
    import os
    import shutil

    import pytest

    path = shutil.which(name)
    if path is not None:
        return path
    message = f"{name} is missing (Debian package {package}; tools/install-browser.sh)"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)
