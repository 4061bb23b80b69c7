"""The benchmark's load client: it counts every event once and times it, however
the reads split the stream, and it refuses streams that did not open."""

from __future__ import annotations

import json
from typing import Any

import pytest

from benchmarks._client import Sink, Stream, split

HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\n"
SENT = [1_796_000_000.125, 1_796_000_000.5, 1_796_000_001.875]


def frames(spaced: bool) -> bytes:
    """Three event frames as the hub (compact JSON) or the naive hub writes them,
    between a ready frame and a ping that carry no marker."""
    separators = (", ", ": ") if spaced else (",", ":")
    body = b"retry: 3000\nevent: ready\ndata: {}\n\n"
    for n, sent in enumerate(SENT):
        document = {"payload": {"bench_t": sent, "seq": n}}
        data = json.dumps(document, separators=separators).encode()
        body += b"id: e%d\nevent: claim.submitted\ndata: %b\n\n" % (n, data)
    return body + b": ping\n\n"


class FakeTransport:
    def __init__(self) -> None:
        self.written = b""
        self.aborted = False

    def write(self, data: bytes) -> None:
        self.written += data

    def abort(self) -> None:
        self.aborted = True

    def get_extra_info(self, name: str) -> Any:
        return None


def fed(reads: list[bytes], *, latency: bool) -> tuple[Sink, Stream, FakeTransport]:
    sink = Sink()
    sink.latency = latency
    stream = Stream(sink, b"GET / HTTP/1.1\r\n\r\n")
    transport = FakeTransport()
    stream.connection_made(transport)  # type: ignore[arg-type]
    for read in reads:
        stream.data_received(read)
    return sink, stream, transport


def every_split(data: bytes) -> list[list[bytes]]:
    return [[data[:cut], data[cut:]] for cut in range(1, len(data))]


@pytest.mark.parametrize("spaced", [False, True], ids=["compact", "spaced"])
async def test_every_event_is_counted_once_wherever_a_read_ends(spaced: bool) -> None:
    """Splitting the response into two reads at any byte counts three events."""
    data = HEAD + frames(spaced)

    for reads in every_split(data):
        sink, stream, transport = fed(reads, latency=False)

        assert sink.frames == 3, reads
        assert stream.opened.result() is True
        assert transport.written == b"GET / HTTP/1.1\r\n\r\n"


@pytest.mark.parametrize("spaced", [False, True], ids=["compact", "spaced"])
async def test_latency_mode_reads_each_publish_time_wherever_a_read_ends(
    spaced: bool,
) -> None:
    """In latency mode each event's publish time is read whole, once."""
    data = HEAD + frames(spaced)

    for reads in every_split(data):
        sink, _, _ = fed(reads, latency=True)

        assert sink.frames == 3
        assert list(sink.sent_at) == SENT
        assert all(delay > 0 for delay in sink.delays)


async def test_one_byte_reads_count_the_same() -> None:
    """A stream delivered one byte per read still counts every event."""
    data = HEAD + frames(False) * 4

    sink, _, _ = fed([data[i : i + 1] for i in range(len(data))], latency=False)

    assert sink.frames == 12


async def test_a_refused_stream_is_closed_and_reported() -> None:
    """A non-200 answer aborts the connection and says why."""
    sink, stream, transport = fed(
        [b"HTTP/1.1 429 Too Many Requests\r\nContent-Length: 2\r\n\r\n{}"],
        latency=False,
    )

    assert stream.opened.result() is False
    assert transport.aborted
    assert sink.refused == ["HTTP/1.1 429 Too Many Requests"]
    assert sink.opened == 0


@pytest.mark.parametrize(
    ("total", "parts", "expected"),
    [(10, 3, [4, 3, 3]), (2, 4, [1, 1, 0, 0]), (10_000, 2, [5_000, 5_000])],
    ids=["uneven", "fewer-than-parts", "even"],
)
def test_streams_are_shared_among_workers_without_loss(
    total: int, parts: int, expected: list[int]
) -> None:
    """Every stream goes to exactly one worker, as evenly as possible."""
    assert split(total, parts) == expected
