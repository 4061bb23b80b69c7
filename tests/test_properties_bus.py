"""Properties of the in-process bus: one subscription per replica, nothing lost,
nothing doubled, each publisher's order kept.

A plan interleaves publishers' batches, replicas joining late, replicas reading
batches of any size at any moment, and replicas restarting (a new subscription under
the same name); every event must then reach every subscription that was live when it
was published, exactly once, in the order its publisher sent it.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from hypothesis import given
from hypothesis import strategies as st

from hub import MemoryBus, MemorySubscription
from hub.core import Envelope

REPLICAS = ("r1", "r2", "r3")
PUBLISHERS = ("p1", "p2")


@dataclass(frozen=True)
class Publish:
    publisher: str
    size: int


@dataclass(frozen=True)
class Join:
    replica: str


@dataclass(frozen=True)
class Read:
    replica: str
    max_batch: int


@dataclass(frozen=True)
class Restart:
    replica: str


Step = Publish | Join | Read | Restart
steps = st.one_of(
    st.builds(
        Publish, st.sampled_from(PUBLISHERS), st.integers(min_value=1, max_value=5)
    ),
    st.builds(Join, st.sampled_from(REPLICAS)),
    st.builds(Read, st.sampled_from(REPLICAS), st.integers(min_value=1, max_value=4)),
    st.builds(Restart, st.sampled_from(REPLICAS)),
)


def envelope(publisher: str, sequence: int) -> Envelope:
    return Envelope(
        id=f"{publisher}-{sequence}",
        type="claim.submitted",
        tenant_id="acme",
        occurred_at="2027-01-15T08:00:00.000Z",
        severity="info",
        payload={"publisher": publisher, "sequence": sequence},
    )


@dataclass
class Incarnation:
    """One subscription of a replica, from subscribe to close."""

    subscription: MemorySubscription
    reader: AsyncIterator[list[Envelope]]
    expected: list[str] = field(default_factory=list)
    received: list[Envelope] = field(default_factory=list)
    batch_sizes: list[int] = field(default_factory=list)


async def take(incarnation: Incarnation) -> None:
    batch = await asyncio.wait_for(anext(incarnation.reader), timeout=5)
    incarnation.batch_sizes.append(len(batch))
    incarnation.received += batch


async def play(plan: list[Step], max_batch: int) -> list[Incarnation]:
    bus = MemoryBus()
    live: dict[str, Incarnation] = {}
    every: list[Incarnation] = []
    sent = Counter[str]()

    async def join(replica: str) -> None:
        subscription = await bus.subscribe(replica)
        incarnation = Incarnation(subscription, subscription.batches(max_batch))
        live[replica] = incarnation
        every.append(incarnation)

    async def leave(replica: str) -> None:
        incarnation = live.pop(replica)
        # What a replica has not read when it stops is gone with its subscription.
        while incarnation.subscription.backlog():
            await take(incarnation)
        await incarnation.subscription.close()

    for step in plan:
        if isinstance(step, Publish):
            batch = []
            for _ in range(step.size):
                sent[step.publisher] += 1
                batch.append(envelope(step.publisher, sent[step.publisher]))
            await bus.publish(batch)
            for incarnation in live.values():
                incarnation.expected += [e.id for e in batch]
        elif isinstance(step, Join) and step.replica not in live:
            await join(step.replica)
        elif isinstance(step, Read) and step.replica in live:
            incarnation = live[step.replica]
            if incarnation.subscription.backlog():
                await take(incarnation)
        elif isinstance(step, Restart) and step.replica in live:
            await leave(step.replica)
            await join(step.replica)
    for replica in list(live):
        await leave(replica)
    await bus.close()
    return every


@given(
    plan=st.lists(steps, max_size=40),
    max_batch=st.integers(min_value=1, max_value=8),
)
def test_each_live_replica_gets_each_event_once_in_publisher_order(
    plan: list[Step], max_batch: int
) -> None:
    """Without faults every subscription receives each event published while it was
    live exactly once, and each publisher's events in the order they were sent."""
    for incarnation in asyncio.run(play(plan, max_batch)):
        assert all(1 <= size <= max_batch for size in incarnation.batch_sizes)
        received = [e.id for e in incarnation.received]
        assert Counter(received) == Counter(incarnation.expected), "exactly once"
        for publisher in PUBLISHERS:
            mine = [
                e.payload["sequence"]
                for e in incarnation.received
                if e.payload["publisher"] == publisher
            ]
            assert mine == sorted(mine), f"{publisher}'s order: {mine}"


def test_a_replica_name_has_one_live_subscription() -> None:
    """Subscribing a name that already has a live subscription is refused; after
    it closes, the name can subscribe again."""

    async def check() -> None:
        bus = MemoryBus()
        first = await bus.subscribe("r1")
        try:
            await bus.subscribe("r1")
        except ValueError as error:
            assert "r1" in str(error)
        else:
            raise AssertionError("a second live subscription was accepted")
        await first.close()
        second = await bus.subscribe("r1")
        assert second.live and not first.live
        await bus.close()
        assert not second.live

    asyncio.run(check())
