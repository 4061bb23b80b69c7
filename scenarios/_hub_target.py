"""Play a scenario on real hub replicas over loopback.

Replicas run in this process on one bus (in-process by default), SSE clients are
real sockets that read as the scenario says (slow readers really read slowly,
flapping clients really stop reading and drop their sockets), publishers really
POST. Every scenario duration is multiplied by the time scale, and every rate
divided by it, so the same events happen in less wall time.
"""

from __future__ import annotations

import asyncio
import logging
import random
import secrets
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import aiohttp
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from hub import (
    Bus,
    FaultBoard,
    MemoryBus,
    Replica,
    Settings,
    TokenVerifier,
    issue_token,
    load_catalog,
    open_bus,
)
from hub.core import Catalog, CatalogRow, Envelope, format_timestamp
from hub.sse import SseParser

from ._model import Action, Behaviour, Scenario, Step, SubscriberGroup
from ._result import (
    COUNTER_SUFFIXES,
    ClientRecord,
    RunResult,
    Sample,
    SeriesKey,
    check_ledger,
    label_set,
)
from ._schedule import Schedule, ScheduledEvent, build_schedule
from ._truth import CatalogHistory, HubMade, client_record, interchange_records

log = logging.getLogger("scenarios")

SAMPLE_EVERY_S = 0.5  # scenario seconds between two scrapes
CLIENT_READ_LIMIT = 4096  # bytes a client's reader buffers before it stops reading
CLIENT_RECEIVE_BUFFER = 8192  # the client socket's kernel receive buffer
HUB_SEND_BUFFER = 8192  # the hub's per-stream send buffer in these runs
DRAIN_DEADLINE_S = 10.0  # wall seconds to wait for the bus to empty at the end
Progress = Callable[[str], None]


