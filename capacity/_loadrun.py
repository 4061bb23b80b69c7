"""A real hub under a measured load: the benchmark harness's hub process and load
client, driven by a Poisson publisher.

The hub is the benchmark's ``Hub`` system (``rcm-realtime serve`` as a child process on
127.0.0.1, with the benchmark's signing key); the streams are the benchmark client's
raw-socket subscribers, spread over worker processes. What is added here is what a
capacity figure needs: streams of several tenants (so one event reaches a chosen
number of them), events published one per request at Poisson times (as the
simulator's emitters publish them), and for every load point the hub's CPU from
psutil, the deliveries the clients read, their latencies and the hub's own counters.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import socket
import time
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import numpy as np
import psutil

from benchmarks._client import ClientPool, default_workers, stream_request
from benchmarks._harness import raise_fd_limit
from benchmarks._http import HttpConnection, get_request, post_request
from benchmarks._systems import (
    HOST,
    METRICS_BEARER,
    READ_SCOPES,
    SECRET,
    Hub,
    Server,
    SystemUnavailable,
)
from hub import issue_token

from ._errors import CapacityError

EVENT_TYPE = "claim.submitted"
# After the publisher stops, the clients' count of frames read may stand still this
# long before the frames still missing are taken as never coming.
DRAIN_STALL_S = 1.0


def free_port() -> int:
    """A port nothing listens on now, chosen by the kernel."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


class CapacityHub(Hub):
    """The benchmark's hub with the queue size under study."""

    name = "capacity"
    label = "rcm-realtime hub (capacity)"

    def __init__(self, queue_size: int | None = None) -> None:
        super().__init__()
        self.queue_size = queue_size

    def environment(self) -> dict[str, str]:
        env = super().environment()
        env["RCM_REALTIME_REPLICA_ID"] = "capacity"
        if self.queue_size is not None:
            env["RCM_REALTIME_QUEUE_SIZE"] = str(self.queue_size)
        return env


@dataclass(frozen=True, slots=True)
class ConnectFigures:
    tenant: str
    opened: int
    failed: int
    seconds: float
    hub_cpu_s: float
    rss_before_bytes: int
    rss_after_bytes: int
    errors: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class PointFigures:
    """One paced load point: ``window_s`` measured after a warm-up."""

    tenant: str
    streams: int
    per_request: int
    target_events_per_s: float
    window_s: float
    events_per_s: float
    deliveries_per_s: float
    # Hub CPU-seconds per second over the window (psutil, user + system).
    hub_cores: float
    # Of the time the hub was runnable, the share it spent on a CPU (1: it never
    # waited for one); None where the kernel keeps no scheduler figures.
    hub_cpu_share: float | None
    client_cores: float
    machine_cores: float
    other_cores: float
    # Events published inside the window, the frames they owe, and of those the
    # frames the clients read (after the drain).
    published: int
    expected: int
    received: int
    p50_ms: float | None
    p90_ms: float | None
    p99_ms: float | None
    max_ms: float | None
    # The hub's own counters over the whole point (warm-up and drain included).
    fanout: int
    dropped: int
    drain_s: float
    publish_lag_ms: float

    @property
    def received_share(self) -> float:
        return self.received / self.expected if self.expected else 1.0

    @property
    def drop_rate(self) -> float:
        return self.dropped / self.fanout if self.fanout else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "tenant": self.tenant,
            "streams": self.streams,
            "per_request": self.per_request,
            "target_events_per_s": round(self.target_events_per_s, 3),
            "window_s": round(self.window_s, 3),
            "events_per_s": round(self.events_per_s, 3),
            "deliveries_per_s": round(self.deliveries_per_s, 1),
            "hub_cores": round(self.hub_cores, 4),
            "hub_cpu_share": None
            if self.hub_cpu_share is None
            else round(self.hub_cpu_share, 4),
            "client_cores": round(self.client_cores, 3),
            "machine_cores": round(self.machine_cores, 3),
            "other_cores": round(self.other_cores, 3),
            "published": self.published,
            "expected": self.expected,
            "received": self.received,
            "p50_ms": self.p50_ms,
            "p90_ms": self.p90_ms,
            "p99_ms": self.p99_ms,
            "max_ms": self.max_ms,
            "fanout": self.fanout,
            "dropped": self.dropped,
            "drop_rate": round(self.drop_rate, 6),
            "drain_s": round(self.drain_s, 3),
            "publish_lag_ms": round(self.publish_lag_ms, 3),
        }


