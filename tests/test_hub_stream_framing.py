"""The stream's bytes on the wire: HTTP/1.1 chunks and HTTP/1.0 raw frames, read
with a plain socket, whichever way the hub wrote each frame."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import pytest

from hub import Replica

from .sse import SseEvent, SseParser
from .support import (
    assert_ledger,
    hub_settings,
    metrics_now,
    publish,
    running_replicas,
    token,
    wait_until,
)


class RawStream:
    """One stream over a bare TCP connection, keeping every byte it reads."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.reader = reader
        self.writer = writer
        self.raw = bytearray()
        self.task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        while chunk := await self.reader.read(65536):
            self.raw += chunk

    @classmethod
    async def open(cls, replica: Replica, version: str) -> RawStream:
        reader, writer = await asyncio.open_connection("127.0.0.1", replica.port)
        writer.write(
            f"GET /v1/realtime/stream HTTP/{version}\r\n"
            f"Host: 127.0.0.1:{replica.port}\r\n"
            f"Authorization: Bearer {token()}\r\n"
            "Accept: text/event-stream\r\n\r\n".encode("ascii")
        )
        await writer.drain()
        return cls(reader, writer)

    def head_and_body(self) -> tuple[bytes, bytes]:
        head, _, body = bytes(self.raw).partition(b"\r\n\r\n")
        return head, body

    async def close(self) -> None:
        self.writer.close()
        self.task.cancel()


def dechunk(body: bytes) -> tuple[bytes, bytes]:
    """Strict chunked decoding: the payload and whatever incomplete tail is left."""
    payload = bytearray()
    at = 0
    while True:
        line_end = body.find(b"\r\n", at)
        if line_end < 0:
            return bytes(payload), body[at:]
        size = int(body[at:line_end], 16)
        start, end = line_end + 2, line_end + 2 + size
        if len(body) < end + 2:
            return bytes(payload), body[at:]
        assert body[end : end + 2] == b"\r\n", f"chunk at {at} not ended by CRLF"
        if size == 0:
            return bytes(payload), body[end + 2 :]
        payload += body[start:end]
        at = end + 2


def events_of(payload: bytes) -> list[SseEvent]:
    parser = SseParser()
    parser.feed_bytes(payload)
    return parser.events


def claim(n: int) -> dict[str, object]:
    return {"type": "claim.submitted", "tenantId": "acme", "payload": {"n": n}}


async def claims_read(stream: RawStream, count: int, chunked: bool) -> list[int]:
    def seen() -> list[int]:
        _, body = stream.head_and_body()
        payload = dechunk(body)[0] if chunked else body
        return [
            json.loads(e.data)["payload"]["n"]
            for e in events_of(payload)
            if e.type == "claim.submitted"
        ]

    await wait_until(lambda: len(seen()) >= count, what=f"{count} claims")
    return seen()


@pytest.mark.parametrize(
    ("version", "chunked"), [("1.1", True), ("1.0", False)], ids=["http11", "http10"]
)
async def test_frames_arrive_whole_and_in_order_whatever_their_write_path(
    session: aiohttp.ClientSession, version: str, chunked: bool
) -> None:
    """Single events, a batch and events racing a heartbeat all arrive in order,
    framed as the response's transfer coding says."""
    settings = hub_settings(heartbeat_s=0.05)
    async with running_replicas(settings=settings) as [replica]:
        stream = await RawStream.open(replica, version)
        try:
            await wait_until(lambda: b"event: ready" in stream.raw, what="ready")
            for n in range(3):
                await publish(session, replica, claim(n))
            await publish(session, replica, [claim(n) for n in range(3, 40)])
            await asyncio.sleep(0.12)
            await publish(session, replica, claim(40))

            assert await claims_read(stream, 41, chunked) == list(range(41))
            head, body = stream.head_and_body()
            assert (b"transfer-encoding: chunked" in head.lower()) is chunked
            if chunked:
                payload, tail = dechunk(body)
                assert tail == b""
            else:
                payload = body
            assert b": ping\n\n" in payload
            assert events_of(payload)[0].type == "ready"
        finally:
            await stream.close()
        await wait_until(
            lambda: replica.core.statistics().subscribers == 0, what="disconnect"
        )
        assert_ledger(metrics_now(replica))


async def test_many_streams_each_read_every_event_once(
    session: aiohttp.ClientSession,
) -> None:
    """Fifty streams fed by one dispatch each read every event exactly once."""
    settings = hub_settings(max_streams_per_token=100)
    async with running_replicas(settings=settings) as [replica]:
        streams = [await RawStream.open(replica, "1.1") for _ in range(50)]
        try:
            await wait_until(
                lambda: all(b"event: ready" in s.raw for s in streams), what="ready"
            )
            await publish(session, replica, [claim(n) for n in range(20)])
            await publish(session, replica, claim(20))

            for stream in streams:
                assert await claims_read(stream, 21, True) == list(range(21))
            assert_ledger(metrics_now(replica))
        finally:
            for stream in streams:
                await stream.close()
