"""One SSE client over a gevent socket: connect, parse read by read, reconnect.

HTTP/1.1 framing (chunked bodies) is h11's job; the event stream is the hub's public
parser's. The socket is ours, because leaving cleanly needs it: a client that goes
away half-closes its side and reads to the end, so every frame the hub counted as
written is read and counted here too, and the two tallies can be compared exactly.
"""

from __future__ import annotations

import contextlib
import enum
import json
import random
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import gevent
import gevent.socket
import h11

from hub.sse import SseEvent, SseParser

from ._setup import Identity, Target
from ._tally import ClientTally, SequenceTracker

READ_SIZE = 64 * 1024
MAX_ERROR_BODY = 64 * 1024

# name, response time in ms, response length, failure (None when it went well)
Report = Callable[[str, float, int, BaseException | None], None]


class StreamRefused(Exception):
    """The hub answered the stream request with something other than 200."""


class StreamBroken(Exception):
    """The connection failed or the HTTP framing broke mid-stream."""


class SequenceGap(Exception):
    """Events of a publisher sequence were missing within one connection."""


class DuplicateEvent(Exception):
    """An event arrived whose sequence number was already seen."""


class Outcome(enum.Enum):
    FAREWELL = "farewell"  # server_shutdown, then the end of the response
    ENDED = "ended"  # the response ended without a farewell
    BROKEN = "broken"  # connect or read failure
    REFUSED = "refused"  # an answer other than 200


@dataclass(frozen=True, slots=True)
class StreamSettings:
    connect_timeout_s: float = 10.0
    # Longer than the hub's heartbeat: a read that waits this long is a dead stream.
    read_timeout_s: float = 60.0
    drain_timeout_s: float = 5.0
    default_retry_ms: int = 3000
    max_backoff_s: float = 30.0


