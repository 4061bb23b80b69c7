"""The report of a load run: CSV files, PNG charts and one HTML page embedding them.

Everything lands in the run's folder:

- ``index.html``: the verdict, every reconciliation check, the figures and charts;
- ``summary.json``: the same figures for scripts;
- ``timeline.csv``: the replicas' counters and the CPU, sampled each second;
- ``reconciliation.csv`` and ``replicas.csv``: the checks, and the per replica and
  tenant counters over the run;
- ``locust_*.csv``: Locust's own statistics (``locust_stats_history.csv`` holds its
  latency percentiles over time, over a sliding window);
- ``hub.log``, ``locust.log``: the processes' output.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import os
import platform
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._load_reconcile import DROP_REASONS, Reconciliation, Scrape

if TYPE_CHECKING:
    from ._load import LoadOptions, Sample

PERCENTILES = ("50%", "90%", "99%", "100%")


def write_report(
    *,
    directory: Path,
    options: LoadOptions,
    command: str,
    locust_command: list[str],
    tenants: list[str],
    started_at: float,
    samples: Sequence[Sample],
    reconciliation: Reconciliation,
    hub_latency: dict[str, float | None],
    clients: dict[str, Any] | None,
    published: dict[str, Any] | None,
    warnings: list[str],
    saturation: tuple[float, int | None],
) -> dict[str, Any]:
    timeline = _timeline(samples, tenants)
    _write_csv(directory / "timeline.csv", timeline)
    _write_csv(
        directory / "reconciliation.csv",
        [
            {"check": c.name, "ok": c.ok, "detail": c.detail}
            for c in reconciliation.checks
        ],
    )
    rows = reconciliation.to_json()["rows"]
    _write_csv(
        directory / "replicas.csv",
        [
            {
                **{k: v for k, v in row.items() if k != "dropped"},
                **{
                    f"dropped_{reason}": row["dropped"].get(reason, 0)
                    for reason in DROP_REASONS
                },
            }
            for row in rows
        ],
    )
    history = _locust_history(directory / "locust_stats_history.csv", started_at)
    stats = _read_csv(directory / "locust_stats.csv")
    summary = _summary(
        options=options,
        command=command,
        tenants=tenants,
        samples=samples,
        timeline=timeline,
        stats=stats,
        reconciliation=reconciliation,
        hub_latency=hub_latency,
        clients=clients,
        published=published,
        warnings=warnings,
        saturation=saturation,
    )
    (directory / "summary.json").write_text(
        json.dumps(summary, indent=1, sort_keys=True)
    )
    charts = _charts(directory, timeline, history)
    page = _html(summary, reconciliation, stats, charts, locust_command, clients)
    (directory / "index.html").write_text(page, "utf-8")
    return summary


# -- data -------------------------------------------------------------------------


def _timeline(samples: Sequence[Sample], tenants: list[str]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for sample in samples:
        for replica, scrape in sample.scrapes.items():
            row: dict[str, Any] = {
                "t_s": round(sample.t, 3),
                "phase": sample.phase,
                "replica": replica,
            }
            row.update(_replica_figures(scrape, tenants))
            row["locust_cpu_busiest"] = round(
                max(sample.locust_cpu.values(), default=0), 1
            )
            row["locust_cpu_total"] = round(sum(sample.locust_cpu.values()), 1)
            row["hub_cpu"] = "" if sample.hub_cpu is None else round(sample.hub_cpu, 1)
            rows.append(row)
    return rows


def _replica_figures(scrape: Scrape, tenants: list[str]) -> dict[str, float]:
    figures: dict[str, float] = dict.fromkeys(
        (
            "subscribers",
            "dispatched",
            "fanout",
            "delivered",
            "queued",
            "batches_open",
            *(f"dropped_{r}" for r in DROP_REASONS),
        ),
        0.0,
    )
    for tenant in tenants:
        figures["subscribers"] += scrape.value(
            "rcm_realtime_subscribers", tenant_id=tenant
        )
        figures["dispatched"] += scrape.summed(
            "rcm_realtime_events_dispatched_total", tenant
        )
        figures["fanout"] += scrape.value("rcm_realtime_fanout_total", tenant_id=tenant)
        figures["delivered"] += scrape.value(
            "rcm_realtime_delivered_total", tenant_id=tenant
        )
        figures["queued"] += scrape.value("rcm_realtime_queued", tenant_id=tenant)
        figures["batches_open"] += scrape.value(
            "rcm_realtime_batches_open", tenant_id=tenant
        )
        for reason in DROP_REASONS:
            figures[f"dropped_{reason}"] += scrape.value(
                "rcm_realtime_dropped_total", tenant_id=tenant, reason=reason
            )
    return figures


def _locust_history(path: Path, started_at: float) -> list[dict[str, float | None]]:
    """Locust's per-second rows for received events: window percentiles and the
    received rate from its running total."""
    rows = []
    previous: tuple[float, float] | None = None
    for row in _read_csv(path):
        if row.get("Name") != "event" or row.get("Type") != "SSE":
            continue
        t = float(row["Timestamp"]) - started_at
        total = float(row["Total Request Count"])
        rate = None
        if previous is not None and t > previous[0]:
            rate = (total - previous[1]) / (t - previous[0])
        previous = (t, total)
        entry: dict[str, float | None] = {"t": t, "received_per_s": rate}
        for name in PERCENTILES:
            value = row.get(name, "N/A")
            entry[name] = None if value in ("N/A", "", None) else float(value)
        entry["users"] = float(row.get("User Count") or 0)
        rows.append(entry)
    return rows


def _read_csv(path: Path) -> list[dict[str, str]]:
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            return list(csv.DictReader(handle))
    except OSError:
        return []


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        if not rows:
            return
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def _per_time(
    timeline: list[dict[str, Any]], key: str
) -> tuple[list[float], list[float]]:
    """``key`` summed over replicas, per sampling moment."""
    totals: dict[float, float] = {}
    for row in timeline:
        totals[row["t_s"]] = totals.get(row["t_s"], 0.0) + float(row[key])
    times = sorted(totals)
    return times, [totals[t] for t in times]


def _summary(
    *,
    options: LoadOptions,
    command: str,
    tenants: list[str],
    samples: Sequence[Sample],
    timeline: list[dict[str, Any]],
    stats: list[dict[str, str]],
    reconciliation: Reconciliation,
    hub_latency: dict[str, float | None],
    clients: dict[str, Any] | None,
    published: dict[str, Any] | None,
    warnings: list[str],
    saturation: tuple[float, int | None],
) -> dict[str, Any]:
    publishing = [s for s in samples if s.phase == "publishing"]
    times, delivered = _per_time(
        [r for r in timeline if r["phase"] == "publishing"], "delivered"
    )
    rate = 0.0
    if len(times) >= 2 and times[-1] > times[0]:
        rate = (delivered[-1] - delivered[0]) / (times[-1] - times[0])
    _, streams = _per_time(timeline, "subscribers")
    hub_cpu = [s.hub_cpu for s in publishing if s.hub_cpu is not None]
    busiest = [max(s.locust_cpu.values(), default=0.0) for s in publishing]
    event_row = next(
        (r for r in stats if r.get("Type") == "SSE" and r.get("Name") == "event"), {}
    )
    latency = {
        name: _number(event_row.get(name))
        for name in ("50%", "90%", "95%", "99%", "100%")
    }
    machine = [s.machine_cpu for s in publishing]
    machine_mean = sum(machine) / len(machine) if machine else 0.0
    if machine_mean >= 90:
        warnings.append(
            f"the machine's CPUs were {machine_mean:.0f}% busy on average while "
            "publishing (this run's processes and anything else on the machine): "
            "every latency here includes waiting for a CPU"
        )
    client_median, hub_p99 = latency["50%"], hub_latency.get("99%")
    if (
        client_median is not None
        and hub_p99 is not None
        and client_median > hub_p99 + 100
    ):
        warnings.append(
            f"the clients' median latency ({client_median:g} ms) is far above "
            f"the hubs' own 99th percentile (<= {hub_p99:g} ms): most of it is "
            "the load generator working through bursts; use --processes or "
            "fewer users per process for latency figures"
        )
    return {
        "command": command,
        "options": {
            "replicas": None if options.urls else options.replicas,
            "urls": list(options.urls),
            "users": options.users,
            "spawn_rate": options.spawn_rate,
            "duration_s": options.duration_s,
            "events_per_s": options.events_per_s,
            "processes": options.processes,
            "churn": options.churn,
            "session_s": options.session_s if options.churn else None,
            "tenants": tenants,
            "publishers": options.publishers,
        },
        "machine": {
            "cpus": os.cpu_count(),
            "load_average": [round(x, 2) for x in os.getloadavg()],
            "python": platform.python_version(),
        },
        "passed": reconciliation.passed,
        "reconciliation": reconciliation.to_json(),
        "received_total": sum(reconciliation.received.values()),
        "delivered_total": sum(reconciliation.delivered.values()),
        "events_per_s_received": round(rate, 1),
        "peak_open_streams": max(streams, default=0),
        "latency_ms": latency,
        "hub_latency_ms": hub_latency,
        "machine_cpu_percent_mean": round(machine_mean, 1),
        "hub_cpu_percent": {
            "mean": round(sum(hub_cpu) / len(hub_cpu), 1) if hub_cpu else None,
            "max": round(max(hub_cpu), 1) if hub_cpu else None,
        },
        "locust_cpu_percent_busiest": {
            "mean": round(sum(busiest) / len(busiest), 1) if busiest else None,
            "max": round(max(busiest), 1) if busiest else None,
            "worst_5s": round(saturation[0], 1),
        },
        "clients": clients,
        "published": published,
        "warnings": warnings,
    }


def _number(text: str | None) -> float | None:
    try:
        return float(text) if text not in (None, "", "N/A") else None
    except ValueError:
        return None


# -- charts -----------------------------------------------------------------------


def _charts(
    directory: Path,
    timeline: list[dict[str, Any]],
    history: list[dict[str, float | None]],
) -> dict[str, str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    charts: dict[str, str] = {}

    def save(name: str, title: str, figure: Any) -> None:
        figure.suptitle(title)
        figure.tight_layout()
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=90)
        plt.close(figure)
        (directory / f"{name}.png").write_bytes(buffer.getvalue())
        charts[name] = base64.b64encode(buffer.getvalue()).decode("ascii")

    from matplotlib.ticker import FuncFormatter

    figure, axes = plt.subplots(figsize=(9, 3.6))
    for name in PERCENTILES:
        points = [(r["t"], r[name]) for r in history if r[name]]
        if points:
            label = "max" if name == "100%" else f"p{name.rstrip('%')}"
            axes.plot(*zip(*points, strict=True), label=label)
    axes.set_xlabel("s since start")
    axes.set_ylabel("ms, occurredAt to received")
    axes.set_yscale("log")
    axes.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    axes.legend(loc="upper left")
    save("latency", "End-to-end latency (Locust, sliding window)", figure)

    figure, axes = plt.subplots(figsize=(9, 3.6))
    points = [
        (r["t"], r["received_per_s"])
        for r in history
        if r["received_per_s"] is not None
    ]
    if points:
        axes.plot(*zip(*points, strict=True), label="received by clients")
    for key, label in (
        ("delivered", "delivered by hubs"),
        ("dispatched", "dispatched"),
    ):
        times, values = _per_time(timeline, key)
        rates = [
            (t1, (v1 - v0) / (t1 - t0))
            for (t0, v0), (t1, v1) in zip(
                zip(times, values, strict=True),
                list(zip(times, values, strict=True))[1:],
                strict=False,
            )
            if t1 > t0
        ]
        if rates:
            axes.plot(*zip(*rates, strict=True), label=f"{label} (all replicas)")
    axes.set_xlabel("s since start")
    axes.set_ylabel("per second")
    axes.legend(loc="upper left")
    save("throughput", "Throughput", figure)

    figure, axes = plt.subplots(figsize=(9, 3.2))
    replicas = sorted({row["replica"] for row in timeline})
    for replica in replicas:
        rows = [r for r in timeline if r["replica"] == replica]
        axes.plot(
            [r["t_s"] for r in rows], [r["subscribers"] for r in rows], label=replica
        )
    axes.set_xlabel("s since start")
    axes.set_ylabel("open streams")
    axes.legend(loc="upper left")
    save("connections", "Open connections per replica", figure)

    figure, axes = plt.subplots(figsize=(9, 3.2))
    for key in (*(f"dropped_{r}" for r in DROP_REASONS), "queued"):
        times, values = _per_time(timeline, key)
        if times:
            axes.plot(times, values, label=key.replace("dropped_", "dropped: "))
    axes.set_xlabel("s since start")
    axes.set_ylabel("frames (cumulative; queued: now)")
    axes.legend(loc="upper left")
    save("drops", "Drops by reason and queued frames (all replicas)", figure)

    figure, axes = plt.subplots(figsize=(9, 3.2))
    times = sorted({row["t_s"] for row in timeline})
    first = {row["t_s"]: row for row in timeline}
    axes.plot(
        times,
        [first[t]["locust_cpu_busiest"] for t in times],
        label="busiest Locust process",
    )
    axes.plot(
        times,
        [first[t]["locust_cpu_total"] for t in times],
        label="all Locust processes",
    )
    hub = [(t, first[t]["hub_cpu"]) for t in times if first[t]["hub_cpu"] != ""]
    if hub:
        axes.plot(*zip(*hub, strict=True), label="hub process (all replicas)")
    axes.axhline(90, color="grey", linestyle=":", linewidth=1)
    axes.set_xlabel("s since start")
    axes.set_ylabel("% of one core")
    axes.legend(loc="upper left")
    save("cpu", "CPU", figure)
    return charts


# -- page -------------------------------------------------------------------------


def _html(
    summary: dict[str, Any],
    reconciliation: Reconciliation,
    stats: list[dict[str, str]],
    charts: dict[str, str],
    locust_command: list[str],
    clients: dict[str, Any] | None,
) -> str:
    e = html.escape
    verdict = (
        '<p class="ok">Reconciled: the clients received exactly what the hubs '
        "delivered, the ledger held and every drop is explained.</p>"
        if reconciliation.passed
        else '<p class="bad">Did not reconcile: see the failed checks below.</p>'
    )
    warnings = "".join(f'<p class="warn">{e(w)}</p>' for w in summary["warnings"])
    checks = "".join(
        f'<tr><td class="{"ok" if c.ok else "bad"}">{"ok" if c.ok else "FAILED"}</td>'
        f"<td>{e(c.name)}</td><td>{e(c.detail)}</td></tr>"
        for c in reconciliation.checks
    )
    options = summary["options"]
    latency = summary["latency_ms"]
    figures = [
        ("command", summary["command"]),
        (
            "machine",
            f"{summary['machine']['cpus']} CPUs, load average "
            f"{summary['machine']['load_average']} at the end (shared machine?)",
        ),
        (
            "model",
            "open (Poisson arrivals, exponential stays)"
            if options["churn"]
            else "closed",
        ),
        ("users", options["users"]),
        ("peak open streams (hubs)", f"{summary['peak_open_streams']:.0f}"),
        ("events received", summary["received_total"]),
        (
            "events received per second (publishing phase)",
            summary["events_per_s_received"],
        ),
        (
            "latency p50 / p90 / p99 / max (ms)",
            " / ".join(
                "n/a" if latency[k] is None else f"{latency[k]:g}"
                for k in ("50%", "90%", "99%", "100%")
            ),
        ),
        (
            "hubs' own latency p50 / p90 / p99 (ms, histogram bucket bounds)",
            " / ".join(
                "n/a" if v is None else f"<= {v:g}"
                for v in summary["hub_latency_ms"].values()
            ),
        ),
        ("hub CPU, mean / max (% of a core)", _pair(summary["hub_cpu_percent"])),
        (
            "machine CPU while publishing, mean (% of all cores)",
            summary["machine_cpu_percent_mean"],
        ),
        (
            "busiest Locust process CPU, mean / max",
            _pair(summary["locust_cpu_percent_busiest"]),
        ),
    ]
    figure_rows = "".join(
        f"<tr><th>{e(str(k))}</th><td>{e(str(v))}</td></tr>" for k, v in figures
    )
    rows = reconciliation.to_json()["rows"]
    replica_rows = "".join(
        "<tr>"
        + "".join(
            f"<td>{e(str(v))}</td>"
            for v in (
                r["replica"],
                r["tenant"],
                r["dispatched"],
                r["fanout"],
                r["delivered"],
                *(r["dropped"].get(x, 0) for x in DROP_REASONS),
                r["queued_at_end"],
                r["ledger_gap_end"],
            )
        )
        + "</tr>"
        for r in rows
    )
    stat_columns = (
        "Type",
        "Name",
        "Request Count",
        "Failure Count",
        "50%",
        "90%",
        "99%",
        "100%",
        "Requests/s",
    )
    stat_rows = "".join(
        "<tr>"
        + "".join(f"<td>{e(row.get(c, ''))}</td>" for c in stat_columns)
        + "</tr>"
        for row in stats
    )
    client_rows = "".join(
        f"<tr><th>{e(k)}</th><td>{e(json.dumps(v, sort_keys=True))}</td></tr>"
        for k, v in sorted((clients or {}).items())
    )
    images = "".join(
        f'<h3>{e(name)}</h3><img alt="{e(name)}" src="data:image/png;base64,{data}">'
        for name, data in charts.items()
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>rcm-realtime load report</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; max-width: 70em; }}
table {{ border-collapse: collapse; margin: 1em 0; }}
td, th {{ border: 1px solid #ccc; padding: .25em .6em; text-align: left;
  vertical-align: top; font-size: .9em; }}
.ok {{ color: #176117; }} .bad {{ color: #a11; font-weight: bold; }}
.warn {{ background: #fff3cd; padding: .5em; }}
code {{ font-size: .85em; }}
</style></head><body>
<h1>Load run</h1>
{verdict}{warnings}
<h2>Figures</h2><table>{figure_rows}</table>
<h2>Reconciliation</h2><table><tr><th></th><th>check</th><th>detail</th></tr>{checks}</table>
<h2>Per replica and tenant, over the run</h2>
<table><tr><th>replica</th><th>tenant</th><th>dispatched</th><th>fanout</th>
<th>delivered</th>{"".join(f"<th>dropped {r}</th>" for r in DROP_REASONS)}
<th>queued at end</th><th>ledger gap</th></tr>{replica_rows}</table>
<h2>Charts</h2>{images}
<h2>Locust statistics</h2>
<table><tr>{"".join(f"<th>{e(c)}</th>" for c in stat_columns)}</tr>{stat_rows}</table>
<h2>What the clients counted</h2><table>{client_rows}</table>
<h2>Locust command</h2><p><code>{e(" ".join(locust_command))}</code></p>
<p>CSV files, logs and the PNGs are next to this page.</p>
</body></html>
"""


def _pair(figures: dict[str, float | None]) -> str:
    mean, peak = figures.get("mean"), figures.get("max")
    if mean is None or peak is None:
        return "not measured"
    return f"{mean:g} / {peak:g}"
