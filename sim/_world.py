"""The world: every model wired together on one SimPy environment, and its run.

Time enters every hub core through ``SimClock``, which reads ``env.now``; envelopes
carry wall-clock timestamps offset from the world's ``start``.
"""

from __future__ import annotations

import importlib.resources
import logging
import random
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import simpy

from hub.core import (
    Catalog,
    CatalogError,
    CatalogRow,
    DisconnectReason,
    DropReason,
    Envelope,
    format_timestamp,
    parse_catalog,
)

from ._bus import SimBus
from ._clients import ClientState, SimClient
from ._config import (
    AdminDisconnect,
    DeployNewType,
    Emitter,
    FaultWindow,
    RollingDeploy,
    WorldConfig,
    WorldConfigError,
    check_against_catalog,
    combined_faults,
)
from ._log import log_event
from ._population import build_population
from ._random import stream
from ._replica import Completion, Generation, SimReplica
from ._report import (
    BatchTruth,
    ClientTruth,
    GenerationRun,
    LedgerViolation,
    SeriesRecord,
    SimulationResult,
)
from ._sched import call_at, do_at, do_later
from ._workload import ClearinghouseModel, EmitterModel, EventFactory

PROGRESS_STEPS = 200


class SimClock:
    """The core's ``Clock``: simulated seconds since the world's start."""

    __slots__ = ("_env",)

    def __init__(self, env: simpy.Environment) -> None:
        self._env = env

    def now(self) -> float:
        return float(self._env.now)


class Truth:
    """What was published: a sequence number per event, and per tenant how many
    events each permission would have let through."""

    __slots__ = ("_relevant", "next_seq", "seq_of")

    def __init__(self) -> None:
        self.seq_of: dict[str, int] = {}
        self.next_seq = 1
        self._relevant: dict[str, dict[str, int]] = {}

    def record(self, envelope: Envelope, permission: str | None) -> None:
        self.seq_of[envelope.id] = self.next_seq
        self.next_seq += 1
        if permission is not None:
            tally = self._relevant.setdefault(envelope.tenant_id, {})
            tally[permission] = tally.get(permission, 0) + 1

    def relevant(self, tenant: str, scopes: frozenset[str]) -> int:
        """Events published so far that a holder of ``scopes`` in ``tenant`` gets."""
        tally = self._relevant.get(tenant)
        if not tally:
            return 0
        return sum(tally.get(scope, 0) for scope in scopes)


class Balancer:
    """The load balancer: only ready replicas get new streams."""

    def __init__(
        self, replicas: list[SimReplica], policy: str, rng: random.Random
    ) -> None:
        self._replicas = replicas
        self._policy = policy
        self._rng = rng
        self._turn = 0

    @property
    def rotating(self) -> bool:
        """Clients walk the replicas themselves (``in_turn``)."""
        return self._policy == "client_rotation"

    def in_turn(self, turn: int) -> SimReplica | None:
        """The replica a walking client tries on its ``turn``-th attempt, when
        it is ready."""
        replica = self._replicas[turn % len(self._replicas)]
        return replica if replica.ready else None

    def choose(self, avoid: str | None, pinned: str | None = None) -> SimReplica | None:
        """A ready replica for a new stream, other than ``avoid`` when there is a
        choice; only ``pinned`` when given."""
        if pinned is not None:
            for replica in self._replicas:
                if replica.name == pinned:
                    return replica if replica.ready else None
            return None
        ready = [replica for replica in self._replicas if replica.ready]
        if not ready:
            return None
        if avoid is not None and len(ready) > 1:
            ready = [replica for replica in ready if replica.name != avoid] or ready
        if self._policy == "round_robin":
            self._turn += 1
            return ready[self._turn % len(ready)]
        if self._policy == "least_connections":
            return min(ready, key=lambda replica: replica.open_streams())
        return self._rng.choice(ready)


@dataclass(frozen=True, slots=True)
class Progress:
    """How far a run is, for a progress line."""

    sim_s: float
    end_s: float
    published: int
    delivered: int
    clients_connected: int
    wall_s: float


def shipped_catalog() -> Catalog:
    text = importlib.resources.files("hub").joinpath("catalog.toml").read_text("utf-8")
    return parse_catalog(text, source="hub/catalog.toml")


