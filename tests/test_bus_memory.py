"""Fan-out through the in-process bus: exactly once per replica, and each fault's
effect visible in the streams and in the metrics."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import aiohttp
import pytest

from hub import MemoryBus, Replica
from hub._bus import RECENT_IDS
from hub.core import Envelope, FaultKind, Latency

from .support import (
    ADMIN,
    PUBLISHER,
    StreamReader,
    assert_ledger,
    dispatched,
    event_ids,
    hub_settings,
    metrics_now,
    open_stream,
    publish,
    running_replicas,
    sample,
    scrape,
    token,
    url,
    wait_until,
)


def claims(count: int, start: int = 0) -> list[dict[str, Any]]:
    return [
        {"type": "claim.submitted", "tenantId": "acme", "payload": {"n": n}}
        for n in range(start, start + count)
    ]


@asynccontextmanager
async def streams(
    session: aiohttp.ClientSession, replicas: Sequence[Replica]
) -> AsyncIterator[list[StreamReader]]:
    """One acme stream with every read scope on each replica."""
    async with AsyncExitStack() as stack:
        yield [
            await stack.enter_async_context(open_stream(session, replica, token()))
            for replica in replicas
        ]


async def quiesce(replica: Replica, reader: StreamReader) -> None:
    """Wait until the replica has taken everything its subscription may hand out
    and the reader has every frame the replica wrote to it.

    On the in-process bus dispatch follows the hand-out synchronously, so after
    this the dispatched counts and the stream are final for what was published.
    """
    subscription = replica.subscription
    assert subscription is not None

    def settled() -> bool:
        if subscription.backlog() != 0:
            return False
        subscribers = replica.core.subscribers()
        written = sum(s.delivered for s in subscribers)
        return all(not s.queue for s in subscribers) and written == len(
            event_ids(reader)
        )

    await wait_until(settled, what=f"{replica.replica_id} to settle")


async def test_every_replica_delivers_each_event_once_with_the_same_id(
    session: aiohttp.ClientSession,
) -> None:
    """Events published through any replica reach every replica's stream exactly
    once, with the same ids, and each replica counts each as dispatched once."""
    async with running_replicas(3) as replicas, streams(session, replicas) as readers:
        published: list[str] = []
        for round_ in range(4):
            for replica in replicas:
                published += await publish(
                    session, replica, claims(5, start=round_ * 100)
                )
        for replica, reader in zip(replicas, readers, strict=True):
            await quiesce(replica, reader)
            assert event_ids(reader) == published
            samples = await scrape(session, replica)
            assert dispatched(samples) == len(published)
            assert sample(samples, "rcm_realtime_bus_backlog") == 0
            assert_ledger(samples)
        assert len(set(published)) == len(published) == 60


async def test_an_event_published_twice_is_dispatched_once_per_replica(
    session: aiohttp.ClientSession,
) -> None:
    """A publisher's retry with the same id does not reach a stream twice."""
    async with running_replicas(2) as replicas, streams(session, replicas) as readers:
        body = {"id": "retry-1", "type": "denial.created", "tenantId": "acme"}
        body["payload"] = {}
        await publish(session, replicas[0], body)
        await publish(session, replicas[1], body)
        await publish(session, replicas[0], claims(1))
        for replica, reader in zip(replicas, readers, strict=True):
            await quiesce(replica, reader)
            assert event_ids(reader).count("retry-1") == 1
            assert dispatched(metrics_now(replica)) == 2
            assert replica.subscription is not None
            assert getattr(replica.subscription, "duplicates", None) == 1


async def test_batch_completed_has_the_same_id_on_every_replica(
    session: aiohttp.ClientSession,
) -> None:
    """Each replica synthesizes batch.completed for a quiet bucket, with one id."""
    settings = hub_settings(batch_quiet_window_ms=150)
    async with (
        running_replicas(3, settings=settings) as replicas,
        streams(session, replicas) as readers,
    ):
        batch = {"tradingPartnerId": "availity", "isa13": "000000123"}
        for n, replica in enumerate(replicas):
            event = {"type": "claim.accepted", "tenantId": "acme", "payload": {}}
            await publish(session, replica, {**event, "batch": batch, "id": f"b{n}"})
        for reader in readers:
            await reader.wait_for_events(5)
        completions = [reader.of_type("batch.completed") for reader in readers]
        assert [len(c) for c in completions] == [1, 1, 1]
        assert len({c[0].last_event_id for c in completions}) == 1
        payloads = [json.loads(c[0].data)["payload"] for c in completions]
        assert all(p["eventCount"] == 3 for p in payloads)