@dataclass(frozen=True, slots=True)
class _Mark:
    at: float
    frames: int
    hub_cpu_s: float
    # The hub's time on a CPU and runnable but waiting for one (Linux schedstat).
    hub_run_s: float | None
    hub_wait_s: float | None
    client_cpu_s: float
    own_cpu_s: float
    machine_busy_s: float


def _machine_busy_s() -> float:
    times = psutil.cpu_times()
    return float(
        times.user
        + times.nice
        + times.system
        + getattr(times, "irq", 0.0)
        + getattr(times, "softirq", 0.0)
        + getattr(times, "steal", 0.0)
    )


def schedstat(pid: int) -> tuple[float, float] | None:
    """Seconds ``pid`` has run on a CPU and waited, runnable, for one; None where
    the kernel does not keep the figures."""
    try:
        with open(f"/proc/{pid}/schedstat", encoding="ascii") as figures:
            run_ns, wait_ns, *_ = figures.read().split()
        return int(run_ns) / 1e9, int(wait_ns) / 1e9
    except (OSError, ValueError):
        return None


def _own_cpu_s() -> float:
    times = psutil.Process().cpu_times()
    return float(times.user + times.system)


def _share(first: _Mark, last: _Mark) -> float | None:
    if None in (first.hub_run_s, first.hub_wait_s, last.hub_run_s, last.hub_wait_s):
        return None
    assert first.hub_run_s is not None and last.hub_run_s is not None
    assert first.hub_wait_s is not None and last.hub_wait_s is not None
    ran = last.hub_run_s - first.hub_run_s
    waited = last.hub_wait_s - first.hub_wait_s
    return ran / (ran + waited) if ran + waited > 0 else 1.0


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 3)


def _envelope(tenant: str, seq: int) -> dict[str, Any]:
    return {
        "type": EVENT_TYPE,
        "tenantId": tenant,
        "payload": {
            # First key, always followed by a comma: the load client reads it there.
            "bench_t": time.time(),
            "seq": seq,
            "claimId": f"C-{seq:09d}",
            "payerId": "availity-0042",
            "amountCents": 1234567,
        },
    }


