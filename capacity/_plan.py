"""``capacity plan``: how many replicas, which queue size and how much memory a
workload needs, from the simulator running the calibrated costs.

The sweep simulates the workload's peak on a range of replica counts and queue sizes,
every point in its own process (every core is used) and with the workload's seed, so
the same inputs give the same plan whatever the number of workers. The range comes
from the costs: every replica takes every event, and the deliveries split over the
replicas, so a replica's CPU is busy

    rho(R) = (events/s * per_event + deliveries/s / R * per_delivery) / cpu_share

of the time. The first sweep runs from a little past overload (rho about 1.3) to
comfortably idle (rho about 0.35); a second one fills in the replica counts between
the largest that missed the targets and the smallest that met them.

The answer is the fewest replicas at which some queue size meets both targets; the
queue size is the hub's default (256) when it meets them there, otherwise the one
with the fewest drops.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, replace

from hub import load_catalog
from sim import CpuModel

from ._calibration import Calibration
from ._errors import CapacityError
from ._model import PointResult, PointSpec, run_point
from ._workload import CapacityWorkload

DEFAULT_QUEUE_SIZES = (64, 256, 1024)
HUB_DEFAULT_QUEUE = 256
# Most replica counts one sweep stage simulates.
MAX_STAGE_POINTS = 12
# Times the sweep looks past its first range when no count met the targets, and
# times it fills in the counts between the last miss and the first hit.
MAX_EXTENSIONS = 3
# A deque slot per queued frame: the frames themselves are shared by all streams.
BYTES_PER_QUEUED_FRAME = 8.25
FIRST_SWEEP_RHO = (1.3, 0.35)

Progress = Callable[[int, int, PointResult], None]


@dataclass(frozen=True, slots=True)
class Targets:
    p99_ms: float
    max_drop_rate: float


@dataclass(frozen=True, slots=True)
class Answer:
    replicas: int
    queue_size: int
    point: PointResult
    memory_bytes: int
    memory_full_queues_bytes: int
    # CPU seconds for one replica to accept its streams again (after a restart).
    reconnect_cpu_s: float


@dataclass(frozen=True, slots=True)
class CapacityPlan:
    workload: CapacityWorkload
    calibration: Calibration
    targets: Targets
    cpu_share: float
    duration_s: float
    warmup_s: float
    queue_sizes: tuple[int, ...]
    points: tuple[PointResult, ...]
    answer: Answer | None

    def by_replicas(self) -> list[int]:
        return sorted({point.replicas for point in self.points})


def utilisation(
    workload: CapacityWorkload, calibration: Calibration, replicas: int, share: float
) -> float:
    """A replica's busy share at the peak, from the costs alone."""
    work = (
        workload.peak_events_per_s() * calibration.per_event_s
        + workload.peak_deliveries_per_s() / replicas * calibration.per_delivery_s
    )
    return work / share


def first_sweep(
    workload: CapacityWorkload, calibration: Calibration, share: float
) -> list[int]:
    """Replica counts from just past overload to comfortably idle."""
    per_event = workload.peak_events_per_s() * calibration.per_event_s
    delivering = workload.peak_deliveries_per_s() * calibration.per_delivery_s
    if per_event >= share:
        raise CapacityError(
            f"every replica takes every event, and {workload.peak_events_per_s():,.1f} "
            f"events/s at {calibration.per_event_s * 1e6:,.0f} us each need "
            f"{per_event:.2f} CPUs before a single delivery; no number of replicas "
            "keeps up (fewer events, cheaper events, or more CPU per replica)",
            where=workload.source,
        )

    def replicas_at(rho: float) -> float:
        room = rho * share - per_event
        return delivering / room if room > 0 else math.inf

    busiest, idlest = FIRST_SWEEP_RHO
    low = max(1, math.floor(replicas_at(busiest)))
    high = max(low + 3, math.ceil(replicas_at(idlest)))
    return spread(low, high, MAX_STAGE_POINTS)


