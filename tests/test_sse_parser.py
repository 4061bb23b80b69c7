"""The tests' own WHATWG parser, held to the standard's examples and edge cases."""

from __future__ import annotations

import pytest

from .sse import SseEvent, SseParser, parse_stream


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(b"event: a\ndata: x\n\n", id="lf"),
        pytest.param(b"event: a\rdata: x\r\r", id="cr"),
        pytest.param(b"event: a\r\ndata: x\r\n\r\n", id="crlf"),
        pytest.param(b"event: a\r\ndata: x\n\r", id="mixed"),
    ],
)
def test_every_line_ending_frames_the_same_event(raw: bytes) -> None:
    """CR, LF and CRLF all end lines."""
    assert parse_stream(raw).events == [SseEvent("a", "x", "")]


def test_comments_are_not_events() -> None:
    """A line starting with ':' is a comment and dispatches nothing."""
    parser = parse_stream(b": ping\n\n: ping\n\n")
    assert parser.events == []
    assert parser.comments == [" ping", " ping"]


def test_multi_line_data_joins_with_lf() -> None:
    """Several data lines form one event joined by LF."""
    assert parse_stream(b"data: a\ndata:b\ndata\n\n").events == [
        SseEvent("message", "a\nb\n", "")
    ]


def test_frames_split_across_reads_parse_whole() -> None:
    """Byte-by-byte feeding, a CR/LF pair split included, yields the same events."""
    raw = "id: 7\r\nevent: é\r\ndata: ü😀\r\n\r\n".encode()
    parser = SseParser()
    for index in range(len(raw)):
        parser.feed_bytes(raw[index : index + 1])
    assert parser.events == [SseEvent("é", "ü😀", "7")]


def test_id_with_nul_is_ignored_and_retry_takes_digits_only() -> None:
    """An id containing NUL does not change the last id; a bad retry is ignored."""
    parser = parse_stream(b"id: 1\ndata: a\n\nid: 2\x00\nretry: 5x\ndata: b\n\n")
    assert [e.last_event_id for e in parser.events] == ["1", "1"]
    assert parser.retry_ms is None


def test_event_without_data_is_not_dispatched() -> None:
    """A frame with only an event name dispatches nothing."""
    assert parse_stream(b"event: lonely\n\ndata: x\n\n").events == [
        SseEvent("message", "x", "")
    ]
