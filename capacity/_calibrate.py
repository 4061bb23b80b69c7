"""``capacity calibrate``: what one real hub process costs on this machine.

One hub process, on the benchmark harness, with two tenants' streams: a few streams
(so an event's own work shows) and many (so the deliveries' work shows).

1. **Connections**: the hub's CPU while the many streams open, per stream; its
   resident memory after they settle, less before, per stream.
2. **Idle**: the hub's CPU while nothing is published.
3. **Load points**: events at Poisson times, one per publish request, at a few rates
   to each tenant; for each, the hub's CPU-seconds per second (psutil), events and
   deliveries per second. A least-squares fit through the idle level gives the CPU
   cost of an event and of a delivery (both at least zero).
4. **Saturation**: the rate to the many streams rises by a third at each step until
   the hub delivers less than 95 % of the frames per second offered (it falls
   behind), p99 passes 500 ms (latency explodes), frames are lost, or the publisher
   cannot keep the rate (the machine, not the hub, saturated); the deliveries per
   second of the last step that held are the replica's saturation point.

Every point also records the load of the machine: the CPU of the other processes,
and the share of its runnable time the hub actually spent on a CPU (Linux
schedstat), since on a shared machine latency depends on both.
"""

from __future__ import annotations

import asyncio
import datetime
import os
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import psutil

from benchmarks._harness import cpu_model

from ._calibration import FORMAT, safe_hostname
from ._errors import CapacityError
from ._loadrun import LoadRun, PointFigures

Say = Callable[[str], None]
FEW = "calibration-few"
MANY = "calibration-many"


@dataclass(frozen=True, slots=True)
class CalibrationPlan:
    """How long and how hard each phase runs."""

    few_streams: int
    many_streams: int
    few_rates: tuple[float, ...]
    # Deliveries per second to aim at for the load points on the many streams.
    many_deliveries: tuple[float, ...]
    warmup_s: float
    window_s: float
    idle_s: float
    ramp_window_s: float
    ramp_steps: int
    ramp_factor: float = 1.35
    # A step fails when the clients read less than this share of the deliveries
    # offered in its window (the hub fell behind), ...
    throughput_floor: float = 0.95
    # ... when p99 passes this (latency exploded), ...
    latency_limit_ms: float = 500.0
    # ... when frames were lost, or when the publisher could not keep the rate
    # (then the machine, not the hub, is what saturated).
    received_floor: float = 0.99
    publish_floor: float = 0.9
    saturation: bool = True
    quick: bool = False


def default_plan(*, quick: bool = False, saturation: bool = True) -> CalibrationPlan:
    if quick:
        return CalibrationPlan(
            few_streams=10,
            many_streams=300,
            few_rates=(80.0, 200.0),
            many_deliveries=(4000.0, 10000.0),
            warmup_s=0.4,
            window_s=2.0,
            idle_s=1.0,
            ramp_window_s=1.0,
            ramp_steps=7,
            saturation=saturation,
            quick=True,
        )
    return CalibrationPlan(
        few_streams=10,
        many_streams=800,
        few_rates=(80.0, 160.0, 250.0),
        many_deliveries=(5000.0, 10000.0, 16000.0, 24000.0),
        warmup_s=0.5,
        window_s=5.0,
        idle_s=2.0,
        ramp_window_s=2.0,
        ramp_steps=10,
        saturation=saturation,
    )


