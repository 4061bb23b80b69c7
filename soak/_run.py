"""One soak run: replicas as processes, steady load, churn, faults, then verdicts.

The run's clock starts once every replica is ready. Times in the records are
seconds on that clock; log lines are placed on it from their wall-clock stamps.
"""

from __future__ import annotations

import asyncio
import math
import random
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import aiohttp

from hub import issue_token

from ._broker import (
    BrokerLock,
    check_broker,
    delete_topology,
    rabbitmqctl,
    rabbitmqctl_path,
)
from ._checks import (
    Check,
    LogRecord,
    MemoryVerdict,
    Outage,
    Reconciliation,
    Scrape,
    check_dispatched,
    check_errors,
    check_ledger,
    check_memory,
    check_reconciliations,
    foreign_outages,
    hub_streams,
    judge_memory,
    parse_log,
    reconcile,
)
from ._clients import ClientWorld, Session, SessionRecord
from ._hubs import HubFleet
from ._load import Publisher, PublisherStatistics
from ._model import (
    TENANTS,
    FaultRecord,
    InstanceRecord,
    Plan,
    SoakError,
    SoakOptions,
    StreamRecord,
)

Progress = Callable[[str], None]

FAULT_MARGIN_S = 2.0  # effects of a fault may show this long before and after it
READY_AFTER_FAULT_S = 90.0
DRAIN_S = 30.0
END_STREAMS_S = 30.0
SETTLE_S = 15.0
QUEUE_EXPIRES_S = 60
RECONNECT_MAX_S = 2
STREAM_SEND_BUFFER = 16 * 1024
# What one stream may hold in flight, in bytes: the hub's writer hands the
# transport up to 64 KiB before it waits, the transport holds up to its
# high-water mark (the send buffer setting), the kernel doubles both socket
# buffers. The hub's largest single write is 512 frames; a cut may leave one
# such write counted or not, whole.
HUB_WRITER_LIMIT = 64 * 1024
HUB_FRAMES_PER_WRITE = 512


@dataclass
class SoakResult:
    options: SoakOptions
    plan: Plan
    run_id: str
    exchange: str
    hub_environment: dict[str, str]
    wall_started: float
    wall_s: float
    instances: list[InstanceRecord]
    faults: list[FaultRecord]
    publisher: PublisherStatistics
    sessions: list[SessionRecord]
    streams: list[StreamRecord]
    memory: dict[str, list[tuple[float, int]]]
    verdicts: list[MemoryVerdict]
    reconciliations: list[Reconciliation]
    checks: list[Check]
    final: dict[str, Scrape]
    last_seen: dict[str, Scrape]
    scrapes: int
    log_levels: dict[str, dict[str, int]]
    excused_errors: list[LogRecord]
    unplanned_outages: list[Outage]
    cut_tolerance: int
    problems: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return bool(self.checks) and all(check.passed for check in self.checks)


