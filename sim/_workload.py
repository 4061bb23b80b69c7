"""The workload: emitters per event family, and clearinghouse interchanges.

Emitters are arrival processes (Poisson, bursty, daily curve) that pick a tenant by
weight and an event type of their family. A clearinghouse sends each ISA-13
interchange as a train of events sharing a batch reference, with gaps between them
that are now and then long pauses: the case that tempts the hub's batch synthesizer
into a premature ``batch.completed``.
"""

from __future__ import annotations

import bisect
import itertools
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from hub.core import BatchRef, Envelope, format_timestamp

from ._config import Emitter, Interchanges
from ._population import Tenant, TradingPartner
from ._sched import call_later

if TYPE_CHECKING:
    from ._world import World


_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
# Every 10-bit value as its two base32 digits: a ULID is 13 lookups.
_DIGIT_PAIRS = [high + low for high in _CROCKFORD for low in _CROCKFORD]
_SHIFTS = (120, 110, 100, 90, 80, 70, 60, 50, 40, 30, 20, 10, 0)


def ulid_text(milliseconds: int, randomness: int) -> str:
    """The ULID of a 48-bit time and 80 random bits, as python-ulid writes it.

    Built from integers directly: going through ``ULID`` objects costs three times
    as much, once per event published.
    """
    value = (milliseconds << 80) | randomness
    pairs = _DIGIT_PAIRS
    return "".join([pairs[(value >> shift) & 1023] for shift in _SHIFTS])


class EventFactory:
    """Envelopes as producers publish them: ULIDs, timestamps, small payloads."""

    def __init__(self, world: World, rng: random.Random) -> None:
        self._world = world
        self._rng = rng
        # occurredAt up to the second changes once a second, not once an event.
        self._second = -1
        self._second_text = ""
        self._tenant_slugs = [tenant.slug for tenant in world.population.tenants]
        weights = [tenant.weight for tenant in world.population.tenants]
        self._cumulative = list(itertools.accumulate(weights))

    def pick_tenant(self, rng: random.Random) -> str:
        return pick(rng, self._tenant_slugs, self._cumulative)

    def tenant_picker(self, slugs: Sequence[str]) -> tuple[list[str], list[float]]:
        """The tenants ``slugs`` (all when empty) and their cumulative weights."""
        tenants = self._world.population.tenants
        chosen = [t for t in tenants if not slugs or t.slug in slugs]
        return [t.slug for t in chosen], list(
            itertools.accumulate(t.weight for t in chosen)
        )

    def occurred_at(self, at_s: float) -> tuple[int, str]:
        """Milliseconds since the epoch and the RFC 3339 text of sim time ``at_s``."""
        milliseconds = round((self._world.start_epoch + at_s) * 1_000_000) // 1000
        second, millisecond = divmod(milliseconds, 1000)
        if second != self._second:
            self._second = second
            self._second_text = format_timestamp(second)[:-4]
        return milliseconds, f"{self._second_text}{millisecond:03d}Z"

    def envelope(
        self,
        event_type: str,
        tenant: str,
        rng: random.Random,
        batch: BatchRef | None = None,
        padding: int = 0,
    ) -> Envelope:
        world = self._world
        milliseconds, occurred_at = self.occurred_at(world.env.now)
        row = world.truth_catalog.rows.get(event_type)
        payload = _payload(event_type, rng, batch)
        if padding:
            payload["padding"] = "x" * padding
        return Envelope(
            id=ulid_text(milliseconds, rng.getrandbits(80)),
            type=event_type,
            tenant_id=tenant,
            occurred_at=occurred_at,
            severity=row.default_ui_severity if row is not None else "info",
            payload=payload,
            batch=batch,
        )


def pick(rng: random.Random, items: Sequence[str], cumulative: Sequence[float]) -> str:
    """One of ``items``, by weight (``cumulative`` holds the running sums)."""
    index = bisect.bisect_right(cumulative, rng.random() * cumulative[-1])
    return items[min(index, len(items) - 1)]