class LoadRun:
    """One hub process, a pool of client workers, and a publisher; use with
    ``async with``."""

    def __init__(
        self,
        *,
        port: int | None = None,
        queue_size: int | None = None,
        workers: int | None = None,
    ) -> None:
        self.port = port if port is not None else free_port()
        self.system = CapacityHub(queue_size)
        self.workers = workers or default_workers()
        self.pool: ClientPool | None = None
        self.server: Server | None = None
        self.publisher: HttpConnection | None = None
        self.streams: dict[str, int] = {}
        self.published = 0
        self._publisher_token = issue_token(
            secret=SECRET,
            tenant_id=None,
            scopes=["realtime.publish"],
            subject="capacity-publisher",
            ttl_s=6 * 3600,
        )

    async def __aenter__(self) -> LoadRun:
        raise_fd_limit()
        try:
            self.server = await self.system.start(self.port)
        except SystemUnavailable as error:
            raise CapacityError(str(error), where="starting the hub") from error
        try:
            self.pool = ClientPool(self.workers)
            await self.pool.start()
            self.publisher = await HttpConnection.open(HOST, self.port)
        except BaseException:
            await self._close()
            raise
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        await self._close()

    async def _close(self) -> None:
        if self.publisher is not None:
            await self.publisher.close()
            self.publisher = None
        if self.pool is not None:
            with contextlib.suppress(Exception):
                await self.pool.call("close", timeout_s=30)
            self.pool.close()
            self.pool = None
        if self.server is not None:
            await self.server.stop()
            self.server = None

    # -- parts -------------------------------------------------------------------

    def _server(self) -> Server:
        if self.server is None or not self.server.alive():
            tail = self.server.log_tail() if self.server is not None else ""
            raise CapacityError(
                f"the hub process is not running\n{tail}", where="load run"
            )
        return self.server

    def _pool(self) -> ClientPool:
        assert self.pool is not None, "LoadRun used outside 'async with'"
        return self.pool

    def rss(self) -> int:
        return self._server().rss()

    def hub_cpu_s(self) -> float:
        return self._server().cpu_s()

    async def _mark(self) -> _Mark:
        reports = await self._pool().call("report")
        sched = schedstat(self._server().process.pid)
        return _Mark(
            at=time.monotonic(),
            frames=sum(r["frames"] for r in reports),
            hub_cpu_s=self.hub_cpu_s(),
            hub_run_s=None if sched is None else sched[0],
            hub_wait_s=None if sched is None else sched[1],
            client_cpu_s=sum(r["cpu_s"] for r in reports),
            own_cpu_s=_own_cpu_s(),
            machine_busy_s=_machine_busy_s(),
        )

    # -- streams -----------------------------------------------------------------

    async def connect(self, tenant: str, count: int) -> ConnectFigures:
        """Open ``count`` streams of ``tenant``; the hub's CPU and memory around it."""
        server = self._server()
        token = issue_token(
            secret=SECRET,
            tenant_id=tenant,
            scopes=READ_SCOPES,
            subject=f"capacity-{tenant}",
            ttl_s=6 * 3600,
        )
        request = stream_request(
            HOST,
            server.port,
            "/v1/realtime/stream",
            {"Authorization": f"Bearer {token}"},
        )
        rss_before = server.rss()
        cpu_before = server.cpu_s()
        outcomes = await self._pool().connect(
            host=HOST, port=server.port, request=request, count=count
        )
        cpu_after = server.cpu_s()
        opened = sum(o.opened for o in outcomes)
        failed = sum(o.failed for o in outcomes)
        if failed:
            errors = [e for o in outcomes for e in o.errors][:3]
            raise CapacityError(
                f"{failed} of {count} streams did not open: {'; '.join(errors)}",
                where="connecting the load client",
            )
        self.streams[tenant] = self.streams.get(tenant, 0) + opened
        return ConnectFigures(
            tenant=tenant,
            opened=opened,
            failed=failed,
            seconds=max(o.finished_at for o in outcomes)
            - min(o.started_at for o in outcomes),
            hub_cpu_s=cpu_after - cpu_before,
            rss_before_bytes=rss_before,
            rss_after_bytes=server.rss(),
            errors=tuple(e for o in outcomes for e in o.errors),
        )

    async def idle_cores(self, seconds: float) -> float:
        """The hub's CPU, in cores, while its streams sit idle."""
        first = self.hub_cpu_s()
        started = time.monotonic()
        await asyncio.sleep(seconds)
        return (self.hub_cpu_s() - first) / (time.monotonic() - started)

    # -- load --------------------------------------------------------------------

    async def _publish(self, tenant: str, requests_due: int, per_request: int) -> None:
        assert self.publisher is not None
        requests = []
        for _ in range(requests_due):
            body = json.dumps(
                [_envelope(tenant, self.published + n) for n in range(per_request)],
                separators=(",", ":"),
            ).encode()
            self.published += per_request
            requests.append(
                post_request(
                    HOST,
                    self.port,
                    "/v1/realtime/events",
                    body,
                    {"Authorization": f"Bearer {self._publisher_token}"},
                )
            )
        for answer in await self.publisher.exchange(requests):
            if answer.status != 202:
                raise CapacityError(
                    f"the hub refused a publish: {answer.status} {answer.body[:200]!r}",
                    where="load run",
                )

    async def paced(
        self,
        tenant: str,
        rate: float,
        *,
        warmup_s: float,
        window_s: float,
        seed: int,
        per_request: int = 1,
        drain_timeout_s: float = 10.0,
    ) -> PointFigures:
        """Events of ``tenant`` at ``rate`` per second, ``per_request`` to a publish
        request, requests at Poisson times; figures over ``window_s`` after
        ``warmup_s``."""
        pool = self._pool()
        streams = self.streams.get(tenant, 0)
        rng = random.Random(seed)
        stop = asyncio.Event()
        lag_total = 0.0
        window_published = 0
        counting = False

        async def pace() -> None:
            nonlocal lag_total, window_published
            request_rate = rate / per_request
            due_at = time.monotonic() + rng.expovariate(request_rate)
            while not stop.is_set():
                now = time.monotonic()
                if due_at > now:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), min(due_at - now, 0.25))
                    continue
                due = 0
                while due_at <= now:
                    lag_total += now - due_at
                    due += 1
                    due_at += rng.expovariate(request_rate)
                if counting:
                    window_published += due * per_request
                await self._publish(tenant, due, per_request)

        await pool.call("latency", True)
        counters_before = await self.counters()
        start = await self._mark()
        published_before = self.published
        task = asyncio.create_task(pace())
        try:
            await asyncio.sleep(warmup_s)
            first = await self._mark()
            counting = True
            window_open = time.time()
            await asyncio.sleep(window_s)
            counting = False
            window_close = time.time()
            last = await self._mark()
        finally:
            stop.set()
            await asyncio.wait_for(task, 30)
        published = self.published - published_before
        drain_s = await self._drain(start, published * streams, drain_timeout_s)
        counters_after = await self.counters()
        sent_at, delays = await pool.samples()
        await pool.call("latency", False)

        sent = np.frombuffer(sent_at, dtype=np.float64)
        delay = np.frombuffer(delays, dtype=np.float64)
        inside = np.sort(delay[(sent >= window_open) & (sent < window_close)])
        wall = last.at - first.at

        def quantile(q: float) -> float | None:
            if inside.size == 0:
                return None
            index = min(inside.size - 1, max(0, int(np.ceil(q * inside.size)) - 1))
            return float(inside[index])

        machine = (last.machine_busy_s - first.machine_busy_s) / wall
        hub = (last.hub_cpu_s - first.hub_cpu_s) / wall
        clients = (last.client_cpu_s - first.client_cpu_s) / wall
        own = (last.own_cpu_s - first.own_cpu_s) / wall
        return PointFigures(
            tenant=tenant,
            streams=streams,
            per_request=per_request,
            target_events_per_s=rate,
            window_s=wall,
            events_per_s=window_published / (window_close - window_open),
            deliveries_per_s=(last.frames - first.frames) / wall,
            hub_cores=hub,
            hub_cpu_share=_share(first, last),
            client_cores=clients,
            machine_cores=machine,
            other_cores=max(0.0, machine - hub - clients - own),
            published=window_published,
            expected=window_published * streams,
            received=int(inside.size),
            p50_ms=_ms(quantile(0.50)),
            p90_ms=_ms(quantile(0.90)),
            p99_ms=_ms(quantile(0.99)),
            max_ms=_ms(float(inside[-1]) if inside.size else None),
            fanout=int(counters_after["fanout"] - counters_before["fanout"]),
            dropped=int(counters_after["dropped"] - counters_before["dropped"]),
            drain_s=drain_s,
            publish_lag_ms=1000 * lag_total * per_request / max(published, 1),
        )

    async def _drain(self, start: _Mark, expected: int, timeout_s: float) -> float:
        """Wait until the clients read every frame owed since ``start``, or the
        count stops moving; the seconds it took."""
        began = time.monotonic()
        deadline = began + timeout_s
        last_frames = -1
        moved_at = began
        while time.monotonic() < deadline:
            mark = await self._mark()
            received = mark.frames - start.frames
            if received >= expected:
                break
            if received != last_frames:
                last_frames = received
                moved_at = mark.at
            elif mark.at - moved_at >= DRAIN_STALL_S:
                break
            await asyncio.sleep(0.05)
        return time.monotonic() - began

    async def counters(self) -> dict[str, float]:
        """Fan-out and backpressure drops, summed over tenants, from ``/metrics``."""
        server = self._server()
        connection = await HttpConnection.open(HOST, server.port)
        try:
            [answer] = await connection.exchange(
                [
                    get_request(
                        HOST,
                        server.port,
                        "/metrics",
                        {"Authorization": f"Bearer {METRICS_BEARER}"},
                    )
                ]
            )
        finally:
            await connection.close()
        if answer.status != 200:
            raise CapacityError(
                f"/metrics answered {answer.status}", where="reading the hub's counters"
            )
        totals = {"fanout": 0.0, "dropped": 0.0}
        for line in answer.body.decode("utf-8", "replace").splitlines():
            if line.startswith("rcm_realtime_fanout_total{"):
                totals["fanout"] += float(line.rsplit(" ", 1)[1])
            elif line.startswith("rcm_realtime_dropped_total{") and (
                'reason="backpressure"' in line
            ):
                totals["dropped"] += float(line.rsplit(" ", 1)[1])
        return totals
