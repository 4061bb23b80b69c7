"""Small worlds for the simulator's tests: quick to run, each shaped to show one
behaviour."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from hub.core import Latency
from sim import (
    BusModel,
    ClientMix,
    Clients,
    Emitter,
    HubSettings,
    Interchanges,
    Topology,
    Workload,
    WorldConfig,
)

# Every read family, so that only what a test adds causes permission drops.
ALL_FAMILIES = {"REVENUE_CYCLE_MANAGER": 1.0}
STEADY = ClientMix(steady=1.0, slow=0.0, flapping=0.0, half_open=0.0)


def small_world(**changes: Any) -> WorldConfig:
    """Two replicas, three tenants, 60 steady readers holding every read scope,
    10 claims a second, no interchanges; ``changes`` replace top-level fields."""
    world = WorldConfig(
        seed=7,
        duration_s=60.0,
        sample_interval_s=1.0,
        topology=Topology(
            replicas=2,
            tenants=3,
            subscribers=60,
            tenant_names=("acme", "globex", "initech"),
            roles=dict(ALL_FAMILIES),
            max_roles_per_user=1,
            connect_over_s=0.5,
        ),
        bus=BusModel(latency=Latency.fixed(0.002)),
        clients=Clients(mix=STEADY, reconnect_jitter=0.0),
        workload=Workload(
            emitters=(Emitter(family="claims", rate_per_s=10.0),),
            interchanges=Interchanges(per_partner_per_hour=0.0),
        ),
    )
    return replace(world, **changes)


def queueing_world(
    *,
    arrival_rate: float,
    drain_rate: float,
    capacity: int,
    duration_s: float,
    seed: int,
) -> WorldConfig:
    """One replica, one subscriber that drains frames one at a time after
    exponential times, Poisson arrivals, no bus delay, no eviction: M/M/1/K."""
    return WorldConfig(
        seed=seed,
        duration_s=duration_s,
        settle_s=0.0,
        sample_interval_s=duration_s / 4,
        hub=HubSettings(queue_size=capacity, evict_after_s=1e9),
        topology=Topology(
            replicas=1,
            tenants=1,
            subscribers=1,
            roles={"BILLING_SPECIALIST": 1.0},
            max_roles_per_user=1,
            connect_over_s=0.0,
        ),
        bus=BusModel(latency=Latency.fixed(0.0)),
        clients=Clients(
            mix=ClientMix(steady=0.0, slow=1.0, flapping=0.0, half_open=0.0),
            slow_drain_rate_per_s=drain_rate,
            slow_drain="exponential",
        ),
        workload=Workload(
            emitters=(Emitter(family="claims", rate_per_s=arrival_rate),),
            interchanges=Interchanges(per_partner_per_hour=0.0),
        ),
    )
