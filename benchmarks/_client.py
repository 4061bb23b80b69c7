"""The load client: SSE subscribers on raw sockets, spread over worker processes.

Each stream is an ``asyncio.Protocol`` that sends one HTTP/1.1 GET with the
EventSource headers, checks the status line, and from then on only counts the
events it reads. An event is recognised by a marker key that the benchmark's
publisher puts in every payload (``"bench_t"``, the publish time); counting its
occurrences in each chunk, with the last few bytes carried over to the next one,
finds every frame whatever the read boundaries, at the cost of one ``bytes.count``
per read. In latency mode each marker's value is parsed as well and the time from
publish to this read is kept.

Workers are separate processes (the GIL would otherwise cap the client at one
core) that take commands over a pipe and answer with counters, their own CPU time
and, in latency mode, the samples. The same protocol class serves as the
orchestrator's tracking stream, which the publisher uses to keep a fixed number of
events in flight.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import resource
import socket
import struct
import time
from array import array
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any, cast

MARKER = b'"bench_t"'
# Bytes carried over between reads: one short of a marker, so that a marker split by
# a read boundary is found once and a marker already counted is never counted again.
CARRY = len(MARKER) - 1
MAX_HEAD = 16 * 1024
LINGER_RESET = struct.pack("ii", 1, 0)


def stream_request(host: str, port: int, path: str, headers: dict[str, str]) -> bytes:
    """The GET an EventSource sends, plus the caller's headers (authorisation)."""
    lines = [
        f"GET {path} HTTP/1.1",
        f"Host: {host}:{port}",
        "Accept: text/event-stream",
        "Cache-Control: no-cache",
        "User-Agent: rcm-bench",
    ]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("ascii")


class Sink:
    """Where streams report: frame counts and, in latency mode, samples."""

    def __init__(self) -> None:
        self.frames = 0
        self.bytes = 0
        self.latency = False
        self.sent_at = array("d")
        self.delays = array("d")
        self.opened = 0
        self.lost = 0
        self.refused: list[str] = []

    def progressed(self) -> None:
        """Called after a read that carried at least one event."""

    def reset_samples(self) -> None:
        self.sent_at = array("d")
        self.delays = array("d")


class Stream(asyncio.Protocol):
    """One subscriber connection."""

    def __init__(self, sink: Sink, request: bytes) -> None:
        self.sink = sink
        self.request = request
        self.transport: asyncio.Transport | None = None
        self.head = b""
        self.open = False
        self.tail = b""
        self.opened: asyncio.Future[bool] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, only alike.
        self.transport = cast(asyncio.Transport, transport)
        self.transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        sink = self.sink
        if not self.open:
            data = self._read_head(data)
            if not data:
                return
        sink.bytes += len(data)
        chunk = self.tail + data
        if not sink.latency:
            found = chunk.count(MARKER)
            self.tail = chunk[-CARRY:]
            if found:
                sink.frames += found
                sink.progressed()
            return
        self._time(chunk, sink)

    def _read_head(self, data: bytes) -> bytes:
        self.head += data
        end = self.head.find(b"\r\n\r\n")
        if end < 0:
            if len(self.head) > MAX_HEAD:
                self._refuse("response head over 16 KiB")
            return b""
        status = self.head[: self.head.find(b"\r\n")]
        if b" 200" not in status:
            self._refuse(status.decode("latin-1", "replace"))
            return b""
        rest = self.head[end + 4 :]
        self.head = b""
        self.open = True
        self.sink.opened += 1
        if not self.opened.done():
            self.opened.set_result(True)
        return rest

    def _time(self, chunk: bytes, sink: Sink) -> None:
        now = time.time()
        start = 0
        found = 0
        while True:
            at = chunk.find(MARKER, start)
            if at < 0:
                self.tail = chunk[-CARRY:]
                break
            value_at = at + len(MARKER)
            end = chunk.find(b",", value_at)
            if end < 0:
                # The number was cut by the read: keep the marker for the next one.
                self.tail = chunk[at:]
                break
            sent = float(chunk[value_at:end].lstrip(b": "))
            sink.sent_at.append(sent)
            sink.delays.append(now - sent)
            found += 1
            start = end
        if found:
            sink.frames += found
            sink.progressed()

    def _refuse(self, reason: str) -> None:
        if len(self.sink.refused) < 5:
            self.sink.refused.append(reason)
        if not self.opened.done():
            self.opened.set_result(False)
        if self.transport is not None:
            self.transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.open:
            self.sink.lost += 1
            self.open = False
        if not self.opened.done():
            self.opened.set_result(False)

    def reset(self) -> None:
        """Close with a reset: no TIME_WAIT left holding an ephemeral port."""
        transport = self.transport
        if transport is None:
            return
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_RESET)
        self.open = False
        transport.abort()


