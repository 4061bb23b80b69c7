"""Fan-out through the real RabbitMQ on 127.0.0.1:5672: the bus in-process, then
deployments of three ``rcm-realtime serve`` processes."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import aio_pika
import aiohttp
import pytest

from hub import load_catalog
from hub._rabbitmq import RabbitBus, RabbitOptions
from hub.core import ConfigError, Envelope

from .hub_processes import (
    AmqpNames,
    HubProcess,
    amqp_names,
    broker_queue_depth,
    free_port,
    hub_processes,
)
from .support import (
    PUBLISHER,
    Reachable,
    StreamReader,
    assert_ledger,
    dispatched,
    event_ids,
    open_stream,
    publish,
    running_replicas,
    sample,
    scrape,
    token,
    url,
    wait_until,
    wait_until_async,
)

pytestmark = pytest.mark.rabbitmq

BROKER_RESTART_S = 90.0


def claims(count: int, start: int = 0) -> list[dict[str, Any]]:
    return [
        {"type": "claim.submitted", "tenantId": "acme", "payload": {"n": n}}
        for n in range(start, start + count)
    ]


def envelope(event_id: str) -> Envelope:
    return Envelope(
        id=event_id,
        type="claim.submitted",
        tenant_id="acme",
        occurred_at="2026-12-03T10:00:00.000Z",
        severity="info",
        payload={},
    )


def bus_options(names: AmqpNames, **changes: Any) -> RabbitOptions:
    options = RabbitOptions(
        exchange=names.exchange,
        queue_prefix=names.queue_prefix,
        queue_expires_s=600,
        backlog_refresh_s=0.2,
        reconnect_max_s=1.0,
    )
    return replace(options, **changes)


@asynccontextmanager
async def rabbit_bus(
    amqp_url: str, names: AmqpNames, replica_ids: Sequence[str], **changes: Any
) -> AsyncIterator[RabbitBus]:
    for replica_id in replica_ids:
        names.queue(replica_id)
    bus = RabbitBus(
        amqp_url, catalog=load_catalog(), options=bus_options(names, **changes)
    )
    try:
        yield bus
    finally:
        await bus.close()


@asynccontextmanager
async def streams(
    session: aiohttp.ClientSession, hubs: Sequence[Reachable]
) -> AsyncIterator[list[StreamReader]]:
    async with AsyncExitStack() as stack:
        yield [
            await stack.enter_async_context(open_stream(session, hub, token()))
            for hub in hubs
        ]


async def mark(
    session: aiohttp.ClientSession,
    through: Reachable,
    readers: Sequence[StreamReader],
    timeout: float = 15.0,
) -> str:
    """Publish a marker and wait until every reader has it: each queue is FIFO
    with one consumer, so the readers then hold everything published before."""
    [marker] = await publish(
        session, through, {"type": "denial.created", "tenantId": "acme", "payload": {}}
    )
    for reader in readers:
        await wait_until(
            lambda reader=reader: marker in event_ids(reader),  # type: ignore[misc]
            timeout=timeout,
            what=f"marker {marker}",
        )
    return marker


async def backlog_of(session: aiohttp.ClientSession, hub: Reachable) -> float:
    return sample(await scrape(session, hub), "rcm_realtime_bus_backlog")


# -- the bus in one process --------------------------------------------------------


async def test_replicas_on_rabbitmq_deliver_each_event_once_with_the_same_id(
    session: aiohttp.ClientSession, rabbitmq_url: str
) -> None:
    """Three replicas on one RabbitMQ bus each deliver every event exactly once,
    wherever it was published, and count it dispatched once."""
    async with (
        amqp_names(rabbitmq_url) as names,
        rabbit_bus(rabbitmq_url, names, ["r1", "r2", "r3"]) as bus,
        running_replicas(3, bus=bus) as replicas,
        streams(session, replicas) as readers,
    ):
        published: list[str] = []
        for n, replica in enumerate(replicas * 3):
            published += await publish(session, replica, claims(7, start=10 * n))
        published.append(await mark(session, replicas[0], readers))
        for replica, reader in zip(replicas, readers, strict=True):
            assert event_ids(reader) == published
            samples = await scrape(session, replica)
            assert dispatched(samples) == len(published)
            assert_ledger(samples)


async def test_a_paused_replica_backlog_is_the_brokers_count_plus_its_prefetch(
    session: aiohttp.ClientSession, rabbitmq_url: str
) -> None:
    """A paused consumer holds its prefetch; the rest waits in its queue, and the
    backlog gauge shows both; resumed, it dispatches them all."""
    async with (
        amqp_names(rabbitmq_url) as names,
        rabbit_bus(rabbitmq_url, names, ["r1", "r2"], prefetch=10) as bus,
        running_replicas(2, bus=bus) as replicas,
        streams(session, replicas) as readers,
    ):
        bus.pause("r2")
        published = await publish(session, replicas[0], claims(50))
        await wait_until_async(
            lambda: _equals(backlog_of(session, replicas[1]), 50),
            timeout=10,
            what="r2's backlog to reach 50",
        )
        assert await broker_queue_depth(rabbitmq_url, names.queue("r2")) == 40
        assert dispatched(await scrape(session, replicas[1])) == 0
        assert await backlog_of(session, replicas[0]) == 0

        bus.resume("r2")
        published.append(await mark(session, replicas[0], readers))
        assert event_ids(readers[1]) == published
        await wait_until_async(
            lambda: _equals(backlog_of(session, replicas[1]), 0),
            timeout=10,
            what="r2's backlog to drain",
        )


async def _equals(value: Any, expected: float) -> bool:
    return bool(await value == expected)


async def test_a_dropped_connection_neither_loses_nor_repeats_an_event(
    session: aiohttp.ClientSession, rabbitmq_url: str
) -> None:
    """When the connection drops while a replica holds unacknowledged events, the
    broker redelivers them after the reconnection; the replica skips the copies,
    so its stream still gets every event exactly once."""
    async with (
        amqp_names(rabbitmq_url) as names,
        rabbit_bus(rabbitmq_url, names, ["r1"], prefetch=20) as bus,
        running_replicas(1, bus=bus) as [replica],
        streams(session, [replica]) as [reader],
    ):
        subscription = bus.subscription("r1")
        assert subscription is not None
        bus.pause("r1")
        published = await publish(session, replica, claims(60))
        await wait_until(lambda: len(subscription._queue) == 20, what="a full prefetch")

        await bus.interrupt()
        await wait_until(lambda: not subscription.live, what="the loss to be seen")
        # Live and counted are set at slightly different moments of a reconnect.
        await wait_until(
            lambda: subscription.live and bus.connects == 2,
            timeout=15,
            what="reconnection",
        )
        bus.resume("r1")
        published.append(await mark(session, replica, [reader]))
        assert event_ids(reader) == published
        assert subscription.duplicates == 20
        assert dispatched(await scrape(session, replica)) == len(published)


async def test_a_full_queue_drops_its_oldest_events(rabbitmq_url: str) -> None:
    """A replica's queue keeps at most max-length events, dropping the oldest
    (drop-head), so a replica away for long resumes with the newest."""
    async with (
        amqp_names(rabbitmq_url) as names,
        rabbit_bus(rabbitmq_url, names, ["r1"], max_length=5) as bus,
    ):
        away = await bus.subscribe("r1")
        await away.close()
        await bus.publish([envelope(f"e{n}") for n in range(20)])
        assert await broker_queue_depth(rabbitmq_url, names.queue("r1")) == 5

        back = await bus.subscribe("r1")
        received: list[str] = []
        async for batch in back.batches():
            received += [e.id for e in batch]
            if len(received) >= 5:
                break
        assert received == [f"e{n}" for n in range(15, 20)]


async def test_events_waiting_longer_than_the_ttl_expire(rabbitmq_url: str) -> None:
    """An event that waits in a replica's queue longer than the TTL is gone."""
    async with (
        amqp_names(rabbitmq_url) as names,
        rabbit_bus(rabbitmq_url, names, ["r1"], message_ttl_s=0.2) as bus,
    ):
        away = await bus.subscribe("r1")
        await away.close()
        await bus.publish([envelope("stale-1"), envelope("stale-2")])
        await wait_until_async(
            lambda: _equals(broker_queue_depth(rabbitmq_url, names.queue("r1")), 0),
            timeout=10,
            what="the stale events to expire",
        )
        back = await bus.subscribe("r1")
        await bus.publish([envelope("fresh")])
        async for batch in back.batches():
            assert [e.id for e in batch] == ["fresh"]
            break


