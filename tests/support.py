"""Helpers shared by the tests: running replicas, tokens, stream readers, waiting."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from hub import MemoryBus, Replica, Settings, TokenVerifier, issue_token, load_catalog
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


@asynccontextmanager
async def running_replicas(
    count: int = 1,
    *,
    settings: Settings | None = None,
    catalog: Catalog | None = None,
    bus: MemoryBus | None = None,
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


def url(replica: Replica, path: str) -> str:
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
    replica: Replica,
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
    replica: Replica,
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


async def scrape(
    session: aiohttp.ClientSession, replica: Replica
) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    async with session.get(
        url(replica, "/metrics"),
        headers={"Authorization": f"Bearer {METRICS_BEARER}"},
    ) as response:
        assert response.status == 200
        text = await response.text()
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
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
