"""The plan's model against the real hub at one operating point.

The point is one replica, one tenant with ``streams`` streams, events at Poisson
times of ``events_per_s`` (one per publish request, as calibrated). The real side is
a short load run with the benchmark client: ``windows`` windows one after another,
each with its own p99 over every (event, stream) pair sent inside it; the measured
p99 is the median of the windows' figures, so that one stall of a busy machine
cannot decide it. The drop rate is the hub's own ``dropped{backpressure}`` over its
``fanout`` for the whole run.

The model's side is the simulator with the calibrated costs, twice: on a CPU of its
own (what a plan assumes), and with the share of a CPU the hub actually got while it
was measured (Linux schedstat: time on a CPU over time runnable). The second is the
prediction checked: on a shared machine the hub's CPU is slower by that share, and
the model is judged on its queueing, not on the machine's other tenants.

Agreement, as stated: the measured p99 within a factor of ``P99_FACTOR`` of the
predicted one, either way, and the drop rates within ``DROP_RATE_SLACK`` of each
other. The share is a mean: a hub that wakes after a sleep usually runs at once,
while one that has used its slice waits for others', so a busy machine spreads
latency wider than a uniformly slower CPU would. Measured on the shared two-core
development machine, p99 came out 0.97 to 1.0 of the prediction while the hub got
0.58 to 0.68 of a CPU, and 1.7 times it at 0.45; with less than about 0.4 the factor
of two may not hold.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hub.core import Latency
from sim import CpuModel

from ._calibration import Calibration
from ._errors import CapacityError
from ._loadrun import LoadRun, PointFigures
from ._model import PointResult, PointSpec, run_point

P99_FACTOR = 2.0
DROP_RATE_SLACK = 0.001
CHECK_TENANT = "capacity-check"


@dataclass(frozen=True, slots=True)
class CheckResult:
    streams: int
    events_per_s: float
    queue_size: int
    windows: tuple[PointFigures, ...]
    measured_p50_ms: float
    measured_p99_ms: float
    measured_drop_rate: float
    cpu_share: float
    dedicated: PointResult
    predicted: PointResult

    @property
    def p99_ratio(self) -> float:
        predicted = self.predicted.p99_ms or 0.0
        return self.measured_p99_ms / predicted if predicted > 0 else float("inf")

    @property
    def p99_agrees(self) -> bool:
        return 1 / P99_FACTOR <= self.p99_ratio <= P99_FACTOR

    @property
    def drop_rate_agrees(self) -> bool:
        return (
            abs(self.measured_drop_rate - self.predicted.drop_rate) <= DROP_RATE_SLACK
        )

    @property
    def agrees(self) -> bool:
        return self.p99_agrees and self.drop_rate_agrees

    def lines(self) -> list[str]:
        def ms(value: float | None) -> str:
            return "-" if value is None else f"{value:.1f} ms"

        per_window = ", ".join(ms(w.p99_ms) for w in self.windows)
        return [
            f"operating point: 1 replica, {self.streams} streams, "
            f"{self.events_per_s:g} events/s ({self.streams * self.events_per_s:,.0f} "
            f"deliveries/s), queue size {self.queue_size}",
            f"measured:  p50 {ms(self.measured_p50_ms)}, p99 "
            f"{ms(self.measured_p99_ms)} (median of windows: {per_window}), drop "
            f"rate {self.measured_drop_rate:.4%}; the hub got {self.cpu_share:.2f} of "
            "a CPU while runnable",
            f"predicted: p50 {ms(self.predicted.p50_ms)}, p99 "
            f"{ms(self.predicted.p99_ms)}, drop rate {self.predicted.drop_rate:.4%} "
            f"(CPU busy {self.predicted.utilisation_max:.0%}) at that share",
            f"           p50 {ms(self.dedicated.p50_ms)}, p99 "
            f"{ms(self.dedicated.p99_ms)}, drop rate {self.dedicated.drop_rate:.4%} "
            f"(CPU busy {self.dedicated.utilisation_max:.0%}) on a CPU of its own",
            f"agreement: p99 measured/predicted {self.p99_ratio:.2f} (within "
            f"{1 / P99_FACTOR:g}..{P99_FACTOR:g}: "
            f"{'yes' if self.p99_agrees else 'NO'}); drop rates "
            f"{'within' if self.drop_rate_agrees else 'NOT within'} "
            f"{DROP_RATE_SLACK:.1%} of each other",
        ]

    def as_dict(self) -> dict[str, Any]:
        def point(result: PointResult) -> dict[str, Any]:
            return {
                "p50_ms": result.p50_ms,
                "p99_ms": result.p99_ms,
                "drop_rate": result.drop_rate,
                "utilisation": result.utilisation_max,
            }

        return {
            "streams": self.streams,
            "events_per_s": self.events_per_s,
            "queue_size": self.queue_size,
            "measured": {
                "p50_ms": self.measured_p50_ms,
                "p99_ms": self.measured_p99_ms,
                "drop_rate": self.measured_drop_rate,
                "cpu_share": self.cpu_share,
                "windows": [w.as_dict() for w in self.windows],
            },
            "predicted": point(self.predicted),
            "predicted_dedicated_cpu": point(self.dedicated),
            "tolerance": {"p99_factor": P99_FACTOR, "drop_rate": DROP_RATE_SLACK},
            "p99_ratio": self.p99_ratio,
            "agrees": self.agrees,
        }


def predict(
    calibration: Calibration,
    *,
    streams: int,
    events_per_s: float,
    queue_size: int,
    cpu_share: float = 1.0,
    duration_s: float = 60.0,
    seed: int = 1,
) -> PointResult:
    """The model's figures for one replica with ``streams`` streams of one tenant."""
    share = max(cpu_share, 0.05)
    return run_point(
        PointSpec(
            tenants=1,
            subscribers_per_tenant=streams,
            rates=(("claims", events_per_s),),
            scopes=("claims.read",),
            replicas=1,
            queue_size=queue_size,
            cpu=CpuModel(
                per_delivery_s=calibration.per_delivery_s / share,
                per_event_s=calibration.per_event_s / share,
                per_connection_s=calibration.per_connection_s / share,
            ),
            # The hub under test publishes to its own in-process bus.
            bus_latency=Latency.fixed(0.0),
            seed=seed,
            duration_s=duration_s,
            warmup_s=5.0,
        )
    )