def _parse_exposition(text: str) -> dict[SeriesKey, float]:
    values: dict[SeriesKey, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.endswith("_created"):
                continue
            values[(sample.name, label_set(sample.labels))] = float(sample.value)
    return values


def _is_counter(name: str) -> bool:
    return name.endswith(COUNTER_SUFFIXES)


@dataclass
class _Slot:
    """One replica position: its current process-equivalent and what earlier
    instances had counted before they were replaced (Prometheus reset handling)."""

    index: int
    replica_id: str
    port: int = 0
    replica: Replica | None = None
    carried: dict[SeriesKey, float] = field(default_factory=dict)

    def retire(self) -> None:
        if self.replica is None:
            return
        final = _parse_exposition(generate_latest(self.replica.registry).decode())
        for key, value in final.items():
            if _is_counter(key[0]):
                self.carried[key] = self.carried.get(key, 0.0) + value


class HubRun:
    def __init__(
        self,
        scenario: Scenario,
        *,
        time_scale: float,
        bus_url: str | None = None,
        progress: Progress | None = None,
    ) -> None:
        self.scenario = scenario
        self.scale = max(time_scale, scenario.min_time_scale)
        self.bus_url = bus_url
        self.progress = progress or (lambda line: None)
        self.schedule: Schedule = build_schedule(scenario)
        self.secret = secrets.token_urlsafe(32)
        self.metrics_bearer = secrets.token_urlsafe(16)
        self.catalog: Catalog = load_catalog()
        # Catalog rows deployed during the run, at their scenario times.
        self.history = CatalogHistory()
        self.slots = [
            _Slot(n, f"{scenario.name}-r{n}") for n in range(1, scenario.replicas + 1)
        ]
        self.samples: list[Sample] = []
        self.ledger_violations: list[str] = []
        self.operations: list[tuple[float, str]] = []
        self.completions: dict[str, tuple[float, str, str, str]] = {}
        self.clients: list[_Client] = []
        self.stopping = False
        self.rng = random.Random(scenario.seed)
        self._start = 0.0
        self._bus: Bus | None = None
        # The same bus seen through its fault controls.
        self._faults: FaultBoard | None = None

    # -- time ---------------------------------------------------------------------

    def now_s(self) -> float:
        return (time.monotonic() - self._start) / self.scale

    async def sleep_until(self, at_s: float) -> None:
        delay = self._start + at_s * self.scale - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)

    def scaled(self, scenario_s: float) -> float:
        return scenario_s * self.scale

    # -- replicas -----------------------------------------------------------------

    def settings(self) -> Settings:
        hub = self.scenario.hub
        return Settings(
            jwt_secret=self.secret,
            metrics_bearer=self.metrics_bearer,
            batch_quiet_window_ms=max(1, round(hub.quiet_window_ms * self.scale)),
            queue_size=hub.queue_size,
            evict_after_s=self.scaled(hub.evict_after_s),
            heartbeat_s=self.scaled(hub.heartbeat_s),
            retry_ms=max(1, round(hub.retry_ms * self.scale)),
            shutdown_retry_spread_ms=round(hub.shutdown_retry_spread_ms * self.scale),
            shutdown_grace_s=max(0.5, self.scaled(3.0)),
            replay_max_events=1000 if hub.replay else 0,
            max_streams_per_token=1000,
            max_streams_per_tenant=100_000,
            stream_send_buffer_bytes=HUB_SEND_BUFFER,
        )

    async def _start_slot(self, slot: _Slot) -> None:
        assert self._bus is not None
        catalog = self.catalog
        replica = Replica(
            replica_id=slot.replica_id,
            settings=self.settings(),
            catalog=catalog,
            bus=self._bus,
            verifier=TokenVerifier(secret=self.secret),
        )
        replica.core.on_batch_completed = self._completed
        await replica.start("127.0.0.1", slot.port)
        slot.port = replica.port or slot.port
        slot.replica = replica

    def _completed(self, envelope: Envelope) -> None:
        if envelope.id in self.completions:
            return
        payload = envelope.payload
        self.completions[envelope.id] = (
            self.now_s(),
            envelope.tenant_id,
            str(payload["tradingPartnerId"]),
            str(payload["isa13"]),
        )

    def live_slots(self) -> list[_Slot]:
        return [s for s in self.slots if s.replica is not None]

    # -- sampling -----------------------------------------------------------------

    async def _sample_once(self, session: aiohttp.ClientSession) -> None:
        at_s = self.now_s()

        async def scrape(slot: _Slot) -> tuple[_Slot, dict[SeriesKey, float] | None]:
            try:
                async with session.get(
                    f"http://127.0.0.1:{slot.port}/metrics",
                    headers={"Authorization": f"Bearer {self.metrics_bearer}"},
                ) as response:
                    if response.status != 200:
                        return slot, None
                    return slot, _parse_exposition(await response.text())
            except aiohttp.ClientError:
                return slot, None

        results = await asyncio.gather(*(scrape(s) for s in self.live_slots()))
        for slot, values in results:
            if values is None:
                continue
            merged = dict(values)
            for key, carried in slot.carried.items():
                merged[key] = merged.get(key, 0.0) + carried
            sample = Sample(at_s, slot.index, merged)
            self.samples.append(sample)
            # The ledger is a law of one live replica, checked on its own scrape.
            problem = check_ledger(Sample(at_s, slot.index, values))
            if problem is not None:
                self.ledger_violations.append(problem)

    async def _sample_forever(self, session: aiohttp.ClientSession) -> None:
        tick = 0
        while True:
            await self.sleep_until(tick * SAMPLE_EVERY_S)
            await self._sample_once(session)
            tick += 1

    # -- publishing ---------------------------------------------------------------

    async def _publish(self, session: aiohttp.ClientSession) -> None:
        bearer = issue_token(
            secret=self.secret, tenant_id=None, scopes=["realtime.publish"]
        )
        events = list(self.schedule.events)
        position = 0
        turn = 0
        while position < len(events):
            await self.sleep_until(events[position].at_s)
            due_until = self.now_s()
            batch: list[ScheduledEvent] = []
            while position < len(events) and events[position].at_s <= due_until:
                batch.append(events[position])
                position += 1
            occurred = format_timestamp(time.time())
            body = [event.envelope(occurred) for event in batch]
            for _ in range(len(self.slots) * 20):
                live = self.live_slots()
                if live:
                    slot = live[turn % len(live)]
                    turn += 1
                    try:
                        async with session.post(
                            f"http://127.0.0.1:{slot.port}/v1/realtime/events",
                            json=body,
                            headers={"Authorization": f"Bearer {bearer}"},
                        ) as response:
                            if response.status == 202:
                                break
                    except aiohttp.ClientError:
                        pass
                await asyncio.sleep(self.scaled(0.05))
            else:
                log.warning(
                    "event=publish_failed scenario=%s count=%d",
                    self.scenario.name,
                    len(batch),
                )

    # -- the timeline -------------------------------------------------------------

    async def _play_timeline(self, session: aiohttp.ClientSession) -> None:
        for step in self.scenario.timeline:
            await self.sleep_until(step.at_s)
            self.operations.append((self.now_s(), step.action.value))
            self.progress(
                f"{self.scenario.name}: {step.action.value} at {step.at_s:g} s"
            )
            await self._perform(step, session)

    async def _perform(self, step: Step, session: aiohttp.ClientSession) -> None:
        assert self._bus is not None
        if step.action is Action.ROLLING_DEPLOY:
            for slot in self.slots:
                if slot.replica is None:
                    continue
                old = slot.replica
                await old.close()
                slot.retire()
                slot.replica = None
                await self._start_slot(slot)
                await asyncio.sleep(self.scaled(step.every_s))
        elif step.action is Action.ADMIN_DISCONNECT:
            admin = issue_token(
                secret=self.secret, tenant_id=None, roles=["PLATFORM_ADMIN"]
            )
            for slot in self.live_slots():
                async with session.post(
                    f"http://127.0.0.1:{slot.port}/v1/realtime/admin/tenants/"
                    f"{step.tenant}/disconnect",
                    headers={"Authorization": f"Bearer {admin}"},
                ) as response:
                    response.raise_for_status()
        elif step.action is Action.DEPLOY_EVENT_TYPE:
            assert step.event_type is not None and step.permission is not None
            row = CatalogRow(
                step.event_type,
                step.permission,
                step.severity,
                step.label or step.event_type,
            )
            self.catalog = self.catalog.with_row(row)
            self.history.deploy(self.now_s(), row)
            for slot in self.live_slots():
                assert slot.replica is not None
                slot.replica.core.catalog = self.catalog
        elif step.action is Action.RECORD_BATCH_FAILURE:
            bearer = issue_token(
                secret=self.secret, tenant_id=None, scopes=["realtime.publish"]
            )
            slot = self.live_slots()[0]
            async with session.post(
                f"http://127.0.0.1:{slot.port}/v1/realtime/batches/failures",
                json={
                    "tenantId": step.tenant,
                    "tradingPartnerId": step.trading_partner,
                    "reason": step.reason,
                },
                headers={"Authorization": f"Bearer {bearer}"},
            ) as response:
                response.raise_for_status()
                assert step.tenant is not None
                for failure_id in (await response.json())["ids"]:
                    self.failures[failure_id] = step.tenant
        elif step.action is Action.PAUSE_SUBSCRIPTION:
            assert step.replica is not None and self._faults is not None
            self._faults.pause(self.slots[step.replica - 1].replica_id)
        elif step.action is Action.RESUME_SUBSCRIPTION:
            assert step.replica is not None and self._faults is not None
            self._faults.resume(self.slots[step.replica - 1].replica_id)

    # Ids of recorded batch failures, with their tenant.
    failures: dict[str, str]

    def _open_bus(self) -> Bus:
        seed = self.scenario.seed
        if self.bus_url is None or self.bus_url == "memory":
            memory = MemoryBus(seed=seed)
            self._faults = memory
            return memory
        # A run of its own on the broker: names no other run shares, queues that
        # expire once the run's replicas are gone.
        nonce = secrets.token_hex(4)
        settings = Settings(
            bus_exchange=f"rcm.scenarios.{self.scenario.name}.{nonce}",
            bus_queue_prefix=f"rcm.scenarios.{nonce}.",
            bus_queue_expires_s=60.0,
            fault_seed=seed,
        )
        bus = open_bus(self.bus_url, settings=settings, catalog=self.catalog)
        assert isinstance(bus, FaultBoard)
        self._faults = bus
        return bus

    # -- the whole run ------------------------------------------------------------

    async def run(self) -> RunResult:
        self.failures = {}
        self._bus = self._open_bus()
        wall_start = time.monotonic()
        for slot in self.slots:
            await self._start_slot(slot)
        self._start = time.monotonic()
        self.clients = [
            _Client(self, group, n, self.rng.random())
            for group in self.scenario.groups
            for n in range(group.count)
        ]
        async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=64)
        ) as session:
            sampler = asyncio.create_task(self._sample_forever(session))
            client_tasks = [asyncio.create_task(c.play()) for c in self.clients]
            publisher = asyncio.create_task(self._publish(session))
            timeline = asyncio.create_task(self._play_timeline(session))
            try:
                await self.sleep_until(self.scenario.duration_s)
                await publisher
                await timeline
                await self._drain()
                await self._sample_once(session)
            finally:
                self.stopping = True
                sampler.cancel()
                for task in client_tasks:
                    task.cancel()
                await asyncio.gather(sampler, *client_tasks, return_exceptions=True)
                for slot in self.live_slots():
                    assert slot.replica is not None
                    await slot.replica.close()
                await self._bus.close()
        return RunResult(
            scenario=self.scenario,
            target="hub",
            samples=self.samples,
            clients=[c.record(self) for c in self.clients],
            interchanges=interchange_records(self.schedule, self.completions.values()),
            wall_s=time.monotonic() - wall_start,
            operations=self.operations,
            ledger_violations=self.ledger_violations,
        )

    async def _drain(self) -> None:
        """Let the bus empty and every reachable client read what it can."""
        deadline = time.monotonic() + DRAIN_DEADLINE_S
        while time.monotonic() < deadline:
            if all(s.replica is None or s.replica._backlog() == 0 for s in self.slots):
                break
            await asyncio.sleep(0.01)
        await asyncio.sleep(self.scaled(2 * SAMPLE_EVERY_S))


