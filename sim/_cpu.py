"""A replica process's CPU, for worlds that give it a cost (``WorldConfig.cpu``).

Without a CPU model a replica writes every frame the instant its event arrives. With
one, each replica process is a single server, as the hub's one event loop is: an event
costs ``per_event_s`` plus ``per_delivery_s`` for every frame it puts in a subscriber
queue, and each stream opened costs ``per_connection_s``. Work is served in arrival
order, so queueing delay, and with it latency and drops, come out of the model instead
of being put in.

When the CPU comes free it does what the hub's consumer does: it takes every event
waiting in the subscription (or ``max_batch`` of them), dispatches them through the
core at once (a subscriber queue that cannot hold them all drops the rest as
backpressure, by the core's own rule), stays busy for the work they cost, and then
writes the streams. Events that arrive meanwhile wait in the subscription.

Inside one busy spell the frames are written one stream after another, so the k-th
of n frames leaves ``k / n`` of the way through the writing part of the spell. The
simulator's own histogram sees every frame at the end of the spell; ``records()``
keeps, per event, what is needed to place each frame where it really leaves, and
``delivery_latencies`` turns that into latencies to take quantiles from.
"""

from __future__ import annotations

import random
from array import array
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np
import numpy.typing as npt

from hub.core import Envelope

from ._sched import call_at

if TYPE_CHECKING:
    from ._config import CpuModel
    from ._replica import Generation

# Above this many frames per event, latencies are placed at this many evenly spread
# points, each weighing its share of the frames (a midpoint rule on the spread).
SPREAD_POINTS = 32


@dataclass(frozen=True, slots=True)
class CpuStatistics:
    """One replica process's CPU over its life."""

    replica_id: str
    generation: int
    busy_s: float
    events: int
    frames: int
    connections: int
    spells: int
    # The most events waiting for the CPU at once.
    max_waiting: int
    waiting: int


