"""One operating point on the simulator: a fleet of replicas whose CPU costs what the
calibration measured, under a workload's peak, and the figures a plan reads off it.

Every tenant has the same number of steady streams, each reading the same families;
events of each family are Poisson at the family's peak rate, spread evenly over the
tenants. Each replica process is one CPU (``sim.CpuModel``), so its queueing delay,
latency and drops come out of the simulation. The streams connect in the first fifth
of a warm-up, and figures are taken after it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from hub.core import Latency
from sim import (
    BusModel,
    ClientMix,
    Clients,
    CpuModel,
    Emitter,
    HubSettings,
    Interchanges,
    SubscriberGroup,
    Topology,
    Workload,
    World,
    WorldConfig,
    weighted_quantile,
)

Balancer = Literal["random", "round_robin", "least_connections"]
STEADY = ClientMix(steady=1.0, slow=0.0, flapping=0.0, half_open=0.0)
# High enough that no cap of the hub refuses a planned stream.
NO_STREAM_CAP = 10_000_000


@dataclass(frozen=True, slots=True)
class PointSpec:
    """What one simulation runs (picklable, so a process pool can take it)."""

    tenants: int
    subscribers_per_tenant: int
    # (family, events per second for all tenants together), at the rate simulated.
    rates: tuple[tuple[str, float], ...]
    # The scopes every stream holds.
    scopes: tuple[str, ...]
    replicas: int
    queue_size: int
    cpu: CpuModel
    bus_latency: Latency
    balancer: Balancer = "random"
    seed: int = 1
    duration_s: float = 40.0
    warmup_s: float = 5.0


@dataclass(frozen=True, slots=True)
class PointResult:
    """The simulator's figures for one operating point, after the warm-up."""

    replicas: int
    queue_size: int
    # occurredAt to frame written, over every (event, stream) pair.
    mean_ms: float | None
    p50_ms: float | None
    p99_ms: float | None
    p999_ms: float | None
    max_ms: float | None
    # Frames dropped (backpressure, disconnected) per frame meant for a stream.
    drop_rate: float
    deliveries_per_s: float
    events_per_s: float
    # Share of the window each replica's CPU was busy: the busiest, and the mean.
    utilisation_max: float
    utilisation_mean: float
    streams_max: int
    streams_total: int
    # The most events that waited for one replica's CPU at once.
    waiting_max: int
    # Frames dropped for backpressure over the whole run, warm-up included: with
    # none, a larger queue would have run exactly the same.
    backpressure_total: int
    wall_s: float

    def meets(self, p99_ms: float, max_drop_rate: float) -> bool:
        return (
            self.p99_ms is not None
            and self.p99_ms <= p99_ms
            and self.drop_rate <= max_drop_rate
        )


def tenant_slugs(count: int) -> tuple[str, ...]:
    width = max(4, len(str(count)))
    return tuple(f"tenant-{n:0{width}d}" for n in range(1, count + 1))


def point_world(spec: PointSpec) -> WorldConfig:
    slugs = tenant_slugs(spec.tenants)
    connect_over = spec.warmup_s / 5
    groups = tuple(
        SubscriberGroup(
            name=f"streams-{index + 1}",
            tenant=slug,
            count=spec.subscribers_per_tenant,
            scopes=spec.scopes,
            connect_at_s=0.0,
            connect_over_s=connect_over,
        )
        for index, slug in enumerate(slugs)
    )
    return WorldConfig(
        seed=spec.seed,
        duration_s=spec.duration_s,
        settle_s=min(5.0, spec.warmup_s),
        sample_interval_s=spec.warmup_s,
        hub=HubSettings(
            queue_size=spec.queue_size,
            max_streams_per_tenant=NO_STREAM_CAP,
            max_streams_per_token=NO_STREAM_CAP,
        ),
        topology=Topology(
            replicas=spec.replicas,
            tenants=spec.tenants,
            subscribers=0,
            tenant_names=slugs,
            balancer=spec.balancer,
            groups=groups,
        ),
        bus=BusModel(latency=spec.bus_latency),
        clients=Clients(mix=STEADY, reconnect_jitter=0.0),
        workload=Workload(
            emitters=tuple(
                Emitter(family=family, rate_per_s=rate) for family, rate in spec.rates
            ),
            interchanges=Interchanges(per_partner_per_hour=0.0),
        ),
        cpu=spec.cpu,
    )


def run_point(spec: PointSpec) -> PointResult:
    """Simulate ``spec`` and read its figures over [warm-up, duration)."""
    world = World(point_world(spec))
    result = world.run()
    start, end = spec.warmup_s, spec.duration_s

    values: list[np.ndarray] = []
    weights: list[np.ndarray] = []
    busy: list[float] = []
    waiting_max = 0
    streams: list[int] = []
    for replica in world.replicas:
        streams.append(replica.open_streams())
        for generation in replica.generations:
            cpu = generation.cpu
            assert cpu is not None, "capacity worlds always model the CPU"
            records = cpu.records()
            latencies, weight = records.delivery_latencies(start, end)
            values.append(latencies)
            weights.append(weight)
            busy.append(records.busy_share(start, end))
            waiting_max = max(waiting_max, cpu.statistics().max_waiting)
    latency = np.concatenate(values) if values else np.zeros(0)
    weight = np.concatenate(weights) if weights else np.zeros(0)

    def quantile_ms(q: float) -> float | None:
        value = weighted_quantile(latency, weight, q)
        return None if value is None else value * 1000

    fanout = result.increase("rcm_realtime_fanout_total", start, end)
    refused = result.increase(
        "rcm_realtime_dropped_total", start, end, reason="permission"
    )
    dropped = result.increase(
        "rcm_realtime_dropped_total", start, end, reason="backpressure"
    ) + result.increase("rcm_realtime_dropped_total", start, end, reason="disconnected")
    meant = fanout - refused
    delivered = result.increase("rcm_realtime_delivered_total", start, end)
    dispatched = result.increase("rcm_realtime_events_dispatched_total", start, end)
    window = end - start
    return PointResult(
        replicas=spec.replicas,
        queue_size=spec.queue_size,
        mean_ms=float(np.average(latency, weights=weight) * 1000)
        if latency.size
        else None,
        p50_ms=quantile_ms(0.50),
        p99_ms=quantile_ms(0.99),
        p999_ms=quantile_ms(0.999),
        max_ms=float(latency.max() * 1000) if latency.size else None,
        drop_rate=dropped / meant if meant else 0.0,
        deliveries_per_s=delivered / window,
        events_per_s=dispatched / window / spec.replicas,
        utilisation_max=max(busy, default=0.0),
        utilisation_mean=sum(busy) / len(busy) if busy else 0.0,
        streams_max=max(streams, default=0),
        streams_total=sum(streams),
        waiting_max=waiting_max,
        backpressure_total=result.dropped("backpressure"),
        wall_s=result.wall_s,
    )
