"""Dashboard sessions: lean raw-socket SSE clients that come, flap and go.

Each session holds one token and one stream at a time. It reconnects as a
browser's ``EventSource`` does, after the stream's ``retry:`` and with the last
event id it saw, to any replica (to another one when its replica failed it). A
flapping session now and then stops reading, then drops its socket with a reset.
A session ends when its token expires (the hub says so in-band), when it closes
(a reset, like a closed tab), or when the run stops.

Bytes are taken in the protocol's ``data_received`` and parsed at once: nothing
read is ever lost to a cancelled read, so a stream's count of frames is exact.
Stopping to read is ``pause_reading`` on the transport: the kernel buffers fill
and the hub sees a client that stopped reading.
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import socket
import struct
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from hub import issue_token
from hub.sse import SseEvent, SseParser

from ._model import Plan, StreamEnd, StreamRecord

CONTROL_EVENTS = frozenset({"ready", "server_shutdown", "reload", "token_expired"})
FAREWELLS = frozenset({"server_shutdown", "token_expired"})
CLIENT_RECEIVE_BUFFER = 8192  # asked of the kernel; it may double it
HEAD_LIMIT = 16 * 1024
CONNECT_TIMEOUT_S = 5.0
HEAD_TIMEOUT_S = 10.0
DEFAULT_RETRY_MS = 3000
MAX_RETRY_S = 30.0
DUPLICATE_WINDOW = 4096  # ids a session remembers; a replay is at most 1000
MAX_CONNECTIONS_PER_SESSION = 10_000
ALL_SCOPES = (
    "claims.read",
    "denials.read",
    "remittance.read",
    "authorizations.read",
    "batches.read",
)
NARROW_SCOPES = ("claims.read", "denials.read")


class Endpoints(Protocol):
    """Where the replicas listen, and which process instance answers there."""

    def address(self, slot: int) -> tuple[str, int]: ...

    def instance_key(self, slot: int) -> str: ...


@dataclass
class ClientWorld:
    """What every session shares: the replicas, the clock, the run's end, and the
    records they all write."""

    endpoints: Endpoints
    slot_count: int
    plan: Plan
    secret: str
    now: Callable[[], float]
    streams: list[StreamRecord] = field(default_factory=list)
    sessions: list[SessionRecord] = field(default_factory=list)
    open_streams: int = 0
    smallest_frame: int = 1 << 30
    stopped: asyncio.Future[None] | None = None

    def __post_init__(self) -> None:
        self.stopped = asyncio.get_running_loop().create_future()

    @property
    def stopping(self) -> bool:
        assert self.stopped is not None
        return self.stopped.done()

    def stop(self) -> None:
        """From now on sessions read to the end of their streams and do not
        reconnect: dark ones read again, closing ones no longer cut."""
        assert self.stopped is not None
        if not self.stopped.done():
            self.stopped.set_result(None)


@dataclass(slots=True)
class SessionRecord:
    number: int
    tenant: str
    narrow: bool
    flapping: bool
    closes: bool
    started_s: float
    life_s: float
    ended_s: float | None = None
    outcome: str = "running"  # token_expired, closed, run_end, gave_up
    connections: int = 0
    drops: int = 0


class _RecentIds:
    """The last ``size`` event ids a session received, for counting duplicates."""

    __slots__ = ("_order", "_seen", "_size")

    def __init__(self, size: int) -> None:
        self._size = size
        self._order: deque[str] = deque()
        self._seen: set[str] = set()

    def add(self, event_id: str) -> bool:
        """Remember ``event_id``; True when it was already remembered."""
        if event_id in self._seen:
            return True
        self._order.append(event_id)
        self._seen.add(event_id)
        if len(self._order) > self._size:
            self._seen.discard(self._order.popleft())
        return False


class _SseProtocol(asyncio.Protocol):
    """One stream: the response head, then every frame into the record."""

    def __init__(
        self,
        world: ClientWorld,
        record: StreamRecord,
        parser: SseParser,
        recent: _RecentIds,
    ) -> None:
        loop = asyncio.get_running_loop()
        self.world = world
        self.record = record
        self.parser = parser
        self.recent = recent
        self.head_done: asyncio.Future[None] = loop.create_future()
        self.ready: asyncio.Future[None] = loop.create_future()
        self.closed: asyncio.Future[None] = loop.create_future()
        self.transport: asyncio.Transport | None = None
        self._head = bytearray()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        if not self.head_done.done():
            self._head += data
            end = self._head.find(b"\r\n\r\n")
            if end < 0:
                if len(self._head) > HEAD_LIMIT:
                    self.head_done.set_result(None)
                    if self.transport is not None:
                        self.transport.abort()
                return
            head = bytes(self._head[:end])
            data = bytes(self._head[end + 4 :])
            self._head = bytearray()
            self.record.status = _status(head)
            self.head_done.set_result(None)
        if self.record.status != 200 or not data:
            return
        for event in self.parser.feed(data):
            self._event(event)

    def _event(self, event: SseEvent) -> None:
        record = self.record
        kind = event.type
        if kind not in CONTROL_EVENTS:
            record.received += 1
            if self.recent.add(event.last_event_id):
                record.duplicates += 1
                types = record.duplicate_types
                types[kind] = types.get(kind, 0) + 1
            size = len(event.last_event_id) + len(kind) + len(event.data) + 22
            if size < self.world.smallest_frame:
                self.world.smallest_frame = size
        elif kind == "ready":
            document = _json(event.data)
            record.subscriber_id = str(document.get("subscriberId") or "") or None
            record.replica_id = str(document.get("replicaId") or "") or None
            if not self.ready.done():
                self.ready.set_result(None)
        elif kind in FAREWELLS:
            reason = str(_json(event.data).get("reason") or "")
            record.farewell = (
                kind if kind == reason or not reason else f"{kind}:{reason}"
            )
        elif kind == "reload":
            record.reload_notices += 1

    def eof_received(self) -> bool | None:
        return None  # the transport closes; connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        record = self.record
        if record.end is not StreamEnd.CUT:
            if record.status != 200:
                record.end = StreamEnd.REFUSED
            elif record.farewell is not None:
                record.end = StreamEnd.FAREWELL
            else:
                record.end = StreamEnd.LOST
        record.closed_s = self.world.now()
        for future in (self.head_done, self.ready):
            if not future.done():
                future.set_result(None)
        if not self.closed.done():
            self.closed.set_result(None)


def _status(head: bytes) -> int:
    parts = head.split(b" ", 2)
    if len(parts) >= 2 and parts[0].startswith(b"HTTP/") and parts[1].isdigit():
        return int(parts[1])
    return 0


def _json(text: str) -> dict[str, object]:
    try:
        document = json.loads(text)
    except ValueError:
        return {}
    return document if isinstance(document, dict) else {}


class Session:
    """One dashboard tab: a token, a lifetime, and streams one after another."""

    def __init__(
        self,
        world: ClientWorld,
        *,
        number: int,
        tenant: str,
        life_s: float,
        narrow: bool,
        flapping: bool,
        closes: bool,
        rng: random.Random,
    ) -> None:
        self.world = world
        self.rng = rng
        self.record = SessionRecord(
            number=number,
            tenant=tenant,
            narrow=narrow,
            flapping=flapping,
            closes=closes,
            started_s=world.now(),
            life_s=life_s,
        )
        world.sessions.append(self.record)
        self.ends_at = self.record.started_s + life_s
        # A session that closes outlives its token by far; the others' tokens
        # expire at the end of their life, and the hub ends their stream then.
        ttl = math.ceil(life_s) + (3600 if closes else 0)
        self.token = issue_token(
            secret=world.secret,
            tenant_id=tenant,
            scopes=NARROW_SCOPES if narrow else ALL_SCOPES,
            ttl_s=max(2, ttl),
            subject=f"soak-session-{number}",
        )
        self.last_event_id = ""
        self.retry_ms = DEFAULT_RETRY_MS
        self.recent = _RecentIds(DUPLICATE_WINDOW)
        self.next_drop: float | None = self._draw_drop() if flapping else None

    def _draw_drop(self) -> float:
        return self.world.now() + self.rng.expovariate(1 / self.world.plan.flap_every_s)

    async def play(self) -> None:
        world = self.world
        record = self.record
        slot = self.rng.randrange(world.slot_count)
        try:
            for _ in range(MAX_CONNECTIONS_PER_SESSION):
                if world.stopping:
                    record.outcome = "run_end"
                    return
                if record.closes and world.now() >= self.ends_at:
                    record.outcome = "closed"
                    return
                stream = await self._stream(slot)
                record.connections += 1
                if stream.status == 401 or stream.farewell == "token_expired":
                    record.outcome = "token_expired"
                    return
                if stream.end is StreamEnd.CUT:
                    if record.closes and world.now() >= self.ends_at:
                        record.outcome = "closed"
                        return
                    record.drops += 1
                    self.next_drop = self._draw_drop()
                if world.stopping:
                    record.outcome = "run_end"
                    return
                slot = self._next_slot(slot, failed=stream.end is not StreamEnd.CUT)
                delay = self.retry_ms / 1000 * self.rng.uniform(0.8, 1.2)
                assert world.stopped is not None
                await asyncio.wait({world.stopped}, timeout=min(delay, MAX_RETRY_S))
            record.outcome = "gave_up"
        finally:
            record.ended_s = world.now()

    def _next_slot(self, slot: int, *, failed: bool) -> int:
        count = self.world.slot_count
        if failed and count > 1:
            # As a load balancer would: the next attempt goes elsewhere.
            return (slot + self.rng.randrange(1, count)) % count
        return self.rng.randrange(count)

    async def _stream(self, slot: int) -> StreamRecord:
        world = self.world
        loop = asyncio.get_running_loop()
        host, port = world.endpoints.address(slot)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, CLIENT_RECEIVE_BUFFER)
        sock.setblocking(False)
        # The instance is read and the connection made in one step of the event
        # loop (no await in between), so the stream is credited to the process
        # that was listening when it connected.
        record = StreamRecord(
            session=self.record.number,
            tenant=self.record.tenant,
            slot=slot,
            instance=world.endpoints.instance_key(slot),
            opened_s=world.now(),
            resumed=bool(self.last_event_id),
            resumed_after_completion=self.last_event_id.startswith("batch-"),
            receive_buffer=sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF),
        )
        world.streams.append(record)
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT_S):
                await loop.sock_connect(sock, (host, port))
        except (OSError, TimeoutError):
            sock.close()
            record.closed_s = world.now()
            return record

        parser = SseParser(last_event_id=self.last_event_id)
        protocol = _SseProtocol(world, record, parser, self.recent)
        try:
            transport, _ = await loop.create_connection(lambda: protocol, sock=sock)
        except OSError:
            sock.close()
            record.closed_s = world.now()
            return record
        resume = (
            f"Last-Event-ID: {self.last_event_id}\r\n" if self.last_event_id else ""
        )
        transport.write(
            (
                f"GET /v1/realtime/stream HTTP/1.0\r\nHost: {host}:{port}\r\n"
                f"Accept: text/event-stream\r\nAuthorization: Bearer {self.token}"
                f"\r\n{resume}\r\n"
            ).encode("ascii")
        )
        await asyncio.wait({protocol.head_done}, timeout=HEAD_TIMEOUT_S)
        if record.status == 200:
            world.open_streams += 1
            try:
                await self._follow(protocol, transport)
            except asyncio.CancelledError:
                self._cut(transport, record)
                raise
            finally:
                world.open_streams -= 1
        else:
            transport.abort()
        await protocol.closed
        if parser.last_event_id:
            self.last_event_id = parser.last_event_id
        if parser.retry_ms is not None:
            self.retry_ms = parser.retry_ms
        return record

    async def _follow(
        self, protocol: _SseProtocol, transport: asyncio.Transport
    ) -> None:
        """Read until the stream ends, going dark and dropping as planned."""
        world = self.world
        assert world.stopped is not None
        plan = world.plan
        # Nothing is done to a stream before its ready frame is read: the client
        # must know the stream's subscriber id to hold it against the hub's count.
        await asyncio.wait(
            {protocol.ready, protocol.closed},
            timeout=HEAD_TIMEOUT_S,
            return_when="FIRST_COMPLETED",
        )
        while not protocol.closed.done():
            action_at = self._next_action()
            waiters: set[asyncio.Future[None]] = {protocol.closed}
            if not world.stopping:
                waiters.add(world.stopped)
            timeout = None if action_at is None else max(0.0, action_at - world.now())
            await asyncio.wait(waiters, timeout=timeout, return_when="FIRST_COMPLETED")
            if protocol.closed.done() or world.stopping:
                continue
            if action_at is None or world.now() < action_at:
                continue
            if self.record.closes and world.now() >= self.ends_at:
                self._cut(transport, protocol.record)
                continue
            transport.pause_reading()
            protocol.record.went_dark = True
            dark_s = self.rng.uniform(plan.dark_min_s, plan.dark_max_s)
            await asyncio.wait(
                {protocol.closed, world.stopped},
                timeout=dark_s,
                return_when="FIRST_COMPLETED",
            )
            if world.stopping and not protocol.closed.done():
                transport.resume_reading()
                continue
            self._cut(transport, protocol.record)

    def _next_action(self) -> float | None:
        if self.world.stopping:
            return None
        times = [self.next_drop] if self.next_drop is not None else []
        if self.record.closes:
            times.append(self.ends_at)
        return min(times) if times else None

    def _cut(self, transport: asyncio.Transport, record: StreamRecord) -> None:
        """Drop the socket as a lost network or a closed tab does: a reset, with
        whatever was unread thrown away."""
        if record.end is StreamEnd.CUT or transport.is_closing():
            return
        record.end = StreamEnd.CUT
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(
                socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
            )
        transport.abort()
