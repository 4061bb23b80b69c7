"""The hub's side of a stream in the simulator: the writer of each subscriber.

A subscriber's ``wake`` puts its stream on its replica's list; after every call into
the core the replica writes the listed streams, the way the real hub's writer task
wakes and drains a queue onto its socket. What a write does depends on the client's
side of the connection (its mode):

- ``LIVE``: the client reads frames as they are written;
- ``DARK``: the client's network is dark: the socket absorbs a few frames, then
  writes stall and the queue fills (backpressure, then eviction);
- ``DEAD``: the client is gone without a FIN (half-open): the same, but whatever
  the socket absorbs is lost;
- ``SLOW``: the client reads its socket at its own pace; the socket absorbs what
  it has not read yet, as much as fits, then writes stall.

The socket's allowance is ``socket_buffer_frames`` frames or, when set,
``socket_buffer_bytes`` bytes (a frame is taken when it fits whole).

The common case (a live reader with one frame waiting) is written inline by
``write_streams``, with the per-frame figures computed once for all the streams that
take the same frame; everything else goes through ``Connection.write``.
"""

from __future__ import annotations

import bisect
import enum
import random
from collections.abc import Generator, Iterable
from functools import partial
from typing import TYPE_CHECKING, Any

import simpy

from hub.core import DisconnectReason, EncodedEvent, Subscriber, SubscriberState

if TYPE_CHECKING:
    from hub.core import LatencyHistogram

    from ._clients import SimClient
    from ._replica import Generation

_OPEN = SubscriberState.OPEN
_CLOSED = SubscriberState.CLOSED


class Mode(enum.Enum):
    LIVE = "live"  # the client reads what is written
    DARK = "dark"  # the client's network is dark; the socket fills, then stalls
    DEAD = "dead"  # the client is gone without a FIN; the socket fills, then stalls
    SLOW = "slow"  # the client reads its socket slowly; the socket fills, then stalls


