"""Play a scenario on the simulator.

The world gets the scenario's explicit topology (its subscriber groups, each
client walking the replicas in turn as the hub target's clients do), the very
schedule of events the hub target publishes (``build_schedule``), its timeline
and its hub settings, and runs in simulated time: scenario seconds as they are.
Every replica is the hub's own core, so the metrics are sampled from the same
counters the hub exposes, every half second as the hub target scrapes them, and
client truth is judged by the same definitions (``_truth``).

Where the hub target's clients sit behind real sockets, the simulated ones sit
behind a socket allowance measured on those sockets, so that streams that stop
reading fill up, drop for backpressure and get evicted alike.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from hub.core import (
    CatalogRow,
    Latency,
    batch_failure,
    envelope_from_json,
)
from sim import (
    AdminDisconnect,
    BusModel,
    Clients,
    DeployNewType,
    Distribution,
    FaultWindow,
    HubSettings,
    Interchanges,
    Progress,
    RollingDeploy,
    SeriesRecord,
    SubscriberGroup,
    Topology,
    Workload,
    World,
    WorldConfig,
)
from sim import (
    Operation as SimOperation,
)

from ._hub_target import SAMPLE_EVERY_S
from ._model import Action, Scenario, Step
from ._model import SubscriberGroup as ScenarioGroup
from ._result import (
    COUNTER_SUFFIXES,
    ClientRecord,
    RunResult,
    Sample,
    SeriesKey,
    check_ledger,
    label_set,
)
from ._schedule import Schedule, build_schedule
from ._truth import (
    SHIPPED_CATALOG,
    CatalogHistory,
    HubMade,
    client_record,
    interchange_records,
)

# The hub target lets the bus drain and samples for this long after the workload.
SETTLE_S = 2 * SAMPLE_EVERY_S
# What a stream whose client stops reading absorbs before the hub's writes to it
# stall, as measured on the hub target's sockets (8 KiB client receive buffer,
# 4 KiB reader limit, 8 KiB server send buffer): the hub writes straight to the
# socket while the kernels and the reader take it (about 36 KB), then into
# aiohttp's write buffer, which waits to drain only after 64 KiB. In all 96 to
# 108 KB: 469 frames of 206 bytes, 207 of 515, 79 to 89 of 1215, 43 of 2215.
SOCKET_HOLDS_BYTES = 36_000
WRITE_DRAIN_BYTES = 64 * 1024
# The hub target's clients reconnect after retry: times uniform(0.8, 1.2).
RECONNECT_JITTER = 0.2
# How long a closing replica waits for its streams to take their farewell.
SHUTDOWN_GRACE_S = 3.0
# The hub target's limits, far above what a scenario opens.
MAX_STREAMS_PER_TENANT = 100_000
MAX_STREAMS_PER_TOKEN = 1000
# Half-open sockets never time out within a run, as on the hub target.
NEVER_S = 1e9

ProgressLine = Callable[[str], None]


def run_on_sim(
    scenario: Scenario, *, progress: ProgressLine | None = None
) -> RunResult:
    """Play ``scenario`` on the simulator; same scenario, same result."""
    return SimRun(scenario, progress=progress).run()


class SimRun:
    def __init__(
        self, scenario: Scenario, *, progress: ProgressLine | None = None
    ) -> None:
        self.scenario = scenario
        self.progress = progress or (lambda line: None)
        self.schedule: Schedule = build_schedule(scenario)
        self.history = CatalogHistory()
        for step in scenario.timeline:
            if step.action is Action.DEPLOY_EVENT_TYPE:
                self.history.deploy(step.at_s, _row(step))
        # Recorded batch failures by id, with their tenant.
        self.failures: dict[str, str] = {}

    # -- the world ----------------------------------------------------------------

    def world_config(self) -> WorldConfig:
        scenario = self.scenario
        hub = scenario.hub
        tenants = _tenants(scenario)
        operations, faults = self._timeline()
        return WorldConfig(
            seed=scenario.seed,
            duration_s=scenario.duration_s,
            settle_s=SETTLE_S,
            sample_interval_s=SAMPLE_EVERY_S,
            hub=HubSettings(
                queue_size=hub.queue_size,
                evict_after_s=hub.evict_after_s,
                quiet_window_ms=hub.quiet_window_ms,
                retry_ms=hub.retry_ms,
                shutdown_grace_s=SHUTDOWN_GRACE_S,
                shutdown_retry_spread_ms=hub.shutdown_retry_spread_ms,
                replay_max_events=1000 if hub.replay else 0,
                max_streams_per_tenant=MAX_STREAMS_PER_TENANT,
                max_streams_per_token=MAX_STREAMS_PER_TOKEN,
            ),
            topology=Topology(
                replicas=scenario.replicas,
                tenants=max(1, len(tenants)),
                subscribers=0,
                tenant_names=tenants,
                trading_partners=1,
                balancer="client_rotation",
                groups=tuple(_group(group) for group in scenario.groups),
            ),
            # The in-process bus hands a message on at once.
            bus=BusModel(latency=Latency.fixed(0.0)),
            clients=Clients(
                read_delay_s=0.0,
                slow_drain="fixed",
                flap_drops_socket=True,
                socket_buffer_bytes=SOCKET_HOLDS_BYTES,
                write_drain_bytes=WRITE_DRAIN_BYTES,
                half_open_return=None,
                tcp_timeout_s=NEVER_S,
                reconnect_jitter=RECONNECT_JITTER,
                reconnect_after_admin=True,
                send_last_event_id=True,
                dark_clock="client",
                record_reads=True,
            ),
            workload=Workload(
                emitters=(), interchanges=Interchanges(per_partner_per_hour=0.0)
            ),
            operations=tuple(operations),
            faults=tuple(faults),
        )

    def _timeline(self) -> tuple[list[SimOperation], list[FaultWindow]]:
        """The scenario's steps as the world's operations and fault windows;
        a pause lasts until the replica's next resume, or to the end."""
        operations: list[SimOperation] = []
        faults: list[FaultWindow] = []
        paused: dict[int, float] = {}
        end = self.scenario.duration_s + SETTLE_S
        for step in self.scenario.timeline:
            if step.action is Action.ROLLING_DEPLOY:
                operations.append(
                    # As the hub target does it: close a replica, start its new
                    # process at once, wait every_s, close the next.
                    RollingDeploy(
                        at_s=step.at_s,
                        interval_s=step.every_s,
                        restart_s=0.0,
                        wait_for_restart=True,
                    )
                )
            elif step.action is Action.ADMIN_DISCONNECT:
                assert step.tenant is not None
                operations.append(AdminDisconnect(at_s=step.at_s, tenant=step.tenant))
            elif step.action is Action.DEPLOY_EVENT_TYPE:
                assert step.event_type is not None and step.permission is not None
                operations.append(
                    DeployNewType(
                        at_s=step.at_s,
                        restart=False,
                        type=step.event_type,
                        required_permission=step.permission,
                        severity=step.severity,
                        label=step.label or step.event_type,
                        rate_per_s=0.0,
                    )
                )
            elif step.action is Action.PAUSE_SUBSCRIPTION:
                assert step.replica is not None
                paused.setdefault(step.replica, step.at_s)
            elif step.action is Action.RESUME_SUBSCRIPTION:
                assert step.replica is not None
                since = paused.pop(step.replica, None)
                if since is not None and step.at_s > since:
                    faults.append(_pause(step.replica, since, step.at_s))
        for replica, since in sorted(paused.items()):
            if since < end:
                faults.append(_pause(replica, since, end + 1.0))
        return operations, faults

    def _publish_schedule(self, world: World) -> None:
        for event in self.schedule.events:
            document = event.envelope(world.occurred_at(event.at_s))
            envelope = envelope_from_json(
                document,
                catalog=self.history.catalog_at(event.at_s),
                member=None,
                new_id=_given,
                now_iso=_given,
            )
            world.publish_at(event.at_s, envelope)
        failures = [
            step
            for step in self.scenario.timeline
            if step.action is Action.RECORD_BATCH_FAILURE
        ]
        for number, step in enumerate(failures, start=1):
            assert step.tenant is not None and step.trading_partner is not None
            failure = batch_failure(
                event_id=f"{self.scenario.name}-failure-{number:03d}",
                occurred_at=world.occurred_at(step.at_s),
                tenant_id=step.tenant,
                trading_partner_id=step.trading_partner,
                reason=step.reason,
            )
            self.failures[failure.id] = step.tenant
            world.publish_at(step.at_s, failure)

    # -- the run ------------------------------------------------------------------

    def run(self) -> RunResult:
        wall_start = time.perf_counter()
        scenario = self.scenario
        world = World(self.world_config(), source=scenario.source)
        self._publish_schedule(world)
        last_report = [0.0]

        def report(state: Progress) -> None:
            # About one line a wall second: a run is short, the line is for long ones.
            if state.wall_s - last_report[0] >= 1.0:
                last_report[0] = state.wall_s
                self.progress(
                    f"{scenario.name}: simulated {state.sim_s:.0f} of "
                    f"{state.end_s:.0f} s"
                )

        result = world.run(report)
        samples, violations = self._samples(world, result.series)
        violations += [
            f"replica {v.replica[1:]} at {v.time_s:.1f} s, tenant {v.tenant_id}: "
            f"{v.detail}"
            for v in result.ledger_violations
        ]
        end = scenario.duration_s + SETTLE_S
        return RunResult(
            scenario=scenario,
            target="sim",
            samples=samples,
            clients=self._client_records(world),
            interchanges=interchange_records(
                self.schedule, self._completions(world).values()
            ),
            wall_s=time.perf_counter() - wall_start,
            operations=[
                (step.at_s, step.action.value)
                for step in scenario.timeline
                if step.at_s <= end
            ],
            ledger_violations=violations,
        )

    @staticmethod
    def _samples(
        world: World, series: list[SeriesRecord]
    ) -> tuple[list[Sample], list[str]]:
        """Samples per replica as the hub target scrapes them: a restarted
        replica's counters carry on from where its earlier processes ended; the
        ledger is checked on each process's own figures."""
        carried: dict[tuple[str, int], dict[SeriesKey, float]] = {}
        for replica in world.replicas:
            running: dict[SeriesKey, float] = {}
            for generation in replica.generations:
                carried[(replica.name, generation.number)] = dict(running)
                for record in generation.final_series or ():
                    if record.metric.endswith(COUNTER_SUFFIXES):
                        key = _series_key(record)
                        running[key] = running.get(key, 0.0) + record.value
        scraped: dict[tuple[float, str, int], dict[SeriesKey, float]] = {}
        for record in series:
            if record.metric.startswith("rcm_realtime_"):
                at = (record.time_s, record.replica, record.generation)
                scraped.setdefault(at, {})[_series_key(record)] = record.value
        samples: list[Sample] = []
        violations: list[str] = []
        for (at_s, name, number), values in scraped.items():
            index = int(name[1:])
            problem = check_ledger(Sample(at_s, index, values))
            if problem is not None:
                violations.append(problem)
            merged = dict(values)
            for key, value in carried[(name, number)].items():
                merged[key] = merged.get(key, 0.0) + value
            samples.append(Sample(at_s, index, merged))
        return samples, violations

    @staticmethod
    def _completions(world: World) -> dict[str, tuple[float, str, str, str]]:
        """Each synthesized completion by id, first seen across replicas."""
        first: dict[str, tuple[float, str, str, str]] = {}
        for replica in world.replicas:
            for completion in replica.completions:
                envelope = completion.envelope
                seen = first.get(envelope.id)
                if seen is None or completion.at_s < seen[0]:
                    first[envelope.id] = (
                        completion.at_s,
                        envelope.tenant_id,
                        str(envelope.payload["tradingPartnerId"]),
                        str(envelope.payload["isa13"]),
                    )
        return first

    def _client_records(self, world: World) -> list[ClientRecord]:
        groups = {group.name: group for group in self.scenario.groups}
        made = HubMade(
            failures=self.failures,
            completions={
                i: tenant for i, (_, tenant, _, _) in self._completions(world).items()
            },
        )
        records: list[ClientRecord] = []
        for client in world.clients:
            spec = client.spec
            assert client.reads is not None
            records.append(
                client_record(
                    name=f"{spec.group}-{spec.position}",
                    group=groups[spec.group],
                    schedule=self.schedule,
                    history=self.history,
                    made=made,
                    received=client.reads,
                    connect_times=[at for at, _ in client.connects],
                    shutdown_frames=client.farewells,
                    reload_notices=client.reload_notices,
                )
            )
        return records