class _Client:
    """One browser tab: a real socket that reads as its group behaves."""

    def __init__(self, run: HubRun, group: SubscriberGroup, index: int, jitter: float):
        self.run = run
        self.group = group
        self.index = index
        self.name = f"{group.name}-{index}"
        self.scopes = frozenset(group.scopes) | run.catalog.scopes_for_roles(
            group.roles
        )
        self.token = issue_token(
            secret=run.secret,
            tenant_id=group.tenant,
            scopes=self.scopes,
            roles=group.roles,
            ttl_s=24 * 3600,
            subject=self.name,
        )
        self.parser = SseParser()
        self.received: dict[str, int] = {}
        self.shutdown_frames = 0
        self.reload_notices = 0
        self.connect_times: list[float] = []
        self.retry_ms = run.scenario.hub.retry_ms * run.scale
        self.jitter_rng = random.Random(jitter)
        count = len(run.slots)
        self.replica_turn = (group.replica - 1) if group.replica else index % count

    async def play(self) -> None:
        run = self.run
        group = self.group
        first_connect = (
            group.connect_at_s + group.connect_over_s * self.index / group.count
        )
        await run.sleep_until(first_connect)
        next_dark = group.dark_after_s + first_connect
        while not run.stopping:
            slot = run.slots[self.replica_turn % len(run.slots)]
            outcome = await self._connection(slot, next_dark)
            if outcome == "flapped":
                next_dark = run.now_s() + self.group.dark_after_s
            if outcome == "half_open" or run.stopping:
                return
            # Reconnect as a browser does: after retry, with jitter, elsewhere
            # unless the group is pinned to one replica.
            await asyncio.sleep(
                self.retry_ms / 1000 * self.jitter_rng.uniform(0.8, 1.2)
            )
            if self.group.replica is None:
                self.replica_turn += 1

    async def _connection(self, slot: _Slot, dark_at_s: float) -> str:
        run = self.run
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, CLIENT_RECEIVE_BUFFER)
        sock.setblocking(False)
        loop = asyncio.get_running_loop()
        try:
            await loop.sock_connect(sock, ("127.0.0.1", slot.port))
        except OSError:
            sock.close()
            return "refused"
        reader, writer = await asyncio.open_connection(
            sock=sock, limit=CLIENT_READ_LIMIT
        )
        try:
            last_id = self.parser.last_event_id
            resume = f"Last-Event-ID: {last_id}\r\n" if last_id else ""
            writer.write(
                f"GET /v1/realtime/stream HTTP/1.0\r\nHost: 127.0.0.1\r\n"
                f"Authorization: Bearer {self.token}\r\n{resume}\r\n".encode()
            )
            head = await reader.readuntil(b"\r\n\r\n")
            if not head.startswith(b"HTTP/1.0 200") and not head.startswith(
                b"HTTP/1.1 200"
            ):
                return "refused"
            return await self._read(reader, dark_at_s)
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            return "ended"
        finally:
            if not run.stopping or self.group.behaviour is not Behaviour.HALF_OPEN:
                writer.close()

    async def _read(self, reader: asyncio.StreamReader, dark_at_s: float) -> str:
        run = self.run
        behaviour = self.group.behaviour
        darkens = behaviour in (Behaviour.FLAPPING, Behaviour.HALF_OPEN)
        pace = self.group.read_rate_per_s / run.scale
        while True:
            if darkens and run.now_s() >= dark_at_s:
                if behaviour is Behaviour.HALF_OPEN:
                    # The socket stays open and unread until the run ends.
                    while not run.stopping:
                        await asyncio.sleep(self.run.scaled(1.0))
                    return "half_open"
                await asyncio.sleep(run.scaled(self.group.dark_for_s))
                return "flapped"
            read_size = 512 if behaviour is Behaviour.SLOW else 65536
            try:
                chunk = (
                    await asyncio.wait_for(
                        reader.read(read_size), timeout=run.scaled(0.5)
                    )
                    if darkens
                    else await reader.read(read_size)
                )
            except TimeoutError:
                continue
            if not chunk:
                return "ended"
            events = self.parser.feed(chunk)
            for event in events:
                if event.type == "ready":
                    self.connect_times.append(run.now_s())
                elif event.type == "server_shutdown":
                    self.shutdown_frames += 1
                elif event.type == "reload":
                    self.reload_notices += 1
                elif event.last_event_id:
                    self.received[event.last_event_id] = (
                        self.received.get(event.last_event_id, 0) + 1
                    )
            if self.parser.retry_ms is not None:
                self.retry_ms = self.parser.retry_ms
            if behaviour is Behaviour.SLOW and events:
                await asyncio.sleep(len(events) / pace)

    def record(self, run: HubRun) -> ClientRecord:
        return client_record(
            name=self.name,
            group=self.group,
            schedule=run.schedule,
            history=run.history,
            made=HubMade(
                failures=run.failures,
                completions={
                    i: tenant for i, (_, tenant, _, _) in run.completions.items()
                },
            ),
            received=self.received,
            connect_times=self.connect_times,
            shutdown_frames=self.shutdown_frames,
            reload_notices=self.reload_notices,
        )


async def run_on_hub(
    scenario: Scenario,
    *,
    time_scale: float,
    bus_url: str | None = None,
    progress: Progress | None = None,
) -> RunResult:
    return await HubRun(
        scenario, time_scale=time_scale, bus_url=bus_url, progress=progress
    ).run()
