"""The workload of a scenario as an explicit, seeded schedule of events.

Both targets publish exactly this schedule, so the simulator and the real hubs see
the same events at the same scenario times and their counters can be compared.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace

from ._model import Scenario


@dataclass(frozen=True, slots=True)
class ScheduledEvent:
    at_s: float
    event_id: str
    tenant: str
    type: str
    trading_partner: str | None = None
    isa13: str | None = None
    payload_bytes: int = 0

    def envelope(self, occurred_at: str) -> dict[str, object]:
        document: dict[str, object] = {
            "id": self.event_id,
            "type": self.type,
            "tenantId": self.tenant,
            "occurredAt": occurred_at,
            "payload": {"seq": self.event_id, "pad": "x" * self.payload_bytes}
            if self.payload_bytes
            else {"seq": self.event_id},
        }
        if self.trading_partner is not None:
            document["batch"] = {
                "tradingPartnerId": self.trading_partner,
                "isa13": self.isa13,
            }
        return document


@dataclass(frozen=True, slots=True)
class Interchange:
    """One ISA-13 batch: when its events were published, first to last."""

    tenant: str
    trading_partner: str
    isa13: str
    event_times: tuple[float, ...]

    @property
    def last_event_s(self) -> float:
        return self.event_times[-1]


@dataclass(frozen=True, slots=True)
class Schedule:
    events: tuple[ScheduledEvent, ...]
    interchanges: tuple[Interchange, ...]


def build_schedule(scenario: Scenario) -> Schedule:
    """Poisson streams and interchange trains, drawn from the scenario's seed.

    Ids are numbered in time order after drawing, so the same scenario and seed
    give the same events with the same ids on every target.
    """
    rng = random.Random(scenario.seed)
    drawn: list[tuple[float, int, ScheduledEvent]] = []
    for stream_index, stream in enumerate(scenario.streams):
        stream_rng = random.Random(rng.randrange(2**63) + stream_index)
        stop = min(stream.stop_s or scenario.duration_s, scenario.duration_s)
        at = stream.start_s
        while True:
            at += stream_rng.expovariate(stream.rate_per_s)
            if at >= stop:
                break
            event = ScheduledEvent(
                at_s=at,
                event_id="",
                tenant=stream.tenant,
                type=stream_rng.choice(stream.types),
                payload_bytes=stream.payload_bytes,
            )
            drawn.append((at, len(drawn), event))

    interchanges: list[Interchange] = []
    for spec_index, spec in enumerate(scenario.interchanges):
        spec_rng = random.Random(rng.randrange(2**63) + 1000 + spec_index)
        at = spec.start_s
        for number in range(1, spec.count + 1):
            isa13 = f"{spec_index * 100_000 + number:09d}"
            times: list[float] = []
            for position in range(spec.events_per_interchange):
                if position:
                    if spec_rng.random() < spec.pause_probability:
                        at += spec.pause_s
                    else:
                        at += spec_rng.expovariate(1 / spec.gap_s)
                if at >= scenario.duration_s:
                    break
                times.append(at)
                event = ScheduledEvent(
                    at_s=at,
                    event_id="",
                    tenant=spec.tenant,
                    type=spec.event_type,
                    trading_partner=spec.trading_partner,
                    isa13=isa13,
                )
                drawn.append((at, len(drawn), event))
            if times:
                interchanges.append(
                    Interchange(spec.tenant, spec.trading_partner, isa13, tuple(times))
                )
            at += spec.between_s

    drawn.sort(key=lambda item: (item[0], item[1]))
    events = tuple(
        replace(event, event_id=f"{scenario.name}-{n:07d}")
        for n, (_, _, event) in enumerate(drawn)
    )
    return Schedule(events, tuple(interchanges))
