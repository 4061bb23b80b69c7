"""A replica: a real ``HubCore`` fed by its bus subscription on simulated time.

Each process of a replica (a *generation*: a rolling deploy replaces it with a new
one) owns a fresh core, a fresh subscription and a latency histogram, exactly as a
new hub process would. The core decides everything; this edge only calls it when
the bus delivers, when the core's own next deadline comes, and when a stream's
client reads, and it never calls it from inside a ``wake`` callback (wakes only
mark a stream as due to be written).
"""

from __future__ import annotations

import enum
import itertools
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from hub.core import (
    DisconnectReason,
    Envelope,
    HubCore,
    HubStatistics,
    LatencyHistogram,
    Principal,
    Subscriber,
)

from ._bus import SimSubscription
from ._cpu import ReplicaCpu
from ._log import log_event
from ._random import stream
from ._sched import call_at, call_later, do_later
from ._streams import write_streams

if TYPE_CHECKING:
    from ._report import SeriesRecord
    from ._streams import Connection
    from ._world import World

BucketKey = tuple[str, str, str]


class ReplicaPhase(enum.Enum):
    DOWN = "down"  # no process: not started yet, or between deploy steps
    READY = "ready"  # accepts streams (when its subscription is live)
    CLOSING = "closing"  # farewells sent; streams drain for the grace period


class Generation:
    """One process of a replica."""

    __slots__ = (
        "_flush_armed",
        "_read_delay",
        "_tick_armed_at",
        "alive",
        "closed_at",
        "core",
        "cpu",
        "dirty",
        "final_series",
        "latency",
        "number",
        "replica",
        "started_at",
        "subscription",
        "world",
    )

    def __init__(self, replica: SimReplica, number: int) -> None:
        world = replica.world
        self.world = world
        self.replica = replica
        self.number = number
        prefix = f"{replica.name}.{number}"
        self.core = HubCore(
            catalog=world.catalog,
            clock=world.clock,
            replica_id=replica.name,
            settings=world.core_settings,
            subscriber_ids=(f"{prefix}-s{n}" for n in itertools.count(1)),
            rng=stream(world.config.seed, f"core/{prefix}"),
        )
        self.core.on_batch_completed = self._completed
        self.latency = LatencyHistogram()
        cpu_model = world.config.cpu
        self.cpu: ReplicaCpu | None = (
            None
            if cpu_model is None
            else ReplicaCpu(self, cpu_model, stream(world.config.seed, f"cpu/{prefix}"))
        )
        self.subscription: SimSubscription = world.bus.subscribe(
            replica.name,
            self._consume if self.cpu is None else self.cpu.arrive,
            stream(world.config.seed, f"bus/{prefix}"),
        )
        # Streams whose subscriber woke (queue turned non-empty, state changed).
        self.dirty: list[Connection] = []
        self._read_delay = world.config.clients.read_delay_s
        self._flush_armed = False
        self._tick_armed_at: float | None = None
        self.alive = True
        self.started_at = world.env.now
        self.closed_at: float | None = None
        # Its metrics when it ended (a process's counters die with it).
        self.final_series: tuple[SeriesRecord, ...] | None = None

    # -- the bus ---------------------------------------------------------------------

    def _consume(self, batch: list[Envelope]) -> None:
        if not self.alive:
            return
        self.dispatch(batch)
        self.settle()

    def dispatch(self, batch: list[Envelope]) -> list[int]:
        """Hand ``batch`` to the core; the frames each event queued, in order. The
        streams are written by the next ``settle``."""
        core = self.core
        dispatch = core.dispatch
        counters = core.counters
        dispatched_at = self.replica.batch_dispatched
        now = self.world.env.now
        needs_tick = False
        queued: list[int] = []
        for envelope in batch:
            tally = counters(envelope.tenant_id)
            overflowing = tally.dropped_backpressure
            before = tally.fanout - tally.dropped_permission - overflowing
            dispatch(envelope)
            queued.append(
                tally.fanout
                - tally.dropped_permission
                - tally.dropped_backpressure
                - before
            )
            ref = envelope.batch
            if ref is not None:
                needs_tick = True
                dispatched_at[
                    (envelope.tenant_id, ref.trading_partner_id, ref.isa13)
                ] = now
            elif tally.dropped_backpressure != overflowing:
                # A stream may have started to stall: its eviction is a new deadline.
                needs_tick = True
        if needs_tick:
            self.tick()
        return queued

    # -- time ------------------------------------------------------------------------

    def tick(self, _: object = None) -> None:
        """Let the core act on time, then wait for the deadline it returns."""
        if not self.alive:
            return
        deadline = self.core.tick()
        if deadline is not None:
            self._arm_tick(deadline)
        self.settle()

    def _arm_tick(self, deadline: float) -> None:
        now = self.world.env.now
        if deadline <= now:
            # The deadline is due but the core's arithmetic disagreed by a rounding
            # error; look again a hair later so time always moves on.
            deadline = math.nextafter(now, math.inf)
        armed = self._tick_armed_at
        if armed is not None and armed <= deadline:
            return
        self._tick_armed_at = call_at(self.world.env, deadline, self._on_tick_timer)

    def _on_tick_timer(self, _: object) -> None:
        if (
            self._tick_armed_at is not None
            and self._tick_armed_at <= self.world.env.now
        ):
            self._tick_armed_at = None
        self.tick()

    # -- streams ---------------------------------------------------------------------

    def subscribe(
        self, principal: Principal, last_event_id: str | None = None
    ) -> Subscriber:
        """Open a stream (``StreamLimitError`` when a cap is reached)."""
        subscriber = self.core.subscribe(principal, last_event_id=last_event_id)
        if self.cpu is not None:
            self.cpu.charge_connection()
        return subscriber

    def backlog(self) -> int:
        """Events delivered by the bus and not yet dispatched."""
        waiting = len(self.cpu.waiting) if self.cpu is not None else 0
        return self.subscription.backlog() + waiting

    def settle(self) -> None:
        """After any call into the core: write the streams it woke (once the CPU,
        when the world models one, is done with its spell)."""
        if self.cpu is not None and self.cpu.busy:
            return
        if self.dirty and not self._flush_armed:
            if self._read_delay > 0:
                self._flush_armed = True
                call_later(self.world.env, self._read_delay, self._flush)
            else:
                self._flush(None)
        elif (
            self.replica.phase is ReplicaPhase.CLOSING and self.replica.current is self
        ):
            self.replica.maybe_finish_close()

    def _flush(self, _: object) -> None:
        self._flush_armed = False
        if self.cpu is not None and self.cpu.busy:
            # The spell's end settles again and arms a new read.
            return
        write_streams(self, self.world.start_epoch + self.world.env.now)
        if self.replica.phase is ReplicaPhase.CLOSING and self.replica.current is self:
            self.replica.maybe_finish_close()

    def _completed(self, completion: Envelope) -> None:
        self.replica.completions.append(
            Completion(self.world.env.now, self.number, completion)
        )

    # -- lifecycle -------------------------------------------------------------------

    def retire(self) -> None:
        self.alive = False
        self.closed_at = self.world.env.now
        self.subscription.close()

    def statistics(self) -> HubStatistics:
        return self.core.statistics()