@dataclass(frozen=True, slots=True)
class CpuRecords:
    """Per event served: when it occurred and when its frames were written.

    Times are simulated seconds. ``occurred_s`` is the event's ``occurredAt`` (to
    the millisecond, as envelopes carry it), ``arrived_s`` the exact time the
    subscription handed it to the replica. An event's frames leave evenly over
    ``(write_from_s, write_to_s]``; ``frames`` of them were queued.
    """

    occurred_s: npt.NDArray[np.float64]
    arrived_s: npt.NDArray[np.float64]
    write_from_s: npt.NDArray[np.float64]
    write_to_s: npt.NDArray[np.float64]
    frames: npt.NDArray[np.float64]
    # Busy spells: [start, end) in simulated seconds.
    busy_from_s: npt.NDArray[np.float64]
    busy_to_s: npt.NDArray[np.float64]

    def busy_share(self, start_s: float, end_s: float) -> float:
        """The share of ``[start_s, end_s)`` the CPU was busy."""
        if end_s <= start_s:
            return 0.0
        overlap = np.clip(
            np.minimum(self.busy_to_s, end_s) - np.maximum(self.busy_from_s, start_s),
            0.0,
            None,
        )
        return float(overlap.sum() / (end_s - start_s))

    def delivery_latencies(
        self,
        start_s: float = 0.0,
        end_s: float = float("inf"),
        *,
        since: Literal["occurred", "arrived"] = "occurred",
    ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        """Latencies in seconds of the frames of events that occurred in
        ``[start_s, end_s)``, with the number of frames each stands for: from
        ``occurredAt`` to written (the contract's delivery latency), or from the
        replica's having the event (its own queueing and work, to the
        microsecond)."""
        chosen = (self.occurred_s >= start_s) & (self.occurred_s < end_s)
        origin = self.occurred_s if since == "occurred" else self.arrived_s
        return spread_latencies(
            origin[chosen],
            self.write_from_s[chosen],
            self.write_to_s[chosen],
            self.frames[chosen],
        )


def spread_latencies(
    occurred_s: npt.NDArray[np.float64],
    write_from_s: npt.NDArray[np.float64],
    write_to_s: npt.NDArray[np.float64],
    frames: npt.NDArray[np.float64],
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Every event's frames placed where they leave the writing part of its spell:
    the k-th of n at ``k / n`` of the way (exactly up to ``SPREAD_POINTS`` frames,
    by evenly spread points beyond), as (latencies, weights)."""
    values: list[npt.NDArray[np.float64]] = []
    weights: list[npt.NDArray[np.float64]] = []
    counts = frames.astype(np.int64)
    for count in np.unique(counts):
        if count <= 0:
            continue
        rows = counts == count
        points = min(int(count), SPREAD_POINTS)
        if count <= SPREAD_POINTS:
            where = np.arange(1, points + 1) / points
        else:
            where = (np.arange(points) + 0.5) / points
        start = write_from_s[rows][:, None]
        span = (write_to_s[rows] - write_from_s[rows])[:, None]
        written = start + span * where[None, :]
        values.append((written - occurred_s[rows][:, None]).ravel())
        weights.append(np.full(written.size, count / points))
    if not values:
        empty = np.zeros(0)
        return empty, empty
    return np.concatenate(values), np.concatenate(weights)


def weighted_quantile(
    values: npt.NDArray[np.float64], weights: npt.NDArray[np.float64], q: float
) -> float | None:
    """The smallest value at or below which at least ``q`` of the weight lies."""
    if values.size == 0:
        return None
    order = np.argsort(values, kind="stable")
    cumulative = np.cumsum(weights[order])
    index = int(np.searchsorted(cumulative, q * cumulative[-1], side="left"))
    return float(values[order][min(index, values.size - 1)])


class ReplicaCpu:
    """The single server of one replica process."""

    __slots__ = (
        "_arrived_at",
        "_draw",
        "_max_batch",
        "_occurred",
        "_spells_from",
        "_spells_to",
        "_write_from",
        "_write_to",
        "_written_frames",
        "arrived",
        "arrived_at",
        "busy",
        "busy_s",
        "connections",
        "events",
        "frames",
        "generation",
        "max_waiting",
        "model",
        "owed_s",
        "spells",
        "waiting",
    )

    def __init__(
        self, generation: Generation, model: CpuModel, rng: random.Random
    ) -> None:
        self.generation = generation
        self.model = model
        self._max_batch = model.max_batch
        # A draw per unit of work: 1 for fixed costs, an Exp(1) factor otherwise.
        self._draw: Callable[[], float] = (
            (lambda: 1.0)
            if model.service == "fixed"
            else (lambda: rng.expovariate(1.0))
        )
        self.waiting: deque[Envelope] = deque()
        self.arrived_at: deque[float] = deque()
        self.arrived = 0
        # Connection work not yet served; it goes first in the next spell.
        self.owed_s = 0.0
        self.busy = False
        self.busy_s = 0.0
        self.events = 0
        self.frames = 0
        self.connections = 0
        self.spells = 0
        self.max_waiting = 0
        self._occurred = array("d")
        self._arrived_at = array("d")
        self._write_from = array("d")
        self._write_to = array("d")
        self._written_frames = array("d")
        self._spells_from = array("d")
        self._spells_to = array("d")

    # -- what the replica calls ------------------------------------------------------

    def arrive(self, batch: list[Envelope]) -> None:
        """The subscription hands over events: they wait for the CPU."""
        if not self.generation.alive:
            return
        now = self.generation.world.env.now
        self.waiting.extend(batch)
        self.arrived_at.extend([now] * len(batch))
        self.arrived += len(batch)
        if len(self.waiting) > self.max_waiting:
            self.max_waiting = len(self.waiting)
        if not self.busy:
            self._serve()

    def charge_connection(self) -> None:
        """A stream was opened: its handshake is CPU work like any other."""
        cost = self.model.per_connection_s
        if cost <= 0:
            return
        self.connections += 1
        self.owed_s += cost * self._draw()
        if not self.busy:
            self._serve()

    def statistics(self) -> CpuStatistics:
        generation = self.generation
        return CpuStatistics(
            replica_id=generation.replica.name,
            generation=generation.number,
            busy_s=self.busy_s,
            events=self.events,
            frames=self.frames,
            connections=self.connections,
            spells=self.spells,
            max_waiting=self.max_waiting,
            waiting=len(self.waiting),
        )

    def records(self) -> CpuRecords:
        def arr(values: array[float]) -> npt.NDArray[np.float64]:
            return np.frombuffer(values, dtype=np.float64).copy()

        return CpuRecords(
            occurred_s=arr(self._occurred),
            arrived_s=arr(self._arrived_at),
            write_from_s=arr(self._write_from),
            write_to_s=arr(self._write_to),
            frames=arr(self._written_frames),
            busy_from_s=arr(self._spells_from),
            busy_to_s=arr(self._spells_to),
        )

    # -- the server ------------------------------------------------------------------

    def _serve(self) -> None:
        """The CPU is free and has work: start a busy spell."""
        generation = self.generation
        world = generation.world
        now = world.env.now
        waiting = self.waiting
        limit = self._max_batch
        take = len(waiting) if limit is None else min(limit, len(waiting))
        taken = [waiting.popleft() for _ in range(take)]
        arrivals = [self.arrived_at.popleft() for _ in range(take)]
        frames = generation.dispatch(taken) if taken else []

        model = self.model
        draw = self._draw
        setup = self.owed_s
        self.owed_s = 0.0
        costs: list[float] = []
        for count in frames:
            event_cost = model.per_event_s * draw() if model.per_event_s else 0.0
            setup += event_cost
            costs.append(count * model.per_delivery_s * draw() if count else 0.0)
        writing = sum(costs)
        spell = setup + writing
        if spell <= 0:
            # Free work: write at once, as a world without a CPU model would.
            self._record(taken, arrivals, frames, now, now, now, now)
            generation.settle()
            return
        self.busy = True
        end = call_at(world.env, now + spell, self._done)
        self._record(taken, arrivals, frames, now, now + setup, end, end)

    def _record(
        self,
        taken: Sequence[Envelope],
        arrivals: Sequence[float],
        frames: Sequence[int],
        start: float,
        write_from: float,
        write_to: float,
        end: float,
    ) -> None:
        epoch = self.generation.world.start_epoch
        self.events += len(taken)
        self.spells += 1
        self.busy_s += end - start
        self._spells_from.append(start)
        self._spells_to.append(end)
        for envelope, arrived, count in zip(taken, arrivals, frames, strict=True):
            self.frames += count
            self._occurred.append(envelope.occurred_at_s - epoch)
            self._arrived_at.append(arrived)
            self._write_from.append(write_from)
            self._write_to.append(write_to)
            self._written_frames.append(float(count))

    def _done(self, _: object) -> None:
        self.busy = False
        generation = self.generation
        if not generation.alive:
            return
        # The spell's frames go out now; the writer ran on this CPU all along.
        generation.settle()
        if self.waiting or self.owed_s > 0:
            self._serve()