async def test_a_queue_declared_with_other_arguments_is_refused_clearly(
    rabbitmq_url: str,
) -> None:
    """Subscribing where the replica's queue exists with another max length
    fails with a ConfigError that names the queue and the remedy."""
    async with amqp_names(rabbitmq_url) as names:
        async with rabbit_bus(rabbitmq_url, names, ["r1"], max_length=10) as bus:
            await (await bus.subscribe("r1")).close()
        async with rabbit_bus(rabbitmq_url, names, ["r1"], max_length=20) as bus:
            with pytest.raises(ConfigError, match="other arguments") as raised:
                await bus.subscribe("r1")
            assert names.queue("r1") in str(raised.value)


async def test_wrong_credentials_are_refused_clearly(rabbitmq_url: str) -> None:
    """A bus URL with a wrong password fails at once with a ConfigError, without
    echoing the password."""
    names = AmqpNames.unique()
    bad_url = rabbitmq_url.replace("guest:guest@", "guest:wrong-password@")
    bus = RabbitBus(bad_url, catalog=load_catalog(), options=bus_options(names))
    try:
        with pytest.raises(ConfigError, match="refused the user name or password"):
            await bus.subscribe("r1")
    except ConfigError as error:
        assert "wrong-password" not in str(error)
    finally:
        await bus.close()


