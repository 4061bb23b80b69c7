"""A WHATWG-conformant server-sent-events parser, written for the tests.

It follows the "event stream interpretation" of the HTML standard: lines end in CR,
LF or CRLF (a CR at the end of one read may be followed by LF in the next), a line
starting with ':' is a comment, a field without ':' has an empty value, one leading
space of a value is dropped, 'data' lines join with LF, an 'id' with NUL is ignored,
'retry' takes ASCII digits only, and a blank line dispatches the event unless its
data buffer is empty. Unlike a browser, it also records comments and retry values so
tests can see heartbeats.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class SseEvent:
    type: str
    data: str
    last_event_id: str


@dataclass
class SseParser:
    events: list[SseEvent] = field(default_factory=list)
    comments: list[str] = field(default_factory=list)
    retry_ms: int | None = None
    last_event_id: str = ""
    _buffer: str = ""
    _pending_cr: bool = False
    _event_type: str = ""
    _data: list[str] = field(default_factory=list)
    _decoder_tail: bytes = b""
    _bom_checked: bool = False

    def feed_bytes(self, chunk: bytes) -> list[SseEvent]:
        """Feed raw bytes; UTF-8 sequences split across reads are handled."""
        data = self._decoder_tail + chunk
        cut = len(data)
        # Hold back an incomplete UTF-8 sequence at the end of this read.
        for back in range(1, min(4, len(data)) + 1):
            byte = data[-back]
            if byte & 0xC0 == 0x80:
                continue
            if byte & 0x80:
                needed = 2 if byte & 0xE0 == 0xC0 else 3 if byte & 0xF0 == 0xE0 else 4
                if back < needed:
                    cut = len(data) - back
            break
        self._decoder_tail = data[cut:]
        return self.feed(data[:cut].decode("utf-8", errors="replace"))

    def feed(self, text: str) -> list[SseEvent]:
        if not self._bom_checked and text:
            self._bom_checked = True
            if text.startswith("\ufeff"):
                text = text[1:]
        before = len(self.events)
        for char in text:
            if self._pending_cr:
                self._pending_cr = False
                if char == "\n":
                    continue
            if char == "\r":
                self._pending_cr = True
                self._line(self._buffer)
                self._buffer = ""
            elif char == "\n":
                self._line(self._buffer)
                self._buffer = ""
            else:
                self._buffer += char
        return self.events[before:]

    def _line(self, line: str) -> None:
        if line == "":
            self._dispatch()
            return
        if line.startswith(":"):
            self.comments.append(line[1:])
            return
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "event":
            self._event_type = value
        elif name == "data":
            self._data.append(value)
        elif name == "id":
            if "\x00" not in value:
                self.last_event_id = value
        elif name == "retry" and value and all("0" <= c <= "9" for c in value):
            self.retry_ms = int(value)

    def _dispatch(self) -> None:
        if not self._data:
            self._event_type = ""
            return
        self.events.append(
            SseEvent(
                type=self._event_type or "message",
                data="\n".join(self._data),
                last_event_id=self.last_event_id,
            )
        )
        self._event_type = ""
        self._data = []


def parse_stream(raw: bytes) -> SseParser:
    parser = SseParser()
    parser.feed_bytes(raw)
    return parser
