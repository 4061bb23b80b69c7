"""Clients: browser tabs holding a stream, each with a behaviour, and their truth.

A client connects through the load balancer to a ready replica, honours the
``retry:`` of the ready frame it was sent (with jitter) when it has to reconnect, and
prefers another replica than the one that dropped it. Its connection has a mode that
says what happens to frames the hub writes:

- ``LIVE``: the client reads them as they are written;
- ``DARK``: its network is dark: the socket absorbs a few frames, then writes stall
  and the hub's queue fills (backpressure, then eviction);
- ``DEAD``: the client is gone without a FIN (half-open): the same, but whatever the
  socket absorbs is lost.

Truth is counted on the client's side: an event counts once, when the client reads
it; a later copy of an event it already had (another replica, reconnect) counts as a
duplicate; frames written to a socket the client never reads are lost.
"""

from __future__ import annotations

import bisect
import enum
import random
from collections import Counter
from collections.abc import Generator, Iterable
from typing import TYPE_CHECKING, Any

import simpy

from hub.core import (
    DisconnectReason,
    EncodedEvent,
    Subscriber,
    SubscriberState,
    ready_frame,
)

from ._population import ClientKind, ClientSpec
from ._replica import Generation, LatencyHistogram, SimReplica
from ._sched import call_later

if TYPE_CHECKING:
    from ._world import World

_OPEN = SubscriberState.OPEN
_CLOSED = SubscriberState.CLOSED


class Mode(enum.Enum):
    LIVE = "live"  # the client reads what is written
    DARK = "dark"  # the client's network is dark; the socket fills, then stalls
    DEAD = "dead"  # the client is gone without a FIN; the socket fills, then stalls


class ClientState(enum.Enum):
    IDLE = "idle"  # before its first connection
    CONNECTED = "connected"  # holds a stream it reads (or will, once back from dark)
    WAITING = "waiting"  # waiting out retry: before reconnecting
    AWAY = "away"  # the user left with the connection half-open
    GONE = "gone"  # will not connect again


def retry_of(frame: bytes) -> int | None:
    """The ``retry:`` field of a frame, in milliseconds, as a browser reads it."""
    for line in frame.split(b"\n"):
        if line.startswith(b"retry:"):
            value = line[6:].strip()
            if value.isdigit():
                return int(value)
    return None


