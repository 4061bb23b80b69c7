"""The bus: a topic and one subscription per replica, with faults.

Every published event is offered to every subscription. A message becomes due
after the bus's own latency; then the replica's faults act on it through the same
``FaultInjector`` the hub's in-process bus uses (pause, latency, drop, cut, with
the same seeded decisions), so a fault means the same thing on both. A due message
is handed to its replica as soon as nothing holds the subscription, in a batch with
any others already due, in order.

Faults belong to the replica, not to one subscription: a replica that restarts in
the middle of a fault gets a new subscription that suffers it too.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import simpy

from hub.core import (
    Envelope,
    FaultInjector,
    Faults,
    FaultStatistics,
    Latency,
    LatencyShape,
)

from ._sched import call_at


@dataclass(frozen=True, slots=True)
class SubscriptionStatistics:
    replica_id: str
    offered: int
    delivered: int
    backlog: int
    live: bool


class SimSubscription:
    """One replica process's subscription."""

    __slots__ = (
        "_armed_at",
        "_deliver",
        "_draw",
        "_env",
        "_fixed",
        "_injector",
        "_queue",
        "closed",
        "delivered",
        "offered",
        "replica_id",
    )

    def __init__(
        self,
        env: simpy.Environment,
        replica_id: str,
        latency: Latency,
        rng: random.Random,
        deliver: Callable[[list[Envelope]], None],
        injector: FaultInjector,
    ) -> None:
        self._env = env
        self.replica_id = replica_id
        # The bus's own latency: a constant, or a draw per message.
        self._fixed = latency.a if latency.shape is LatencyShape.FIXED else 0.0
        self._draw = _drawer(latency, rng)
        self._deliver = deliver
        self._injector = injector
        self._queue: deque[tuple[float, Envelope]] = deque()
        self._armed_at: float | None = None
        self.closed = False
        self.offered = 0
        self.delivered = 0

    @property
    def live(self) -> bool:
        return not self.closed and not self._injector.faults.cut

    def backlog(self) -> int:
        return len(self._queue)

    def statistics(self) -> SubscriptionStatistics:
        return SubscriptionStatistics(
            self.replica_id, self.offered, self.delivered, len(self._queue), self.live
        )

    def offer(self, envelope: Envelope, now: float) -> None:
        if self.closed:
            return
        self.offered += 1
        draw = self._draw
        arrives = now + (draw() if draw is not None else self._fixed)
        due = self._injector.arrive(envelope.id, arrives)
        if due is None:
            return
        self._queue.append((due, envelope))
        if self._armed_at is None and not self._injector.faults.holding:
            self._armed_at = call_at(self._env, due, self._due)

    def resume(self) -> None:
        """The faults changed: deliver what is due, and wait for the rest."""
        if self._queue and self._armed_at is None and not self._injector.faults.holding:
            self._armed_at = call_at(self._env, self._queue[0][0], self._due)

    def close(self) -> None:
        """The replica process ended: whatever waits here is gone with it."""
        self.closed = True
        self._queue.clear()

    def _due(self, _: object) -> None:
        self._armed_at = None
        if self.closed or self._injector.faults.holding:
            return
        queue = self._queue
        now = self._env.now
        batch: list[Envelope] = []
        while queue and queue[0][0] <= now:
            batch.append(queue.popleft()[1])
        if batch:
            self.delivered += len(batch)
            self._deliver(batch)
        if queue and self._armed_at is None and not self.closed:
            self._armed_at = call_at(self._env, queue[0][0], self._due)


def _drawer(latency: Latency, rng: random.Random) -> Callable[[], float] | None:
    """A draw of ``latency`` per message; None when it is a constant."""
    if latency.shape is LatencyShape.FIXED:
        return None
    if latency.shape is LatencyShape.EXPONENTIAL and latency.a > 0:
        # The same draw as ``Latency.draw`` for this shape, without its dispatch.
        return partial(rng.expovariate, 1 / latency.a)
    return partial(latency.draw, rng)


class SimBus:
    """The topic: every event published reaches every open subscription."""

    def __init__(self, env: simpy.Environment, latency: Latency, seed: int) -> None:
        self._env = env
        self._latency = latency
        self._seed = seed
        self._subscriptions: dict[str, SimSubscription] = {}
        self._injectors: dict[str, FaultInjector] = {}
        self.published = 0

    def injector(self, replica_id: str) -> FaultInjector:
        """The replica's faults and their seeded decisions, for its whole life."""
        injector = self._injectors.get(replica_id)
        if injector is None:
            injector = self._injectors[replica_id] = FaultInjector(
                replica_id, seed=self._seed
            )
        return injector

    def subscribe(
        self,
        replica_id: str,
        deliver: Callable[[list[Envelope]], None],
        rng: random.Random,
    ) -> SimSubscription:
        existing = self._subscriptions.get(replica_id)
        if existing is not None and not existing.closed:
            raise ValueError(f"replica {replica_id!r} already has a live subscription")
        subscription = SimSubscription(
            self._env,
            replica_id,
            self._latency,
            rng,
            deliver,
            self.injector(replica_id),
        )
        self._subscriptions[replica_id] = subscription
        return subscription

    def publish(self, envelope: Envelope) -> None:
        self.published += 1
        now = self._env.now
        for subscription in self._subscriptions.values():
            subscription.offer(envelope, now)

    def set_faults(self, replica_id: str, faults: Faults) -> None:
        self.injector(replica_id).apply(faults)
        subscription = self._subscriptions.get(replica_id)
        if subscription is not None:
            subscription.resume()

    def faults(self, replica_id: str) -> Faults:
        return self.injector(replica_id).faults

    def fault_statistics(self, replica_id: str) -> FaultStatistics:
        return self.injector(replica_id).statistics()