async def test_batch_failed_reaches_every_replica(
    session: aiohttp.ClientSession,
) -> None:
    """A failure recorded on one replica is delivered by all, with the same id."""
    async with running_replicas(3) as replicas, streams(session, replicas) as readers:
        async with session.post(
            url(replicas[1], "/v1/realtime/batches/failures"),
            json={"tenantId": "acme", "tradingPartnerId": "availity", "reason": "999"},
            headers={"Authorization": f"Bearer {PUBLISHER}"},
        ) as response:
            assert response.status == 202
            [failure_id] = (await response.json())["ids"]
        for replica, reader in zip(replicas, readers, strict=True):
            await quiesce(replica, reader)
            assert event_ids(reader, "batch.failed") == [failure_id]


@pytest.mark.parametrize("kind", [FaultKind.DROP, FaultKind.CUT], ids=["drop", "cut"])
async def test_a_replica_misses_exactly_the_events_its_fault_took(
    session: aiohttp.ClientSession, kind: FaultKind
) -> None:
    """Under drop or cut, the faulty replica's stream lacks exactly the ids the
    fault recorded, its dispatched count is lower by as many, and the other
    replicas miss nothing."""
    bus = MemoryBus(seed=7)
    async with (
        running_replicas(3, bus=bus) as replicas,
        streams(session, replicas) as readers,
    ):
        before = await publish(session, replicas[0], claims(10))
        if kind is FaultKind.DROP:
            bus.set_drop("r2", 0.3)
        else:
            bus.cut("r2")
        during: list[str] = []
        for n, replica in enumerate(replicas * 10):
            during += await publish(session, replica, claims(3, start=100 + 3 * n))
        bus.clear_faults("r2")
        after = await publish(session, replicas[2], claims(10, start=1000))
        published = before + during + after

        taken = bus.taken_ids("r2", kind)
        assert 0 < len(taken) <= len(during)
        assert set(taken) <= set(during)
        stats = bus.fault_statistics("r2")
        assert stats.taken == len(taken)
        for replica, reader in zip(replicas, readers, strict=True):
            await quiesce(replica, reader)
            expected = [i for i in published if i not in set(taken)]
            if replica.replica_id != "r2":
                expected = published
            assert event_ids(reader) == expected
            samples = await scrape(session, replica)
            assert dispatched(samples) == len(expected)
            assert_ledger(samples)


async def test_a_cut_replica_is_not_ready_until_restored(
    session: aiohttp.ClientSession,
) -> None:
    """Cutting a replica off makes its /readyz answer 503; restoring, 200."""
    bus = MemoryBus()
    async with running_replicas(2, bus=bus) as replicas:
        bus.cut("r2")
        async with session.get(url(replicas[1], "/readyz")) as response:
            assert response.status == 503
            assert "not live" in (await response.json())["message"]
        async with session.get(url(replicas[0], "/readyz")) as response:
            assert response.status == 200
        bus.restore("r2")
        async with session.get(url(replicas[1], "/readyz")) as response:
            assert response.status == 200


