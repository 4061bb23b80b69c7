"""Clients: browser tabs holding a stream, each with a behaviour, and their truth.

A client connects through the load balancer to a ready replica, honours the last
``retry:`` it read (the ready frame's, or the farewell's) with jitter when it has to
reconnect, resends the id of the last event it read (so the hub can replay), and
prefers another replica than the one that dropped it. Its behaviour sets the mode of
its connection (see ``_streams``): a flapping client goes dark now and then; a
half-open one vanishes without a FIN and comes back later with a fresh page.

Truth is counted on the client's side: an event counts once, when the client reads
it; a later copy of an event it already had (another replica, reconnect) counts as a
duplicate; frames written to a socket the client never reads are lost.
"""

from __future__ import annotations

import bisect
import enum
import random
from collections import Counter
from collections.abc import Iterable
from typing import TYPE_CHECKING

from hub.core import (
    DisconnectReason,
    EncodedEvent,
    LatencyHistogram,
    StreamLimitError,
    SubscriberState,
    ready_frame,
)

from ._population import ClientKind, ClientSpec
from ._replica import Generation, SimReplica
from ._sched import call_later
from ._streams import RESPONSE_HEAD_BYTES, Connection, Mode, retry_of

if TYPE_CHECKING:
    from ._world import World

_CLOSED = SubscriberState.CLOSED


class ClientState(enum.Enum):
    IDLE = "idle"  # before its first connection
    CONNECTED = "connected"  # holds a stream it reads (or will, once back from dark)
    WAITING = "waiting"  # waiting out retry: before reconnecting
    AWAY = "away"  # the user left with the connection half-open
    GONE = "gone"  # will not connect again