@dataclass(slots=True)
class ConnectOutcome:
    opened: int
    failed: int
    started_at: float
    finished_at: float
    errors: list[str] = field(default_factory=list)


async def open_streams(
    sink: Sink,
    streams: list[Stream],
    *,
    host: str,
    port: int,
    request: bytes,
    count: int,
    concurrency: int,
    timeout_s: float,
) -> ConnectOutcome:
    """Open ``count`` streams, at most ``concurrency`` handshakes at a time."""
    loop = asyncio.get_running_loop()
    gate = asyncio.Semaphore(concurrency)
    errors: list[str] = []
    failed = 0

    async def one() -> None:
        nonlocal failed
        async with gate:
            stream = Stream(sink, request)
            try:
                await asyncio.wait_for(
                    loop.create_connection(lambda: stream, host, port), timeout_s
                )
                ok = await asyncio.wait_for(stream.opened, timeout_s)
            except (OSError, TimeoutError) as error:
                ok = False
                if len(errors) < 5:
                    errors.append(f"{type(error).__name__}: {error}")
            if ok:
                streams.append(stream)
            else:
                failed += 1
                stream.reset()

    started = time.time()
    await asyncio.gather(*(one() for _ in range(count)))
    return ConnectOutcome(
        opened=count - failed,
        failed=failed,
        started_at=started,
        finished_at=time.time(),
        errors=errors + sink.refused[: max(0, 5 - len(errors))],
    )


class WorkerFailure(Exception):
    """A client worker could not carry out a command; sent back as the reply."""


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# -- worker process ----------------------------------------------------------------


class Worker:
    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.sink = Sink()
        self.streams: list[Stream] = []
        self.done = asyncio.Event()

    def on_command(self) -> None:
        while self.conn.poll():
            try:
                message = self.conn.recv()
            except EOFError:
                self.done.set()
                return
            asyncio.get_running_loop().create_task(self.handle(message))

    async def handle(self, message: tuple[Any, ...]) -> None:
        try:
            reply = await self.answer(message)
        except Exception as error:
            reply = WorkerFailure(f"{message[0]}: {type(error).__name__}: {error}")
        self.conn.send(reply)

    async def answer(self, message: tuple[Any, ...]) -> Any:
        verb = message[0]
        reply: Any
        if verb == "connect":
            _, host, port, request, count, concurrency, timeout_s = message
            outcome = await open_streams(
                self.sink,
                self.streams,
                host=host,
                port=port,
                request=request,
                count=count,
                concurrency=concurrency,
                timeout_s=timeout_s,
            )
            reply = outcome
        elif verb == "latency":
            self.sink.latency = bool(message[1])
            self.sink.reset_samples()
            for stream in self.streams:
                stream.tail = b""
            reply = True
        elif verb == "report":
            reply = {
                "frames": self.sink.frames,
                "bytes": self.sink.bytes,
                "cpu_s": cpu_seconds(),
                "at": time.monotonic(),
                "open": sum(1 for s in self.streams if s.open),
                "lost": self.sink.lost,
            }
        elif verb == "samples":
            reply = (self.sink.sent_at.tobytes(), self.sink.delays.tobytes())
            self.sink.reset_samples()
        elif verb == "close":
            for stream in self.streams:
                stream.reset()
            closed = len(self.streams)
            self.streams = []
            self.sink.lost = 0
            reply = closed
        elif verb == "exit":
            self.done.set()
            reply = True
        else:
            raise ValueError(f"unknown command {verb!r}")
        return reply

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        loop.add_reader(self.conn.fileno(), self.on_command)
        # uvloop makes a watched descriptor non-blocking; replies (latency samples
        # can be megabytes) are sent whole, so the pipe goes back to blocking.
        os.set_blocking(self.conn.fileno(), True)
        self.conn.send(("ready", loop_name()))
        await self.done.wait()
        for stream in self.streams:
            stream.reset()


