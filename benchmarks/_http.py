"""A small keep-alive HTTP/1.1 client for the publisher and for readiness probes.

Requests are pipelined: a list of them is written at once and the answers are read
in order, so one round trip carries as many publishes as the system under test
needs (nchan takes one message per request).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass


class HttpError(Exception):
    """The server answered outside HTTP/1.1 as this client speaks it."""


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    body: bytes


def post_request(
    host: str, port: int, path: str, body: bytes, headers: dict[str, str]
) -> bytes:
    lines = [
        f"POST {path} HTTP/1.1",
        f"Host: {host}:{port}",
        f"Content-Length: {len(body)}",
        "Content-Type: application/json",
    ]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("ascii") + body


def get_request(host: str, port: int, path: str, headers: dict[str, str]) -> bytes:
    lines = [f"GET {path} HTTP/1.1", f"Host: {host}:{port}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("ascii")


class HttpConnection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self._reader = reader
        self._writer = writer

    @classmethod
    async def open(cls, host: str, port: int) -> HttpConnection:
        reader, writer = await asyncio.open_connection(host, port, limit=2**20)
        return cls(reader, writer)

    async def exchange(self, requests: list[bytes]) -> list[Answer]:
        self._writer.write(b"".join(requests))
        await self._writer.drain()
        return [await self._read_answer() for _ in requests]

    async def _read_answer(self) -> Answer:
        head = await self._reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ", 2)
        if len(parts) < 2 or not parts[1].isdigit():
            raise HttpError(f"not an HTTP status line: {lines[0]!r}")
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            if name:
                headers[name.strip().lower()] = value.strip()
        if headers.get("transfer-encoding", "").lower() == "chunked":
            body = await self._read_chunked()
        else:
            body = await self._reader.readexactly(int(headers.get("content-length", 0)))
        return Answer(int(parts[1]), body)

    async def _read_chunked(self) -> bytes:
        body = bytearray()
        while True:
            size_line = await self._reader.readuntil(b"\r\n")
            size = int(size_line.split(b";", 1)[0].strip(), 16)
            if size == 0:
                await self._reader.readuntil(b"\r\n")
                return bytes(body)
            body += await self._reader.readexactly(size)
            await self._reader.readexactly(2)

    async def close(self) -> None:
        self._writer.close()
        with contextlib.suppress(OSError, ConnectionError):
            await self._writer.wait_closed()


async def probe(host: str, port: int, path: str, timeout_s: float = 1.0) -> int | None:
    """The status of one GET, or None when nothing answers."""
    try:
        connection = await asyncio.wait_for(HttpConnection.open(host, port), timeout_s)
    except (OSError, TimeoutError):
        return None
    try:
        request = get_request(host, port, path, {"Connection": "close"})
        [answer] = await asyncio.wait_for(connection.exchange([request]), timeout_s)
        return answer.status
    except (OSError, TimeoutError, asyncio.IncompleteReadError, HttpError):
        return None
    finally:
        await connection.close()


async def wait_for_answer(
    host: str,
    port: int,
    path: str,
    *,
    timeout_s: float,
    accept: frozenset[int] | None = None,
    alive: Callable[[], bool] | None = None,
) -> int:
    """Poll ``path`` until it answers (with a status in ``accept`` when given)."""
    deadline = time.monotonic() + timeout_s
    status: int | None = None
    while time.monotonic() < deadline:
        if alive is not None and not alive():
            raise HttpError("the server process exited before it answered")
        status = await probe(host, port, path)
        if status is not None and (accept is None or status in accept):
            return status
        await asyncio.sleep(0.1)
    raise HttpError(
        f"nothing answered {path} on {host}:{port} within {timeout_s:.0f} s "
        f"(last status {status})"
    )
