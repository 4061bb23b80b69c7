"""An incremental server-sent-events parser for clients of the hub.

It follows the HTML standard's event stream interpretation and takes the stream as
it arrives, one read at a time, since a read is not an event: a frame, a line or a
UTF-8 sequence may be split anywhere across reads.

- Lines end in CR, LF or CRLF; a CR ending one read may be followed by the LF of the
  next, which is then not a second line end.
- A line starting with ':' is a comment (counted: heartbeats are comments).
- A field without ':' has an empty value; one space after ':' is dropped.
- ``data`` lines join with LF; a blank line dispatches the event unless no data
  line was seen, so a frame of ``retry``, ``id`` or comments alone dispatches none.
- ``id`` sets the last event id unless its value holds NUL; the last event id
  outlives the event and is what a reconnect sends as ``Last-Event-ID``.
- ``retry`` takes ASCII digits only; anything else is ignored.
- One leading byte order mark is dropped; bytes that are not UTF-8 become U+FFFD.
- What follows the last blank line when the stream ends is never an event.

The module needs nothing but the standard library, so load generators can use it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["SseEvent", "SseParser"]

_LINE_END = re.compile(rb"\r\n|\r|\n")
_BOM = b"\xef\xbb\xbf"


@dataclass(frozen=True, slots=True)
class SseEvent:
    """One dispatched event: its type (``message`` when unnamed), its data and the
    last event id in force when it was dispatched."""

    type: str
    data: str
    last_event_id: str


class SseParser:
    """Feed it bytes as they are read; it returns the events each read completed.

    ``last_event_id`` may be seeded from an earlier connection, so that a client
    keeps one id across reconnects.
    """

    __slots__ = (
        "_bom_checked",
        "_data",
        "_event_type",
        "_skip_lf",
        "_tail",
        "comments",
        "last_event_id",
        "retry_ms",
    )

    def __init__(self, *, last_event_id: str = "") -> None:
        self.last_event_id = last_event_id
        self.retry_ms: int | None = None
        self.comments = 0
        self._tail = b""
        self._skip_lf = False
        self._bom_checked = False
        self._event_type = ""
        self._data: list[str] = []

    @property
    def buffered(self) -> int:
        """Bytes of an unfinished line held until the next read."""
        return len(self._tail)

    def feed(self, chunk: bytes) -> list[SseEvent]:
        """Parse one read; returns the events it completed, oldest first."""
        if not chunk:
            return []
        if self._skip_lf:
            self._skip_lf = False
            if chunk[0] == 0x0A:
                chunk = chunk[1:]
        data = self._tail + chunk if self._tail else chunk
        if not self._bom_checked:
            if len(data) < len(_BOM) and _BOM.startswith(data):
                self._tail = data
                return []
            self._bom_checked = True
            if data.startswith(_BOM):
                data = data[len(_BOM) :]

        events: list[SseEvent] = []
        start = 0
        end = 0
        for match in _LINE_END.finditer(data):
            self._line(data[start : match.start()], events)
            start = end = match.end()
        self._tail = data[start:]
        # A CR that ends this read may be the first half of a CRLF.
        if end and end == len(data) and data[end - 1] == 0x0D:
            self._skip_lf = True
        return events

    def _line(self, raw: bytes, events: list[SseEvent]) -> None:
        if not raw:
            self._dispatch(events)
            return
        if raw[0] == 0x3A:  # ':'
            self.comments += 1
            return
        line = raw.decode("utf-8", errors="replace")
        name, colon, value = line.partition(":")
        if colon and value[:1] == " ":
            value = value[1:]
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event_type = value
        elif name == "id":
            if "\x00" not in value:
                self.last_event_id = value
        elif name == "retry" and value.isascii() and value.isdigit():
            self.retry_ms = int(value)

    def _dispatch(self, events: list[SseEvent]) -> None:
        if not self._data:
            self._event_type = ""
            return
        events.append(
            SseEvent(
                type=self._event_type or "message",
                data="\n".join(self._data),
                last_event_id=self.last_event_id,
            )
        )
        self._event_type = ""
        self._data = []