def machine_description() -> dict[str, Any]:
    memory = psutil.virtual_memory()
    return {
        "hostname": safe_hostname(),
        "cpu_model": cpu_model(),
        "cores": os.cpu_count() or 1,
        "memory_gib": round(memory.total / 2**30, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "measured_at": datetime.datetime.now(datetime.UTC).isoformat(
            timespec="seconds"
        ),
    }


def fit_costs(
    points: list[PointFigures], idle_cores: float
) -> tuple[float, float, list[float]]:
    """(per event, per delivery, relative residual per point): least squares of
    ``hub cores - idle = per_event * events/s + per_delivery * deliveries/s``, with
    neither cost below zero."""
    design = np.array([[p.events_per_s, p.deliveries_per_s] for p in points])
    target = np.array([p.hub_cores - idle_cores for p in points])
    solution, *_ = np.linalg.lstsq(design, target, rcond=None)
    per_event, per_delivery = (float(v) for v in solution)
    if per_event < 0 or per_delivery < 0:
        # The constrained optimum lies on an axis: keep the better single cost.
        candidates = []
        for column in (0, 1):
            x = design[:, column]
            coefficient = max(0.0, float(x @ target / (x @ x))) if x @ x else 0.0
            error = float(np.sum((target - coefficient * x) ** 2))
            candidates.append((error, column, coefficient))
        _, column, coefficient = min(candidates)
        per_event, per_delivery = (
            (coefficient, 0.0) if column == 0 else (0.0, coefficient)
        )
    predicted = design @ np.array([per_event, per_delivery]) + idle_cores
    residuals = [
        (float(fit) - p.hub_cores) / p.hub_cores if p.hub_cores > 0 else 0.0
        for fit, p in zip(predicted, points, strict=True)
    ]
    return per_event, per_delivery, residuals


async def measure(
    plan: CalibrationPlan, say: Say, *, port: int | None = None
) -> dict[str, Any]:
    """Run every phase on a fresh hub process; the calibration document."""
    started = time.monotonic()
    load_start = os.getloadavg()[0]
    machine = machine_description()
    say(
        f"calibrating on {machine['hostname']} ({machine['cpu_model']}, "
        f"{machine['cores']} cores); load average {load_start:.2f}"
    )
    async with LoadRun(port=port) as run:
        say(f"hub started on port {run.port}; {run.workers} client workers")
        await asyncio.sleep(0.5)
        base_rss = run.rss()
        await run.connect(FEW, plan.few_streams)
        connected = await run.connect(MANY, plan.many_streams)
        await asyncio.sleep(1.0)
        rss_idle = run.rss()
        per_connection = connected.hub_cpu_s / connected.opened
        per_subscriber = (rss_idle - base_rss) / (plan.few_streams + plan.many_streams)
        say(
            f"{connected.opened} streams opened in {connected.seconds:.2f} s: "
            f"{per_connection * 1e6:.0f} us of hub CPU and "
            f"{per_subscriber / 1024:.1f} KiB each"
        )
        idle = await run.idle_cores(plan.idle_s)
        say(f"idle hub: {idle:.4f} cores")

        points: list[PointFigures] = []
        schedule = [(FEW, rate) for rate in plan.few_rates] + [
            (MANY, deliveries / plan.many_streams)
            for deliveries in plan.many_deliveries
        ]
        for index, (tenant, rate) in enumerate(schedule, start=1):
            point = await run.paced(
                tenant,
                rate,
                warmup_s=plan.warmup_s,
                window_s=plan.window_s,
                seed=index,
            )
            points.append(point)
            say(f"load point {index}/{len(schedule)}: {_describe(point)}")
        per_event, per_delivery, residuals = fit_costs(points, idle)
        if per_delivery <= 0:
            raise CapacityError(
                "the load points show no CPU cost per delivery; the machine may be "
                "too busy to measure, try again",
                where="fitting the costs",
            )
        say(
            f"fit: {per_event * 1e6:.0f} us per event, {per_delivery * 1e6:.2f} us per "
            f"delivery (residuals {', '.join(f'{r:+.0%}' for r in residuals)})"
        )

        shares = [p.hub_cpu_share for p in points if p.hub_cpu_share is not None]
        share = sum(shares) / len(shares) if shares else 1.0
        ramp: list[PointFigures] = []
        saturation: dict[str, Any] | None = None
        if plan.saturation:
            ramp, saturation = await _saturate(
                run, plan, per_event, per_delivery, share, say
            )

    light = min(points[: len(plan.few_rates)], key=lambda p: p.target_events_per_s)
    document: dict[str, Any] = {
        "format": FORMAT,
        "machine": {
            **machine,
            "load_average_1m_start": round(load_start, 2),
            "load_average_1m_end": round(os.getloadavg()[0], 2),
            "other_processes_cores_mean": round(
                sum(p.other_cores for p in points) / len(points), 3
            ),
            "hub_cpu_share_mean": round(share, 3) if shares else None,
        },
        "costs": {
            "per_delivery_s": per_delivery,
            "per_event_s": per_event,
            "per_connection_s": per_connection,
            "idle_cores": round(idle, 5),
            "note": (
                "CPU-seconds of the hub process (psutil user + system); an event "
                "came in its own publish request, so per_event_s includes the HTTP "
                "ingest"
            ),
        },
        "memory": {
            "base_rss_bytes": base_rss,
            "per_subscriber_bytes": round(per_subscriber, 1),
            "streams": plan.few_streams + plan.many_streams,
        },
        "latency_light_load": {
            "streams": light.streams,
            "events_per_s": round(light.events_per_s, 2),
            "p50_ms": light.p50_ms,
            "p99_ms": light.p99_ms,
        },
        "saturation": saturation,
        "fit": {
            "residuals": [round(r, 4) for r in residuals],
        },
        "settings": {
            "few_streams": plan.few_streams,
            "many_streams": plan.many_streams,
            "window_s": plan.window_s,
            "quick": plan.quick,
        },
        "points": [p.as_dict() for p in points],
        "ramp": [p.as_dict() for p in ramp],
        "took_s": round(time.monotonic() - started, 1),
    }
    return document


async def _saturate(
    run: LoadRun,
    plan: CalibrationPlan,
    per_event: float,
    per_delivery: float,
    share: float,
    say: Say,
) -> tuple[list[PointFigures], dict[str, Any]]:
    streams = plan.many_streams
    model_rate = 1.0 / (per_event + streams * per_delivery)
    # From well below what the CPU the hub is getting here can carry.
    rate = 0.3 * model_rate * share
    steps: list[PointFigures] = []
    held: PointFigures | None = None
    failed: PointFigures | None = None
    reason = f"still holding after {plan.ramp_steps} steps"
    for step in range(1, plan.ramp_steps + 1):
        point = await run.paced(
            MANY,
            rate,
            warmup_s=0.3,
            window_s=plan.ramp_window_s,
            seed=100 + step,
            drain_timeout_s=5.0,
        )
        steps.append(point)
        offered = point.events_per_s * streams
        trouble = None
        if point.events_per_s < plan.publish_floor * rate:
            trouble = (
                f"the publisher kept only {point.events_per_s:.1f} of {rate:.1f} "
                "events/s: the machine saturated before the hub"
            )
        elif point.deliveries_per_s < plan.throughput_floor * offered:
            trouble = (
                f"the hub delivered {point.deliveries_per_s:,.0f} of {offered:,.0f} "
                "frames/s offered"
            )
        elif point.received_share < plan.received_floor:
            trouble = f"{1 - point.received_share:.2%} of the frames were lost"
        elif point.p99_ms is None or point.p99_ms > plan.latency_limit_ms:
            trouble = f"p99 {point.p99_ms} ms over {plan.latency_limit_ms:.0f} ms"
        say(
            f"saturation step {step}: {_describe(point)}"
            + (f" -> {trouble}" if trouble else "")
        )
        if trouble is not None:
            failed = point
            reason = trouble
            break
        held = point
        rate *= plan.ramp_factor
    model_deliveries = model_rate * streams
    result: dict[str, Any] = {
        "streams": streams,
        "deliveries_per_s": None if held is None else round(held.deliveries_per_s, 1),
        "events_per_s": None if held is None else round(held.events_per_s, 2),
        "p99_ms_at_saturation": None if held is None else held.p99_ms,
        "stopped_because": reason,
        "failed_step": None if failed is None else failed.as_dict(),
        "hub_cpu_share": round(share, 3),
        # What the fitted costs give for one CPU kept busy all the time.
        "model_deliveries_per_s": round(model_deliveries, 1),
    }
    if held is None:
        say(f"saturation: not reached a holding step ({reason})")
    else:
        say(
            f"saturation: {held.deliveries_per_s:,.0f} deliveries/s to {streams} "
            f"streams ({reason}); the fitted costs give {model_deliveries:,.0f} on a "
            "CPU of its own"
        )
    return steps, result


def _describe(point: PointFigures) -> str:
    share = (
        f", CPU share {point.hub_cpu_share:.2f}"
        if point.hub_cpu_share is not None
        else ""
    )
    p99 = "n/a" if point.p99_ms is None else f"{point.p99_ms:.1f} ms"
    return (
        f"{point.streams} streams, {point.events_per_s:.1f} events/s, "
        f"{point.deliveries_per_s:,.0f} deliveries/s, hub {point.hub_cores:.3f} "
        f"cores{share}, others {point.other_cores:.2f} cores, p99 {p99}"
    )


def calibrate(
    *,
    quick: bool = False,
    saturation: bool = True,
    say: Say | None = None,
    port: int | None = None,
) -> dict[str, Any]:
    """Measure this machine; the calibration document (see ``save_calibration``)."""
    plan = default_plan(quick=quick, saturation=saturation)
    return asyncio.run(measure(plan, say or (lambda _: None), port=port))
