"""The fan-out benchmark, the same for every system.

For each subscriber count, on a freshly started server:

1. **Connect**: the client workers open the streams, a bounded number of
   handshakes at a time; streams per second from the first connect to the last
   ``200``.
2. **Idle memory**: the server's resident memory after the streams settle, less
   its memory before the first connect, divided by the streams.
3. **Saturation**: the publisher keeps a fixed number of events in flight
   (published but not yet read by a tracking stream that the orchestrator holds),
   so the server always has work and never more than its queues take; deliveries
   per second are the events the clients read in a timed window.
4. **Latency at half rate**: events at half the saturation rate, evenly spaced,
   each stamped with its publish time; the clients keep publish-to-read delays of
   the events sent inside the window.

Every window also records the CPU of the server, of each client worker, of the
orchestrator and of the whole machine, so a figure taken while the client (or the
machine) was the bottleneck is marked as such.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from dataclasses import asdict, dataclass, replace
from typing import Any

import psutil

from . import _profile
from ._client import (
    ClientPool,
    ConnectOutcome,
    Sink,
    Stream,
    cpu_seconds,
    default_workers,
)
from ._harness import (
    CLIENTS_ENV,
    profile_requested,
    quick,
    raise_fd_limit,
    results_dir,
    say,
    write_result,
)
from ._harness import ports as port_pool
from ._systems import HOST, Server, System, SystemUnavailable, events

SATURATED = 0.9
IN_FLIGHT_ENV = "RCM_BENCH_IN_FLIGHT"
COUNTS_ENV = "RCM_BENCH_COUNTS"


@dataclass(frozen=True, slots=True)
class Plan:
    counts: tuple[int, ...]
    warmup_s: float
    window_s: float
    latency_warmup_s: float
    latency_window_s: float
    settle_s: float
    # Events published but not yet read by the tracking stream. The shallow window
    # is the headline (each stream has at most a few frames waiting, as when the
    # system keeps up); the deep one shows the ceiling when a system may coalesce
    # many frames per write, which costs latency. Zero skips the deep window.
    in_flight: int = 8
    deep_in_flight: int = 128
    connect_concurrency: int = 64
    connect_timeout_s: float = 30.0
    drain_timeout_s: float = 15.0


def default_plan() -> Plan:
    plan = _base_plan()
    in_flight = os.environ.get(IN_FLIGHT_ENV)
    counts = os.environ.get(COUNTS_ENV)
    if in_flight:
        shallow, _, deep = in_flight.partition(",")
        plan = replace(plan, in_flight=int(shallow))
        if deep:
            plan = replace(plan, deep_in_flight=int(deep))
    if counts:
        plan = replace(plan, counts=tuple(int(c) for c in counts.split(",")))
    return plan


def _base_plan() -> Plan:
    if quick():
        return Plan(
            counts=(100, 1000, 10000),
            warmup_s=0.5,
            window_s=1.5,
            latency_warmup_s=0.3,
            latency_window_s=1.5,
            settle_s=0.5,
            deep_in_flight=0,
        )
    return Plan(
        counts=(100, 1000, 10000),
        warmup_s=1.0,
        window_s=3.0,
        latency_warmup_s=0.5,
        latency_window_s=3.0,
        settle_s=1.0,
    )


class TrackerSink(Sink):
    def __init__(self) -> None:
        super().__init__()
        self.moved = asyncio.Event()

    def progressed(self) -> None:
        self.moved.set()


@dataclass(frozen=True, slots=True)
class Mark:
    at: float
    frames: int
    server_cpu_s: float
    client_cpu_s: tuple[float, ...]
    own_cpu_s: float
    machine_busy_s: float
    lost: int


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


async def _mark(server: Server, pool: ClientPool) -> Mark:
    reports = await pool.call("report")
    return Mark(
        at=time.monotonic(),
        frames=sum(r["frames"] for r in reports),
        server_cpu_s=server.cpu_s(),
        client_cpu_s=tuple(r["cpu_s"] for r in reports),
        own_cpu_s=cpu_seconds(),
        machine_busy_s=_machine_busy_s(),
        lost=sum(r["lost"] for r in reports),
    )


def _usage(first: Mark, last: Mark) -> dict[str, Any]:
    """CPU over a window, in cores, with the saturation flags."""
    wall = max(last.at - first.at, 1e-9)
    clients = [
        (b - a) / wall
        for a, b in zip(first.client_cpu_s, last.client_cpu_s, strict=True)
    ]
    server = (last.server_cpu_s - first.server_cpu_s) / wall
    own = (last.own_cpu_s - first.own_cpu_s) / wall
    machine = (last.machine_busy_s - first.machine_busy_s) / wall
    cores = psutil.cpu_count() or 1
    others = max(0.0, machine - server - sum(clients) - own)
    return {
        "wall_s": round(wall, 3),
        "server_cores": round(server, 3),
        "client_cores": [round(c, 3) for c in clients],
        "publisher_cores": round(own, 3),
        "machine_cores_busy": round(machine, 3),
        "other_processes_cores": round(others, 3),
        # A single client process cannot use more than one core.
        "client_saturated": any(c >= SATURATED for c in clients)
        or sum(clients) >= SATURATED * len(clients),
        "machine_saturated": machine >= SATURATED * cores,
    }


class Step:
    """One subscriber count on one freshly started server."""

    def __init__(
        self, system: System, pool: ClientPool, plan: Plan, subscribers: int
    ) -> None:
        self.system = system
        self.pool = pool
        self.plan = plan
        self.subscribers = subscribers
        self.tracker_sink = TrackerSink()
        self.tracker: Stream | None = None
        self.server: Server | None = None
        self.published = 0
        self.seq = 0

    async def run(self) -> dict[str, Any]:
        port = port_pool.take()
        self.server = server = await self.system.start(port)
        plan = self.plan
        result: dict[str, Any] = {"subscribers": self.subscribers, "port": port}
        try:
            await asyncio.sleep(0.5)
            rss_base = server.rss()
            result["connect"] = await self.connect(server)
            await self.open_tracker(server)
            await asyncio.sleep(self.plan.settle_s)
            rss_idle = server.rss()
            opened = result["connect"]["opened"]
            result["memory"] = {
                "rss_before_bytes": rss_base,
                "rss_idle_bytes": rss_idle,
                "bytes_per_subscriber": round((rss_idle - rss_base) / max(opened, 1)),
            }
            result["saturation"] = await self.saturate(server, plan.in_flight)
            if plan.deep_in_flight:
                result["ceiling"] = await self.saturate(
                    server, plan.deep_in_flight, profile=False
                )
            deliveries = result["saturation"]["deliveries_per_s"]
            rate = max(0.5, 0.5 * deliveries / max(opened, 1))
            result["latency"] = await self.measure_latency(server, rate)
            result["server_counters"] = await self.system.counters(server)
        finally:
            await self.pool.call("close")
            if self.tracker is not None:
                self.tracker.reset()
            if not server.alive():
                result["server_exited"] = server.log_tail()
            await server.stop()
        return result

    async def connect(self, server: Server) -> dict[str, Any]:
        outcomes: list[ConnectOutcome] = await self.pool.connect(
            host=HOST,
            port=server.port,
            request=server.stream_request(),
            count=self.subscribers,
            concurrency=self.plan.connect_concurrency,
            timeout_s=self.plan.connect_timeout_s,
        )
        opened = sum(o.opened for o in outcomes)
        failed = sum(o.failed for o in outcomes)
        started = min(o.started_at for o in outcomes)
        finished = max(o.finished_at for o in outcomes)
        seconds = max(finished - started, 1e-9)
        errors = [e for o in outcomes for e in o.errors][:5]
        if failed:
            say(f"  {failed} of {self.subscribers} streams failed to open: {errors}")
        return {
            "opened": opened,
            "failed": failed,
            "seconds": round(seconds, 3),
            "per_second": round(opened / seconds, 1),
            "errors": errors,
        }

    async def open_tracker(self, server: Server) -> None:
        loop = asyncio.get_running_loop()
        stream = Stream(self.tracker_sink, server.stream_request())
        await loop.create_connection(lambda: stream, HOST, server.port)
        if not await asyncio.wait_for(stream.opened, 30):
            raise RuntimeError(
                f"{self.system.label} refused the tracking stream: "
                f"{self.tracker_sink.refused}"
            )
        self.tracker = stream

    # -- saturation ----------------------------------------------------------------

    async def publish(self, server: Server, count: int) -> None:
        batch = self.system.batch
        documents_left = count
        while documents_left > 0:
            take = min(documents_left, batch) if batch > 1 else documents_left
            documents = events(take, self.seq)
            self.seq += take
            await server.publish(documents)
            self.published += take
            documents_left -= take

    async def saturate(
        self, server: Server, window: int, *, profile: bool = True
    ) -> dict[str, Any]:
        """Deliveries per second with ``window`` events kept in flight."""
        plan = self.plan
        sink = self.tracker_sink
        stop = asyncio.Event()
        stalls = 0
        # Events the tracker will never see (lost to it) are written off after a
        # stall, so one lost frame cannot stop the publisher for good.
        written_off = 0
        chunk = self.system.batch if self.system.batch > 1 else 32
        # Publish once half the window is free, so that a publish request carries
        # several events rather than one request per event read.
        low_water = max(1, window // 2)

        async def pump() -> None:
            nonlocal stalls, written_off
            while not stop.is_set():
                in_flight = self.published - written_off - sink.frames
                room = window - in_flight
                if room >= low_water:
                    await self.publish(server, min(room, chunk))
                    continue
                sink.moved.clear()
                try:
                    await asyncio.wait_for(sink.moved.wait(), 2.0)
                except TimeoutError:
                    stalls += 1
                    written_off = self.published - sink.frames

        start = await _mark(server, self.pool)
        start_published = self.published
        task = asyncio.create_task(pump())
        recorded: dict[str, Any] | None = None
        try:
            await asyncio.sleep(plan.warmup_s)
            first = await _mark(server, self.pool)
            first_published = self.published
            if profile and self._profiling():
                recorded = await _profile.record(
                    server.serving_pids()[0],
                    plan.window_s,
                    results_dir()
                    / f"profile-{self.system.name}-{self.subscribers}.txt",
                )
            else:
                await asyncio.sleep(plan.window_s)
            last = await _mark(server, self.pool)
            last_published = self.published
        finally:
            stop.set()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(task, 30)
        drained = await self.drain(start, self.published - start_published)
        seconds = last.at - first.at
        deliveries = last.frames - first.frames
        result = {
            "deliveries_per_s": round(deliveries / seconds, 1),
            "events_per_s": round((last_published - first_published) / seconds, 1),
            "deliveries_per_server_cpu_s": round(
                deliveries / max(last.server_cpu_s - first.server_cpu_s, 1e-9), 1
            ),
            "cpu": _usage(first, last),
            "in_flight": window,
            "tracker_stalls": stalls,
            "streams_lost": last.lost,
            **drained,
        }
        if recorded is not None:
            result["profile"] = recorded
        return result

    def _profiling(self) -> bool:
        return (
            profile_requested()
            and self.system.name.startswith("hub")
            and self.subscribers == 1000
        )

    async def drain(self, start: Mark, published: int) -> dict[str, Any]:
        """Wait until every event published since ``start`` has been read (or the
        count stops moving), and say how many never arrived."""
        expected = published * self.subscribers
        deadline = time.monotonic() + self.plan.drain_timeout_s
        last_frames = -1
        still = 0
        received = 0
        while time.monotonic() < deadline:
            mark = await _mark(self.server_or_fail(), self.pool)
            received = mark.frames - start.frames
            if received >= expected:
                break
            still = still + 1 if received == last_frames else 0
            if still >= 5:
                break
            last_frames = received
            await asyncio.sleep(0.1)
        return {
            "published": published,
            "expected_deliveries": expected,
            "received_deliveries": received,
            "undelivered": max(0, expected - received),
        }

    def server_or_fail(self) -> Server:
        assert self.server is not None
        return self.server

    # -- latency -------------------------------------------------------------------

    async def measure_latency(self, server: Server, rate: float) -> dict[str, Any]:
        plan = self.plan
        await self.pool.call("latency", True)
        stop = asyncio.Event()
        sent_in_window = 0
        window: list[float] = []

        async def pace() -> None:
            nonlocal sent_in_window
            started = time.monotonic()
            sent = 0
            while not stop.is_set():
                due = int((time.monotonic() - started) * rate) - sent
                if due > 0:
                    counting = len(window) == 1
                    await self.publish(server, due)
                    sent += due
                    if counting:
                        sent_in_window += due
                    continue
                wait = started + (sent + 1) / rate - time.monotonic()
                await asyncio.sleep(max(0.001, min(wait, 0.1)))

        start = await _mark(server, self.pool)
        start_published = self.published
        task = asyncio.create_task(pace())
        try:
            await asyncio.sleep(plan.latency_warmup_s)
            first = await _mark(server, self.pool)
            window.append(time.time())
            await asyncio.sleep(plan.latency_window_s)
            window.append(time.time())
            last = await _mark(server, self.pool)
        finally:
            stop.set()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(task, 30)
        drained = await self.drain(start, self.published - start_published)
        sent_at, delays = await self.pool.samples()
        await self.pool.call("latency", False)
        opened, closed = window
        inside = sorted(
            delay
            for sent, delay in zip(sent_at, delays, strict=True)
            if opened <= sent < closed
        )
        expected = sent_in_window * self.subscribers
        return {
            "events_per_s": round(rate, 2),
            "target_deliveries_per_s": round(rate * self.subscribers, 1),
            "events_in_window": sent_in_window,
            "samples": len(inside),
            "delivered_fraction": round(len(inside) / expected, 4)
            if expected
            else None,
            "p50_ms": _ms(_quantile(inside, 0.50)),
            "p90_ms": _ms(_quantile(inside, 0.90)),
            "p99_ms": _ms(_quantile(inside, 0.99)),
            "max_ms": _ms(inside[-1] if inside else None),
            "deliveries_per_server_cpu_s": round(
                (last.frames - first.frames)
                / max(last.server_cpu_s - first.server_cpu_s, 1e-9),
                1,
            ),
            "cpu": _usage(first, last),
            "drain": drained,
        }


def _quantile(ordered: list[float], q: float) -> float | None:
    if not ordered:
        return None
    index = min(len(ordered) - 1, max(0, int(q * len(ordered) + 0.5) - 1))
    return ordered[index]


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 2)


async def run_system(system: System, plan: Plan, workers: int) -> dict[str, Any]:
    """Every step of ``plan`` on ``system``; one pool of client workers for all."""
    pool = ClientPool(workers)
    steps: list[dict[str, Any]] = []
    try:
        await pool.start()
        for count in plan.counts:
            say(f"{system.name}: {count} subscribers")
            step = await Step(system, pool, plan, count).run()
            _announce(system, step)
            steps.append(step)
    finally:
        pool.close()
    return {
        "system": system.name,
        "label": system.label,
        "plan": asdict(plan),
        "client": {"workers": workers, "loops": pool.loop_names},
        "steps": steps,
    }


def _announce(system: System, step: dict[str, Any]) -> None:
    saturation = step["saturation"]
    latency = step["latency"]
    flags = []
    if saturation["cpu"]["client_saturated"]:
        flags.append("client saturated")
    if saturation["cpu"]["machine_saturated"]:
        flags.append("machine saturated")
    note = f" [{', '.join(flags)}]" if flags else ""
    say(
        f"  {system.name} n={step['subscribers']}: "
        f"{saturation['deliveries_per_s']:,.0f} deliveries/s "
        f"(server {saturation['cpu']['server_cores']:.2f} cores, clients "
        f"{sum(saturation['cpu']['client_cores']):.2f}){note}; "
        f"p50 {latency['p50_ms']} ms p99 {latency['p99_ms']} ms at "
        f"{latency['target_deliveries_per_s']:,.0f}/s; "
        f"{step['memory']['bytes_per_subscriber'] / 1024:.1f} KiB/stream; "
        f"{step['connect']['per_second']:,.0f} connects/s"
    )


def bench(system: System) -> None:
    """Run the fan-out benchmark on ``system`` and write its result file; a system
    that cannot run here is recorded as such, with the reason, and not retried."""
    reason = system.unavailable()
    if reason is not None:
        say(f"{system.name}: NOT MEASURED: {reason}")
        write_result(system.name, {"available": False, "reason": reason})
        return
    raise_fd_limit()
    try:
        document = asyncio.run(run_system(system, default_plan(), client_workers()))
    except SystemUnavailable as error:
        say(f"{system.name}: NOT MEASURED: {error}")
        write_result(system.name, {"available": False, "reason": str(error)})
        return
    write_result(system.name, {"available": True, **document})


def client_workers() -> int:
    configured = os.environ.get(CLIENTS_ENV)
    return int(configured) if configured else default_workers()
