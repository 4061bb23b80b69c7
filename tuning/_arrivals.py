"""Arrivals: every event of every interchange, in the order the hub receives them.

An interchange is one ``(tenantId, tradingPartnerId, isa13)`` bucket as the hub's
batch synthesizer keys it. Times are seconds relative to ``epoch_s``, so that sums
and differences keep sub-microsecond precision over long spans.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True, slots=True, order=True)
class Partner:
    tenant_id: str
    trading_partner_id: str

    @property
    def label(self) -> str:
        return f"{self.tenant_id}/{self.trading_partner_id}"


@dataclass(frozen=True, slots=True)
class Arrivals:
    """Events ordered by arrival; ties keep the order they were given in."""

    source: str
    epoch_s: float
    partners: tuple[Partner, ...]
    # Per interchange: index into ``partners``, and its ISA13 control number.
    interchange_partner: IntArray
    interchange_isa13: tuple[str, ...]
    # Per event, in arrival order.
    event_interchange: IntArray
    event_arrival_s: FloatArray
    event_occurred_s: FloatArray

    @property
    def interchange_count(self) -> int:
        return len(self.interchange_isa13)

    @property
    def event_count(self) -> int:
        return int(self.event_interchange.size)

    def events_per_interchange(self) -> IntArray:
        return np.bincount(self.event_interchange, minlength=self.interchange_count)

    def true_ends(self) -> FloatArray:
        """When each interchange really ended: its latest ``occurredAt``."""
        ends = np.full(self.interchange_count, -np.inf)
        np.maximum.at(ends, self.event_interchange, self.event_occurred_s)
        return ends

    def interchanges_per_partner(self) -> IntArray:
        return np.bincount(self.interchange_partner, minlength=len(self.partners))


def arrivals_from_events(
    *,
    source: str,
    epoch_s: float,
    partners: tuple[Partner, ...],
    interchange_partner: IntArray,
    interchange_isa13: tuple[str, ...],
    event_interchange: IntArray,
    event_arrival_s: FloatArray,
    event_occurred_s: FloatArray,
) -> Arrivals:
    """Order events by arrival (stable, so equal times keep their given order)."""
    order = np.argsort(event_arrival_s, kind="stable")
    return Arrivals(
        source=source,
        epoch_s=epoch_s,
        partners=partners,
        interchange_partner=np.asarray(interchange_partner, dtype=np.int64),
        interchange_isa13=interchange_isa13,
        event_interchange=np.asarray(event_interchange, dtype=np.int64)[order],
        event_arrival_s=np.asarray(event_arrival_s, dtype=np.float64)[order],
        event_occurred_s=np.asarray(event_occurred_s, dtype=np.float64)[order],
    )