@dataclass(frozen=True, slots=True)
class Completion:
    """A ``batch.completed`` synthesized by one replica process."""

    at_s: float
    generation: int
    envelope: Envelope


class SimReplica:
    """A replica slot (``r1``): a sequence of processes over the run."""

    def __init__(self, world: World, name: str) -> None:
        self.world = world
        self.name = name
        self.phase = ReplicaPhase.DOWN
        self.current: Generation | None = None
        self.generations: list[Generation] = []
        self.completions: list[Completion] = []
        # The last time each batch bucket had an event dispatched here.
        self.batch_dispatched: dict[BucketKey, float] = {}
        self._close_done: Callable[[], None] | None = None
        self._restart_s: float | None = None
        # Called once the process that replaces a closing one has started.
        self._on_restart: Callable[[], object] | None = None

    @property
    def ready(self) -> bool:
        """What ``/readyz`` would say: up, not closing, subscription live."""
        current = self.current
        return (
            self.phase is ReplicaPhase.READY
            and current is not None
            and current.subscription.live
        )

    def open_streams(self) -> int:
        current = self.current
        return 0 if current is None else len(current.core.subscribers())

    def start(self) -> Generation:
        generation = Generation(self, len(self.generations) + 1)
        self.generations.append(generation)
        self.current = generation
        self.phase = ReplicaPhase.READY
        log_event(
            logging.INFO,
            "replica_started",
            replica=self.name,
            generation=generation.number,
            at_s=round(self.world.env.now, 3),
        )
        return generation

    def close(
        self,
        restart_after_s: float | None,
        on_restart: Callable[[], object] | None = None,
    ) -> bool:
        """Graceful close: farewell to every stream, drain for the grace period,
        abort the rest, end; start a new process ``restart_after_s`` later and
        then call ``on_restart``. False when there was no ready process to close."""
        current = self.current
        if current is None or self.phase is not ReplicaPhase.READY:
            return False
        self.phase = ReplicaPhase.CLOSING
        self._restart_s = restart_after_s
        self._on_restart = on_restart
        streams = len(current.core.subscribers())
        log_event(
            logging.INFO,
            "replica_closing",
            replica=self.name,
            generation=current.number,
            streams=streams,
            at_s=round(self.world.env.now, 3),
        )
        current.core.close()
        current.settle()
        grace = self.world.config.hub.shutdown_grace_s
        call_later(self.world.env, grace, lambda _: self._abort(current))
        self.maybe_finish_close()
        return True

    def maybe_finish_close(self) -> None:
        """The process may end early once every stream has taken its farewell."""
        current = self.current
        if (
            current is not None
            and self.phase is ReplicaPhase.CLOSING
            and not current.core.subscribers()
        ):
            self._finish(current)

    def _abort(self, generation: Generation) -> None:
        if self.current is not generation or self.phase is not ReplicaPhase.CLOSING:
            return
        # Streams whose clients never took their farewell are cut at the socket;
        # the core counts each as a shutdown disconnect.
        for subscriber in generation.core.subscribers():
            generation.core.disconnect(subscriber, DisconnectReason.SHUTDOWN)
        generation.settle()
        if self.current is generation:
            self._finish(generation)

    def _finish(self, generation: Generation) -> None:
        generation.final_series = tuple(
            self.world.records_of(self.world.env.now, self.name, generation)
        )
        generation.retire()
        self.current = None
        self.phase = ReplicaPhase.DOWN
        log_event(
            logging.INFO,
            "replica_closed",
            replica=self.name,
            generation=generation.number,
            at_s=round(self.world.env.now, 3),
        )
        restart = self._restart_s
        if restart is not None:
            do_later(self.world.env, restart, self._restart)
        elif self._on_restart is not None:
            self._on_restart()

    def _restart(self) -> None:
        self.start()
        then, self._on_restart = self._on_restart, None
        if then is not None:
            then()
