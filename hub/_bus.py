"""The bus between replicas: a topic, and one subscription per replica.

Every event published reaches every subscription that exists when it is published.
A replica's dispatch reads its own subscription only, even when it is alone, so
that what one replica delivers never depends on which replica took the request.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Sequence
from typing import Protocol

from .core import Envelope


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


class MemorySubscription:
    def __init__(self, replica_id: str) -> None:
        self.replica_id = replica_id
        self._queue: deque[Envelope] = deque()
        self._arrived = asyncio.Event()
        self._closed = False

    @property
    def live(self) -> bool:
        return not self._closed

    def backlog(self) -> int:
        return len(self._queue)

    def offer(self, envelopes: Sequence[Envelope]) -> None:
        if self._closed:
            return
        self._queue.extend(envelopes)
        self._arrived.set()

    async def batches(self, max_batch: int = 256) -> AsyncIterator[list[Envelope]]:
        queue = self._queue
        while not self._closed:
            if not queue:
                self._arrived.clear()
                await self._arrived.wait()
                continue
            count = min(max_batch, len(queue))
            yield [queue.popleft() for _ in range(count)]

    async def close(self) -> None:
        self._closed = True
        self._queue.clear()
        self._arrived.set()


class MemoryBus:
    """The embedded in-process bus: one topic, one queue per replica."""

    def __init__(self) -> None:
        self._subscriptions: dict[str, MemorySubscription] = {}

    async def publish(self, envelopes: Sequence[Envelope]) -> None:
        for subscription in self._subscriptions.values():
            subscription.offer(envelopes)

    async def subscribe(self, replica_id: str) -> MemorySubscription:
        existing = self._subscriptions.get(replica_id)
        if existing is not None and existing.live:
            raise ValueError(f"replica {replica_id!r} already has a live subscription")
        subscription = MemorySubscription(replica_id)
        self._subscriptions[replica_id] = subscription
        return subscription

    async def close(self) -> None:
        for subscription in self._subscriptions.values():
            await subscription.close()