# The hub's SSE response head (status line and headers) that precedes the ready
# frame: it counts towards the writer's first wait for its buffer to drain.
RESPONSE_HEAD_BYTES = 173


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
        "draining",
        "ended",
        "farewell",
        "farewell_frame",
        "fast",
        "fresh",
        "generation",
        "mode",
        "since_drain",
        "socket",
        "socket_bytes",
        "span_completions",
        "span_delivered",
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
        # Fresh once the client read an event it had not had on this connection:
        # from then on, the bus keeping order, every event it reads here is new.
        self.fresh = False
        # A fresh live stream is written by the fast path of ``write_streams``,
        # which leaves the counting of events read to the core's own tallies of
        # the subscriber over the span (frames written since ``span_delivered``).
        self.fast = False
        self.span_delivered = 0
        self.span_completions = 0
        # Set once the server side of the stream is over (the core forgot it).
        self.ended = False
        # The farewell's reason when it was written into an unread socket.
        self.farewell: DisconnectReason | None = None
        self.farewell_frame: bytes | None = None
        # Frames written but not yet read (DARK, SLOW) or never to be read (DEAD),
        # and their size in bytes.
        self.socket: list[EncodedEvent] = []
        self.socket_bytes = 0
        # With ``write_drain_bytes``: what the hub's writer put in its own buffer
        # since it last waited for that buffer to drain (the response head and
        # ready frame count), and whether a write is waiting now.
        self.since_drain = 0
        self.draining = False
        self.wakeup: simpy.Event | None = None

    def watch(self, *, reader: bool) -> None:
        """Become the subscriber's ``wake``: a woken stream is put on its replica's
        list of streams to write or, when the client reads at its own pace
        (``reader``), that reader is woken.

        The writer's list may name a stream twice; a second look finds nothing to
        do, which is cheaper than checking a flag on every wake.
        """
        if reader:
            self.subscriber.wake = self._wake_reader
        else:
            self.subscriber.wake = partial(self.generation.dirty.append, self)

    def _wake_reader(self) -> None:
        wakeup = self.wakeup
        if wakeup is not None and not wakeup.triggered:
            wakeup.succeed()

    def poke(self) -> None:
        """Have the writer look again (the client started reading again)."""
        self.generation.dirty.append(self)
        self.generation.settle()

    def write(self, at: float) -> None:
        """The replica's writer for this stream: as much as the socket takes."""
        if self.ended:
            return
        subscriber = self.subscriber
        state = subscriber.state
        if state is _CLOSED:
            self._server_ended()
            return
        core = self.generation.core
        queue = subscriber.queue
        # What this path writes it counts itself; the span resumes after.
        self.end_span()
        if self.mode is Mode.LIVE:
            count = len(queue)
            if count:
                if self.client.take(queue, at, self.generation.latency):
                    self.fresh = True
                core.mark_written(subscriber, count)
            if state is not _OPEN:
                self._read_farewell()
            elif self.fresh and not self.fast and not self.client.per_frame:
                self.begin_span()
            return
        limit = self.client.settings.socket_buffer_bytes
        if limit is None:
            room = self.client.socket_frames - len(self.socket)
            take = min(room, len(queue))
            farewell_fits = take < room
        else:
            drain = self.client.settings.write_drain_bytes
            used = self.socket_bytes
            since = self.since_drain
            take = 0
            for frame in queue:
                size = len(frame.frame)
                if used + size > limit:
                    if drain is None:
                        break
                    if since + size > drain:
                        # This write waits for the hub's buffer to drain: the
                        # frame stays queued until the socket has room for it.
                        self.draining = True
                        break
                    # The socket is full; the hub's own buffer takes it.
                    since += size
                elif self.draining:
                    # The write that waited went through, and the count restarts.
                    self.draining = False
                    since = 0
                used += size
                take += 1
            farewell = subscriber.farewell
            if farewell is None or self.draining:
                farewell_fits = False
            elif used + len(farewell) <= limit:
                farewell_fits = True
            else:
                # Into the hub's buffer, when that takes no wait.
                farewell_fits = drain is not None and since + len(farewell) <= drain
            self.since_drain = since
        if take > 0:
            frames = subscriber.pending(take)
            observe(frames, at, self.generation.latency)
            self.socket.extend(frames)
            if limit is not None:
                self.socket_bytes += sum(len(frame.frame) for frame in frames)
            if self.mode is Mode.DEAD:
                self.client.lost_in_socket += take
            core.mark_written(subscriber, take)
        if state is not _OPEN and not queue and farewell_fits:
            # The farewell fits in the socket: for the hub the stream ended well.
            self.ended = True
            self.farewell = subscriber.disconnect_reason
            self.farewell_frame = subscriber.farewell
            core.disconnect(subscriber)
            self.client.stream_closed(self.farewell)
        if self.mode is Mode.SLOW:
            self._wake_reader()

    def begin_span(self) -> None:
        self.fast = True
        self.span_delivered = self.subscriber.delivered
        self.span_completions = self.client.completions

    def end_span(self) -> None:
        """Count what the fast path wrote since the span began."""
        if not self.fast:
            return
        self.fast = False
        client = self.client
        frames = self.subscriber.delivered - self.span_delivered
        if frames:
            client.got += frames - (client.completions - self.span_completions)
            client.last_event_id = self.subscriber.last_event_id

    def _read_farewell(self) -> None:
        """Everything queued was read; the farewell is written and read, and the
        hub ends the stream."""
        subscriber = self.subscriber
        reason = subscriber.disconnect_reason
        frame = subscriber.farewell
        self.ended = True
        self.end_span()
        self.generation.core.disconnect(subscriber)
        self.client.on_farewell(self, reason, frame)

    def _server_ended(self) -> None:
        """The core forgot the stream without a farewell read: evicted, aborted at
        shutdown, or its writes failed."""
        self.ended = True
        self.end_span()
        reason = self.subscriber.disconnect_reason
        self.client.stream_closed(reason)
        if self.mode is Mode.LIVE:
            self.client.on_cut(self)
        elif self.mode is Mode.SLOW:
            # The reader finds out once it has read what its socket holds.
            self._wake_reader()
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
                self._read_farewell()
                self.generation.settle()
                return
            wakeup = self.wakeup = env.event()
            yield wakeup

    def read_socket_slowly(
        self, rng: random.Random, rate: float, exponential: bool
    ) -> Generator[simpy.Event, Any, None]:
        """A slow reader of its socket: one frame at a time, each after a drain
        time. The hub's writer (``write``) keeps the socket filled from the queue
        while frames fit, so the queue only holds what the socket cannot."""
        env = self.generation.world.env
        start_epoch = self.generation.world.start_epoch
        client = self.client
        subscriber = self.subscriber
        while True:
            if self.socket:
                yield env.timeout(rng.expovariate(rate) if exponential else 1 / rate)
                frame = self.socket.pop(0)
                self.socket_bytes -= len(frame.frame)
                client.take((frame,), start_epoch + env.now, None)
                if not self.ended and (
                    subscriber.queue or subscriber.state is not _OPEN
                ):
                    # Room in the socket: the writer looks again.
                    self.poke()
                continue
            if self.ended:
                client.socket_drained(self)
                return
            wakeup = self.wakeup = env.event()
            yield wakeup


def observe(
    frames: Iterable[EncodedEvent], at: float, latency: LatencyHistogram
) -> None:
    for frame in frames:
        latency.observe(at - frame.occurred_at_s)


def write_streams(generation: Generation, at: float) -> None:
    """Write every stream the core woke, until none is left."""
    dirty = generation.dirty
    mark_written = generation.core.mark_written
    seq_of = generation.world.truth.seq_of
    latency = generation.latency
    counts = latency.counts
    bounds = latency.bounds
    last_frame: EncodedEvent | None = None
    lag = 0.0
    bucket = 0
    seq: int | None = None
    run = 0
    lag_total = 0.0
    written = 0
    while dirty:
        batch = dirty.copy()
        dirty.clear()
        for connection in batch:
            subscriber = connection.subscriber
            queue = subscriber.queue
            if not connection.fast or len(queue) != 1 or subscriber.state is not _OPEN:
                connection.write(at)
                continue
            # A fresh live reader with one frame waiting: the frame's figures are
            # shared by every stream that takes it in this pass.
            frame = queue[0]
            if frame is not last_frame:
                if run:
                    counts[bucket] += run
                    lag_total += lag * run
                    written += run
                    run = 0
                last_frame = frame
                lag = at - frame.occurred_at_s
                if lag < 0:
                    lag = 0.0
                bucket = bisect.bisect_left(bounds, lag)
                seq = seq_of.get(frame.envelope.id)
            run += 1
            client = connection.client
            if seq is None:
                client.completions += 1
            else:
                client.high_seq = seq
            if lag > client.lag_max:
                client.lag_max = lag
            mark_written(subscriber, 1)
    if run:
        counts[bucket] += run
        lag_total += lag * run
        written += run
    latency.total += lag_total
    latency.count += written