class Connection:
    """One stream: the subscriber in a replica's core and the client's socket."""

    __slots__ = (
        "client",
        "dirty",
        "ended",
        "farewell",
        "generation",
        "mode",
        "opened_at",
        "socket",
        "subscriber",
        "wakeup",
    )

    def __init__(
        self, client: SimClient, generation: Generation, subscriber: Subscriber
    ) -> None:
        self.client = client
        self.generation = generation
        self.subscriber = subscriber
        self.mode = Mode.LIVE
        self.dirty = False
        # Set once the server side of the stream is over (the core forgot it).
        self.ended = False
        # The farewell's reason when it was written into an unread socket.
        self.farewell: DisconnectReason | None = None
        # Frames written but not yet read (DARK) or never to be read (DEAD).
        self.socket: list[EncodedEvent] = []
        self.wakeup: simpy.Event | None = None
        self.opened_at = generation.world.env.now

    def wake(self) -> None:
        """The core's ``Subscriber.wake``: queue turned non-empty or state changed."""
        wakeup = self.wakeup
        if wakeup is not None:
            if not wakeup.triggered:
                wakeup.succeed()
            return
        if not self.dirty:
            self.dirty = True
            self.generation.dirty.append(self)

    def poke(self) -> None:
        """Have the writer look again (the client started reading again)."""
        if not self.dirty:
            self.dirty = True
            self.generation.dirty.append(self)
        self.generation.settle()

    def write(self, at: float) -> None:
        """The replica's writer for this stream: as much as the socket takes."""
        self.dirty = False
        if self.ended:
            return
        subscriber = self.subscriber
        state = subscriber.state
        if state is _CLOSED:
            self._server_ended()
            return
        core = self.generation.core
        queue = subscriber.queue
        if self.mode is Mode.LIVE:
            count = len(queue)
            if count:
                self.client.take(queue, at, self.generation.latency)
                core.mark_written(subscriber, count)
            if state is not _OPEN:
                reason = subscriber.disconnect_reason
                self.ended = True
                core.disconnect(subscriber)
                self.client.on_farewell(self, reason)
            return
        room = self.client.socket_frames - len(self.socket)
        take = min(room, len(queue))
        if take > 0:
            frames = subscriber.pending(take)
            observe(frames, at, self.generation.latency)
            if self.mode is Mode.DARK:
                self.socket.extend(frames)
            else:
                self.client.lost_in_socket += take
            core.mark_written(subscriber, take)
        if state is not _OPEN and not queue and take < room:
            # The farewell fits in the socket: for the hub the stream ended well.
            self.ended = True
            self.farewell = subscriber.disconnect_reason
            core.disconnect(subscriber)
            self.client.stream_closed(self.farewell)

    def _server_ended(self) -> None:
        """The core forgot the stream without a farewell read: evicted, aborted at
        shutdown, or its writes failed."""
        self.ended = True
        reason = self.subscriber.disconnect_reason
        self.client.stream_closed(reason)
        if self.mode is Mode.LIVE:
            self.client.on_cut(self)
        # A DARK client finds out when its network is back; a DEAD one never does.

    def read_slowly(
        self, rng: random.Random, rate: float, exponential: bool
    ) -> Generator[simpy.Event, Any, None]:
        """A slow reader: one frame at a time, each after a drain time.

        A frame stays queued (and counted as queued by the core) while it is being
        read, so the queue holds the frame in service plus those waiting.
        """
        env = self.generation.world.env
        start_epoch = self.generation.world.start_epoch
        subscriber = self.subscriber
        core = self.generation.core
        latency = self.generation.latency
        while True:
            if subscriber.state is _CLOSED:
                self._server_ended()
                return
            if subscriber.queue:
                yield env.timeout(rng.expovariate(rate) if exponential else 1 / rate)
                if subscriber.state is not _CLOSED and subscriber.queue:
                    frame = subscriber.queue[0]
                    self.client.take((frame,), start_epoch + env.now, latency)
                    core.mark_written(subscriber, 1)
                continue
            if subscriber.state is not _OPEN:
                reason = subscriber.disconnect_reason
                self.ended = True
                core.disconnect(subscriber)
                self.generation.settle()
                self.client.on_farewell(self, reason)
                return
            self.wakeup = env.event()
            yield self.wakeup
            self.wakeup = None


def observe(
    frames: Iterable[EncodedEvent], at: float, latency: LatencyHistogram
) -> None:
    for frame in frames:
        latency.observe(at - frame.occurred_at_s)


