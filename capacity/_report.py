"""A capacity plan as a person reads it (a table and a plot) and as a program does
(JSON)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ._plan import CapacityPlan
from ._workload import CapacityWorkload

MIB = 2**20


def _ms(value: float | None) -> str:
    if value is None:
        return "-"
    if value >= 10_000:
        return f"{value / 1000:,.0f} s"
    return f"{value:,.1f}" if value < 100 else f"{value:,.0f}"


def _percent(value: float) -> str:
    return f"{value * 100:.3f} %"


def describe_workload(workload: CapacityWorkload) -> str:
    return (
        f"{workload.tenants:,} tenants x {workload.subscribers_per_tenant:,} streams = "
        f"{workload.subscribers:,} streams; at the peak (x{workload.peak_factor:g}) "
        f"{workload.peak_events_per_s():,.1f} events/s and "
        f"{workload.peak_deliveries_per_s():,.0f} deliveries/s"
    )


def render_table(plan: CapacityPlan) -> str:
    calibration = plan.calibration
    lines = [
        f"capacity plan for {plan.workload.source}",
        f"  workload: {describe_workload(plan.workload)}",
        f"  calibration: {calibration.describe()} ({calibration.source})",
        f"    {calibration.per_delivery_s * 1e6:.2f} us per delivery, "
        f"{calibration.per_event_s * 1e6:.0f} us per event, "
        f"{calibration.per_connection_s * 1e6:.0f} us per connection, "
        f"{calibration.per_subscriber_bytes / 1024:.1f} KiB per stream",
        "  each replica: "
        + (
            "a CPU of its own"
            if plan.cpu_share >= 1
            else f"{plan.cpu_share:g} of a CPU (--cpu-share)"
        ),
        f"  targets: p99 delivery latency <= {plan.targets.p99_ms:g} ms, drop rate <= "
        f"{_percent(plan.targets.max_drop_rate)}",
        f"  simulated: {plan.duration_s:g} s at the peak rate per point, figures after "
        f"{plan.warmup_s:g} s",
        "",
    ]
    header = [
        "replicas",
        "queue",
        "cpu max",
        "p50 ms",
        "p99 ms",
        "drop rate",
        "streams/replica",
        "MiB/replica",
        "meets",
    ]
    rows = []
    for point in plan.points:
        memory = (
            calibration.base_rss_bytes
            + calibration.per_subscriber_bytes * point.streams_max
        )
        meets = point.meets(plan.targets.p99_ms, plan.targets.max_drop_rate)
        chosen = (
            plan.answer is not None
            and plan.answer.replicas == point.replicas
            and plan.answer.queue_size == point.queue_size
        )
        rows.append(
            [
                str(point.replicas),
                str(point.queue_size),
                f"{point.utilisation_max:.0%}",
                _ms(point.p50_ms),
                _ms(point.p99_ms),
                _percent(point.drop_rate),
                f"{point.streams_max:,}",
                f"{memory / MIB:,.0f}",
                ("yes <- answer" if chosen else "yes") if meets else "no",
            ]
        )
    widths = [
        max(len(header[i]), *(len(row[i]) for row in rows)) for i in range(len(header))
    ]

    def line(cells: list[str]) -> str:
        return "  ".join(
            cell.ljust(width) if index in (0, 8) else cell.rjust(width)
            for index, (cell, width) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    lines.append(line(header))
    lines.append(line(["-" * width for width in widths]))
    lines.extend(line(row) for row in rows)
    lines.append("")
    lines.extend(answer_lines(plan))
    return "\n".join(lines) + "\n"


def answer_lines(plan: CapacityPlan) -> list[str]:
    answer = plan.answer
    if answer is None:
        largest = max(plan.by_replicas())
        return [
            f"no replica count up to {largest} met both targets; try --replicas with "
            "larger counts, a larger --p99-ms or --max-drop-rate"
        ]
    point = answer.point
    return [
        f"answer: {answer.replicas} replica{'' if answer.replicas == 1 else 's'} "
        f"with queue size {answer.queue_size}",
        f"  p99 {_ms(point.p99_ms)} ms (p50 {_ms(point.p50_ms)} ms), drop rate "
        f"{_percent(point.drop_rate)}, busiest replica's CPU "
        f"{point.utilisation_max:.0%}",
        f"  memory per replica: {answer.memory_bytes / MIB:,.0f} MiB for "
        f"{point.streams_max:,} streams ({answer.memory_full_queues_bytes / MIB:,.0f} "
        "MiB if every queue were full)",
        f"  a replica that restarts takes {answer.reconnect_cpu_s:,.1f} s of CPU to "
        "accept its streams again",
    ]


def plan_json(plan: CapacityPlan) -> dict[str, Any]:
    workload = plan.workload
    answer = plan.answer
    return {
        "workload": {
            "source": workload.source,
            "tenants": workload.tenants,
            "subscribers_per_tenant": workload.subscribers_per_tenant,
            "peak_factor": workload.peak_factor,
            "events_per_second": dict(workload.events_per_second),
            "reads": list(workload.reads),
            "bus_latency": workload.bus_latency.spec(),
            "balancer": workload.balancer,
            "seed": workload.seed,
            "peak_events_per_s": workload.peak_events_per_s(),
            "peak_deliveries_per_s": workload.peak_deliveries_per_s(),
        },
        "calibration": {
            "source": plan.calibration.source,
            "machine": plan.calibration.describe(),
            "per_delivery_s": plan.calibration.per_delivery_s,
            "per_event_s": plan.calibration.per_event_s,
            "per_connection_s": plan.calibration.per_connection_s,
            "per_subscriber_bytes": plan.calibration.per_subscriber_bytes,
            "base_rss_bytes": plan.calibration.base_rss_bytes,
        },
        "targets": {
            "p99_ms": plan.targets.p99_ms,
            "max_drop_rate": plan.targets.max_drop_rate,
        },
        "cpu_share": plan.cpu_share,
        "duration_s": plan.duration_s,
        "warmup_s": plan.warmup_s,
        "points": [
            {
                "replicas": p.replicas,
                "queue_size": p.queue_size,
                "p50_ms": p.p50_ms,
                "p99_ms": p.p99_ms,
                "p999_ms": p.p999_ms,
                "max_ms": p.max_ms,
                "drop_rate": p.drop_rate,
                "utilisation_max": p.utilisation_max,
                "utilisation_mean": p.utilisation_mean,
                "deliveries_per_s": p.deliveries_per_s,
                "streams_max": p.streams_max,
                "waiting_max": p.waiting_max,
                "meets": p.meets(plan.targets.p99_ms, plan.targets.max_drop_rate),
            }
            for p in plan.points
        ],
        "answer": None
        if answer is None
        else {
            "replicas": answer.replicas,
            "queue_size": answer.queue_size,
            "p99_ms": answer.point.p99_ms,
            "drop_rate": answer.point.drop_rate,
            "utilisation_max": answer.point.utilisation_max,
            "streams_per_replica": answer.point.streams_max,
            "memory_bytes": answer.memory_bytes,
            "memory_full_queues_bytes": answer.memory_full_queues_bytes,
            "reconnect_cpu_s": answer.reconnect_cpu_s,
        },
    }


def draw_plot(plan: CapacityPlan, path: Path) -> None:
    """p99 latency (log scale) and drop rate against replicas, a line per queue
    size, with the targets and the answer marked."""
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (top, bottom) = plt.subplots(
        2, 1, figsize=(8, 7), sharex=True, gridspec_kw={"height_ratios": [3, 2]}
    )
    markers = "osD^v<>"
    for index, size in enumerate(plan.queue_sizes):
        mine = [p for p in plan.points if p.queue_size == size]
        xs = [p.replicas for p in mine]
        top.plot(
            xs,
            [p.p99_ms if p.p99_ms is not None else float("nan") for p in mine],
            marker=markers[index % len(markers)],
            label=f"queue {size}",
        )
        bottom.plot(
            xs,
            [p.drop_rate * 100 for p in mine],
            marker=markers[index % len(markers)],
            label=f"queue {size}",
        )
    top.axhline(plan.targets.p99_ms, color="red", linestyle="--", label="p99 target")
    bottom.axhline(
        plan.targets.max_drop_rate * 100,
        color="red",
        linestyle="--",
        label="drop-rate target",
    )
    if plan.answer is not None:
        for axis in (top, bottom):
            axis.axvline(plan.answer.replicas, color="green", alpha=0.4, linewidth=6)
    top.set_yscale("log")
    plain = matplotlib.ticker.FuncFormatter(lambda value, _: f"{value:g}")
    top.yaxis.set_major_locator(matplotlib.ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
    top.yaxis.set_major_formatter(plain)
    top.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    top.set_ylabel("p99 delivery latency (ms, log)")
    bottom.set_ylabel("frames dropped (%)")
    bottom.set_yscale("symlog", linthresh=max(plan.targets.max_drop_rate * 100, 1e-3))
    bottom.yaxis.set_major_formatter(plain)
    bottom.set_xlabel("replicas")
    bottom.set_xticks(plan.by_replicas())
    title = (
        f"{plan.workload.subscribers:,} streams, "
        f"{plan.workload.peak_deliveries_per_s():,.0f} deliveries/s at the peak"
    )
    if plan.answer is not None:
        title += f": {plan.answer.replicas} replicas, queue {plan.answer.queue_size}"
    top.set_title(title)
    if len(plan.queue_sizes) > 1 and not any(
        point.backpressure_total for point in plan.points
    ):
        top.text(
            0.02,
            0.03,
            "no point dropped a frame: every queue size gives the same figures",
            transform=top.transAxes,
            fontsize="small",
        )
    top.legend(loc="upper right", fontsize="small")
    bottom.legend(loc="upper right", fontsize="small")
    for axis in (top, bottom):
        axis.grid(True, which="both", alpha=0.3)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