def spread(low: int, high: int, most: int) -> list[int]:
    """Up to ``most`` whole numbers from ``low`` to ``high``, both included, evenly
    spread on a log scale when there are more."""
    if high - low + 1 <= most:
        return list(range(low, high + 1))
    ratio = (high / low) ** (1 / (most - 1))
    values = {round(low * ratio**step) for step in range(most)}
    return sorted(values | {low, high})


def parse_replicas(text: str) -> list[int]:
    """``"2,4,8"`` or ``"1-10"``."""
    values: set[int] = set()
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        first, dash, last = item.partition("-")
        try:
            low = int(first)
            high = int(last) if dash else low
        except ValueError:
            raise CapacityError(
                f"expected replica counts like 2,4,8 or 1-10, found {text!r}",
                where="--replicas",
            ) from None
        if low < 1 or high < low or high > 1000:
            raise CapacityError(
                f"expected counts from 1 to 1000, low before high, found {item!r}",
                where="--replicas",
            )
        values.update(range(low, high + 1))
    if not values:
        raise CapacityError("expected at least one replica count", where="--replicas")
    if len(values) > 200:
        raise CapacityError(
            f"{len(values)} replica counts is more than a plan needs; give at most 200",
            where="--replicas",
        )
    return sorted(values)


def _specs(
    workload: CapacityWorkload,
    calibration: Calibration,
    pairs: Sequence[tuple[int, int]],
    share: float,
    duration_s: float,
    warmup_s: float,
) -> list[PointSpec]:
    catalog = load_catalog(None)
    # The steady state: streams are already open, so their handshakes cost nothing
    # here (a restart's cost is reported on its own, from per_connection_s).
    cpu = CpuModel(
        per_delivery_s=calibration.per_delivery_s / share,
        per_event_s=calibration.per_event_s / share,
    )
    template = PointSpec(
        tenants=workload.tenants,
        subscribers_per_tenant=workload.subscribers_per_tenant,
        rates=workload.peak_rates(),
        scopes=workload.scopes(catalog),
        replicas=1,
        queue_size=HUB_DEFAULT_QUEUE,
        cpu=cpu,
        bus_latency=workload.bus_latency,
        balancer=workload.balancer,
        seed=workload.seed,
        duration_s=duration_s,
        warmup_s=warmup_s,
    )
    return [replace(template, replicas=count, queue_size=size) for count, size in pairs]


def simulate(
    specs: Sequence[PointSpec], workers: int, progress: Progress | None = None
) -> list[PointResult]:
    """Every point, on ``workers`` processes; results in the order of ``specs``."""
    results: dict[int, PointResult] = {}
    if workers <= 1 or len(specs) <= 1:
        for index, spec in enumerate(specs):
            results[index] = run_point(spec)
            if progress is not None:
                progress(len(results), len(specs), results[index])
    else:
        with ProcessPoolExecutor(max_workers=min(workers, len(specs))) as pool:
            futures = {pool.submit(run_point, spec): i for i, spec in enumerate(specs)}
            for future in as_completed(futures):
                results[futures[future]] = future.result()
                if progress is not None:
                    progress(len(results), len(specs), results[futures[future]])
    return [results[index] for index in range(len(specs))]