async def test_a_paused_replica_holds_its_events_in_the_backlog(
    session: aiohttp.ClientSession,
) -> None:
    """While paused, a replica's backlog grows by each event, its dispatched count
    stays put and its streams miss exactly those events; resumed, it delivers
    them all, once."""
    bus = MemoryBus()
    async with (
        running_replicas(3, bus=bus) as replicas,
        streams(session, replicas) as readers,
    ):
        before = await publish(session, replicas[0], claims(5))
        await quiesce(replicas[2], readers[2])
        bus.pause("r3")
        during: list[str] = []
        for n in range(4):
            during += await publish(session, replicas[n % 2], claims(5, start=10 * n))
            samples = await scrape(session, replicas[2])
            assert sample(samples, "rcm_realtime_bus_backlog") == len(during)
            assert dispatched(samples) == len(before)
        for replica, reader in zip(replicas[:2], readers[:2], strict=True):
            await quiesce(replica, reader)
            assert event_ids(reader) == before + during
            assert dispatched(await scrape(session, replica)) == len(before + during)
        assert event_ids(readers[2]) == before

        bus.resume("r3")
        await quiesce(replicas[2], readers[2])
        assert event_ids(readers[2]) == before + during
        samples = await scrape(session, replicas[2])
        assert sample(samples, "rcm_realtime_bus_backlog") == 0
        assert dispatched(samples) == len(before + during)


async def test_latency_holds_each_event_for_its_delay(
    session: aiohttp.ClientSession,
) -> None:
    """With a fixed latency, events wait in the backlog for at least the delay,
    then arrive in order, once; other replicas are not delayed."""
    bus = MemoryBus()
    delay = 0.3
    async with (
        running_replicas(2, bus=bus) as replicas,
        streams(session, replicas) as readers,
    ):
        bus.set_latency("r2", delay)
        envelopes = [
            Envelope(
                id=f"slow-{n}",
                type="claim.submitted",
                tenant_id="acme",
                occurred_at="2026-12-03T10:00:00.000Z",
                severity="info",
                payload={},
            )
            for n in range(8)
        ]
        loop = asyncio.get_running_loop()
        published_at = loop.time()
        await bus.publish(envelopes)
        latent = metrics_now(replicas[1])
        assert sample(latent, "rcm_realtime_bus_backlog") == len(envelopes)
        assert dispatched(latent) == 0

        await quiesce(replicas[0], readers[0])
        await wait_until(lambda: len(event_ids(readers[1])) == len(envelopes))
        assert loop.time() - published_at >= delay
        assert event_ids(readers[1]) == [e.id for e in envelopes]
        assert event_ids(readers[0]) == [e.id for e in envelopes]
        assert dispatched(metrics_now(replicas[1])) == len(envelopes)


async def test_random_latency_delivers_everything_in_order(
    session: aiohttp.ClientSession,
) -> None:
    """A drawn latency (exponential, seeded) reorders nothing and loses nothing."""
    bus = MemoryBus(seed=1)
    async with (
        running_replicas(2, bus=bus) as replicas,
        streams(session, replicas) as readers,
    ):
        bus.set_latency("r2", Latency.parse("exp:20ms"))
        published: list[str] = []
        for n in range(6):
            published += await publish(session, replicas[n % 2], claims(4, 10 * n))
        for replica, reader in zip(replicas, readers, strict=True):
            await quiesce(replica, reader)
            assert event_ids(reader) == published


async def test_faults_set_before_a_replica_subscribes_apply_from_its_start(
    session: aiohttp.ClientSession,
) -> None:
    """A fault set on the bus for a replica id holds once that replica starts."""
    bus = MemoryBus()
    bus.pause("r1")
    async with running_replicas(1, bus=bus) as [replica]:
        await publish(session, replica, claims(3))
        assert sample(metrics_now(replica), "rcm_realtime_bus_backlog") == 3


async def test_fault_endpoint_is_refused_unless_fault_injection_is_on(
    session: aiohttp.ClientSession,
) -> None:
    """PUT on the faults endpoint answers 403 with a reason on a normal replica."""
    async with (
        running_replicas(1) as [replica],
        session.put(
            url(replica, "/v1/realtime/admin/bus/faults"),
            json={"paused": True},
            headers={"Authorization": f"Bearer {ADMIN}"},
        ) as response,
    ):
        assert response.status == 403
        body = await response.json()
        assert body["error"] == "fault_injection_disabled"
        assert "RCM_REALTIME_FAULT_INJECTION" in body["message"]


