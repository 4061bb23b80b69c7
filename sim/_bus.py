"""The bus: a topic and one subscription per replica, with faults.

Every published event is offered to every live subscription. A subscription holds
its messages in order; each becomes deliverable after the bus latency, and is handed
to its replica as soon as it is (in a batch with any others already due). The fault
vocabulary matches the in-process bus:

- ``Pause``: nothing is delivered; messages wait and the backlog grows.
- ``Latency``: every message takes this much longer (order is kept).
- ``Drop``: this fraction of messages never reaches the subscription.
- ``CutOff``: the replica is cut off: messages published meanwhile never reach it,
  nothing is delivered, and the subscription is not live (the replica is not ready).

Faults belong to the replica, not to one subscription: a replica that restarts in the
middle of a fault gets a new subscription that suffers it too.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import simpy

from hub.core import Envelope

from ._random import Distribution
from ._sched import call_at


@dataclass(frozen=True, slots=True)
class Pause:
    """Deliver nothing; keep the messages."""


@dataclass(frozen=True, slots=True)
class Latency:
    """Add ``extra`` to every message's delivery delay."""

    extra: Distribution


@dataclass(frozen=True, slots=True)
class Drop:
    """Lose ``fraction`` of the messages (each independently)."""

    fraction: float


@dataclass(frozen=True, slots=True)
class CutOff:
    """Lose everything published meanwhile and stop being live."""


Fault = Pause | Latency | Drop | CutOff


@dataclass(frozen=True, slots=True)
class SubscriptionStatistics:
    replica_id: str
    offered: int
    dropped: int
    cut_off: int
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
        "_faults",
        "_fixed",
        "_last_at",
        "_queue",
        "_rng",
        "closed",
        "cut_off",
        "delivered",
        "dropped",
        "offered",
        "replica_id",
    )

    def __init__(
        self,
        env: simpy.Environment,
        replica_id: str,
        latency: Distribution,
        rng: random.Random,
        deliver: Callable[[list[Envelope]], None],
        faults: list[Fault],
    ) -> None:
        self._env = env
        self.replica_id = replica_id
        # The base latency: a constant, or a draw per message.
        self._fixed = latency.a if latency.kind == "fixed" else 0.0
        self._draw = latency.sampler(rng)
        self._rng = rng
        self._deliver = deliver
        # Shared with the bus: the replica's faults as they come and go.
        self._faults = faults
        self._queue: deque[tuple[float, Envelope]] = deque()
        self._last_at = 0.0
        self._armed_at: float | None = None
        self.closed = False
        self.offered = 0
        self.dropped = 0
        self.cut_off = 0
        self.delivered = 0

    @property
    def live(self) -> bool:
        return not self.closed and not any(type(f) is CutOff for f in self._faults)

    def backlog(self) -> int:
        return len(self._queue)

    def statistics(self) -> SubscriptionStatistics:
        return SubscriptionStatistics(
            self.replica_id,
            self.offered,
            self.dropped,
            self.cut_off,
            self.delivered,
            len(self._queue),
            self.live,
        )

    def offer(self, envelope: Envelope, now: float) -> None:
        if self.closed:
            return
        self.offered += 1
        draw = self._draw
        delay = draw() if draw is not None else self._fixed
        for fault in self._faults:
            kind = type(fault)
            if kind is CutOff:
                self.cut_off += 1
                return
            if kind is Drop:
                assert isinstance(fault, Drop)
                if self._rng.random() < fault.fraction:
                    self.dropped += 1
                    return
            elif kind is Latency:
                assert isinstance(fault, Latency)
                delay += fault.extra.sample(self._rng)
        # In order: a message is never deliverable before the one ahead of it.
        at = max(now + delay, self._last_at)
        self._last_at = at
        self._queue.append((at, envelope))
        if self._armed_at is None and not self._held():
            self._armed_at = call_at(self._env, at, self._due)

    def resume(self) -> None:
        """A fault was lifted: deliver what is due, and wait for the rest."""
        if self._queue and self._armed_at is None and not self._held():
            self._armed_at = call_at(self._env, self._queue[0][0], self._due)

    def close(self) -> None:
        """The replica process ended: whatever waits here is gone with it."""
        self.closed = True
        self._queue.clear()

    def _held(self) -> bool:
        for fault in self._faults:
            kind = type(fault)
            if kind is Pause or kind is CutOff:
                return True
        return False

    def _due(self, _: object) -> None:
        self._armed_at = None
        if self.closed or self._held():
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


class SimBus:
    """The topic: every event published reaches every live subscription."""

    def __init__(self, env: simpy.Environment, latency: Distribution) -> None:
        self._env = env
        self._latency = latency
        self._subscriptions: dict[str, SimSubscription] = {}
        self._faults: dict[str, list[Fault]] = {}
        self.published = 0

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
            self._faults.setdefault(replica_id, []),
        )
        self._subscriptions[replica_id] = subscription
        return subscription

    def publish(self, envelope: Envelope) -> None:
        self.published += 1
        now = self._env.now
        for subscription in self._subscriptions.values():
            subscription.offer(envelope, now)

    def subscription(self, replica_id: str) -> SimSubscription | None:
        return self._subscriptions.get(replica_id)

    def apply(self, replica_id: str, fault: Fault) -> None:
        self._faults.setdefault(replica_id, []).append(fault)

    def lift(self, replica_id: str, fault: Fault) -> None:
        faults = self._faults.get(replica_id, [])
        for index, active in enumerate(faults):
            if active is fault:
                del faults[index]
                break
        subscription = self._subscriptions.get(replica_id)
        if subscription is not None:
            subscription.resume()

    def faults(self, replica_id: str) -> tuple[Fault, ...]:
        return tuple(self._faults.get(replica_id, ()))
