"""Simulator speed: a simulated hour against the core's own bare dispatch loop.

The world: 3 replicas, 50 tenants, 2,500 subscribers and 50 events/s for one
simulated hour. The figure of merit is simulated deliveries per wall second. Next to
it, in the same run, the same hub core with the same events and the same
subscribers does nothing but ``HubCore.dispatch`` and ``mark_written`` (every woken
subscriber written right after each event, no SimPy, no truth): the cost of the core
alone. Their ratio is what the simulator adds; the aim is at most 2x.

Run: ``python -m benchmarks.sim_speed [--duration S]``.
"""

from __future__ import annotations

import argparse
import gc
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial

from hub.core import Envelope, HubCore, Principal, Subscriber
from sim import (
    ClientMix,
    Clients,
    Emitter,
    Interchanges,
    Topology,
    Workload,
    World,
    WorldConfig,
    parse_distribution,
)

REPLICAS = 3
TENANTS = 50
SUBSCRIBERS = 2_500
EVENTS_PER_S = 50.0
HOUR_S = 3600.0


def bench_world(duration_s: float = HOUR_S) -> WorldConfig:
    """The benchmark's world: 50 events/s in all, interchanges included."""
    partners = 4
    interchange_size = 20.0
    per_partner_per_hour = 30.0
    interchange_rate = partners * per_partner_per_hour * interchange_size / 3600
    emitted = EVENTS_PER_S - interchange_rate
    return WorldConfig(
        seed=2026,
        duration_s=duration_s,
        sample_interval_s=60.0,
        topology=Topology(
            replicas=REPLICAS,
            tenants=TENANTS,
            subscribers=SUBSCRIBERS,
            tenant_skew=0.5,
            trading_partners=partners,
            connect_over_s=5.0,
        ),
        clients=Clients(
            mix=ClientMix(steady=0.94, slow=0.02, flapping=0.02, half_open=0.02)
        ),
        workload=Workload(
            emitters=(
                Emitter(family="claims", rate_per_s=emitted * 0.5),
                Emitter(family="denials", rate_per_s=emitted * 0.15, process="bursty"),
                Emitter(family="remittance", rate_per_s=emitted * 0.15),
                Emitter(
                    family="authorizations", rate_per_s=emitted * 0.2, process="daily"
                ),
            ),
            interchanges=Interchanges(
                per_partner_per_hour=per_partner_per_hour,
                size=parse_distribution(interchange_size),
            ),
        ),
    )


@dataclass(frozen=True, slots=True)
class Measurement:
    deliveries: int
    wall_s: float

    @property
    def per_s(self) -> float:
        return self.deliveries / self.wall_s if self.wall_s > 0 else 0.0


class _Clock:
    __slots__ = ("t",)

    def __init__(self) -> None:
        self.t = 0.0

    def now(self) -> float:
        return self.t


def bare_dispatch(
    world: World,
    published: Sequence[tuple[float, Envelope]],
    principals: Sequence[Principal],
) -> Measurement:
    """The core alone: the same events through as many cores, each woken stream
    written in full after every event."""
    clock = _Clock()
    settings = world.core_settings
    cores = [
        HubCore(
            catalog=world.catalog, clock=clock, replica_id=f"r{n}", settings=settings
        )
        for n in range(1, REPLICAS + 1)
    ]
    woken: list[tuple[HubCore, Subscriber]] = []
    for index, principal in enumerate(principals):
        core = cores[index % REPLICAS]
        subscriber = core.subscribe(principal)
        subscriber.wake = partial(woken.append, (core, subscriber))

    gc.collect()
    started = time.process_time()
    for at, envelope in published:
        clock.t = at
        for core in cores:
            core.dispatch(envelope)
        for core, subscriber in woken:
            core.mark_written(subscriber, len(subscriber.queue))
        woken.clear()
    wall = time.process_time() - started

    delivered = sum(
        core.counters(tenant).delivered
        for core in cores
        for tenant in core.tenant_ids()
    )
    return Measurement(delivered, wall)


def simulate(
    duration_s: float,
) -> tuple[World, Measurement, list[tuple[float, Envelope]]]:
    world = World(bench_world(duration_s))
    published: list[tuple[float, Envelope]] = []
    publish = world.publish

    def recording(envelope: Envelope) -> None:
        published.append((world.env.now, envelope))
        publish(envelope)

    world.publish = recording  # type: ignore[method-assign]
    gc.collect()
    started = time.process_time()
    result = world.run()
    wall = time.process_time() - started
    return world, Measurement(result.total("delivered"), wall), published


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.sim_speed")
    parser.add_argument("--duration", type=float, default=HOUR_S, help="simulated s")
    args = parser.parse_args()

    world, sim, published = simulate(args.duration)
    principals = [client.spec.user.principal for client in world.clients]
    bare = bare_dispatch(world, published, principals)
    ratio = bare.per_s / sim.per_s if sim.per_s else float("inf")

    print(
        f"simulator: {args.duration:g} simulated s of {REPLICAS} replicas, "
        f"{TENANTS} tenants, {SUBSCRIBERS:,} subscribers, {len(published):,} events "
        f"({len(published) / args.duration:.1f}/s)"
    )
    print(f"  wall time               {sim.wall_s:9.2f} s")
    print(f"  simulated deliveries    {sim.deliveries:12,}")
    print(f"  deliveries per wall s   {sim.per_s:12,.0f}")
    print("bare core dispatch loop (HubCore.dispatch + mark_written, no SimPy):")
    print(f"  wall time               {bare.wall_s:9.2f} s")
    print(f"  deliveries              {bare.deliveries:12,}")
    print(f"  deliveries per wall s   {bare.per_s:12,.0f}")
    print(f"simulator cost over the bare core: {ratio:.2f}x (aim: at most 2x)")


if __name__ == "__main__":
    main()