class SimClient:
    """A browser tab: connects, reads according to its kind, reconnects."""

    __slots__ = (
        "_connected_since",
        "completions",
        "connected_s",
        "connections",
        "connects",
        "current",
        "dark_at",
        "dark_spells",
        "duplicates",
        "farewells",
        "first_seq",
        "got",
        "half_open_spells",
        "high_seq",
        "kind",
        "lag_max",
        "last_event_id",
        "last_replica",
        "lost_in_socket",
        "per_frame",
        "reads",
        "refused",
        "reload_notices",
        "retry_ms",
        "rng",
        "settings",
        "should_from",
        "should_until",
        "socket_frames",
        "spec",
        "state",
        "streams_ended",
        "turn",
        "wanted_since",
        "wanted_until",
        "world",
    )

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
        self.last_event_id: str | None = None
        self.reload_notices = 0
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
        # The longest occurredAt-to-read of any frame read.
        self.lag_max = 0.0
        self.connections = 0
        # When each stream opened, and on which replica.
        self.connects: list[tuple[float, str]] = []
        self.farewells = 0
        self.refused = 0
        self.dark_spells = 0
        self.half_open_spells = 0
        self.streams_ended: Counter[str] = Counter()
        self.connected_s = 0.0
        self._connected_since: float | None = None
        # From its first connection until the end of the run (or its leaving).
        self.wanted_since: float | None = None
        self.wanted_until: float | None = None
        # With the client's own dark clock: when it next goes dark.
        self.dark_at: float | None = None
        # With ``record_reads``: how many times it read each event id.
        self.reads: Counter[str] | None = Counter() if settings.record_reads else None
        # Where a client that walks the replicas itself tries next.
        self.turn = spec.position
        # Its streams are written frame by frame (no fast path): it counts every
        # id it reads.
        self.per_frame = settings.record_reads

    # -- connecting ------------------------------------------------------------------

    def start(self) -> None:
        call_later(self.world.env, self.spec.connect_at_s, lambda _: self._begin())

    def _begin(self) -> None:
        self.wanted_since = self.world.env.now
        if self.settings.dark_clock == "client":
            self.dark_at = self.wanted_since + self._dark_after()
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
        balancer = self.world.balancer
        if balancer.rotating and self.spec.replica is None:
            replica = balancer.in_turn(self.turn)
            self.turn += 1
        else:
            avoid = self.last_replica if self.settings.reconnect_elsewhere else None
            replica = balancer.choose(avoid, pinned=self.spec.replica)
        if replica is None or replica.current is None:
            # Refused (no ready replica): the browser tries again after retry.
            self.refused += 1
            self._reconnect_later()
            return
        self._open(replica, replica.current)

    def _open(self, replica: SimReplica, generation: Generation) -> None:
        world = self.world
        principal = self.spec.user.principal
        resume = self.last_event_id if self.settings.send_last_event_id else None
        try:
            subscriber = generation.subscribe(principal, resume)
        except StreamLimitError:
            # 429: the browser's EventSource gives up; the page retries later.
            self.refused += 1
            self._reconnect_later()
            return
        connection = Connection(self, generation, subscriber)
        # A slow reader reads through its socket when the socket has a byte size;
        # otherwise it takes frames straight from its queue.
        through_socket = (
            self.kind is ClientKind.SLOW and self.settings.socket_buffer_bytes
        )
        if through_socket:
            connection.mode = Mode.SLOW
        connection.watch(reader=self.kind is ClientKind.SLOW and not through_socket)
        ready = ready_frame(
            subscriber_id=subscriber.id,
            replica_id=replica.name,
            tenant_id=principal.tenant_id,
            retry_ms=generation.core.settings.retry_ms,
        )
        self._read_retry(ready)
        connection.since_drain = RESPONSE_HEAD_BYTES + len(ready)
        if subscriber.notice is not None:
            # The hub no longer holds what this client missed: it must reload.
            self.reload_notices += 1
            connection.since_drain += len(subscriber.notice)
        self.current = connection
        self.state = ClientState.CONNECTED
        self.last_replica = replica.name
        self.connections += 1
        self.connects.append((world.env.now, replica.name))
        self._connected_since = world.env.now
        kind = self.kind
        if kind is ClientKind.SLOW:
            settings = self.settings
            rate = self.spec.read_rate_per_s or settings.slow_drain_rate_per_s
            exponential = settings.slow_drain == "exponential"
            world.env.process(
                connection.read_socket_slowly(self.rng, rate, exponential)
                if through_socket
                else connection.read_slowly(self.rng, rate, exponential)
            )
        elif kind is ClientKind.FLAPPING:
            self._next_dark(connection)
        elif kind is ClientKind.HALF_OPEN:
            call_later(
                world.env,
                self._dark_delay(),
                lambda _: self._go_half_open(connection),
            )
        if subscriber.queue and (kind is not ClientKind.SLOW or through_socket):
            # Replayed frames were queued before this edge could be woken.
            connection.poke()

    def _read_retry(self, frame: bytes | None) -> None:
        """A ``retry:`` field sets the reconnection time, as in EventSource."""
        retry = retry_of(frame) if frame is not None else None
        if retry is not None:
            self.retry_ms = retry

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
        self,
        connection: Connection,
        reason: DisconnectReason | None,
        frame: bytes | None,
    ) -> None:
        """The client read the farewell (``server_shutdown``); the stream is over."""
        self.farewells += 1
        self.stream_closed(reason)
        self._read_retry(frame)
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
    ) -> bool:
        """Frames the client reads at ``at``: its truth, and the hub's latency when
        the frames are being written right now. True when one of them was an event
        the client had not had yet.

        The client counts each event once, the first time it reads it.
        """
        seq_of = self.world.truth.seq_of
        counts = latency.counts if latency is not None else None
        bounds = latency.bounds if latency is not None else ()
        high = self.high_seq
        first = self.first_seq
        got = duplicates = completions = written = 0
        lag_total = 0.0
        lag_max = self.lag_max
        reads = self.reads
        for frame in frames:
            if reads is not None:
                reads[frame.envelope.id] += 1
            lag = at - frame.occurred_at_s
            if lag < 0:
                lag = 0.0
            if counts is not None:
                counts[bisect.bisect_left(bounds, lag)] += 1
            lag_total += lag
            if lag > lag_max:
                lag_max = lag
            written += 1
            seq = seq_of.get(frame.envelope.id)
            if seq is None:
                completions += 1
            elif seq > high:
                high = seq
                got += 1
            elif seq >= first:
                duplicates += 1
        if not written:
            return False
        if latency is not None:
            latency.total += lag_total
            latency.count += written
        self.high_seq = high
        self.last_event_id = frame.envelope.id
        self.got += got
        self.duplicates += duplicates
        self.completions += completions
        self.lag_max = lag_max
        return got > 0

    def read(self, frames: list[EncodedEvent], at: float) -> bool:
        """Frames the client reads from its socket after a dark spell (the hub
        observed their latency when it wrote them); True when one was new."""
        return self.take(frames, at, None)

    def socket_drained(self, connection: Connection) -> None:
        """A slow reader read the last frame its socket held after the hub had
        ended the stream: next comes the farewell, or the end of the connection."""
        self._detach(connection)
        if connection.farewell is not None:
            self.farewells += 1
            self._read_retry(connection.farewell_frame)
            if (
                connection.farewell is DisconnectReason.ADMIN
                and not self.settings.reconnect_after_admin
            ):
                self._leave()
                return
        self._reconnect_later()

    def _leave(self) -> None:
        """Ejected by an admin and told not to come back."""
        self.state = ClientState.GONE
        self.wanted_until = self.world.env.now
        self.should_until = self.world.truth.relevant(
            self.spec.tenant, self.spec.user.principal.scopes
        )

    # -- flapping --------------------------------------------------------------------

    def _dark_after(self) -> float:
        """A draw of the connected time before the next dark spell."""
        default = (
            self.settings.half_open_after
            if self.kind is ClientKind.HALF_OPEN
            else self.settings.flap_every
        )
        return (self.spec.dark_after or default).sample(self.rng)

    def _dark_delay(self) -> float:
        """How long the connection opening now stays lit."""
        if self.dark_at is None:
            return self._dark_after()
        return max(0.0, self.dark_at - self.world.env.now)

    def _next_dark(self, connection: Connection) -> None:
        call_later(
            self.world.env, self._dark_delay(), lambda _: self._go_dark(connection)
        )

    def _go_dark(self, connection: Connection) -> None:
        if self.current is not connection or connection.mode is not Mode.LIVE:
            return
        if connection.ended:
            return
        connection.end_span()
        connection.mode = Mode.DARK
        self.dark_spells += 1
        delay = (self.spec.dark_for or self.settings.flap_dark).sample(self.rng)
        call_later(self.world.env, delay, lambda _: self._back_from_dark(connection))

    def _back_from_dark(self, connection: Connection) -> None:
        world = self.world
        at = world.start_epoch + world.env.now
        connection.mode = Mode.LIVE
        frames, connection.socket = connection.socket, []
        connection.socket_bytes = 0
        if self.dark_at is not None:
            self.dark_at = world.env.now + self._dark_after()
        drops = self.settings.flap_drops_socket
        if connection.ended and drops:
            # The stream ended while dark; the client drops its socket unread,
            # farewell and all, and reconnects on what it had read before.
            self.lost_in_socket += len(frames)
            self._detach(connection)
            self._reconnect_later()
            return
        if connection.ended:
            if connection.farewell is not None:
                # The farewell was waiting in the socket behind the frames.
                self.farewells += 1
                self.read(frames, at)
                self._read_retry(connection.farewell_frame)
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
        if drops:
            # The client gives up on the stream: what its socket held is gone, and
            # the hub learns of it the next time it writes.
            self.lost_in_socket += len(frames)
            connection.ended = True
            self.stream_closed(DisconnectReason.CLIENT)
            connection.generation.core.disconnect(
                connection.subscriber, DisconnectReason.CLIENT
            )
            connection.generation.settle()
            self._detach(connection)
            self._reconnect_later()
            return
        if self.read(frames, at):
            connection.fresh = True
        connection.poke()
        self._next_dark(connection)

    # -- half-open -------------------------------------------------------------------

    def _go_half_open(self, connection: Connection) -> None:
        if self.current is not connection or connection.mode is not Mode.LIVE:
            return
        if connection.ended:
            return
        world = self.world
        connection.end_span()
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
        connection.end_span()
        self.stream_closed(DisconnectReason.CLIENT)
        generation.core.disconnect(connection.subscriber, DisconnectReason.CLIENT)
        generation.settle()

    def _come_back(self) -> None:
        if self.state is ClientState.AWAY:
            # A reload: a new EventSource, which knows no last event id.
            self.last_event_id = None
            self.state = ClientState.WAITING
            self.connect()

    # -- the end ---------------------------------------------------------------------

    def finish(self) -> None:
        """The run is over: close the books (the streams stay as they are)."""
        now = self.world.env.now
        if self.current is not None:
            self.current.end_span()
        if self._connected_since is not None:
            self.connected_s += now - self._connected_since
            self._connected_since = None
        if self.wanted_until is None and self.wanted_since is not None:
            self.wanted_until = now
        if self.should_until is None:
            self.should_until = self.world.truth.relevant(
                self.spec.tenant, self.spec.user.principal.scopes
            )