def test_serve_with_wrong_credentials_exits_with_a_message(rabbitmq_url: str) -> None:
    """``serve --bus`` with a refused login prints one line and exits with 2."""
    bad_url = rabbitmq_url.replace("guest:guest@", "guest:wrong-password@")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "hub.cli",
            "serve",
            "--bus",
            bad_url,
            "--replica-id",
            "refused",
            "--port",
            str(free_port()),
        ],
        env={"RCM_REALTIME_JWT_SECRET": "x" * 40, "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "refused the user name or password" in result.stderr
    assert "Traceback" not in result.stderr
    assert "wrong-password" not in result.stderr


# -- deployments of hub processes ---------------------------------------------------


@asynccontextmanager
async def deployment(
    rabbitmq_url: str, tmp_path: Path, replica_ids: Sequence[str] = ("a", "b", "c")
) -> AsyncIterator[list[HubProcess]]:
    async with amqp_names(rabbitmq_url) as names:
        for replica_id in replica_ids:
            names.queue(replica_id)
        environment = {
            **names.environment(),
            "RCM_REALTIME_FAULT_INJECTION": "1",
            "RCM_REALTIME_BUS_RECONNECT_MAX_S": "1",
            "RCM_REALTIME_BATCH_QUIET_WINDOW_MS": "300",
        }
        async with hub_processes(
            replica_ids, bus_url=rabbitmq_url, log_dir=tmp_path, environment=environment
        ) as hubs:
            yield hubs


async def test_events_published_to_one_hub_reach_streams_on_every_hub(
    session: aiohttp.ClientSession, rabbitmq_url: str, tmp_path: Path
) -> None:
    """Three hub processes: events, a batch and a batch failure published to hub A
    reach the streams on A, B and C once each, with the same ids, and
    batch.completed carries one id everywhere."""
    async with (
        deployment(rabbitmq_url, tmp_path) as hubs,
        streams(session, hubs) as readers,
    ):
        a = hubs[0]
        published = await publish(session, a, claims(20))
        batch = {"tradingPartnerId": "availity", "isa13": "000000777"}
        published += await publish(
            session,
            a,
            [
                {
                    "type": "claim.accepted",
                    "tenantId": "acme",
                    "payload": {},
                    "batch": batch,
                }
                for _ in range(3)
            ],
        )
        async with session.post(
            url(a, "/v1/realtime/batches/failures"),
            json={"tenantId": "acme", "tradingPartnerId": "availity", "reason": "x"},
            headers={"Authorization": f"Bearer {PUBLISHER}"},
        ) as response:
            assert response.status == 202
            published += (await response.json())["ids"]
        published.append(await mark(session, a, readers))

        for hub, reader in zip(hubs, readers, strict=True):
            assert [i for i in event_ids(reader) if not i.startswith("batch-")] == (
                published
            ), hub.replica_id
            assert len(event_ids(reader, "batch.failed")) == 1
            samples = await scrape(session, hub)
            assert dispatched(samples) == len(published)
            assert_ledger(samples)
        for reader in readers:
            await wait_until(
                lambda reader=reader: bool(reader.of_type("batch.completed")),  # type: ignore[misc]
                timeout=10,
                what="batch.completed",
            )
        completions = [reader.of_type("batch.completed") for reader in readers]
        assert [len(c) for c in completions] == [1, 1, 1]
        assert len({c[0].last_event_id for c in completions}) == 1
        assert json.loads(completions[0][0].data)["payload"]["eventCount"] == 3


async def test_a_stopped_consumer_grows_its_backlog_and_its_clients_miss_its_events(
    session: aiohttp.ClientSession, rabbitmq_url: str, tmp_path: Path
) -> None:
    """With hub C's consumer stopped, C's backlog grows with each event while its
    dispatched count stays put; C's clients miss exactly the events published
    meanwhile and A's and B's miss none; resumed, C catches up."""
    async with (
        deployment(rabbitmq_url, tmp_path) as hubs,
        streams(session, hubs) as readers,
    ):
        a, b, c = hubs
        before = await publish(session, a, claims(10))
        before.append(await mark(session, a, readers))

        status = await c.set_faults(session, {"paused": True})
        assert status["faults"]["paused"] is True
        during = await publish(session, a, claims(15, start=100))
        await wait_until_async(
            lambda: _equals(backlog_of(session, c), 15),
            timeout=10,
            what="C's backlog to reach 15",
        )
        during += await publish(session, b, claims(15, start=200))
        await wait_until_async(
            lambda: _equals(backlog_of(session, c), 30),
            timeout=10,
            what="C's backlog to grow to 30",
        )
        during.append(await mark(session, a, readers[:2]))

        for hub, reader in zip((a, b), readers[:2], strict=True):
            assert event_ids(reader) == before + during
            assert dispatched(await scrape(session, hub)) == len(before + during)
            assert await backlog_of(session, hub) == 0
        assert event_ids(readers[2]) == before
        samples = await scrape(session, c)
        assert dispatched(samples) == len(before)
        assert sample(samples, "rcm_realtime_bus_backlog") == len(during)

        await c.set_faults(session, {})
        await wait_until(
            lambda: event_ids(readers[2]) == before + during,
            timeout=15,
            what="C to catch up",
        )
        await wait_until_async(
            lambda: _equals(backlog_of(session, c), 0),
            timeout=10,
            what="C's backlog to drain",
        )


async def rabbitmqctl(*args: str) -> None:
    process = await asyncio.create_subprocess_exec(
        "rabbitmqctl",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(process.communicate(), BROKER_RESTART_S)
    assert process.returncode == 0, output.decode(errors="replace")


async def test_every_hub_survives_a_broker_restart(
    session: aiohttp.ClientSession, rabbitmq_url: str, tmp_path: Path
) -> None:
    """When the broker stops, every hub turns unready, refuses ingest with 503 and
    logs why once; when it is back, every hub reconnects by itself and its open
    streams receive what is published next, once."""
    async with (
        deployment(rabbitmq_url, tmp_path) as hubs,
        streams(session, hubs) as readers,
    ):
        a, b, _ = hubs
        before = await publish(session, a, claims(5))
        before.append(await mark(session, a, readers))

        try:
            await rabbitmqctl("stop_app")
            for hub in hubs:
                await wait_until_async(
                    lambda hub=hub: _equals(hub.ready(session), 503),  # type: ignore[misc]
                    timeout=30,
                    what=f"{hub.replica_id} to turn unready",
                )
            async with session.post(
                url(a, "/v1/realtime/events"),
                json=claims(1, start=999),
                headers={"Authorization": f"Bearer {PUBLISHER}"},
            ) as response:
                assert response.status == 503
                assert (await response.json())["error"] == "bus_unavailable"
        finally:
            await rabbitmqctl("start_app")

        for hub in hubs:
            await wait_until_async(
                lambda hub=hub: _equals(hub.ready(session), 200),  # type: ignore[misc]
                timeout=BROKER_RESTART_S,
                what=f"{hub.replica_id} to reconnect",
            )
        after = await publish(session, b, claims(5, start=50))
        after.append(await mark(session, b, readers, timeout=30))
        for hub, reader in zip(hubs, readers, strict=True):
            assert event_ids(reader) == before + after, hub.replica_id
            assert dispatched(await scrape(session, hub)) == len(before + after)
            assert len(hub.log_lines("bus_disconnected")) == 1, hub.log()
            assert len(hub.log_lines("bus_reconnected")) == 1, hub.log()
            assert reader.ended is False


async def test_a_stopped_hub_leaves_its_queue_to_collect_events(
    rabbitmq_url: str, tmp_path: Path
) -> None:
    """A hub stopped with SIGTERM exits 0 and its queue stays, without a consumer,
    collecting what is published until the replica returns."""
    async with amqp_names(rabbitmq_url) as names:
        queue = names.queue("solo")
        async with hub_processes(
            ["solo"],
            bus_url=rabbitmq_url,
            log_dir=tmp_path,
            environment=names.environment(),
        ) as [hub]:
            pass
        assert hub.process.returncode == 0
        assert len(hub.log_lines("bus_connected")) == 1
        async with rabbit_bus(rabbitmq_url, names, []) as publisher:
            await publisher.publish([envelope("while-away")])
        connection = await aio_pika.connect(rabbitmq_url)
        async with connection:
            channel = await connection.channel()
            declared = await channel.declare_queue(queue, passive=True)
            assert declared.declaration_result.consumer_count == 0
            assert declared.declaration_result.message_count == 1