def _payload(
    event_type: str, rng: random.Random, batch: BatchRef | None
) -> dict[str, object]:
    family = event_type.split(".", 1)[0]
    if family == "claim":
        return {
            "claimId": f"CLM-{rng.getrandbits(32):010d}",
            "amountCents": rng.randrange(2_000, 2_500_000),
        }
    if family == "denial":
        return {
            "claimId": f"CLM-{rng.getrandbits(32):010d}",
            "reasonCode": rng.choice(("CO-16", "CO-45", "CO-97", "PR-1", "PR-204")),
        }
    if family == "remittance":
        payload: dict[str, object] = {
            "paymentId": f"PAY-{rng.getrandbits(32):010d}",
            "amountCents": rng.randrange(1_000, 5_000_000),
        }
        if batch is not None:
            payload["tradingPartnerId"] = batch.trading_partner_id
        return payload
    if family == "authorization":
        return {
            "authorizationId": f"AUTH-{rng.getrandbits(32):010d}",
            "serviceCode": rng.choice(("97110", "99213", "70553", "J1100")),
        }
    return {"reference": f"REF-{rng.getrandbits(32):010d}"}


class EmitterModel:
    """One family's arrival process, from the start until the traffic stops."""

    def __init__(
        self,
        world: World,
        spec: Emitter,
        types: Sequence[str],
        rng: random.Random,
        start_s: float = 0.0,
    ) -> None:
        self._world = world
        self._spec = spec
        self._types = list(types)
        self._rng = rng
        self._start_s = max(start_s, spec.start_s)
        self._end_s = min(world.config.duration_s, spec.stop_s or math.inf)
        self._tenants, self._weights = world.events.tenant_picker(spec.tenants)
        self.emitted = 0
        # bursty: the current spell and when it ends; calm and burst rates keep the
        # long-run mean at rate_per_s.
        self._bursting = False
        self._in_spell = False
        self._spell_end = self._start_s
        calm_mean = spec.calm.mean
        burst_mean = spec.burst.mean
        weight = calm_mean + spec.burst_factor * burst_mean
        self._calm_rate = (
            spec.rate_per_s * (calm_mean + burst_mean) / weight
            if weight > 0 and math.isfinite(weight)
            else spec.rate_per_s
        )
        # daily: the peak rate that keeps the day's mean at rate_per_s.
        self._peak_rate = spec.rate_per_s * 2 / (1 + spec.trough_ratio)

    def start(self) -> None:
        if not self._tenants:
            return
        at = self._next(self._start_s)
        if at is not None:
            call_later(self._world.env, at - self._world.env.now, self._arrive)

    def _arrive(self, _: object) -> None:
        world = self._world
        rng = self._rng
        tenant = pick(rng, self._tenants, self._weights)
        event_type = (
            self._types[0] if len(self._types) == 1 else rng.choice(self._types)
        )
        world.publish(
            world.events.envelope(
                event_type, tenant, rng, padding=self._spec.payload_bytes
            )
        )
        self.emitted += 1
        at = self._next(world.env.now)
        if at is not None:
            call_later(world.env, at - world.env.now, self._arrive)

    def _next(self, now: float) -> float | None:
        """The next arrival after ``now``, or None past the end of the traffic."""
        process = self._spec.process
        if process == "poisson":
            at = now + self._rng.expovariate(self._spec.rate_per_s)
        elif process == "bursty":
            at = self._next_bursty(now)
        else:
            at = self._next_daily(now)
        return at if at < self._end_s else None

    def _next_bursty(self, now: float) -> float:
        # Memoryless within a spell: a draw that overshoots the spell's end is
        # redrawn from the end at the next spell's rate.
        spec = self._spec
        rng = self._rng
        while True:
            if now >= self._spell_end:
                # Calm first, then the spells alternate.
                self._bursting = self._in_spell and not self._bursting
                self._in_spell = True
                spell = spec.burst if self._bursting else spec.calm
                self._spell_end = now + max(spell.sample(rng), 1e-9)
            rate = self._calm_rate * (spec.burst_factor if self._bursting else 1.0)
            at = now + rng.expovariate(rate)
            if at < self._spell_end:
                return at
            now = self._spell_end
            if now >= self._end_s:
                return now

    def _next_daily(self, now: float) -> float:
        # Thinning: candidates at the peak rate, each kept with rate(t) / peak.
        spec = self._spec
        rng = self._rng
        peak = self._peak_rate
        start_epoch = self._world.start_epoch
        while True:
            now += rng.expovariate(peak)
            if now >= self._end_s:
                return now
            hour = ((start_epoch + now) / 3600.0) % 24.0
            shape = (1 + math.cos(2 * math.pi * (hour - spec.peak_hour) / 24)) / 2
            if rng.random() * peak <= peak * (
                spec.trough_ratio + (1 - spec.trough_ratio) * shape
            ):
                return now


