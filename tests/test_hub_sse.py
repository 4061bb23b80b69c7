"""The hub's public incremental SSE parser (hub.sse), read by read."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hub.core import Envelope, encode_event, ready_frame, shutdown_frame
from hub.sse import SseEvent, SseParser

from .sse import SseParser as OracleParser

STREAM = (
    b"retry: 2500\n"
    b"event: ready\n"
    b'data: {"subscriberId":"s1"}\n'
    b"\n"
    b": ping\n"
    b"\n"
    b"id: 01J-1\n"
    b"event: claim.submitted\n"
    b"data: first line\n"
    b"data: second line \xc3\xa9\xf0\x9f\x98\x80\n"
    b"\n"
    b"data: unnamed\n"
    b"\n"
)
EXPECTED = [
    SseEvent("ready", '{"subscriberId":"s1"}', ""),
    SseEvent("claim.submitted", "first line\nsecond line \u00e9\U0001f600", "01J-1"),
    SseEvent("message", "unnamed", "01J-1"),
]


def feed_all(parser: SseParser, chunks: list[bytes]) -> list[SseEvent]:
    events: list[SseEvent] = []
    for chunk in chunks:
        events.extend(parser.feed(chunk))
    return events


@pytest.mark.parametrize("line_end", [b"\n", b"\r", b"\r\n"], ids=["lf", "cr", "crlf"])
def test_every_line_ending_yields_the_same_events(line_end: bytes) -> None:
    """LF, CR and CRLF line ends are interchangeable."""
    parser = SseParser()

    events = parser.feed(STREAM.replace(b"\n", line_end))

    assert events == EXPECTED
    assert parser.retry_ms == 2500
    assert parser.comments == 1


@pytest.mark.parametrize("line_end", [b"\n", b"\r", b"\r\n"], ids=["lf", "cr", "crlf"])
def test_a_stream_split_at_any_byte_parses_the_same(line_end: bytes) -> None:
    """Splitting the stream into two reads at every offset changes nothing."""
    stream = STREAM.replace(b"\n", line_end)
    for cut in range(len(stream) + 1):
        parser = SseParser()
        assert feed_all(parser, [stream[:cut], stream[cut:]]) == EXPECTED, cut


def test_a_stream_fed_byte_by_byte_parses_the_same() -> None:
    """One byte a read, including inside UTF-8 sequences and CRLF pairs."""
    stream = STREAM.replace(b"\n", b"\r\n")
    parser = SseParser()

    events = feed_all(parser, [stream[i : i + 1] for i in range(len(stream))])

    assert events == EXPECTED


def test_events_come_out_of_the_read_that_completes_them() -> None:
    """A read without the blank line returns nothing; the next read returns it."""
    parser = SseParser()

    assert parser.feed(b"event: claim.accepted\ndata: {}\n") == []
    assert parser.buffered == 0
    assert parser.feed(b"\n") == [SseEvent("claim.accepted", "{}", "")]


def test_cr_at_the_end_of_a_read_then_lf_is_one_line_end() -> None:
    """CR ending a read and LF opening the next make one line end, not two."""
    parser = SseParser()

    first = parser.feed(b"data: a\r")
    second = parser.feed(b"\n\r")
    third = parser.feed(b"\ndata: b\r\n\r\n")

    assert first == []
    assert second == [SseEvent("message", "a", "")]
    assert third == [SseEvent("message", "b", "")]


def test_comments_are_counted_and_never_dispatched() -> None:
    """Heartbeat comments count as comments and produce no event."""
    parser = SseParser()

    events = parser.feed(b": ping\n\n:\n\n: ping\n\n")

    assert events == []
    assert parser.comments == 3


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param(b"3000", 3000, id="digits"),
        pytest.param(b"0", 0, id="zero"),
        pytest.param(b"3s", None, id="unit"),
        pytest.param(b"-1", None, id="negative"),
        pytest.param(b"1.5", None, id="decimal"),
        pytest.param(b"", None, id="empty"),
        pytest.param("\uff13".encode(), None, id="fullwidth-digit"),
        pytest.param(b" 200", None, id="two-spaces"),
    ],
)
def test_retry_takes_ascii_digits_only(value: bytes, expected: int | None) -> None:
    """retry is set by ASCII digits and ignored otherwise."""
    parser = SseParser()

    parser.feed(b"retry: " + value + b"\n\n")

    assert parser.retry_ms == expected


def test_id_with_nul_is_ignored_and_the_id_outlives_its_event() -> None:
    """An id holding NUL is ignored; the last id stays for later events."""
    parser = SseParser()

    events = parser.feed(
        b"id: 7\ndata: a\n\nid: 8\x009\ndata: b\n\ndata: c\n\nid\ndata: d\n\n"
    )

    assert [(e.data, e.last_event_id) for e in events] == [
        ("a", "7"),
        ("b", "7"),
        ("c", "7"),
        ("d", ""),
    ]
    assert parser.last_event_id == ""


def test_a_seeded_last_event_id_carries_over_a_reconnect() -> None:
    """A parser for a new connection can start from the previous one's id."""
    parser = SseParser(last_event_id="01J-9")

    events = parser.feed(b"data: x\n\n")

    assert events[0].last_event_id == "01J-9"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        pytest.param(b"data\n\n", [SseEvent("message", "", "")], id="no-colon"),
        pytest.param(b"data:\n\n", [SseEvent("message", "", "")], id="empty"),
        pytest.param(b"data:  two\n\n", [SseEvent("message", " two", "")], id="one-sp"),
        pytest.param(b"data:x\n\n", [SseEvent("message", "x", "")], id="no-space"),
        pytest.param(b"data\ndata\n\n", [SseEvent("message", "\n", "")], id="two"),
        pytest.param(b"event: x\n\n", [], id="no-data"),
        pytest.param(
            b"event: x\n\ndata: y\n\n", [SseEvent("message", "y", "")], id="reset"
        ),
        pytest.param(b"Data: y\n\n", [], id="case-sensitive"),
        pytest.param(
            b"bogus: 1\ndata: y\n\n", [SseEvent("message", "y", "")], id="unknown"
        ),
        pytest.param(
            b"data: a:b\n\n", [SseEvent("message", "a:b", "")], id="colon-in-value"
        ),
    ],
)
def test_fields_follow_the_standard(raw: bytes, expected: list[SseEvent]) -> None:
    """Fields without a colon, spaces, unknown names and empty events per the spec."""
    assert SseParser().feed(raw) == expected