class SoakRun:
    def __init__(self, options: SoakOptions, progress: Progress) -> None:
        self.options = options
        self.plan = Plan.for_options(options)
        self.progress = progress
        self.rng = random.Random(options.seed)
        self.run_id = secrets.token_hex(4)
        self.secret = secrets.token_urlsafe(32)
        self.metrics_bearer = secrets.token_urlsafe(16)
        self.exchange = f"rcm.soak.{self.run_id}"
        self.queue_prefix = f"rcm.soak.{self.run_id}."
        self._origin = time.monotonic()
        self.wall_origin = time.time()
        self.faults = [
            FaultRecord("broker_restart", "broker", self.plan.broker_restart_at_s),
            FaultRecord(
                "replica_kill",
                f"r{self.plan.kill_slot + 1}",
                self.plan.kill_at_s,
            ),
        ]
        self.memory: dict[str, list[tuple[float, int]]] = {}
        self.scrapes: list[Scrape] = []
        self.last_seen: dict[str, Scrape] = {}
        self.final: dict[str, Scrape] = {}
        self.problems: list[str] = []
        self.session_tasks: set[asyncio.Task[None]] = set()
        self.fleet: HubFleet | None = None
        self.world: ClientWorld | None = None
        self.publisher: Publisher | None = None

    # -- clock -------------------------------------------------------------------

    def now(self) -> float:
        return time.monotonic() - self._origin

    async def sleep_until(self, at_s: float) -> None:
        delay = at_s - self.now()
        if delay > 0:
            await asyncio.sleep(delay)

    def _restart_clock(self) -> None:
        """Time zero is when every replica is ready and the load begins."""
        shift = time.monotonic() - self._origin
        self._origin += shift
        self.wall_origin = time.time()
        assert self.fleet is not None
        for instance in self.fleet.instances():
            instance.spawned_s -= shift
            if instance.ready_s is not None:
                instance.ready_s -= shift

    # -- setup -------------------------------------------------------------------

    def hub_environment(self) -> dict[str, str]:
        return {
            "RCM_REALTIME_JWT_SECRET": self.secret,
            "RCM_REALTIME_METRICS_BEARER": self.metrics_bearer,
            "RCM_REALTIME_BUS_EXCHANGE": self.exchange,
            "RCM_REALTIME_BUS_QUEUE_PREFIX": self.queue_prefix,
            # Long enough to outlive the killed replica's downtime, short enough
            # that a run that could not clean up leaves nothing behind for long.
            "RCM_REALTIME_BUS_QUEUE_EXPIRES_S": str(QUEUE_EXPIRES_S),
            "RCM_REALTIME_BUS_RECONNECT_MAX_S": str(RECONNECT_MAX_S),
            # A client that stops reading shows as backpressure within seconds.
            "RCM_REALTIME_STREAM_SEND_BUFFER": str(STREAM_SEND_BUFFER),
        }

    # -- the run -----------------------------------------------------------------

    async def run(self) -> SoakResult:
        options = self.options
        options.validate()
        check_broker(options.bus_url)
        rabbitmqctl_path()
        log_dir = options.report_dir / "logs"
        log_dir.mkdir(parents=True, exist_ok=True)
        for old in log_dir.glob("r*-*.log"):
            old.unlink()
        wall_start = time.monotonic()
        self.fleet = fleet = HubFleet(
            replicas=options.replicas,
            first_port=options.port,
            bus_url=options.bus_url,
            environment=self.hub_environment(),
            log_dir=log_dir,
            metrics_bearer=self.metrics_bearer,
            admin_token=issue_token(
                secret=self.secret,
                tenant_id=None,
                roles=["PLATFORM_ADMIN"],
                ttl_s=int(options.duration_s) + 3600,
                subject="soak-admin",
            ),
            now=self.now,
        )
        background: list[asyncio.Task[None]] = []
        connector = aiohttp.TCPConnector(limit=64)
        async with aiohttp.ClientSession(connector=connector) as http:
            try:
                ports = ", ".join(str(slot.port) for slot in fleet.slots)
                self.progress(
                    f"starting {options.replicas} replicas on ports {ports} "
                    f"(exchange {self.exchange})"
                )
                await fleet.start_all(http)
                self._restart_clock()
                await self._play(http, background)
            finally:
                for task in background:
                    task.cancel()
                for task in self.session_tasks:
                    task.cancel()
                await asyncio.gather(
                    *background, *self.session_tasks, return_exceptions=True
                )
                self.problems += await fleet.stop_all()
                cleanup = await delete_topology(
                    options.bus_url,
                    self.exchange,
                    [self.queue_prefix + slot.replica_id for slot in fleet.slots],
                )
                if cleanup is not None:
                    self.progress(f"warning: {cleanup}")
        return self._verdicts(time.monotonic() - wall_start)

    async def _play(
        self, http: aiohttp.ClientSession, background: list[asyncio.Task[None]]
    ) -> None:
        options = self.options
        plan = self.plan
        fleet = self.fleet
        assert fleet is not None
        self.world = world = ClientWorld(
            endpoints=fleet,
            slot_count=len(fleet.slots),
            plan=plan,
            secret=self.secret,
            now=self.now,
        )
        self.publisher = publisher = Publisher(
            base_urls=lambda: [slot.base_url for slot in fleet.slots if slot.up],
            bearer=issue_token(
                secret=self.secret,
                tenant_id=None,
                scopes=["realtime.publish"],
                ttl_s=int(options.duration_s) + 3600,
                subject="soak-publisher",
            ),
            rate_per_s=options.events_per_s,
            tenants=TENANTS,
            rng=random.Random(self.rng.getrandbits(64)),
            now=self.now,
        )
        self.progress(
            f"load for {plan.duration_s:g} s: {options.clients} clients on average, "
            f"{options.events_per_s:g} events/s; broker restart at "
            f"{plan.broker_restart_at_s:g} s, SIGKILL of r{plan.kill_slot + 1} at "
            f"{plan.kill_at_s:g} s"
        )
        background += [
            asyncio.create_task(self._sample_memory()),
            asyncio.create_task(self._scrape_all(http)),
            asyncio.create_task(self._report_progress()),
        ]
        publishing = asyncio.create_task(publisher.run(http, plan.duration_s))
        arriving = asyncio.create_task(self._arrivals(world))
        faults = [
            asyncio.create_task(self._broker_restart(http, self.faults[0])),
            asyncio.create_task(self._replica_kill(http, self.faults[1])),
        ]
        background += [publishing, arriving, *faults]

        await self.sleep_until(plan.duration_s)
        await arriving
        await publishing
        for fault, task in zip(self.faults, faults, strict=True):
            try:
                await asyncio.wait_for(asyncio.shield(task), READY_AFTER_FAULT_S)
            except TimeoutError:
                fault.error = fault.error or "still unfinished when the load ended"
        self.progress("load over; waiting for the replicas' bus backlogs to drain")
        await self._drain(http)
        self.progress("ending every stream (admin disconnect, read to the end)")
        world.stop()
        await self._end_streams(http)
        await self._settle(http)
        for slot in fleet.slots:
            scrape = await fleet.scrape(slot, http)
            if scrape is not None:
                self.final[scrape.instance] = scrape
                self.last_seen[scrape.instance] = scrape
                self.scrapes.append(scrape)

    # -- load and churn ------------------------------------------------------------

    async def _arrivals(self, world: ClientWorld) -> None:
        """The first clients over a short ramp, then arrivals as a Poisson process
        whose rate keeps the mean population at --clients."""
        plan = self.plan
        options = self.options
        ramp_s = min(5.0, 0.05 * plan.duration_s)
        number = 0
        for at_s in sorted(self.rng.uniform(0, ramp_s) for _ in range(options.clients)):
            await self.sleep_until(at_s)
            number += 1
            self._start_session(world, number)
        rate = options.clients / plan.session_life_s
        at_s = ramp_s
        # Bounded: the expected count of arrivals, with ample headroom.
        for _ in range(int(rate * plan.duration_s * 3) + 100):
            at_s += self.rng.expovariate(rate)
            if at_s >= plan.duration_s:
                return
            await self.sleep_until(at_s)
            number += 1
            self._start_session(world, number)

    def _start_session(self, world: ClientWorld, number: int) -> None:
        plan = self.plan
        rng = self.rng
        session = Session(
            world,
            number=number,
            tenant=rng.choice(TENANTS),
            life_s=max(1.0, rng.expovariate(1 / plan.session_life_s)),
            narrow=rng.random() < plan.narrow_share,
            flapping=rng.random() < plan.flapping_share,
            closes=rng.random() < plan.close_share,
            rng=random.Random(rng.getrandbits(64)),
        )
        task = asyncio.create_task(session.play(), name=f"session-{number}")
        self.session_tasks.add(task)
        task.add_done_callback(self.session_tasks.discard)

    # -- faults ------------------------------------------------------------------------

    async def _broker_restart(
        self, http: aiohttp.ClientSession, fault: FaultRecord
    ) -> None:
        """stop_app, a pause, start_app, under the RabbitMQ tests' lock; the fault
        lasts until every replica is ready again."""
        await self.sleep_until(fault.planned_s)
        lock = BrokerLock(self.options.broker_lock)
        wait_s = self.plan.lock_deadline_s - self.now()
        if not await lock.acquire(wait_s):
            fault.error = (
                f"{lock.path} stayed locked by another run until "
                f"{self.plan.lock_deadline_s:g} s; the broker was not restarted"
            )
            self.progress(f"broker restart skipped: {fault.error}")
            return
        fleet = self.fleet
        assert fleet is not None and self.world is not None
        try:
            fault.started_s = self.now()
            fault.streams_open = self.world.open_streams
            self.progress("fault: rabbitmqctl stop_app")
            try:
                await rabbitmqctl("stop_app")
                fault.steps["stop_app"] = self.now()
                await asyncio.sleep(self.plan.broker_down_s)
            finally:
                await rabbitmqctl("start_app")
                fault.steps["start_app"] = self.now()
                self.progress("fault: rabbitmqctl start_app")
            if not await fleet.wait_all_ready(http, READY_AFTER_FAULT_S):
                raise SoakError(
                    f"the replicas were not all ready {READY_AFTER_FAULT_S:g} s "
                    "after the broker came back"
                )
            fault.ended_s = self.now()
            fault.injected = True
            self.progress(
                f"fault over: every replica ready again at {fault.ended_s:.1f} s"
            )
        except SoakError as error:
            fault.error = str(error)
            self.progress(f"fault failed: {error}")
        finally:
            lock.release()

    async def _replica_kill(
        self, http: aiohttp.ClientSession, fault: FaultRecord
    ) -> None:
        """SIGKILL one replica, leave it down a moment, start it again with the
        same replica id (and so the same bus queue)."""
        await self.sleep_until(fault.planned_s)
        fleet = self.fleet
        assert fleet is not None and self.world is not None
        slot = fleet.slots[self.plan.kill_slot]
        try:
            fault.started_s = self.now()
            fault.streams_open = sum(
                1
                for stream in self.world.streams
                if stream.slot == slot.index
                and stream.closed_s == 0.0
                and stream.status == 200
            )
            killed = await fleet.kill(slot)
            fault.steps["killed"] = self.now()
            self.progress(f"fault: SIGKILL {killed.key} (pid {killed.pid})")
            await asyncio.sleep(self.plan.kill_down_s)
            await fleet.spawn(slot, http)
            fault.steps["restarted"] = self.now()
            fault.ended_s = self.now()
            fault.injected = True
            current = slot.current
            assert current is not None
            self.progress(f"fault over: {current.key} ready at {fault.ended_s:.1f} s")
        except SoakError as error:
            fault.error = str(error)
            self.progress(f"fault failed: {error}")

    # -- observation -----------------------------------------------------------------

    async def _sample_memory(self) -> None:
        fleet = self.fleet
        assert fleet is not None
        every = self.plan.sample_every_s
        for tick in range(int(self.plan.duration_s / every) + 1):
            await self.sleep_until(tick * every)
            at_s = self.now()
            for key, rss in fleet.rss():
                self.memory.setdefault(key, []).append((at_s, rss))

    async def _scrape_all(self, http: aiohttp.ClientSession) -> None:
        fleet = self.fleet
        assert fleet is not None
        every = self.plan.scrape_every_s
        for tick in range(int(self.plan.duration_s / every) + 1):
            await self.sleep_until(tick * every)
            scrapes = await asyncio.gather(
                *(fleet.scrape(slot, http) for slot in fleet.slots)
            )
            for scrape in scrapes:
                if scrape is not None:
                    self.scrapes.append(scrape)
                    self.last_seen[scrape.instance] = scrape

    async def _report_progress(self) -> None:
        every = max(5.0, self.plan.duration_s / 30)
        for tick in range(1, int(self.plan.duration_s / every) + 1):
            await self.sleep_until(tick * every)
            self.progress(self._status_line())

    def _status_line(self) -> str:
        world = self.world
        publisher = self.publisher
        assert world is not None and publisher is not None
        alive = sum(1 for s in world.sessions if s.ended_s is None)
        memory = " ".join(
            f"{key} {samples[-1][1] / 2**20:.0f}MiB"
            for key, samples in sorted(self.memory.items())
            if samples and samples[-1][0] >= self.now() - 3 * self.plan.sample_every_s
        )
        return (
            f"{self.now():6.0f}/{self.plan.duration_s:g} s: "
            f"{publisher.stats.published} events published, "
            f"{alive} sessions alive ({len(world.sessions)} so far), "
            f"{world.open_streams} streams open, "
            f"{sum(s.received for s in world.streams)} frames received; {memory}"
        )

    # -- the end -----------------------------------------------------------------------

    async def _live_scrapes(self, http: aiohttp.ClientSession) -> list[Scrape | None]:
        fleet = self.fleet
        assert fleet is not None
        return list(
            await asyncio.gather(
                *(fleet.scrape(slot, http) for slot in fleet.slots if slot.up)
            )
        )

    async def _drain(self, http: aiohttp.ClientSession) -> None:
        """Until every replica's bus backlog reads zero twice, a refresh apart
        (the broker's count is refreshed every second)."""
        deadline = self.now() + DRAIN_S
        zero_since: float | None = None
        while self.now() < deadline:
            scrapes = await self._live_scrapes(http)
            if all(s is not None and s.backlog == 0 for s in scrapes):
                if zero_since is None:
                    zero_since = self.now()
                elif self.now() - zero_since >= 1.5:
                    return
            else:
                zero_since = None
            await asyncio.sleep(0.5)
        self.problems.append(f"the bus backlogs did not drain within {DRAIN_S:g} s")

    async def _end_streams(self, http: aiohttp.ClientSession) -> None:
        """Admin-disconnect every tenant everywhere, again while streams remain,
        so that each ends with its farewell after everything queued for it."""
        fleet = self.fleet
        assert fleet is not None
        deadline = self.now() + END_STREAMS_S
        while self.session_tasks and self.now() < deadline:
            await asyncio.gather(
                *(
                    fleet.disconnect_tenant(slot, tenant, http)
                    for slot in fleet.slots
                    if slot.up
                    for tenant in TENANTS
                )
            )
            # asyncio.wait, unlike wait_for, leaves the sessions running on timeout.
            await asyncio.wait(set(self.session_tasks), timeout=1.0)
        if self.session_tasks:
            self.problems.append(
                f"{len(self.session_tasks)} sessions had not ended "
                f"{END_STREAMS_S:g} s after the admin disconnects; they were cut"
            )

    async def _settle(self, http: aiohttp.ClientSession) -> None:
        """Until no replica holds a subscriber, so its counters are final."""
        deadline = self.now() + SETTLE_S
        while self.now() < deadline:
            scrapes = await self._live_scrapes(http)
            if all(
                s is not None and s.total("subscribers") == 0 and s.total("queued") == 0
                for s in scrapes
            ):
                return
            await asyncio.sleep(0.2)
        self.problems.append(
            f"replicas still held subscribers {SETTLE_S:g} s after the last stream"
        )

    # -- verdicts ----------------------------------------------------------------------

    def _verdicts(self, wall_s: float) -> SoakResult:
        fleet = self.fleet
        world = self.world
        publisher = self.publisher
        assert fleet is not None and world is not None and publisher is not None
        plan = self.plan
        instances = fleet.instances()

        records: list[LogRecord] = []
        log_levels: dict[str, dict[str, int]] = {}
        for instance in instances:
            try:
                text = instance.log_path.read_text("utf-8", errors="replace")
            except OSError as error:
                self.problems.append(f"cannot read {instance.log_path}: {error}")
                text = ""
            parsed = parse_log(
                text, instance=instance.key, wall_origin=self.wall_origin
            )
            records += parsed
            levels: dict[str, int] = {}
            for record in parsed:
                levels[record.level] = levels.get(record.level, 0) + 1
            log_levels[instance.key] = levels

        windows = [
            window
            for fault in self.faults
            if (window := fault.window(FAULT_MARGIN_S)) is not None
        ]
        errors, _, excused = check_errors(records, windows)
        unplanned = foreign_outages(records, self.faults[0].window(FAULT_MARGIN_S))

        logged = hub_streams(records)
        buffer = max((s.receive_buffer for s in world.streams), default=0)
        in_flight_bytes = HUB_WRITER_LIMIT + 3 * STREAM_SEND_BUFFER + buffer
        smallest = min(world.smallest_frame, 1 << 16)
        cut_tolerance = HUB_FRAMES_PER_WRITE + math.ceil(in_flight_bytes / smallest)
        reconciliations = [
            reconcile(
                [s for s in world.streams if s.instance == instance.key],
                [s for s in logged if s.instance == instance.key],
                instance=instance.key,
                delivered_total=(
                    self.final[instance.key].total("delivered")
                    if instance.key in self.final
                    else None
                ),
                killed=instance.killed_s is not None,
                cut_tolerance=cut_tolerance,
            )
            for instance in instances
        ]

        verdicts = [
            judge_memory(
                instance.key,
                self.memory.get(instance.key, []),
                ready_s=instance.ready_s or 0.0,
                until_s=instance.killed_s or plan.duration_s,
                warmup_s=plan.warmup_s,
            )
            for instance in instances
        ]

        untouched = {
            instance.key: (
                self.final[instance.key].total("dispatched")
                if instance.key in self.final
                else None
            )
            for slot in fleet.slots
            if len(slot.instances) == 1
            for instance in slot.instances
            if instance.killed_s is None
        }
        stats = publisher.stats
        checks = [
            check_ledger(self.scrapes),
            check_reconciliations(reconciliations),
            check_memory(verdicts),
            errors,
            check_dispatched(stats.published, stats.left_uncertain, untouched),
            self._check_plan(stats),
        ]
        return SoakResult(
            options=self.options,
            plan=plan,
            run_id=self.run_id,
            exchange=self.exchange,
            hub_environment={
                key: value
                for key, value in self.hub_environment().items()
                if key not in ("RCM_REALTIME_JWT_SECRET", "RCM_REALTIME_METRICS_BEARER")
            },
            wall_started=self.wall_origin,
            wall_s=wall_s,
            instances=instances,
            faults=self.faults,
            publisher=stats,
            sessions=world.sessions,
            streams=world.streams,
            memory=self.memory,
            verdicts=verdicts,
            reconciliations=reconciliations,
            checks=checks,
            final=self.final,
            last_seen=self.last_seen,
            scrapes=len(self.scrapes),
            log_levels=log_levels,
            excused_errors=excused,
            unplanned_outages=unplanned,
            cut_tolerance=cut_tolerance,
            problems=self.problems,
        )

    def _check_plan(self, stats: PublisherStatistics) -> Check:
        problems = list(self.problems)
        for fault in self.faults:
            if not fault.injected:
                problems.append(
                    f"{fault.kind} of {fault.target} not injected: "
                    f"{fault.error or 'it never ran'}"
                )
        if stats.rejected:
            problems.append(
                f"the hub refused {stats.rejected} events for good "
                f"({stats.rejected_reason})"
            )
        if stats.left_unpublished:
            problems.append(
                f"{stats.left_unpublished} events were still unpublished at the end"
            )
        injected = ", ".join(
            f"{fault.kind} at {fault.started_s:.1f} s"
            for fault in self.faults
            if fault.injected and fault.started_s is not None
        )
        return Check(
            "run_as_planned",
            "faults injected and the run completed as planned",
            not problems,
            f"faults injected: {injected or 'none'}"
            + (f"; {len(problems)} problems" if problems else ""),
            tuple(problems),
        )


async def run_soak(options: SoakOptions, progress: Progress) -> SoakResult:
    return await SoakRun(options, progress).run()