@dataclass(slots=True)
class Interchange:
    """The truth of one ISA-13 interchange, as the clearinghouse sent it."""

    tenant: str
    partner: str
    isa13: str
    size: int
    published: int = 0
    first_at_s: float = 0.0
    last_at_s: float = 0.0
    # Cut short by the end of the traffic.
    truncated: bool = False

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.tenant, self.partner, self.isa13)

    @property
    def finished(self) -> bool:
        return self.published == self.size


class ClearinghouseModel:
    """Every trading partner sends interchanges (Poisson), each a train of events."""

    def __init__(
        self,
        world: World,
        spec: Interchanges,
        partners: Sequence[TradingPartner],
        tenants: Sequence[Tenant],
        rng: random.Random,
    ) -> None:
        self._world = world
        self._spec = spec
        self._partners = list(partners)
        self._rng = rng
        self._end_s = world.config.duration_s
        self._types = list(spec.types)
        self._weights = [spec.types[name] for name in self._types]
        # ISA-13 control numbers run on per partner from a random start.
        self._isa13 = {
            partner.id: rng.randrange(1, 900_000_000) for partner in self._partners
        }
        self.interchanges: list[Interchange] = []

    def start(self) -> None:
        if self._spec.per_partner_per_hour <= 0:
            return
        for partner in self._partners:
            self._schedule_next(partner)

    def _schedule_next(self, partner: TradingPartner) -> None:
        rate = self._spec.per_partner_per_hour / 3600.0
        delay = self._rng.expovariate(rate)
        if self._world.env.now + delay < self._end_s:
            call_later(self._world.env, delay, lambda _: self._begin(partner))

    def _begin(self, partner: TradingPartner) -> None:
        rng = self._rng
        world = self._world
        number = self._isa13[partner.id]
        self._isa13[partner.id] = number % 999_999_999 + 1
        interchange = Interchange(
            tenant=world.events.pick_tenant(rng),
            partner=partner.id,
            isa13=f"{number:09d}",
            size=max(1, round(self._spec.size.sample(rng))),
        )
        self.interchanges.append(interchange)
        self._send(interchange)
        self._schedule_next(partner)

    def _send(self, interchange: Interchange) -> None:
        world = self._world
        rng = self._rng
        spec = self._spec
        if interchange.published == 0 and spec.first_type is not None:
            event_type = spec.first_type
        else:
            event_type = rng.choices(self._types, self._weights)[0]
        ref = BatchRef(interchange.partner, interchange.isa13)
        world.publish(world.events.envelope(event_type, interchange.tenant, rng, ref))
        now = world.env.now
        if interchange.published == 0:
            interchange.first_at_s = now
        interchange.last_at_s = now
        interchange.published += 1
        if interchange.finished:
            return
        if rng.random() < spec.pause_probability:
            gap = spec.pause.sample(rng)
        else:
            gap = spec.gap.sample(rng)
        if now + gap >= self._end_s:
            interchange.truncated = True
            return
        call_later(world.env, gap, lambda _: self._send(interchange))
