"""The bus between replicas: a topic, and one subscription per replica.

Every event published reaches every subscription that exists when it is published.
A replica's dispatch reads its own subscription only, even when it is alone, so
that what one replica delivers never depends on which replica took the request.

Both buses hand their messages to a ``QueuedSubscription``: the in-process bus as
it publishes, the RabbitMQ bus as the broker delivers. That one class applies the
faults (pause, latency, drop, cut; see ``hub.core.Faults``), hands envelopes out in
batches, and keeps the promise of exactly once per replica: an event id handed out
is never handed out again while it is among the last ``RECENT_IDS`` handed out.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import AsyncIterator, Sequence
from typing import Protocol

from ._logging import log_event
from .core import (
    NO_FAULTS,
    Envelope,
    FaultInjector,
    FaultKind,
    Faults,
    FaultStatistics,
    Latency,
)

RECENT_IDS = 32768

# One message waiting in a subscription: the envelope, the loop time from which it
# may be taken, and the broker's delivery tag and channel generation (0 in-process).
# A plain tuple: one is built per message and replica.
Waiting = tuple[Envelope, float, int, int]


class SubscriptionClosed(Exception):
    """The subscription was closed; iteration ends."""


class Subscription(Protocol):
    """One replica's subscription: batches of envelopes, acknowledged after
    dispatch (when the consumer asks for the next batch)."""

    replica_id: str

    @property
    def live(self) -> bool:
        """True while the subscription delivers (readiness depends on it)."""
        ...

    def backlog(self) -> int:
        """Messages waiting in this subscription, as last known."""
        ...

    def batches(self, max_batch: int = 256) -> AsyncIterator[list[Envelope]]: ...

    async def close(self) -> None: ...


class Bus(Protocol):
    async def publish(self, envelopes: Sequence[Envelope]) -> None: ...

    async def subscribe(self, replica_id: str) -> Subscription: ...

    async def close(self) -> None: ...


class QueuedSubscription:
    """One replica's local queue of waiting messages, with its faults applied."""

    def __init__(self, replica_id: str, injector: FaultInjector) -> None:
        self.replica_id = replica_id
        self.injector = injector
        self.duplicates = 0
        self._loop = asyncio.get_running_loop()
        self._queue: deque[Waiting] = deque()
        self._wake = asyncio.Event()
        self._closed = False
        # The ids handed out lately, in two generations: when the newer one is
        # full it becomes the older and the older is forgotten, so between
        # RECENT_IDS and twice that many ids are remembered at any time.
        self._recent: set[str] = set()
        self._older: set[str] = set()
        self._timer: asyncio.TimerHandle | None = None

    @property
    def live(self) -> bool:
        return not self._closed and not self.injector.faults.cut

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def down_reason(self) -> str | None:
        """Why the subscription is not live, or None while it is."""
        if self._closed:
            return "closed"
        if self.injector.faults.cut:
            return "cut off from the topic by a fault"
        return None

    def backlog(self) -> int:
        return len(self._queue)

    # -- faults ----------------------------------------------------------------------

    @property
    def faults(self) -> Faults:
        return self.injector.faults

    def set_faults(self, faults: Faults) -> None:
        if faults == self.injector.faults:
            return
        self.injector.apply(faults)
        log_event(
            logging.INFO,
            "bus_faults_set",
            replica=self.replica_id,
            paused=faults.paused,
            cut=faults.cut,
            drop=faults.drop,
            latency=None if faults.latency is None else faults.latency.spec(),
        )
        self._wake.set()

    def fault_statistics(self) -> FaultStatistics:
        return self.injector.statistics()

    # -- arrivals and hand-out ---------------------------------------------------------

    def _arrive(self, envelope: Envelope, tag: int = 0, generation: int = 0) -> bool:
        """Queue one arriving message unless a fault takes it; False when taken."""
        due = self.injector.arrive(envelope.id, self._loop.time())
        if due is None:
            return False
        self._queue.append((envelope, due, tag, generation))
        return True

    def _arrived(self) -> None:
        self._wake.set()

    async def batches(self, max_batch: int = 256) -> AsyncIterator[list[Envelope]]:
        queue = self._queue
        wake = self._wake
        while not self._closed:
            if queue and not self.injector.faults.holding:
                now = self._loop.time()
                if queue[0][1] <= now:
                    count = min(max_batch, len(queue))
                    # Due times never decrease along the queue: when the last of
                    # the batch is due, all are.
                    if queue[count - 1][1] > now:
                        count = 1
                        while queue[count][1] <= now:
                            count += 1
                    taken = [queue.popleft() for _ in range(count)]
                    fresh = self._first_seen(taken)
                    if fresh:
                        yield fresh
                    # Reached only when the consumer asks for more: dispatched.
                    await self._settle(taken)
                    continue
                self._wake_at(queue[0][1])
            wake.clear()
            await wake.wait()

    def _first_seen(self, taken: list[Waiting]) -> list[Envelope]:
        recent = self._recent
        older = self._older
        fresh: list[Envelope] = []
        for item in taken:
            envelope = item[0]
            event_id = envelope.id
            if event_id in recent or event_id in older:
                self.duplicates += 1
                continue
            recent.add(event_id)
            fresh.append(envelope)
        if len(recent) >= RECENT_IDS:
            self._older = recent
            self._recent = set()
        return fresh

    async def _settle(self, taken: list[Waiting]) -> None:
        """The messages in ``taken`` were dispatched (or skipped as duplicates)."""

    def _wake_at(self, due: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self._loop.call_at(due, self._wake.set)

    async def close(self) -> None:
        self._closed = True
        self._queue.clear()
        if self._timer is not None:
            self._timer.cancel()
        self._wake.set()


class MemorySubscription(QueuedSubscription):
    def offer(self, envelopes: Sequence[Envelope]) -> None:
        if self._closed or not envelopes:
            return
        now = self._loop.time()
        if self.injector.idle(now):
            self._queue.extend([(envelope, now, 0, 0) for envelope in envelopes])
            self._arrived()
            return
        arrive = self._arrive
        admitted = False
        for envelope in envelopes:
            admitted = arrive(envelope) or admitted
        if admitted:
            self._arrived()


class FaultBoard:
    """Per-replica fault controls of a bus, usable before the replica subscribes.

    A replica's injector (its faults, seeded generators and tallies) lives as long
    as the bus, so tallies span a replica's re-subscriptions.
    """

    def __init__(self, *, seed: int = 0, keep_taken_ids: bool = True) -> None:
        self.seed = seed
        self.keep_taken_ids = keep_taken_ids
        self._injectors: dict[str, FaultInjector] = {}
        self._targets: dict[str, QueuedSubscription] = {}

    def injector(self, replica_id: str) -> FaultInjector:
        injector = self._injectors.get(replica_id)
        if injector is None:
            injector = self._injectors[replica_id] = FaultInjector(
                replica_id, seed=self.seed, keep_ids=self.keep_taken_ids
            )
        return injector

    def faults(self, replica_id: str) -> Faults:
        return self.injector(replica_id).faults

    def set_faults(self, replica_id: str, faults: Faults) -> None:
        target = self._targets.get(replica_id)
        if target is not None and not target.closed:
            target.set_faults(faults)
        else:
            self.injector(replica_id).apply(faults)

    def pause(self, replica_id: str) -> None:
        """Hold the replica's messages (they wait in its backlog) until ``resume``."""
        self.set_faults(replica_id, self.faults(replica_id).changed(paused=True))

    def resume(self, replica_id: str) -> None:
        self.set_faults(replica_id, self.faults(replica_id).changed(paused=False))

    def cut(self, replica_id: str) -> None:
        """Cut the replica off: arrivals are lost and it is not live until
        ``restore``."""
        self.set_faults(replica_id, self.faults(replica_id).changed(cut=True))

    def restore(self, replica_id: str) -> None:
        self.set_faults(replica_id, self.faults(replica_id).changed(cut=False))

    def set_latency(
        self, replica_id: str, latency: Latency | str | float | None
    ) -> None:
        """Delay each arriving message: a ``Latency``, a spec like ``'exp:50ms'``,
        fixed seconds, or None for none."""
        if isinstance(latency, str):
            latency = Latency.parse(latency)
        elif isinstance(latency, int | float):
            latency = Latency.fixed(float(latency))
        self.set_faults(replica_id, self.faults(replica_id).changed(latency=latency))

    def set_drop(self, replica_id: str, fraction: float) -> None:
        """Lose each arriving message with probability ``fraction`` (seeded)."""
        self.set_faults(replica_id, self.faults(replica_id).changed(drop=fraction))

    def clear_faults(self, replica_id: str) -> None:
        self.set_faults(replica_id, NO_FAULTS)

    def fault_statistics(self, replica_id: str) -> FaultStatistics:
        return self.injector(replica_id).statistics()

    def taken_ids(self, replica_id: str, kind: FaultKind) -> tuple[str, ...]:
        """Ids of the events ``kind`` (drop or cut) took from the replica."""
        return self.injector(replica_id).taken_ids(kind)

    def _track(self, subscription: QueuedSubscription) -> None:
        self._targets[subscription.replica_id] = subscription


class MemoryBus(FaultBoard):
    """The embedded in-process bus: one topic, one queue per replica, with faults."""

    def __init__(self, *, seed: int = 0, keep_taken_ids: bool = True) -> None:
        super().__init__(seed=seed, keep_taken_ids=keep_taken_ids)
        self._subscriptions: dict[str, MemorySubscription] = {}

    async def publish(self, envelopes: Sequence[Envelope]) -> None:
        for subscription in self._subscriptions.values():
            subscription.offer(envelopes)

    async def subscribe(self, replica_id: str) -> MemorySubscription:
        existing = self._subscriptions.get(replica_id)
        if existing is not None and not existing.closed:
            raise ValueError(f"replica {replica_id!r} already has a live subscription")
        subscription = MemorySubscription(replica_id, self.injector(replica_id))
        self._subscriptions[replica_id] = subscription
        self._track(subscription)
        return subscription

    def subscription(self, replica_id: str) -> MemorySubscription | None:
        return self._subscriptions.get(replica_id)

    async def close(self) -> None:
        for subscription in self._subscriptions.values():
            await subscription.close()