def load_catalog_file(path: str) -> Catalog:
    try:
        text = Path(path).read_text("utf-8")
    except OSError as error:
        raise CatalogError(
            f"cannot read the catalog ({error.strerror})", source=path
        ) from error
    except UnicodeDecodeError as error:
        raise CatalogError("the catalog is not UTF-8 text", source=path) from error
    return parse_catalog(text, source=path)


class World:
    """A world built from a ``WorldConfig``; ``run()`` plays it once."""

    def __init__(
        self,
        config: WorldConfig,
        *,
        catalog: Catalog | None = None,
        source: str = "<world>",
    ) -> None:
        self.config = config
        if catalog is None:
            catalog = (
                shipped_catalog()
                if config.catalog is None
                else load_catalog_file(config.catalog)
            )
        check_against_catalog(config, catalog, source)
        # What new replica processes load; a deploy can add a row.
        self.catalog = catalog
        # What producers and the truth go by: rows land here when a deploy starts.
        self.truth_catalog = catalog
        self.env = simpy.Environment()
        self.clock = SimClock(self.env)
        self.start_epoch = config.start_epoch
        self.core_settings = config.hub.core_settings()
        self.population = build_population(config, catalog)
        self._admin_tenants = self._resolve_tenants(source)
        self._check_emitter_tenants(source)
        self.truth = Truth()
        self.bus = SimBus(self.env, config.bus.latency, config.seed)
        # The fault windows open on each replica, in the order they opened.
        self._open_faults: dict[str, list[FaultWindow]] = defaultdict(list)
        self.replicas = [SimReplica(self, name) for name in config.replica_names]
        self.balancer = Balancer(
            self.replicas, config.topology.balancer, stream(config.seed, "balancer")
        )
        self.events = EventFactory(self, stream(config.seed, "events"))
        self.emitters = [
            EmitterModel(
                self,
                spec,
                self._types_of(spec),
                stream(config.seed, f"emitter/{index}"),
            )
            for index, spec in enumerate(config.workload.emitters)
        ]
        self.clearinghouse = ClearinghouseModel(
            self,
            config.workload.interchanges,
            self.population.partners,
            self.population.tenants,
            stream(config.seed, "clearinghouse"),
        )
        self.clients = [
            SimClient(self, spec, stream(config.seed, f"client/{spec.id}"))
            for spec in self.population.clients
        ]
        # Per batch bucket: first and last publish time, events published.
        self._sent_batches: dict[tuple[str, str, str], list[float]] = {}
        self._series: list[SeriesRecord] = []
        self._violations: list[LedgerViolation] = []
        self._sample_times: list[float] = []
        self._ledger_checks = 0
        self._ran = False

    # -- construction helpers ----------------------------------------------------------

    def _types_of(self, spec: Emitter) -> list[str]:
        if spec.types:
            return list(spec.types)
        return [
            row.type
            for row in self.catalog.rows.values()
            if row.family == spec.family and row.type != "batch.completed"
        ]

    def _resolve_tenants(self, source: str) -> dict[int, str]:
        slugs = [tenant.slug for tenant in self.population.tenants]
        resolved: dict[int, str] = {}
        for index, operation in enumerate(self.config.operations):
            if not isinstance(operation, AdminDisconnect):
                continue
            reference = operation.tenant
            if isinstance(reference, int):
                resolved[index] = slugs[reference]
            elif reference in slugs:
                resolved[index] = reference
            else:
                shown = ", ".join(slugs[:8]) + (" ..." if len(slugs) > 8 else "")
                raise WorldConfigError(
                    f"no tenant '{reference}' in this world ({shown}); name tenants "
                    "with topology.tenant_names or use a rank (0 is the largest)",
                    source=source,
                    key=f"operations.{index}.tenant",
                )
        return resolved

    def _check_emitter_tenants(self, source: str) -> None:
        slugs = {tenant.slug for tenant in self.population.tenants}
        for index, emitter in enumerate(self.config.workload.emitters):
            for position, tenant in enumerate(emitter.tenants):
                if tenant not in slugs:
                    raise WorldConfigError(
                        f"no tenant '{tenant}' in this world; name tenants with "
                        "topology.tenant_names or topology.groups",
                        source=source,
                        key=f"workload.emitters.{index}.tenants.{position}",
                    )

    # -- what the models call ----------------------------------------------------------

    def publish(self, envelope: Envelope) -> None:
        """A producer publishes one event to the bus."""
        row = self.truth_catalog.rows.get(envelope.type)
        self.truth.record(envelope, row.required_permission if row else None)
        ref = envelope.batch
        if ref is not None:
            key = (envelope.tenant_id, ref.trading_partner_id, ref.isa13)
            sent = self._sent_batches.get(key)
            now = self.env.now
            if sent is None:
                self._sent_batches[key] = [now, now, 1]
            else:
                sent[1] = now
                sent[2] += 1
        self.bus.publish(envelope)

    def occurred_at(self, at_s: float) -> str:
        """The ``occurredAt`` of an event published at simulated time ``at_s``."""
        return format_timestamp(self.start_epoch + at_s)

    def publish_at(self, at_s: float, envelope: Envelope) -> None:
        """Publish ``envelope`` at simulated time ``at_s``, besides the modelled
        workload: how a caller plays an explicit schedule of events (give it an
        ``occurredAt`` from ``occurred_at(at_s)``). Call before ``run``."""
        if self._ran:
            raise RuntimeError("events are scheduled before the world runs")
        do_at(self.env, at_s, partial(self.publish, envelope))

    # -- the timeline ------------------------------------------------------------------

    def _schedule_timeline(self) -> None:
        env = self.env
        for index, operation in enumerate(self.config.operations):
            do_at(env, operation.at_s, partial(self._operate, index, operation))
        for window in self.config.faults:
            do_at(env, window.at_s, partial(self._fault, window))
            do_at(env, window.at_s + window.duration_s, partial(self._lift, window))

    def _operate(
        self, index: int, operation: RollingDeploy | DeployNewType | AdminDisconnect
    ) -> None:
        if isinstance(operation, AdminDisconnect):
            self._admin_disconnect(index, operation)
            return
        if isinstance(operation, DeployNewType):
            row = CatalogRow(
                operation.type,
                operation.required_permission,
                operation.severity,
                operation.label,
            )
            self.catalog = self.catalog.with_row(row)
            self.truth_catalog = self.truth_catalog.with_row(row)
            emitter = EmitterModel(
                self,
                Emitter(
                    family=row.family,
                    rate_per_s=max(operation.rate_per_s, 1e-9),
                    types=(operation.type,),
                ),
                [operation.type],
                stream(self.config.seed, f"operation/{index}/emitter"),
                start_s=self.env.now,
            )
            if operation.rate_per_s > 0:
                self.emitters.append(emitter)
                emitter.start()
            if not operation.restart:
                self._land_row(operation, row)
                return
        names = operation.replicas or tuple(self.config.replica_names)
        log_event(
            logging.INFO,
            "deploy_started",
            kind=operation.kind,
            replicas=",".join(names),
            at_s=round(self.env.now, 3),
        )
        by_name = {replica.name: replica for replica in self.replicas}
        in_order = [by_name[name] for name in names]
        if isinstance(operation, RollingDeploy) and operation.wait_for_restart:
            self._close_in_turn(in_order, operation)
            return
        for step, replica in enumerate(in_order):
            do_later(
                self.env,
                step * operation.interval_s,
                partial(replica.close, restart_after_s=operation.restart_s),
            )

    def _close_in_turn(self, replicas: list[SimReplica], deploy: RollingDeploy) -> None:
        """Close the first of ``replicas``; the next closes ``interval_s`` after
        its new process has started (at once when it had none to close)."""
        if not replicas:
            return
        first, rest = replicas[0], replicas[1:]

        def next_one() -> None:
            do_later(
                self.env, deploy.interval_s, partial(self._close_in_turn, rest, deploy)
            )

        if not first.close(restart_after_s=deploy.restart_s, on_restart=next_one):
            self._close_in_turn(rest, deploy)

    def _land_row(self, operation: DeployNewType, row: CatalogRow) -> None:
        """The row reaches every running replica at once (no restart)."""
        names = set(operation.replicas or self.config.replica_names)
        for replica in self.replicas:
            generation = replica.current
            if replica.name in names and generation is not None:
                generation.core.catalog = generation.core.catalog.with_row(row)
        log_event(
            logging.INFO,
            "catalog_row_landed",
            type=row.type,
            replicas=",".join(sorted(names)),
            at_s=round(self.env.now, 3),
        )

    def _admin_disconnect(self, index: int, operation: AdminDisconnect) -> None:
        tenant = self._admin_tenants[index]
        names = set(operation.replicas or self.config.replica_names)
        ejected = 0
        for replica in self.replicas:
            generation = replica.current
            if replica.name not in names or generation is None:
                continue
            ejected += generation.core.disconnect_tenant(tenant)
            generation.settle()
        log_event(
            logging.INFO,
            "admin_disconnect",
            tenant=tenant,
            replicas=",".join(sorted(names)),
            disconnected=ejected,
            at_s=round(self.env.now, 3),
        )

    def _fault(self, window: FaultWindow) -> None:
        windows = self._open_faults[window.replica]
        windows.append(window)
        self.bus.set_faults(window.replica, combined_faults(windows))
        log_event(
            logging.INFO,
            "bus_fault",
            replica=window.replica,
            kind=window.kind,
            duration_s=window.duration_s,
            at_s=round(self.env.now, 3),
        )

    def _lift(self, window: FaultWindow) -> None:
        windows = self._open_faults[window.replica]
        windows.remove(window)
        self.bus.set_faults(window.replica, combined_faults(windows))
        log_event(
            logging.INFO,
            "bus_fault_lifted",
            replica=window.replica,
            kind=window.kind,
            at_s=round(self.env.now, 3),
        )

    # -- sampling ----------------------------------------------------------------------

    def _sample(self, at: float) -> None:
        self._sample_times.append(at)
        series = self._series
        for replica in self.replicas:
            generation = replica.current
            ready = 1 if replica.ready else 0
            series.append(
                SeriesRecord(
                    at,
                    replica.name,
                    generation.number if generation is not None else 0,
                    "sim_replica_ready",
                    "",
                    "",
                    "",
                    "",
                    ready,
                )
            )
            if generation is not None:
                self._check_ledger(at, replica.name, generation)
                self._series.extend(self.records_of(at, replica.name, generation))
        states: dict[ClientState, int] = defaultdict(int)
        for client in self.clients:
            states[client.state] += 1
        for state in ClientState:
            series.append(
                SeriesRecord(
                    at, "", 0, "sim_clients", "", "", state.value, "", states[state]
                )
            )
        series.append(
            SeriesRecord(
                at,
                "",
                0,
                "sim_events_published_total",
                "",
                "",
                "",
                "",
                self.truth.next_seq - 1,
            )
        )

    def records_of(
        self, at: float, name: str, generation: Generation
    ) -> list[SeriesRecord]:
        """One process's contract metrics now, in the hub's exposition order."""
        stats = generation.statistics()
        number = generation.number
        tenants = sorted(stats.tenants.items())
        out: list[SeriesRecord] = []

        def add(
            metric: str,
            value: float,
            tenant: str = "",
            event_type: str = "",
            reason: str = "",
            le: str = "",
        ) -> None:
            out.append(
                SeriesRecord(
                    at, name, number, metric, tenant, event_type, reason, le, value
                )
            )

        for tenant, t in tenants:
            add("rcm_realtime_subscribers", t.subscribers, tenant)
        for tenant, t in tenants:
            for event_type, count in sorted(t.dispatched.items()):
                add("rcm_realtime_events_dispatched_total", count, tenant, event_type)
        for tenant, t in tenants:
            add("rcm_realtime_fanout_total", t.fanout, tenant)
        for tenant, t in tenants:
            add("rcm_realtime_delivered_total", t.delivered, tenant)
        for tenant, t in tenants:
            for reason in DropReason:
                add(
                    "rcm_realtime_dropped_total",
                    t.dropped[reason],
                    tenant,
                    reason=reason,
                )
        for tenant, t in tenants:
            add("rcm_realtime_queued", t.queued, tenant)
        for tenant, t in tenants:
            for gone in DisconnectReason:
                add(
                    "rcm_realtime_disconnects_total",
                    t.disconnects[gone],
                    tenant,
                    reason=gone,
                )
        for tenant, t in tenants:
            add("rcm_realtime_batches_open", t.batches_open, tenant)
        for tenant, t in tenants:
            add("rcm_realtime_batches_completed_total", t.batches_completed, tenant)
        add("rcm_realtime_bus_backlog", generation.backlog())
        histogram = generation.latency
        for bound, count in histogram.cumulative():
            add("rcm_realtime_delivery_latency_seconds_bucket", count, le=bound)
        add("rcm_realtime_delivery_latency_seconds_sum", histogram.total)
        add("rcm_realtime_delivery_latency_seconds_count", histogram.count)
        return out

    def _check_ledger(self, at: float, name: str, generation: Generation) -> None:
        """The contract's ledger per tenant, and the gauges against the queues."""
        self._ledger_checks += 1
        core = generation.core
        held: dict[str, int] = defaultdict(int)
        streams: dict[str, int] = defaultdict(int)
        for subscriber in core.subscribers():
            held[subscriber.tenant_id] += len(subscriber.queue)
            streams[subscriber.tenant_id] += 1
        for tenant in core.tenant_ids():
            counters = core.counters(tenant)
            problems = []
            accounted = (
                counters.delivered
                + counters.dropped_permission
                + counters.dropped_backpressure
                + counters.dropped_disconnected
                + counters.queued
            )
            if counters.fanout != accounted:
                problems.append(
                    f"fanout {counters.fanout} != delivered + dropped + queued "
                    f"{accounted}"
                )
            if counters.queued != held[tenant]:
                problems.append(
                    f"queued gauge {counters.queued} but the queues hold {held[tenant]}"
                )
            if counters.subscribers != streams[tenant]:
                problems.append(
                    f"subscribers gauge {counters.subscribers} but "
                    f"{streams[tenant]} streams are open"
                )
            for problem in problems:
                self._violations.append(
                    LedgerViolation(at, name, generation.number, tenant, problem)
                )

    def _check_every_ledger(self) -> None:
        now = self.env.now
        for replica in self.replicas:
            if replica.current is not None:
                self._check_ledger(now, replica.name, replica.current)

    # -- the run -----------------------------------------------------------------------

    def run(
        self, progress: Callable[[Progress], None] | None = None
    ) -> SimulationResult:
        """Play the world once and report; ``progress`` is called now and then."""
        if self._ran:
            raise RuntimeError("a World runs once; build another for another run")
        self._ran = True
        wall_start = time.perf_counter()
        env = self.env
        config = self.config
        end = config.duration_s + config.settle

        for replica in self.replicas:
            replica.start()
        for client in self.clients:
            client.start()
        for emitter in self.emitters:
            emitter.start()
        self.clearinghouse.start()
        self._schedule_timeline()

        step = 0
        while step * config.sample_interval_s < end:
            at = step * config.sample_interval_s
            do_at(env, at, partial(self._sample, at))
            step += 1

        def report(_: object) -> None:
            if progress is not None:
                progress(self._progress(end, wall_start))

        for step in range(1, PROGRESS_STEPS):
            call_at(env, end * step / PROGRESS_STEPS, report)

        if config.checks.ledger_every_step:
            while env.peek() < end:
                env.step()
                self._check_every_ledger()
        env.run(until=end)
        self._sample(end)
        if progress is not None:
            progress(self._progress(end, wall_start))
        for client in self.clients:
            client.finish()

        return SimulationResult(
            config=config,
            tenants=tuple(tenant.slug for tenant in self.population.tenants),
            trading_partners=tuple(p.id for p in self.population.partners),
            series=self._series,
            clients=[self._client_truth(client) for client in self.clients],
            batches=self._batch_truth(),
            ledger_violations=self._violations,
            ledger_checks=self._ledger_checks,
            generations=self._generation_runs(),
            published=self.truth.next_seq - 1,
            sample_times=self._sample_times,
            wall_s=time.perf_counter() - wall_start,
        )

    def _progress(self, end: float, wall_start: float) -> Progress:
        delivered = 0
        for replica in self.replicas:
            for generation in replica.generations:
                core = generation.core
                delivered += sum(core.counters(t).delivered for t in core.tenant_ids())
        connected = sum(1 for c in self.clients if c.state is ClientState.CONNECTED)
        return Progress(
            sim_s=self.env.now,
            end_s=end,
            published=self.truth.next_seq - 1,
            delivered=delivered,
            clients_connected=connected,
            wall_s=time.perf_counter() - wall_start,
        )

    # -- truth -------------------------------------------------------------------------

    def _client_truth(self, client: SimClient) -> ClientTruth:
        spec = client.spec
        principal = spec.user.principal
        should = (client.should_until or 0) - client.should_from
        return ClientTruth(
            client_id=spec.id,
            group=spec.group,
            tenant_id=spec.tenant,
            user=spec.user.subject,
            kind=spec.kind.value,
            roles=spec.user.roles,
            scopes=tuple(sorted(principal.scopes)),
            should=should,
            got=client.got,
            missed=should - client.got,
            duplicates=client.duplicates,
            completions=client.completions,
            lost_in_socket=client.lost_in_socket,
            connections=client.connections,
            connects=list(client.connects),
            farewells=client.farewells,
            refused=client.refused,
            reload_notices=client.reload_notices,
            streams_ended=dict(sorted(client.streams_ended.items())),
            wanted_s=(client.wanted_until or 0.0) - (client.wanted_since or 0.0),
            connected_s=client.connected_s,
            staleness_max_s=client.lag_max
            if client.got or client.completions or client.duplicates
            else None,
            dark_spells=client.dark_spells,
            half_open_spells=client.half_open_spells,
            final_state=client.state.value,
        )

    def _batch_truth(self) -> list[BatchTruth]:
        completions: dict[str, dict[tuple[str, str, str], list[Completion]]] = {}
        for replica in self.replicas:
            keyed: dict[tuple[str, str, str], list[Completion]] = defaultdict(list)
            for completion in replica.completions:
                payload = completion.envelope.payload
                key = (
                    completion.envelope.tenant_id,
                    str(payload["tradingPartnerId"]),
                    str(payload["isa13"]),
                )
                keyed[key].append(completion)
            completions[replica.name] = keyed
        truncated = {
            interchange.key
            for interchange in self.clearinghouse.interchanges
            if interchange.truncated
        }
        truth: list[BatchTruth] = []
        for key, (first_s, last_s, events) in self._sent_batches.items():
            tenant, partner, isa13 = key
            for replica in self.replicas:
                seen = completions[replica.name].get(key, [])
                last = replica.batch_dispatched.get(key)
                premature = 0
                final: Completion | None = None
                for completion in seen:
                    if last is not None and completion.at_s < last:
                        premature += 1
                    elif final is None:
                        final = completion
                truth.append(
                    BatchTruth(
                        tenant_id=tenant,
                        trading_partner_id=partner,
                        isa13=isa13,
                        replica=replica.name,
                        events=int(events),
                        first_event_s=first_s,
                        last_event_s=last_s,
                        truncated=key in truncated,
                        completions=len(seen),
                        premature=premature,
                        latency_s=None if final is None else final.at_s - last_s,
                        final_event_count=None
                        if final is None
                        else int(final.envelope.payload["eventCount"]),
                    )
                )
        return truth

    def _generation_runs(self) -> list[GenerationRun]:
        runs: list[GenerationRun] = []
        for replica in self.replicas:
            for generation in replica.generations:
                stats = generation.statistics()
                tenants = stats.tenants.values()
                faults = self.bus.fault_statistics(replica.name)
                final = generation.final_series
                if final is None:
                    final = tuple(
                        self.records_of(self.env.now, replica.name, generation)
                    )
                runs.append(
                    GenerationRun(
                        replica=replica.name,
                        generation=generation.number,
                        final_series=final,
                        started_at_s=generation.started_at,
                        closed_at_s=generation.closed_at,
                        open_streams=stats.subscribers if generation.alive else 0,
                        dispatched=sum(sum(t.dispatched.values()) for t in tenants),
                        fanout=sum(t.fanout for t in tenants),
                        delivered=sum(t.delivered for t in tenants),
                        dropped={
                            str(reason): sum(t.dropped[reason] for t in tenants)
                            for reason in DropReason
                        },
                        disconnects={
                            str(reason): sum(t.disconnects[reason] for t in tenants)
                            for reason in DisconnectReason
                        },
                        batches_completed=sum(t.batches_completed for t in tenants),
                        bus_offered=generation.subscription.offered,
                        bus_dropped=faults.dropped,
                        bus_cut=faults.cut,
                    )
                )
        return runs


def run_world(
    config: WorldConfig, progress: Callable[[Progress], None] | None = None
) -> SimulationResult:
    """Build a world from ``config`` and run it."""
    return World(config).run(progress)
