"""Properties of the in-process bus: one subscription per replica, nothing lost
without a fault to account for it, nothing doubled, each publisher's order kept.

A plan interleaves publishers' batches, replicas joining late, replicas reading
batches of any size at any moment, replicas restarting (a new subscription under
the same name), and, in the fault properties, drop, cut, pause and latency switched
on and off per replica. Every event must then reach every subscription that was live
when it was published exactly once, in the order its publisher sent it, unless the
replica's fault took it and counted it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from hypothesis import given
from hypothesis import strategies as st

from hub import MemoryBus, MemorySubscription
from hub.core import Envelope, FaultKind, Faults, Latency

REPLICAS = ("r1", "r2", "r3")
PUBLISHERS = ("p1", "p2")


@dataclass(frozen=True)
class Publish:
    publisher: str
    size: int


@dataclass(frozen=True)
class Republish:
    """The publisher sends its last ``size`` events again (an at-least-once
    producer retrying)."""

    publisher: str
    size: int


@dataclass(frozen=True)
class Join:
    replica: str


@dataclass(frozen=True)
class Read:
    replica: str


@dataclass(frozen=True)
class Restart:
    replica: str


@dataclass(frozen=True)
class SetFaults:
    replica: str
    faults: Faults


Step = Publish | Republish | Join | Read | Restart | SetFaults
traffic = st.one_of(
    st.builds(
        Publish, st.sampled_from(PUBLISHERS), st.integers(min_value=1, max_value=5)
    ),
    st.builds(Join, st.sampled_from(REPLICAS)),
    st.builds(Read, st.sampled_from(REPLICAS)),
    st.builds(Restart, st.sampled_from(REPLICAS)),
)
# Delays of a few milliseconds: enough to hold messages back and test their order,
# short enough that reading them waits only that long.
latencies = st.sampled_from(
    (
        None,
        Latency.fixed(0.002),
        Latency.uniform(0.0, 0.003),
        Latency.exponential(0.001),
    )
)
fault_sets = st.builds(
    Faults,
    paused=st.booleans(),
    cut=st.booleans(),
    drop=st.sampled_from((0.0, 0.3, 0.7, 1.0)),
    latency=latencies,
)
faulty_traffic = traffic | st.builds(SetFaults, st.sampled_from(REPLICAS), fault_sets)


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

    replica: str
    subscription: MemorySubscription
    reader: AsyncIterator[list[Envelope]]
    # Ids published while this subscription existed, repeats included.
    offered: list[str] = field(default_factory=list)
    received: list[Envelope] = field(default_factory=list)
    batch_sizes: list[int] = field(default_factory=list)
    reading: asyncio.Future[list[Envelope]] | None = None


@dataclass
class Outcome:
    bus: MemoryBus
    incarnations: list[Incarnation]

    def of(self, replica: str) -> list[Incarnation]:
        return [i for i in self.incarnations if i.replica == replica]


async def take(incarnation: Incarnation) -> None:
    """Read one batch, or find that what waited were repeats the subscription
    skipped; a read still waiting stays with the incarnation for the next call."""
    if incarnation.reading is None:
        incarnation.reading = asyncio.ensure_future(anext(incarnation.reader))
    reading = incarnation.reading
    deadline = asyncio.get_running_loop().time() + 5
    while not reading.done() and incarnation.subscription.backlog():
        assert asyncio.get_running_loop().time() < deadline, "a read never came"
        await asyncio.wait({reading}, timeout=0.001)
    if reading.done():
        incarnation.reading = None
        batch = reading.result()
        incarnation.batch_sizes.append(len(batch))
        incarnation.received += batch


async def read_everything(incarnation: Incarnation) -> None:
    """Lift whatever holds the messages back, then read until none waits."""
    subscription = incarnation.subscription
    subscription.set_faults(subscription.faults.changed(paused=False, cut=False))
    while subscription.backlog():
        await take(incarnation)


async def close(incarnation: Incarnation) -> None:
    await incarnation.subscription.close()
    if incarnation.reading is not None:
        with contextlib.suppress(StopAsyncIteration):
            await asyncio.wait_for(incarnation.reading, timeout=5)


async def play(
    plan: list[Step], max_batch: int, seed: int = 0, *, all_joined: bool = False
) -> Outcome:
    """Run ``plan``; with ``all_joined`` every replica subscribes first."""
    bus = MemoryBus(seed=seed)
    live: dict[str, Incarnation] = {}
    every: list[Incarnation] = []
    sent: dict[str, list[Envelope]] = {p: [] for p in PUBLISHERS}

    async def join(replica: str) -> None:
        subscription = await bus.subscribe(replica)
        incarnation = Incarnation(
            replica, subscription, subscription.batches(max_batch)
        )
        live[replica] = incarnation
        every.append(incarnation)

    async def leave(replica: str) -> None:
        # What a replica has not read when it stops is gone with its subscription,
        # so each incarnation reads everything before it closes.
        incarnation = live.pop(replica)
        await read_everything(incarnation)
        await close(incarnation)

    async def publish(batch: list[Envelope]) -> None:
        await bus.publish(batch)
        for incarnation in live.values():
            incarnation.offered += [e.id for e in batch]

    if all_joined:
        for replica in REPLICAS:
            await join(replica)
    for step in plan:
        if isinstance(step, Publish):
            mine = sent[step.publisher]
            batch = [
                envelope(step.publisher, len(mine) + n) for n in range(1, step.size + 1)
            ]
            mine += batch
            await publish(batch)
        elif isinstance(step, Republish) and sent[step.publisher]:
            await publish(sent[step.publisher][-step.size :])
        elif isinstance(step, Join) and step.replica not in live:
            await join(step.replica)
        elif isinstance(step, Read) and step.replica in live:
            incarnation = live[step.replica]
            subscription = incarnation.subscription
            if subscription.backlog() and not subscription.faults.holding:
                await take(incarnation)
        elif isinstance(step, Restart) and step.replica in live:
            await leave(step.replica)
            await join(step.replica)
        elif isinstance(step, SetFaults):
            bus.set_faults(step.replica, step.faults)
    for replica in list(live):
        await leave(replica)
    await bus.close()
    return Outcome(bus, every)


def assert_in_publisher_order(received: list[Envelope]) -> None:
    for publisher in PUBLISHERS:
        mine = [
            e.payload["sequence"]
            for e in received
            if e.payload["publisher"] == publisher
        ]
        assert mine == sorted(mine), f"{publisher}'s order: {mine}"


@given(
    plan=st.lists(traffic, max_size=40),
    max_batch=st.integers(min_value=1, max_value=8),
)
def test_each_live_replica_gets_each_event_once_in_publisher_order(
    plan: list[Step], max_batch: int
) -> None:
    """Without faults every subscription receives each event published while it was
    live exactly once, and each publisher's events in the order they were sent."""
    for incarnation in asyncio.run(play(plan, max_batch)).incarnations:
        assert all(1 <= size <= max_batch for size in incarnation.batch_sizes)
        received = [e.id for e in incarnation.received]
        assert Counter(received) == Counter(incarnation.offered), "exactly once"
        assert_in_publisher_order(incarnation.received)