def make_plan(
    workload: CapacityWorkload,
    calibration: Calibration,
    targets: Targets,
    *,
    replicas: Sequence[int] | None = None,
    queue_sizes: Sequence[int] = DEFAULT_QUEUE_SIZES,
    cpu_share: float = 1.0,
    duration_s: float = 40.0,
    warmup_s: float = 5.0,
    workers: int | None = None,
    progress: Progress | None = None,
    stage: Callable[[list[int]], None] | None = None,
) -> CapacityPlan:
    """Sweep, and answer: the fewest replicas meeting both targets."""
    workers = workers or os.cpu_count() or 1
    sizes = tuple(sorted(set(queue_sizes)))
    counts = (
        list(replicas) if replicas else first_sweep(workload, calibration, cpu_share)
    )

    def run(batch: list[int]) -> list[PointResult]:
        if stage is not None:
            stage(batch)
        return _sweep(
            workload,
            calibration,
            batch,
            sizes,
            cpu_share,
            duration_s,
            warmup_s,
            workers,
            progress,
        )

    points = run(counts)
    if not replicas:
        for _ in range(MAX_EXTENSIONS):
            if _meeting(points, targets):
                break
            # Latency bound by one event's fan-out falls as replicas split the
            # streams: look further out.
            largest = max(p.replicas for p in points)
            points += run(spread(largest + 1, largest * 2, MAX_STAGE_POINTS // 2))
        for _ in range(MAX_EXTENSIONS):
            missing = _between(points, targets)
            if not missing:
                break
            points += run(missing)
    points.sort(key=lambda point: (point.replicas, point.queue_size))
    return CapacityPlan(
        workload=workload,
        calibration=calibration,
        targets=targets,
        cpu_share=cpu_share,
        duration_s=duration_s,
        warmup_s=warmup_s,
        queue_sizes=sizes,
        points=tuple(points),
        answer=_answer(points, targets, calibration, cpu_share),
    )


def _sweep(
    workload: CapacityWorkload,
    calibration: Calibration,
    counts: Sequence[int],
    sizes: Sequence[int],
    share: float,
    duration_s: float,
    warmup_s: float,
    workers: int,
    progress: Progress | None,
) -> list[PointResult]:
    """Every (count, size) pair. The smallest queue runs first; where it never
    dropped a frame, a larger queue would replay the same run exactly (the queue
    bound is the only thing that differs), so its figures stand for the others."""
    total = len(counts) * len(sizes)
    done = 0

    def counted(finished: int, _: int, point: PointResult) -> None:
        if progress is not None:
            progress(done + finished, total, point)

    def run(pairs: list[tuple[int, int]]) -> list[PointResult]:
        nonlocal done
        specs = _specs(workload, calibration, pairs, share, duration_s, warmup_s)
        results = simulate(specs, workers, counted)
        done += len(results)
        return results

    smallest = run([(count, sizes[0]) for count in counts])
    points = list(smallest)
    rest = [
        (point.replicas, size)
        for point in smallest
        if point.backpressure_total > 0
        for size in sizes[1:]
    ]
    for point in smallest:
        if point.backpressure_total == 0:
            for size in sizes[1:]:
                points.append(replace(point, queue_size=size))
                done += 1
                if progress is not None:
                    progress(done, total, points[-1])
    if rest:
        points += run(rest)
    return points


def _meeting(points: Sequence[PointResult], targets: Targets) -> set[int]:
    return {
        point.replicas
        for point in points
        if point.meets(targets.p99_ms, targets.max_drop_rate)
    }


def _between(points: Sequence[PointResult], targets: Targets) -> list[int]:
    """Replica counts not yet simulated between the largest count below the
    smallest that met the targets, and that one."""
    met = _meeting(points, targets)
    if not met:
        return []
    smallest = min(met)
    below = [p.replicas for p in points if p.replicas < smallest]
    if not below:
        return []
    return (
        spread(max(below) + 1, smallest - 1, MAX_STAGE_POINTS)
        if smallest - max(below) > 1
        else []
    )


def _answer(
    points: Sequence[PointResult],
    targets: Targets,
    calibration: Calibration,
    share: float,
) -> Answer | None:
    met = _meeting(points, targets)
    if not met:
        return None
    count = min(met)
    candidates = [
        p
        for p in points
        if p.replicas == count and p.meets(targets.p99_ms, targets.max_drop_rate)
    ]
    default = [p for p in candidates if p.queue_size == HUB_DEFAULT_QUEUE]
    chosen = (
        default[0]
        if default
        else min(candidates, key=lambda p: (p.drop_rate, p.p99_ms or 0.0, p.queue_size))
    )
    memory = calibration.base_rss_bytes + calibration.per_subscriber_bytes * (
        chosen.streams_max
    )
    full = memory + chosen.streams_max * chosen.queue_size * BYTES_PER_QUEUED_FRAME
    return Answer(
        replicas=count,
        queue_size=chosen.queue_size,
        point=chosen,
        memory_bytes=round(memory),
        memory_full_queues_bytes=round(full),
        reconnect_cpu_s=chosen.streams_max * calibration.per_connection_s / share,
    )