class SimClient:
    """A browser tab: connects, reads according to its kind, reconnects."""

    def __init__(self, world: World, spec: ClientSpec, rng: random.Random) -> None:
        self.world = world
        self.spec = spec
        self.kind = spec.kind
        self.rng = rng
        settings = world.config.clients
        self.settings = settings
        self.socket_frames = settings.socket_buffer_frames
        self.state = ClientState.IDLE
        self.current: Connection | None = None
        self.last_replica: str | None = None
        # A browser's own default until a stream says otherwise.
        self.retry_ms = 3000
        # The client wants the feed from its first connection on: events published
        # from then count (set when it starts).
        self.first_seq = 0
        self.high_seq = -1
        self.should_from = 0
        self.should_until: int | None = None
        self.got = 0
        self.duplicates = 0
        self.completions = 0
        self.lost_in_socket = 0
        self.lag_sum = 0.0
        self.lag_max = 0.0
        self.connections = 0
        self.refused = 0
        self.dark_spells = 0
        self.half_open_spells = 0
        self.streams_ended: Counter[str] = Counter()
        self.connected_s = 0.0
        self._connected_since: float | None = None

    # -- connecting ------------------------------------------------------------------

    def start(self) -> None:
        call_later(self.world.env, self.spec.connect_at_s, lambda _: self._begin())

    def _begin(self) -> None:
        truth = self.world.truth
        self.first_seq = truth.next_seq
        self.high_seq = truth.next_seq - 1
        self.should_from = truth.relevant(
            self.spec.tenant, self.spec.user.principal.scopes
        )
        self.connect()

    def connect(self) -> None:
        if self.state in (ClientState.GONE, ClientState.CONNECTED):
            return
        avoid = self.last_replica if self.settings.reconnect_elsewhere else None
        replica = self.world.balancer.choose(avoid)
        if replica is None or replica.current is None:
            # Refused (no ready replica): the browser tries again after retry.
            self.refused += 1
            self._reconnect_later()
            return
        self._open(replica, replica.current)

    def _open(self, replica: SimReplica, generation: Generation) -> None:
        world = self.world
        principal = self.spec.user.principal
        subscriber = generation.subscribe(principal)
        connection = Connection(self, generation, subscriber)
        subscriber.wake = connection.wake
        ready = ready_frame(
            subscriber_id=subscriber.id,
            replica_id=replica.name,
            tenant_id=principal.tenant_id,
            retry_ms=generation.core.settings.retry_ms,
        )
        retry = retry_of(ready)
        if retry is not None:
            self.retry_ms = retry
        self.current = connection
        self.state = ClientState.CONNECTED
        self.last_replica = replica.name
        self.connections += 1
        self._connected_since = world.env.now
        kind = self.kind
        if kind is ClientKind.SLOW:
            settings = self.settings
            world.env.process(
                connection.read_slowly(
                    self.rng,
                    settings.slow_drain_rate_per_s,
                    settings.slow_drain == "exponential",
                )
            )
        elif kind is ClientKind.FLAPPING:
            self._next_dark(connection)
        elif kind is ClientKind.HALF_OPEN:
            delay = self.settings.half_open_after.sample(self.rng)
            call_later(world.env, delay, lambda _: self._go_half_open(connection))

    def _reconnect_later(self) -> None:
        self.state = ClientState.WAITING
        jitter = self.settings.reconnect_jitter
        delay = self.retry_ms / 1000 * self.rng.uniform(1 - jitter, 1 + jitter)
        call_later(self.world.env, delay, lambda _: self._retry())

    def _retry(self) -> None:
        if self.state is ClientState.WAITING:
            self.connect()

    def _detach(self, connection: Connection) -> None:
        if self.current is connection:
            self.current = None
            if self._connected_since is not None:
                self.connected_s += self.world.env.now - self._connected_since
                self._connected_since = None

    # -- what the stream tells the client --------------------------------------------

    def stream_closed(self, reason: DisconnectReason | None) -> None:
        """The hub forgot one of this client's streams, for ``reason``."""
        self.streams_ended[str(reason or DisconnectReason.CLIENT)] += 1

    def on_farewell(
        self, connection: Connection, reason: DisconnectReason | None
    ) -> None:
        """The client read ``server_shutdown``; the stream is over."""
        self.stream_closed(reason)
        self._detach(connection)
        if reason is DisconnectReason.ADMIN and not self.settings.reconnect_after_admin:
            self._leave()
            return
        self._reconnect_later()

    def on_cut(self, connection: Connection) -> None:
        """The connection broke under a reading client: it reconnects after retry."""
        self._detach(connection)
        self._reconnect_later()

    def take(
        self,
        frames: Iterable[EncodedEvent],
        at: float,
        latency: LatencyHistogram | None,
    ) -> None:
        """Frames the client reads at ``at``: its truth, and the hub's latency when
        the frames are being written right now.

        The client counts each event once, the first time it reads it.
        """
        seq_of = self.world.truth.seq_of
        counts = latency.counts if latency is not None else None
        bounds = latency.bounds if latency is not None else ()
        high = self.high_seq
        first = self.first_seq
        got = duplicates = completions = written = 0
        lag_total = lag_sum = 0.0
        lag_max = self.lag_max
        for frame in frames:
            lag = at - frame.occurred_at_s
            if lag < 0:
                lag = 0.0
            if counts is not None:
                counts[bisect.bisect_left(bounds, lag)] += 1
            lag_total += lag
            written += 1
            seq = seq_of.get(frame.envelope.id)
            if seq is None:
                completions += 1
            elif seq > high:
                high = seq
                got += 1
                lag_sum += lag
                if lag > lag_max:
                    lag_max = lag
            elif seq >= first:
                duplicates += 1
        if latency is not None:
            latency.total += lag_total
            latency.count += written
        self.high_seq = high
        self.got += got
        self.duplicates += duplicates
        self.completions += completions
        self.lag_sum += lag_sum
        self.lag_max = lag_max

    def read(self, frames: list[EncodedEvent], at: float) -> None:
        """Frames the client reads from its socket after a dark spell (the hub
        observed their latency when it wrote them)."""
        if frames:
            self.take(frames, at, None)

    def _leave(self) -> None:
        """Ejected by an admin and told not to come back."""
        self.state = ClientState.GONE
        self.should_until = self.world.truth.relevant(
            self.spec.tenant, self.spec.user.principal.scopes
        )

    # -- flapping --------------------------------------------------------------------

    def _next_dark(self, connection: Connection) -> None:
        delay = self.settings.flap_every.sample(self.rng)
        call_later(self.world.env, delay, lambda _: self._go_dark(connection))

    def _go_dark(self, connection: Connection) -> None:
        if self.current is not connection or connection.mode is not Mode.LIVE:
            return
        if connection.ended:
            return
        connection.mode = Mode.DARK
        self.dark_spells += 1
        delay = self.settings.flap_dark.sample(self.rng)
        call_later(self.world.env, delay, lambda _: self._back_from_dark(connection))

    def _back_from_dark(self, connection: Connection) -> None:
        world = self.world
        at = world.start_epoch + world.env.now
        connection.mode = Mode.LIVE
        frames, connection.socket = connection.socket, []
        if connection.ended:
            if connection.farewell is not None:
                # The farewell was waiting in the socket behind the frames.
                self.read(frames, at)
                self._detach(connection)
                if (
                    connection.farewell is DisconnectReason.ADMIN
                    and not self.settings.reconnect_after_admin
                ):
                    self._leave()
                    return
            else:
                # Aborted by the hub while dark: what the socket held is lost.
                self.lost_in_socket += len(frames)
                self._detach(connection)
            self._reconnect_later()
            return
        self.read(frames, at)
        connection.poke()
        self._next_dark(connection)

    # -- half-open -------------------------------------------------------------------

    def _go_half_open(self, connection: Connection) -> None:
        if self.current is not connection or connection.mode is not Mode.LIVE:
            return
        if connection.ended:
            return
        world = self.world
        connection.mode = Mode.DEAD
        self.half_open_spells += 1
        self._detach(connection)
        self.state = ClientState.AWAY
        # The hub keeps writing into the dead socket until the queue stalls; a write
        # that stays unacknowledged fails after the TCP timeout.
        call_later(
            world.env,
            self.settings.tcp_timeout_s,
            lambda _: self._write_timed_out(connection),
        )
        back = self.settings.half_open_return
        if back is not None:
            call_later(world.env, back.sample(self.rng), lambda _: self._come_back())
        connection.poke()

    def _write_timed_out(self, connection: Connection) -> None:
        if connection.ended or connection.subscriber.state is _CLOSED:
            return
        generation = connection.generation
        if not generation.alive:
            return
        connection.ended = True
        self.stream_closed(DisconnectReason.CLIENT)
        generation.core.disconnect(connection.subscriber, DisconnectReason.CLIENT)
        generation.settle()

    def _come_back(self) -> None:
        if self.state is ClientState.AWAY:
            self.state = ClientState.WAITING
            self.connect()

    # -- the end ---------------------------------------------------------------------

    def finish(self) -> None:
        """The run is over: close the books (the streams stay as they are)."""
        now = self.world.env.now
        if self._connected_since is not None:
            self.connected_s += now - self._connected_since
            self._connected_since = None
        if self.should_until is None:
            self.should_until = self.world.truth.relevant(
                self.spec.tenant, self.spec.user.principal.scopes
            )