@given(
    plan=st.lists(faulty_traffic, max_size=40),
    max_batch=st.integers(min_value=1, max_value=8),
    seed=st.integers(min_value=0, max_value=2**16),
)
def test_received_plus_taken_by_faults_equals_published_per_replica(
    plan: list[Step], max_batch: int, seed: int
) -> None:
    """With drop, cut, pause and latency switched on and off, each replica's events
    received plus those its drop and cut faults took equal the events published
    while it was subscribed, id for id; what it receives keeps publisher order."""
    outcome = asyncio.run(play(plan, max_batch, seed, all_joined=True))
    for replica in REPLICAS:
        incarnations = outcome.of(replica)
        offered = [i for inc in incarnations for i in inc.offered]
        received = [e.id for inc in incarnations for e in inc.received]
        dropped = outcome.bus.taken_ids(replica, FaultKind.DROP)
        cut = outcome.bus.taken_ids(replica, FaultKind.CUT)
        stats = outcome.bus.fault_statistics(replica)
        assert (stats.dropped, stats.cut) == (len(dropped), len(cut))

        assert Counter(received) + Counter(dropped) + Counter(cut) == Counter(
            offered
        ), f"{replica}: received + dropped + cut != published"
        assert len(received) + stats.taken == len(offered)
        for incarnation in incarnations:
            assert_in_publisher_order(incarnation.received)


@given(
    plan=st.lists(
        faulty_traffic
        | st.builds(
            Republish,
            st.sampled_from(PUBLISHERS),
            st.integers(min_value=1, max_value=4),
        ),
        max_size=40,
    ),
    max_batch=st.integers(min_value=1, max_value=8),
    seed=st.integers(min_value=0, max_value=2**16),
)
def test_a_repeated_event_reaches_a_replica_at_most_once(
    plan: list[Step], max_batch: int, seed: int
) -> None:
    """When publishers send events again, a subscription still hands each id out
    at most once, and every id offered to it was handed out or taken by a fault.
    (A restarted replica has a new subscription, and may take an id again.)"""
    outcome = asyncio.run(play(plan, max_batch, seed, all_joined=True))
    for replica in REPLICAS:
        taken = set(outcome.bus.taken_ids(replica, FaultKind.DROP)) | set(
            outcome.bus.taken_ids(replica, FaultKind.CUT)
        )
        for incarnation in outcome.of(replica):
            received = [e.id for e in incarnation.received]
            repeated = [i for i, n in Counter(received).items() if n > 1]
            assert not repeated, f"{replica} received {repeated} more than once"
            lost = set(incarnation.offered) - set(received) - taken
            assert not lost, f"{replica} lost {sorted(lost)} silently"


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