class SseSession:
    """One user's life on the feed: one identity, connections one after another."""

    def __init__(
        self,
        *,
        targets: Sequence[Target],
        first_target: int,
        identity: Identity,
        token: str,
        permission_of: dict[str, str],
        tally: ClientTally,
        report: Report,
        settings: StreamSettings | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.targets = targets
        self.target_index = first_target % len(targets)
        self.identity = identity
        self.token = token
        self.permission_of = permission_of
        self.tally = tally
        self.report = report
        self.settings = settings or StreamSettings()
        self.random = rng or random.Random()
        self.tracker = SequenceTracker()
        self.last_event_id = ""
        self.retry_ms = self.settings.default_retry_ms
        self.failures = 0
        self.connections = 0
        self._sock: socket.socket | None = None
        self._h11: h11.Connection | None = None
        self._parser: SseParser | None = None
        self._open = False
        self._ended_at: float | None = None
        self._started_at = 0.0
        self._got_first = False
        self._timestamps: tuple[str, float] = ("", 0.0)

    # -- the loop ------------------------------------------------------------------

    def run(self) -> None:
        """Connect, read, reconnect, until the greenlet is killed or times out."""
        self.tally.sessions += 1
        while True:
            outcome = self._connection()
            gevent.sleep(self._delay(outcome))

    def _delay(self, outcome: Outcome) -> float:
        if outcome in (Outcome.FAREWELL, Outcome.ENDED):
            self.failures = 0
            # The hub's retry, stretched by up to half again so that the clients
            # of a closing replica do not all come back in the same instant.
            return self.retry_ms / 1000 * self.random.uniform(1.0, 1.5)
        self.failures += 1
        # A failing replica: try the next one, backing off exponentially.
        self.target_index = (self.target_index + 1) % len(self.targets)
        base = min(
            self.settings.max_backoff_s,
            self.retry_ms / 1000 * 2 ** min(self.failures - 1, 10),
        )
        return float(base * self.random.uniform(0.5, 1.0))

    def _connection(self) -> Outcome:
        target = self.targets[self.target_index]
        self._started_at = time.perf_counter()
        self._got_first = False
        try:
            sock = gevent.socket.create_connection(
                (target.host, target.port), timeout=self.settings.connect_timeout_s
            )
        except OSError as error:
            self._connect_failed(target, f"cannot connect: {error}")
            return Outcome.BROKEN
        self._sock = sock
        self._h11 = h11.Connection(h11.CLIENT)
        self._parser = SseParser(last_event_id=self.last_event_id)
        # GreenletExit or gevent.Timeout (not Exceptions) pass through and leave the
        # socket open: leave() still has to read what the hub wrote.
        try:
            sock.sendall(self._request(target))
            sock.settimeout(self.settings.read_timeout_s)
            outcome = self._read_response(target)
        except (OSError, h11.ProtocolError) as error:
            if self._open:
                self.report("stream", self._elapsed_ms(), 0, StreamBroken(str(error)))
                self._ended(farewell=False)
            else:
                self._connect_failed(target, f"failed before the headers: {error}")
            outcome = Outcome.BROKEN
        self._close()
        return outcome

    def _request(self, target: Target) -> bytes:
        assert self._h11 is not None
        headers = [
            ("Host", f"{target.host}:{target.port}"),
            ("Authorization", f"Bearer {self.token}"),
            ("Accept", "text/event-stream"),
            ("Cache-Control", "no-cache"),
        ]
        if self.last_event_id:
            headers.append(("Last-Event-ID", self.last_event_id))
        request = h11.Request(method="GET", target=target.stream_path, headers=headers)
        return self._h11.send(request) + (self._h11.send(h11.EndOfMessage()) or b"")

    def _read_response(self, target: Target) -> Outcome:
        assert self._sock is not None and self._h11 is not None
        sock, conn = self._sock, self._h11
        farewell = False
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(sock.recv(READ_SIZE))
                continue
            if isinstance(event, h11.Response):
                if event.status_code != 200:
                    self._refused(target, event.status_code)
                    return Outcome.REFUSED
                self._opened()
            elif isinstance(event, h11.Data):
                farewell = self._frames(bytes(event.data)) or farewell
            elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                self._ended(farewell)
                return Outcome.FAREWELL if farewell else Outcome.ENDED

    # -- leaving -------------------------------------------------------------------

    def leave(self) -> None:
        """Go away cleanly: half-close, read what the hub already wrote, close.

        The hub counts a frame as delivered once it is handed to the connection; a
        client that just dropped the socket would lose such frames unread. After the
        half-close the hub writes nothing more, so reading to the end gets them all.
        """
        self.tally.departures += 1
        sock = self._sock
        if sock is None:
            return
        conn, parser = self._h11, self._parser
        try:
            sock.shutdown(socket.SHUT_WR)
            sock.settimeout(self.settings.drain_timeout_s)
            deadline = time.monotonic() + self.settings.drain_timeout_s
            while time.monotonic() < deadline:
                data = sock.recv(READ_SIZE)
                if conn is None or parser is None:
                    break
                conn.receive_data(data)
                if not self._drain_events(conn):
                    break
        except (OSError, h11.ProtocolError):
            pass
        finally:
            if self._open:
                self._ended(farewell=False, leaving=True)
            self._close()

    def _drain_events(self, conn: h11.Connection) -> bool:
        """Process what h11 has; False once the response or connection ended."""
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                return True
            if isinstance(event, h11.Response):
                if event.status_code != 200:
                    return False
                self._opened()
            elif isinstance(event, h11.Data):
                if self._open:
                    self._frames(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                return False

    def _close(self) -> None:
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.close()
        self._sock = None
        self._h11 = None

    # -- what the stream says ------------------------------------------------------

    def _opened(self) -> None:
        self._open = True
        self.connections += 1
        self.tally.connects += 1
        if self.connections > 1:
            self.tally.reconnects += 1
        self.tally.stream_opened()
        self.tracker.new_connection()
        self.report("connect", self._elapsed_ms(), 0, None)

    def _ended(self, farewell: bool, *, leaving: bool = False) -> None:
        if not self._open:
            return
        self._open = False
        self.tally.stream_closed()
        if not farewell and not leaving:
            self.tally.ended_without_farewell += 1
        self._ended_at = time.perf_counter()

    def _frames(self, chunk: bytes) -> bool:
        """Feed one read to the parser; True when it held the farewell."""
        parser = self._parser
        assert parser is not None
        comments = parser.comments
        farewell = False
        for event in parser.feed(chunk):
            if self._event(event):
                farewell = True
        self.tally.heartbeats += parser.comments - comments
        if parser.retry_ms is not None:
            self.retry_ms = parser.retry_ms
        self.last_event_id = parser.last_event_id
        return farewell

    def _event(self, event: SseEvent) -> bool:
        tally = self.tally
        if event.type == "ready":
            tally.control_frames["ready"] += 1
            self._first_event()
            if self._ended_at is not None:
                outage = (time.perf_counter() - self._ended_at) * 1000
                self.report("reconnect", outage, 0, None)
                self._ended_at = None
            return False
        if event.type == "server_shutdown":
            tally.control_frames["server_shutdown"] += 1
            tally.farewells[_reason(event.data)] += 1
            return True
        try:
            document = json.loads(event.data)
        except ValueError:
            tally.malformed += 1
            self.report("event", 0, len(event.data), StreamBroken("data is not JSON"))
            return False
        if not isinstance(document, dict) or document.get("type") != event.type:
            # An in-band notice of the hub's, not a catalog event.
            tally.control_frames[event.type] += 1
            return False
        self._first_event()
        self._envelope(event, document)
        return False

    def _envelope(self, event: SseEvent, document: dict[str, Any]) -> None:
        tally = self.tally
        now = time.time()
        tenant = str(document.get("tenantId"))
        tally.received[tenant] += 1
        tally.received_by_type[event.type] += 1
        if tenant != self.identity.tenant_id:
            tally.foreign_tenant += 1
        permission = self.permission_of.get(event.type)
        if permission is not None and permission not in self.identity.scopes:
            tally.forbidden_type += 1
        occurred = self._occurred_at_s(document.get("occurredAt"))
        latency_ms = max(0.0, (now - occurred) * 1000) if occurred else 0.0
        self.report("event", latency_ms, len(event.data), None)

        payload = document.get("payload")
        if not isinstance(payload, dict):
            return
        key, seq = payload.get("loadStream"), payload.get("loadSeq")
        if not isinstance(key, str) or not isinstance(seq, int):
            return
        verdict, count = self.tracker.observe(key, seq)
        if verdict == "gap":
            tally.gaps += count
            tally.gap_incidents += 1
            self.report("sequence", 0, 0, SequenceGap(f"{key}: {count} missing"))
        elif verdict == "missed":
            tally.missed_while_away += count
        elif verdict == "duplicate":
            tally.duplicates += 1
            self.report("sequence", 0, 0, DuplicateEvent(f"{key}: seq {seq} again"))

    def _occurred_at_s(self, text: Any) -> float:
        if not isinstance(text, str):
            return 0.0
        cached_text, cached_value = self._timestamps
        if text == cached_text:
            return cached_value
        try:
            value = datetime.fromisoformat(text).timestamp()
        except ValueError:
            return 0.0
        self._timestamps = (text, value)
        return value

    def _first_event(self) -> None:
        if not self._got_first:
            self._got_first = True
            self.report("first event", self._elapsed_ms(), 0, None)

    # -- failures ------------------------------------------------------------------

    def _connect_failed(self, target: Target, message: str) -> None:
        self.tally.connect_failures["connect"] += 1
        self.report(
            "connect", self._elapsed_ms(), 0, StreamBroken(f"{target.base}: {message}")
        )

    def _refused(self, target: Target, status: int) -> None:
        body = self._error_body()
        self.tally.connect_failures[str(status)] += 1
        self.report(
            "connect",
            self._elapsed_ms(),
            len(body),
            StreamRefused(f"{target.base} answered {status}: {_message(body)}"),
        )

    def _error_body(self) -> bytes:
        assert self._sock is not None and self._h11 is not None
        body = bytearray()
        try:
            while len(body) < MAX_ERROR_BODY:
                event = self._h11.next_event()
                if event is h11.NEED_DATA:
                    self._h11.receive_data(self._sock.recv(READ_SIZE))
                elif isinstance(event, h11.Data):
                    body += event.data
                else:
                    break
        except (OSError, h11.ProtocolError):
            pass
        return bytes(body)

    def _elapsed_ms(self) -> float:
        return (time.perf_counter() - self._started_at) * 1000


def _reason(data: str) -> str:
    try:
        document = json.loads(data)
    except ValueError:
        return "unreadable"
    reason = document.get("reason") if isinstance(document, dict) else None
    return reason if isinstance(reason, str) else "unstated"


def _message(body: bytes) -> str:
    try:
        document = json.loads(body)
    except ValueError:
        return body[:200].decode("utf-8", "replace") or "(empty body)"
    if isinstance(document, dict):
        return str(document.get("message") or document.get("error") or document)
    return str(document)[:200]