def _series_key(record: SeriesRecord) -> SeriesKey:
    labels = {
        name: value
        for name, value in (
            ("tenant_id", record.tenant_id),
            ("event_type", record.event_type),
            ("reason", record.reason),
            ("le", record.le),
        )
        if value
    }
    return (record.metric, label_set(labels))


def _tenants(scenario: Scenario) -> tuple[str, ...]:
    """Every tenant the scenario names, in the order it names them."""
    named: list[str] = []
    for tenant in (
        *(group.tenant for group in scenario.groups),
        *(stream.tenant for stream in scenario.streams),
        *(spec.tenant for spec in scenario.interchanges),
        *(step.tenant for step in scenario.timeline if step.tenant is not None),
    ):
        if tenant not in named:
            named.append(tenant)
    return tuple(named)


def _group(group: ScenarioGroup) -> SubscriberGroup:
    return SubscriberGroup(
        name=group.name,
        tenant=group.tenant,
        count=group.count,
        # A role the catalog does not know seeds nothing, as on the hub.
        roles=tuple(role for role in group.roles if role in SHIPPED_CATALOG.roles),
        scopes=group.scopes,
        behaviour=group.behaviour.value,  # type: ignore[arg-type]
        replica=None if group.replica is None else f"r{group.replica}",
        connect_at_s=group.connect_at_s,
        connect_over_s=group.connect_over_s,
        read_rate_per_s=group.read_rate_per_s,
        dark_after=Distribution("fixed", group.dark_after_s),
        dark_for=Distribution("fixed", group.dark_for_s),
    )


def _given() -> str:
    raise AssertionError("a scheduled event carries its id and occurredAt")


def _pause(replica: int, since: float, until: float) -> FaultWindow:
    return FaultWindow(
        kind="pause", replica=f"r{replica}", at_s=since, duration_s=until - since
    )


def _row(step: Step) -> CatalogRow:
    """The catalog row a ``deploy_event_type`` step lands."""
    assert step.event_type is not None and step.permission is not None
    return CatalogRow(
        step.event_type,
        step.permission,
        step.severity,
        step.label or step.event_type,
    )