async def check_point(
    calibration: Calibration,
    *,
    streams: int,
    events_per_s: float,
    queue_size: int = 256,
    windows: int = 5,
    window_s: float = 3.0,
    seed: int = 1,
    port: int | None = None,
    say: Callable[[str], None] | None = None,
) -> CheckResult:
    """Measure the point on a real hub, then predict it; see the module's text."""
    tell = say or (lambda _: None)
    measured: list[PointFigures] = []
    async with LoadRun(port=port, queue_size=queue_size) as run:
        tell(f"hub started on port {run.port}; opening {streams} streams")
        await run.connect(CHECK_TENANT, streams)
        for index in range(windows):
            figures = await run.paced(
                CHECK_TENANT,
                events_per_s,
                warmup_s=0.5,
                window_s=window_s,
                seed=seed + index,
            )
            measured.append(figures)
            tell(
                f"window {index + 1}/{windows}: {figures.events_per_s:.1f} events/s, "
                f"p99 {figures.p99_ms} ms, CPU share {figures.hub_cpu_share}"
            )
    if any(w.p99_ms is None or w.p50_ms is None for w in measured):
        raise CapacityError("a window read no frames", where="the check's load run")
    shares = [w.hub_cpu_share for w in measured if w.hub_cpu_share is not None]
    share = statistics.median(shares) if shares else 1.0
    fanout = sum(w.fanout for w in measured)
    dropped = sum(w.dropped for w in measured)
    tell("simulating the point with the calibrated costs")
    dedicated = predict(
        calibration,
        streams=streams,
        events_per_s=events_per_s,
        queue_size=queue_size,
        seed=seed,
    )
    predicted = predict(
        calibration,
        streams=streams,
        events_per_s=events_per_s,
        queue_size=queue_size,
        cpu_share=share,
        seed=seed,
    )
    return CheckResult(
        streams=streams,
        events_per_s=events_per_s,
        queue_size=queue_size,
        windows=tuple(measured),
        measured_p50_ms=statistics.median(w.p50_ms or 0.0 for w in measured),
        measured_p99_ms=statistics.median(w.p99_ms or 0.0 for w in measured),
        measured_drop_rate=dropped / fanout if fanout else 0.0,
        cpu_share=share,
        dedicated=dedicated,
        predicted=predicted,
    )
