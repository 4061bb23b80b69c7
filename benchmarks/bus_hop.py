"""What the RabbitMQ hop costs: three replicas with one SSE client each, fed first
by the in-process bus and then by RabbitMQ, in the same run and the same process.

Two figures per bus:

- throughput: events published to replica A in POSTs of 100 (four publishers at
  once), and the rate at which the last of the three clients has them all;
- latency: one event at a time, from the POST to replica A to the frame read by
  each client, as percentiles over every (event, client) pair.

The RabbitMQ figures are printed as ratios against the in-process baseline, and
the latency the broker hop adds as the difference of the percentiles. Everything
runs in one event loop, so both buses pay for the same HTTP, dispatch and client
work; only the bus differs.

``RCM_BENCH_QUICK=1`` runs fewer events; ``RCM_REALTIME_BUS`` (an amqp:// URL) or
``amqp://guest:guest@127.0.0.1:5672/`` names the broker. Run it alone with
``python -m benchmarks.bus_hop``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import statistics
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import aiohttp

from hub import (
    Bus,
    MemoryBus,
    Replica,
    Settings,
    TokenVerifier,
    issue_token,
    load_catalog,
    settings_from_env,
)
from hub._rabbitmq import RabbitBus
from hub._serve import rabbit_options
from hub.core import ConfigError, RealtimeError

DEFAULT_AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"
REPLICAS = 3
POST_SIZE = 100
PUBLISHERS = 4
TENANT = "acme"


@dataclass(frozen=True, slots=True)
class Plan:
    events: int
    probes: int
    warmup: int = 200


@dataclass(slots=True)
class Figures:
    bus: str
    published_per_s: float
    delivered_per_s: float
    latency_ms: dict[str, float]
    probes: int
    events: int


@dataclass
class Client:
    """One SSE stream; records when each event id was first read."""

    arrivals: dict[str, float] = field(default_factory=dict)
    _tail: bytes = b""

    def feed(self, chunk: bytes, now: float) -> None:
        data = self._tail + chunk
        frames = data.split(b"\n\n")
        self._tail = frames.pop()
        for frame in frames:
            for line in frame.split(b"\n"):
                if line.startswith(b"id: "):
                    self.arrivals.setdefault(line[4:].decode(), now)
                    break


def say(text: str) -> None:
    print(f"bus_hop: {text}", file=sys.stderr, flush=True)


def plan_from_env() -> Plan:
    if os.environ.get("RCM_BENCH_QUICK", "") not in ("", "0"):
        return Plan(events=2000, probes=100)
    return Plan(events=10_000, probes=300)


def amqp_url() -> str:
    configured = os.environ.get("RCM_REALTIME_BUS", "")
    return configured if configured.startswith("amqp") else DEFAULT_AMQP_URL


@asynccontextmanager
async def deployment(
    bus: Bus, secret: str
) -> AsyncIterator[tuple[list[Replica], list[Client]]]:
    """Three replicas on ``bus`` and one all-scopes client on each."""
    settings = Settings(jwt_secret=secret, queue_size=1_000_000, shutdown_grace_s=1.0)
    catalog = load_catalog()
    verifier = TokenVerifier(secret=secret)
    replicas = [
        Replica(
            replica_id=f"bench-{n}",
            settings=settings,
            catalog=catalog,
            bus=bus,
            verifier=verifier,
        )
        for n in range(1, REPLICAS + 1)
    ]
    subscriber = issue_token(
        secret=secret,
        tenant_id=TENANT,
        scopes=["claims.read", "denials.read", "batches.read"],
    )
    clients = [Client() for _ in replicas]
    readers: list[asyncio.Task[None]] = []
    async with aiohttp.ClientSession(
        timeout=aiohttp.ClientTimeout(total=None)
    ) as session:
        try:
            for replica in replicas:
                await replica.start("127.0.0.1", 0)
            for replica, client in zip(replicas, clients, strict=True):
                response = await session.get(
                    f"http://127.0.0.1:{replica.port}/v1/realtime/stream",
                    headers={"Authorization": f"Bearer {subscriber}"},
                )
                response.raise_for_status()
                readers.append(asyncio.create_task(_read(response, client)))
            yield replicas, clients
        finally:
            for reader in readers:
                reader.cancel()
            for replica in replicas:
                await replica.close()


async def _read(response: aiohttp.ClientResponse, client: Client) -> None:
    loop = asyncio.get_running_loop()
    with contextlib.suppress(aiohttp.ClientError, asyncio.CancelledError):
        async for chunk in response.content.iter_any():
            client.feed(chunk, loop.time())
    response.close()


async def _arrived(
    clients: Sequence[Client], ids: Sequence[str], timeout: float
) -> float:
    """Wait until every client has every id; the loop time when the last came."""
    deadline = time.monotonic() + timeout
    while not all(all(i in c.arrivals for i in ids) for c in clients):
        if time.monotonic() > deadline:
            missing = [sum(i not in c.arrivals for i in ids) for c in clients]
            raise RealtimeError(
                f"clients still miss {missing} of {len(ids)} events after {timeout} s"
            )
        await asyncio.sleep(0.002)
    return max(c.arrivals[i] for c in clients for i in ids)


def _bodies(count: int, label: str) -> list[list[dict[str, Any]]]:
    bodies = []
    for start in range(0, count, POST_SIZE):
        size = min(POST_SIZE, count - start)
        bodies.append(
            [
                {
                    "type": "claim.submitted",
                    "tenantId": TENANT,
                    "payload": {"run": label, "n": start + n},
                }
                for n in range(size)
            ]
        )
    return bodies


async def measure(bus_name: str, bus: Bus, plan: Plan) -> Figures:
    secret = secrets.token_urlsafe(32)
    publisher = issue_token(secret=secret, tenant_id=None, scopes=["realtime.publish"])
    headers = {"Authorization": f"Bearer {publisher}"}
    loop = asyncio.get_running_loop()
    async with (
        deployment(bus, secret) as (replicas, clients),
        aiohttp.ClientSession() as session,
    ):
        ingest = f"http://127.0.0.1:{replicas[0].port}/v1/realtime/events"

        async def post(body: list[dict[str, Any]]) -> list[str]:
            async with session.post(ingest, json=body, headers=headers) as response:
                if response.status != 202:
                    raise RealtimeError(
                        f"ingest answered {response.status}: {await response.text()}"
                    )
                ids: list[str] = (await response.json())["ids"]
                return ids

        warm: list[str] = []
        for body in _bodies(plan.warmup, "warmup"):
            warm += await post(body)
        await _arrived(clients, warm, timeout=60)

        say(f"{bus_name}: {plan.probes} latency probes")
        samples: list[float] = []
        for n in range(plan.probes):
            sent = loop.time()
            [probe] = await post(
                [{"type": "claim.submitted", "tenantId": TENANT, "payload": {"p": n}}]
            )
            await _arrived(clients, [probe], timeout=30)
            samples += [(c.arrivals[probe] - sent) * 1000 for c in clients]

        say(f"{bus_name}: {plan.events} events through {REPLICAS} replicas")
        bodies = _bodies(plan.events, "throughput")
        queue: asyncio.Queue[list[dict[str, Any]]] = asyncio.Queue()
        for body in bodies:
            queue.put_nowait(body)
        published: list[str] = []

        async def publisher_task() -> None:
            while not queue.empty():
                published.extend(await post(queue.get_nowait()))

        started = loop.time()
        await asyncio.gather(*(publisher_task() for _ in range(PUBLISHERS)))
        publish_done = loop.time()
        last = await _arrived(clients, published, timeout=300)

    quantiles = statistics.quantiles(samples, n=100, method="inclusive")
    return Figures(
        bus=bus_name,
        published_per_s=len(published) / (publish_done - started),
        delivered_per_s=len(published) / (last - started),
        latency_ms={
            "p50": statistics.median(samples),
            "p95": quantiles[94],
            "p99": quantiles[98],
        },
        probes=plan.probes,
        events=len(published),
    )


async def _cleanup(url: str, exchange: str, queues: Sequence[str]) -> None:
    import aio_pika

    connection = await aio_pika.connect(url, timeout=10)
    async with connection:
        channel = await connection.channel()
        for queue in queues:
            await channel.queue_delete(queue)
        await channel.exchange_delete(exchange)


async def run(plan: Plan) -> tuple[Figures, Figures | None, str | None]:
    """The in-process baseline, then RabbitMQ (None, with the reason, when the
    broker cannot be used)."""
    say(f"in-process bus: {plan.events} events, {plan.probes} probes")
    baseline = await measure("in-process", MemoryBus(), plan)

    url = amqp_url()
    run_tag = uuid.uuid4().hex[:10]
    # The RCM_REALTIME_BUS_* settings apply (say, RCM_REALTIME_BUS_PERSISTENT=0),
    # with names of this run's own.
    options = replace(
        rabbit_options(settings_from_env()),
        exchange=f"rcm.bench.{run_tag}",
        queue_prefix=f"rcm.bench.{run_tag}.",
        queue_expires_s=600,
    )
    bus = RabbitBus(url, catalog=load_catalog(), options=options)
    try:
        await bus.start()
        if not bus.connected:
            return baseline, None, f"RabbitMQ at {bus.where}: {bus.down_reason}"
        say(
            f"RabbitMQ at {bus.where}, "
            f"{'persistent' if options.persistent else 'transient'} messages"
        )
        broker = await measure("rabbitmq", bus, plan)
    except (ConfigError, OSError) as error:
        return baseline, None, str(error)
    finally:
        await bus.close()
        with contextlib.suppress(Exception):
            await _cleanup(
                url,
                options.exchange,
                [options.queue_name(f"bench-{n}") for n in range(1, REPLICAS + 1)],
            )
    return baseline, broker, None


def report(baseline: Figures, broker: Figures | None, skipped: str | None) -> str:
    lines = [
        f"bus hop: {REPLICAS} replicas, one SSE client each, "
        f"{baseline.events} events in POSTs of {POST_SIZE} by {PUBLISHERS} "
        f"publishers, {baseline.probes} latency probes",
        f"{'':24}{'in-process':>12}{'rabbitmq':>12}{'ratio':>9}{'added':>11}",
    ]

    def row(name: str, base: float, other: float | None, unit: str) -> str:
        if other is None:
            return f"{name:24}{base:12.1f}{'-':>12}{'-':>9}{'-':>11}"
        ratio = other / base if base else float("inf")
        added = f"{other - base:+.2f} {unit}" if unit else ""
        return f"{name:24}{base:12.1f}{other:12.1f}{ratio:8.2f}x{added:>11}"

    lines.append(
        row(
            "published events/s",
            baseline.published_per_s,
            None if broker is None else broker.published_per_s,
            "",
        )
    )
    lines.append(
        row(
            "delivered events/s",
            baseline.delivered_per_s,
            None if broker is None else broker.delivered_per_s,
            "",
        )
    )
    for key in ("p50", "p95", "p99"):
        lines.append(
            row(
                f"latency {key} (ms)",
                baseline.latency_ms[key],
                None if broker is None else broker.latency_ms[key],
                "ms",
            )
        )
    if broker is None:
        lines.append(f"RabbitMQ not measured: {skipped}")
    return "\n".join(lines)


def _record(baseline: Figures, broker: Figures | None, skipped: str | None) -> None:
    """Hand the figures to the benchmark suite's results folder when it has one."""
    try:
        from benchmarks import _harness  # type: ignore[attr-defined]
    except ImportError:
        return
    writer: Callable[[str, dict[str, Any]], Any] | None = getattr(
        _harness, "write_result", None
    )
    if writer is None:
        return
    writer(
        "bus_hop",
        {
            "in_process": asdict(baseline),
            "rabbitmq": None if broker is None else asdict(broker),
            "rabbitmq_skipped": skipped,
        },
    )


def main() -> None:
    plan = plan_from_env()
    baseline, broker, skipped = asyncio.run(run(plan))
    print(report(baseline, broker, skipped), flush=True)
    _record(baseline, broker, skipped)


if __name__ == "__main__":
    main()