def loop_name() -> str:
    loop = asyncio.get_running_loop()
    return type(loop).__module__.split(".")[0]


def fast_loop_runner() -> Callable[[Any], Any]:
    """``uvloop.run`` when uvloop is installed (the client is leaner on it),
    ``asyncio.run`` otherwise."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run
    return uvloop.run  # type: ignore[no-any-return]


def worker_main(conn: Connection) -> None:
    from ._harness import raise_fd_limit

    raise_fd_limit()
    with contextlib.suppress(KeyboardInterrupt):
        fast_loop_runner()(Worker(conn).run())


# -- the orchestrator's side -------------------------------------------------------


class ClientPool:
    """Worker processes that hold the subscribers, driven from the orchestrator."""

    def __init__(self, workers: int) -> None:
        context = multiprocessing.get_context("spawn")
        self.conns: list[Connection] = []
        self.processes: list[multiprocessing.process.BaseProcess] = []
        for index in range(workers):
            ours, theirs = context.Pipe()
            process = context.Process(
                target=worker_main, args=(theirs,), name=f"bench-client-{index}"
            )
            process.daemon = True
            process.start()
            theirs.close()
            self.conns.append(ours)
            self.processes.append(process)
        self.loop_names: list[str] = []

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.processes if p.pid is not None]

    async def start(self) -> None:
        replies = await asyncio.gather(*(self._recv(c) for c in self.conns))
        self.loop_names = [reply[1] for reply in replies]

    async def _recv(self, conn: Connection, timeout_s: float = 120.0) -> Any:
        loop = asyncio.get_running_loop()
        arrived: asyncio.Future[Any] = loop.create_future()

        def readable() -> None:
            if arrived.done():
                return
            try:
                arrived.set_result(conn.recv())
            except EOFError as error:
                arrived.set_exception(
                    RuntimeError(f"a client worker exited ({error or 'pipe closed'})")
                )

        loop.add_reader(conn.fileno(), readable)
        os.set_blocking(conn.fileno(), True)
        try:
            reply = await asyncio.wait_for(arrived, timeout_s)
        finally:
            loop.remove_reader(conn.fileno())
        if isinstance(reply, WorkerFailure):
            raise RuntimeError(f"a client worker failed: {reply}")
        return reply

    async def call_each(
        self, messages: list[tuple[Any, ...]], timeout_s: float = 120.0
    ) -> list[Any]:
        for conn, message in zip(self.conns, messages, strict=True):
            conn.send(message)
        return list(
            await asyncio.gather(*(self._recv(c, timeout_s) for c in self.conns))
        )

    async def call(self, *message: Any, timeout_s: float = 120.0) -> list[Any]:
        return await self.call_each([message] * len(self.conns), timeout_s)

    async def connect(
        self,
        *,
        host: str,
        port: int,
        request: bytes,
        count: int,
        concurrency: int = 64,
        timeout_s: float = 30.0,
    ) -> list[ConnectOutcome]:
        shares = split(count, len(self.conns))
        return await self.call_each(
            [
                ("connect", host, port, request, share, concurrency, timeout_s)
                for share in shares
            ],
            timeout_s=timeout_s * 4 + count / 100,
        )

    async def samples(self) -> tuple[array[float], array[float]]:
        sent_at, delays = array("d"), array("d")
        for sent_raw, delay_raw in await self.call("samples"):
            sent_at.frombytes(sent_raw)
            delays.frombytes(delay_raw)
        return sent_at, delays

    def close(self) -> None:
        for conn in self.conns:
            with contextlib.suppress(OSError, BrokenPipeError):
                conn.send(("exit",))
        for process in self.processes:
            process.join(timeout=5)
            if process.is_alive():
                process.kill()
                process.join(timeout=5)


def split(total: int, parts: int) -> list[int]:
    base, extra = divmod(total, parts)
    return [base + (1 if index < extra else 0) for index in range(parts)]


def default_workers() -> int:
    return max(1, min(4, os.cpu_count() or 1))