async def test_fault_endpoint_pauses_the_replica_it_is_sent_to(
    session: aiohttp.ClientSession,
) -> None:
    """With fault injection on, an admin pauses one replica over HTTP and reads
    its backlog and tallies back from the bus status endpoint."""
    settings = hub_settings(fault_injection=True)
    headers = {"Authorization": f"Bearer {ADMIN}"}
    async with running_replicas(2, settings=settings) as replicas:
        faults_url = url(replicas[1], "/v1/realtime/admin/bus/faults")
        async with session.put(
            faults_url, json={"paused": True}, headers=headers
        ) as response:
            assert response.status == 200
            assert (await response.json())["faults"]["paused"] is True
        await publish(session, replicas[0], claims(4))
        async with session.get(
            url(replicas[1], "/v1/realtime/admin/bus"), headers=headers
        ) as response:
            status = await response.json()
        assert status["backlog"] == 4
        assert status["live"] is True
        assert status["taken"] == {"drop": 0, "cut": 0}
        assert sample(metrics_now(replicas[0]), "rcm_realtime_bus_backlog") == 0


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"drop": 2}, "fraction"),
        ({"latency": "soon"}, "not a duration"),
        ([], "object"),
    ],
    ids=["drop-out-of-range", "latency-word", "not-object"],
)
async def test_fault_endpoint_refuses_a_bad_body(
    session: aiohttp.ClientSession, body: Any, fragment: str
) -> None:
    """Bad fault JSON answers 400 invalid_faults with the reason."""
    settings = hub_settings(fault_injection=True)
    async with (
        running_replicas(1, settings=settings) as [replica],
        session.put(
            url(replica, "/v1/realtime/admin/bus/faults"),
            json=body,
            headers={"Authorization": f"Bearer {ADMIN}"},
        ) as response,
    ):
        assert response.status == 400
        error = await response.json()
        assert error["error"] == "invalid_faults"
        assert fragment in error["message"]


async def test_fault_endpoint_needs_the_admin_role(
    session: aiohttp.ClientSession,
) -> None:
    """A subscriber token cannot set faults, even with fault injection on."""
    settings = hub_settings(fault_injection=True)
    async with running_replicas(1, settings=settings) as [replica]:
        async with session.put(
            url(replica, "/v1/realtime/admin/bus/faults"),
            json={"cut": True},
            headers={"Authorization": f"Bearer {token()}"},
        ) as response:
            assert response.status == 403
        assert replica.subscription is not None
        assert replica.subscription.live


def test_per_replica_tallies_count_only_that_replica() -> None:
    """Each replica's tally counts what its own faults took, nothing else."""

    async def run() -> Counter[str]:
        bus = MemoryBus(seed=2)
        for replica_id in ("a", "b"):
            await bus.subscribe(replica_id)
        bus.set_drop("a", 1.0)
        bus.cut("b")
        await bus.publish(
            [
                Envelope(f"e{n}", "claim.submitted", "acme", "x", "info", {})
                for n in range(5)
            ]
        )
        counts = Counter(
            {
                "a-drop": bus.fault_statistics("a").dropped,
                "a-cut": bus.fault_statistics("a").cut,
                "b-drop": bus.fault_statistics("b").dropped,
                "b-cut": bus.fault_statistics("b").cut,
            }
        )
        await bus.close()
        return counts

    assert asyncio.run(run()) == Counter({"a-drop": 5, "b-cut": 5})


async def test_duplicates_are_caught_across_the_memory_window_rotation() -> None:
    """Ids handed out just before the remembered-ids window rotates are still
    recognised when they come again just after it."""
    bus = MemoryBus()
    subscription = await bus.subscribe("r1")
    count = RECENT_IDS + 10
    envelopes = [
        Envelope(f"e{n}", "claim.submitted", "acme", "x", "info", {})
        for n in range(count)
    ]
    await bus.publish(envelopes)
    await bus.publish(envelopes[RECENT_IDS - 5 : RECENT_IDS + 5])
    await bus.publish([Envelope("last", "claim.submitted", "acme", "x", "info", {})])
    handed_out: list[str] = []
    # Batches of 256 rotate the window right after the first RECENT_IDS ids.
    async for batch in subscription.batches(max_batch=256):
        handed_out += [e.id for e in batch]
        if handed_out[-1] == "last":
            break
    assert handed_out == [e.id for e in envelopes] + ["last"]
    assert subscription.duplicates == 10
    await bus.close()