def test_an_unfinished_frame_at_the_end_is_not_an_event() -> None:
    """Data after the last blank line is held back, never dispatched."""
    parser = SseParser()

    events = parser.feed(b"data: done\n\ndata: half")

    assert events == [SseEvent("message", "done", "")]
    assert parser.buffered == len(b"data: half")


@pytest.mark.parametrize(
    "chunks",
    [
        pytest.param([b"\xef\xbb\xbfdata: a\n\n"], id="whole"),
        pytest.param([b"\xef", b"\xbb", b"\xbfdata: a\n\n"], id="split"),
    ],
)
def test_one_leading_byte_order_mark_is_dropped(chunks: list[bytes]) -> None:
    """A BOM opening the stream is dropped, even split across reads."""
    assert feed_all(SseParser(), chunks) == [SseEvent("message", "a", "")]


def test_a_second_byte_order_mark_is_not_dropped() -> None:
    """Only the first BOM is dropped; a later one is part of the field name."""
    parser = SseParser()

    events = parser.feed(b"\xef\xbb\xbf\xef\xbb\xbfdata: a\n\ndata: b\n\n")

    assert events == [SseEvent("message", "b", "")]


def test_bytes_that_are_not_utf8_become_replacement_characters() -> None:
    """Invalid UTF-8 decodes to U+FFFD instead of failing the stream."""
    events = SseParser().feed(b"data: a\xffb\n\n")

    assert events == [SseEvent("message", "a\ufffdb", "")]


def test_the_hubs_own_frames_round_trip() -> None:
    """ready, an event frame and the farewell parse back to what the hub encoded."""
    envelope = Envelope(
        id="01JEVENT",
        type="claim.submitted",
        tenant_id="acme",
        occurred_at="2026-12-03T10:00:00.000Z",
        severity="info",
        payload={"claimId": "C-1", "note": "caf\u00e9"},
    )
    raw = (
        ready_frame(
            subscriber_id="s1", replica_id="r1", tenant_id="acme", retry_ms=3000
        )
        + encode_event(envelope).frame
        + shutdown_frame("shutdown")
    )
    parser = SseParser()

    events = parser.feed(raw)

    assert [e.type for e in events] == ["ready", "claim.submitted", "server_shutdown"]
    assert json.loads(events[1].data) == envelope.to_json()
    assert events[1].last_event_id == "01JEVENT"
    assert parser.retry_ms == 3000


FIELD_LINES = st.sampled_from(
    [
        "data: x",
        "data: caf\u00e9 \U0001f600",
        "data",
        "data:",
        "event: claim.submitted",
        "event:",
        "id: 42",
        "id: a\x00b",
        "id",
        "retry: 1000",
        "retry: 1x",
        ": ping",
        "other: 1",
        "",
        "",
    ]
)


@given(
    lines=st.lists(FIELD_LINES, max_size=30),
    line_ends=st.lists(st.sampled_from(["\n", "\r", "\r\n"]), min_size=1),
    cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=8),
)
def test_any_chunking_agrees_with_the_tests_own_parser(
    lines: list[str], line_ends: list[str], cuts: list[int]
) -> None:
    """Whatever the stream and however it is cut into reads, the events, the last id
    and the retry agree with the independent parser the tests keep."""
    text = "".join(line + line_ends[i % len(line_ends)] for i, line in enumerate(lines))
    raw = text.encode("utf-8")
    points = sorted({min(cut, len(raw)) for cut in cuts})
    chunks = [raw[a:b] for a, b in zip([0, *points], [*points, len(raw)], strict=True)]
    parser = SseParser()
    oracle = OracleParser()
    oracle.feed_bytes(raw)

    events = feed_all(parser, chunks)

    assert [(e.type, e.data, e.last_event_id) for e in events] == [
        (e.type, e.data, e.last_event_id) for e in oracle.events
    ]
    assert parser.last_event_id == oracle.last_event_id
    assert parser.retry_ms == oracle.retry_ms
    assert parser.comments == len(oracle.comments)
