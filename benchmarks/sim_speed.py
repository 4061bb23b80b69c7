"""Simulator speed: a simulated hour against the core's own bare dispatch loop.

The world: 3 replicas, 50 tenants, 2,500 subscribers and 50 events/s for one
simulated hour. The figure of merit is simulated deliveries per wall second. Next to
it, in the same run, the same hub core with the same events and the same
subscribers does nothing but ``HubCore.dispatch`` and ``mark_written`` (every woken
subscriber written right after each event, no SimPy, no truth): the cost of the core
alone. Their ratio is what the simulator adds; the aim is at most 2x.

Run: ``python -m benchmarks.sim_speed [--duration S]``, or ``main()`` from the
benchmark harness (``RCM_BENCH_QUICK`` shortens it to ten simulated minutes). Both
CPU and wall time are shown; on a shared machine the CPU-time ratio is the steadier
of the two.
"""

from __future__ import annotations

import argparse
import gc
import os
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

# The benchmark harness records every module's figures of one run together.
from ._harness import write_result

DURATION_ENV = "RCM_SIM_SPEED_DURATION_S"
QUICK_ENV = "RCM_BENCH_QUICK"
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
    cpu_s: float
    wall_s: float

    @property
    def per_cpu_s(self) -> float:
        return self.deliveries / self.cpu_s if self.cpu_s > 0 else 0.0

    @property
    def per_wall_s(self) -> float:
        return self.deliveries / self.wall_s if self.wall_s > 0 else 0.0

    def figures(self) -> dict[str, float]:
        return {
            "deliveries": self.deliveries,
            "cpu_s": round(self.cpu_s, 3),
            "wall_s": round(self.wall_s, 3),
            "per_s": round(self.per_cpu_s),
            "per_wall_s": round(self.per_wall_s),
        }


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
    wall_started, cpu_started = time.perf_counter(), time.process_time()
    for at, envelope in published:
        clock.t = at
        for core in cores:
            core.dispatch(envelope)
        for core, subscriber in woken:
            core.mark_written(subscriber, len(subscriber.queue))
        woken.clear()
    cpu, wall = time.process_time() - cpu_started, time.perf_counter() - wall_started

    delivered = sum(
        core.counters(tenant).delivered
        for core in cores
        for tenant in core.tenant_ids()
    )
    return Measurement(delivered, cpu, wall)


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
    wall_started, cpu_started = time.perf_counter(), time.process_time()
    result = world.run()
    cpu, wall = time.process_time() - cpu_started, time.perf_counter() - wall_started
    return world, Measurement(result.total("delivered"), cpu, wall), published


def duration_from_environment() -> float:
    """An hour; ten minutes in the benchmark harness's quick mode; or what
    ``RCM_SIM_SPEED_DURATION_S`` says."""
    explicit = os.environ.get(DURATION_ENV)
    if explicit:
        try:
            value = float(explicit)
        except ValueError:
            value = 0.0
        if not value > 0:
            raise SystemExit(f"{DURATION_ENV}={explicit!r} must be seconds above zero")
        return value
    return 600.0 if os.environ.get(QUICK_ENV, "") not in ("", "0") else HOUR_S


def main() -> None:
    """Measure and print; when the benchmark harness is present, also record the
    figures with the run's other results."""
    measure(duration_from_environment())


def measure(duration_s: float) -> dict[str, object]:
    world, sim, published = simulate(duration_s)
    principals = [client.spec.user.principal for client in world.clients]
    bare = bare_dispatch(world, published, principals)
    cpu_ratio = bare.per_cpu_s / sim.per_cpu_s if sim.per_cpu_s else float("inf")
    wall_ratio = bare.per_wall_s / sim.per_wall_s if sim.per_wall_s else float("inf")

    print(
        f"simulator: {duration_s:g} simulated s of {REPLICAS} replicas, "
        f"{TENANTS} tenants, {SUBSCRIBERS:,} subscribers, {len(published):,} events "
        f"({len(published) / duration_s:.1f}/s)"
    )
    print(f"  run time                {sim.cpu_s:9.2f} s CPU  {sim.wall_s:9.2f} s wall")
    print(f"  simulated deliveries    {sim.deliveries:12,}")
    print(
        f"  deliveries per second   {sim.per_cpu_s:12,.0f} per CPU s "
        f"{sim.per_wall_s:12,.0f} per wall s"
    )
    print("bare core dispatch loop (HubCore.dispatch + mark_written, no SimPy):")
    print(
        f"  run time                {bare.cpu_s:9.2f} s CPU  {bare.wall_s:9.2f} s wall"
    )
    print(f"  deliveries              {bare.deliveries:12,}")
    print(
        f"  deliveries per second   {bare.per_cpu_s:12,.0f} per CPU s "
        f"{bare.per_wall_s:12,.0f} per wall s"
    )
    print(
        f"simulator cost over the bare core: {cpu_ratio:.2f}x in CPU time, "
        f"{wall_ratio:.2f}x in wall time (aim: at most 2x)"
    )

    document: dict[str, object] = {
        "workload": {
            "simulated_s": duration_s,
            "replicas": REPLICAS,
            "tenants": TENANTS,
            "subscribers": SUBSCRIBERS,
            "events": len(published),
        },
        "simulator": sim.figures(),
        "bare_core": bare.figures(),
        "ratios": {
            "core_over_simulator": round(cpu_ratio, 2),
            "core_over_simulator_wall": round(wall_ratio, 2),
        },
    }
    write_result("sim_speed", document)
    return document


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m benchmarks.sim_speed")
    parser.add_argument(
        "--duration", type=float, help="simulated seconds (default: an hour)"
    )
    arguments = parser.parse_args()
    measure(arguments.duration or duration_from_environment())
