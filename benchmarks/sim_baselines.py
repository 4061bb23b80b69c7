"""The floors under the simulator's speed: the hub core alone, and SimPy alone.

A simulated delivery costs at least what the core's own dispatch costs (``HubCore``
queueing the frame, then ``mark_written`` settling it) plus what SimPy costs to
schedule and fire the events that carry it. This module measures both floors on
the same workload:

- **bare core**: one ``HubCore``, every subscriber of one tenant, each event
  dispatched and every woken stream written right after it; deliveries per wall
  second (process time, so other load on the machine counts less);
- **bare SimPy**: a SimPy environment firing the same number of events with no
  work attached (one per published event and one per delivery, as a model with
  one read per delivery would), events per wall second.

The simulator's own figure (``benchmarks/sim_speed.py``) divides by these:
``record_against_floors`` takes its measurement and the number of SimPy events it
processed, runs both floors on that size and writes one result with the ratios.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import partial
from typing import Any

import simpy

from hub import load_catalog
from hub.core import CoreSettings, Envelope, HubCore, Principal, Subscriber

from ._harness import quick, say, write_result

TENANT = "acme"
SCOPES = frozenset({"claims.read", "denials.read", "remittance.read"})


@dataclass(frozen=True, slots=True)
class Measurement:
    """``count`` things done in ``wall_s`` seconds of this process's CPU time."""

    count: int
    wall_s: float

    @property
    def per_s(self) -> float:
        return self.count / self.wall_s if self.wall_s > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "per_s": round(self.per_s, 1)}


class _ManualClock:
    __slots__ = ("t",)

    def __init__(self) -> None:
        self.t = 0.0

    def now(self) -> float:
        return self.t


def _envelopes(count: int) -> list[Envelope]:
    return [
        Envelope(
            id=f"01JSIMBASE{n:016d}",
            type="claim.submitted",
            tenant_id=TENANT,
            occurred_at="2026-12-03T10:00:00.000Z",
            severity="info",
            payload={"claimId": f"C-{n:09d}", "amountCents": 1234567},
        )
        for n in range(count)
    ]


def _timed(work: Callable[[], int]) -> Measurement:
    gc.collect()
    started = time.process_time()
    count = work()
    return Measurement(count, time.process_time() - started)


def bare_core(subscribers: int, events: int) -> Measurement:
    """Deliveries per second of the core's own dispatch loop, nothing around it."""
    clock = _ManualClock()
    core = HubCore(
        catalog=load_catalog(),
        clock=clock,
        replica_id="floor",
        settings=CoreSettings(
            max_streams_per_tenant=subscribers + 1,
            max_streams_per_token=subscribers + 1,
            replay_max_events=0,
        ),
    )
    woken: list[Subscriber] = []
    for n in range(subscribers):
        subscriber = core.subscribe(Principal(f"user-{n}", TENANT, SCOPES))
        subscriber.wake = partial(woken.append, subscriber)
    published = _envelopes(events)
    mark_written = core.mark_written

    def run() -> int:
        for step, envelope in enumerate(published):
            clock.t = step * 0.001
            core.dispatch(envelope)
            for subscriber in woken:
                mark_written(subscriber, len(subscriber.queue))
            woken.clear()
        return core.counters(TENANT).delivered

    return _timed(run)


def bare_simpy(events: int) -> Measurement:
    """SimPy events per second when they carry no work at all."""
    env = simpy.Environment()

    def ticker(env: simpy.Environment, count: int) -> Any:
        timeout = env.timeout
        for _ in range(count):
            yield timeout(0.001)

    env.process(ticker(env, events))
    return _timed(lambda: (env.run(), events)[1])


def simpy_events_for(subscribers: int, events: int) -> int:
    """SimPy events of a model with one event per publish and one per delivery."""
    return events * (subscribers + 1)


def record_against_floors(
    simulated: Measurement,
    *,
    simpy_events: int,
    subscribers: int,
    events: int,
    name: str = "sim_speed",
    details: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The hook for the simulator's benchmark: its deliveries per wall second set
    against both floors measured now on the same size, written as ``name``.

    ``simulated.count`` is the simulated deliveries, ``simpy_events`` the events
    its SimPy environment processed, ``subscribers`` and ``events`` the size to
    run the bare core with.
    """
    core = bare_core(subscribers, events)
    simpy_floor = bare_simpy(simpy_events)
    document = {
        "simulator": simulated.as_dict(),
        "bare_core": core.as_dict(),
        "bare_simpy": simpy_floor.as_dict(),
        "workload": {
            "subscribers": subscribers,
            "events": events,
            "simpy_events": simpy_events,
        },
        "ratios": {
            "core_over_simulator": round(core.per_s / simulated.per_s, 2)
            if simulated.per_s
            else None,
            "simulator_wall_over_bare_simpy_wall": round(
                simulated.wall_s / simpy_floor.wall_s, 2
            )
            if simpy_floor.wall_s
            else None,
        },
        **(details or {}),
    }
    write_result(name, document)
    return document


def main() -> None:
    subscribers = 1000
    events = 300 if quick() else 2000
    say(f"sim_baselines: bare core, {subscribers} subscribers x {events} events")
    core = bare_core(subscribers, events)
    simpy_events = simpy_events_for(subscribers, events)
    say(f"sim_baselines: bare SimPy, {simpy_events:,} events")
    floor = bare_simpy(simpy_events)
    say(
        f"  bare core {core.per_s:,.0f} deliveries/s; bare SimPy "
        f"{floor.per_s:,.0f} events/s (one per publish and per delivery: "
        f"{core.count / max(floor.wall_s, 1e-9):,.0f} deliveries/s at best)"
    )
    write_result(
        "sim_baselines",
        {
            "workload": {
                "subscribers": subscribers,
                "events": events,
                "simpy_events": simpy_events,
            },
            "bare_core": core.as_dict(),
            "bare_simpy": floor.as_dict(),
            "bare_simpy_deliveries_per_s": round(
                core.count / max(floor.wall_s, 1e-9), 1
            ),
            "core_and_simpy_deliveries_per_s": round(
                core.count / max(core.wall_s + floor.wall_s, 1e-9), 1
            ),
        },
    )


if __name__ == "__main__":
    main()
