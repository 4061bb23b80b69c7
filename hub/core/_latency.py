"""The delivery-latency histogram both edges keep: plain integers per bucket."""

from __future__ import annotations

import bisect

# The bounds of ``rcm_realtime_delivery_latency_seconds``, in seconds.
LATENCY_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)


class LatencyHistogram:
    """``occurredAt`` to frame written; observing costs a bisect and two adds."""

    __slots__ = ("bounds", "count", "counts", "total")

    def __init__(self, bounds: tuple[float, ...] = LATENCY_BUCKETS) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.total = 0.0
        self.count = 0

    def observe(self, seconds: float, count: int = 1) -> None:
        if seconds < 0:
            seconds = 0.0
        self.counts[bisect.bisect_left(self.bounds, seconds)] += count
        self.total += seconds * count
        self.count += count

    def cumulative(self) -> list[tuple[str, int]]:
        """Prometheus buckets: (``le`` label, cumulative count), ``+Inf`` last."""
        running = 0
        rows: list[tuple[str, int]] = []
        for bound, count in zip(self.bounds, self.counts, strict=False):
            running += count
            rows.append((repr(float(bound)), running))
        rows.append(("+Inf", running + self.counts[-1]))
        return rows
