"""What a soak prints, and the JSON summary and memory plot it leaves behind."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

from ._model import StreamEnd
from ._run import SoakResult

SUMMARY_NAME = "soak-summary.json"
PLOT_NAME = "soak-rss.png"
MIB = 1024 * 1024


def _n(value: float) -> str:
    return f"{value:,.0f}".replace(",", " ")


def _mib(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def figures(result: SoakResult) -> dict[str, Any]:
    """The run's figures, shared by the text and the JSON summary."""
    streams = result.streams
    opened = [s for s in streams if s.status == 200]
    ends = Counter(s.end.value for s in opened)
    sessions = result.sessions
    outcomes = Counter(s.outcome for s in sessions)
    concurrency = _mean_sessions(result)
    return {
        "eventsPublished": result.publisher.published,
        "eventsPerTenant": dict(sorted(result.publisher.per_tenant.items())),
        "publishRequests": result.publisher.requests,
        "publishRefused": result.publisher.refused,
        "publishUnanswered": result.publisher.unanswered,
        "eventsHeldBack": result.publisher.held_back,
        "sessions": len(sessions),
        "sessionsMeanConcurrent": round(concurrency, 1),
        "sessionsFlapping": sum(1 for s in sessions if s.flapping),
        "sessionsNarrowScopes": sum(1 for s in sessions if s.narrow),
        "sessionsEnded": dict(sorted(outcomes.items())),
        "connections": len(streams),
        "streams": len(opened),
        "streamsRefused": len(streams) - len(opened),
        "streamsResumed": sum(1 for s in opened if s.resumed),
        "streamsEnded": dict(sorted(ends.items())),
        "clientDrops": sum(s.drops for s in sessions),
        "reloadNotices": sum(s.reload_notices for s in opened),
        "framesReceived": sum(s.received for s in opened),
        "duplicateFrames": sum(s.duplicates for s in opened),
        "duplicateFramesAfterCompletionResume": sum(
            s.duplicates for s in opened if s.resumed_after_completion
        ),
        "streamsResumedAfterCompletion": sum(
            1 for s in opened if s.resumed_after_completion
        ),
        "duplicateFramesByType": dict(
            sorted(sum((Counter(s.duplicate_types) for s in opened), Counter()).items())
        ),
    }


def _mean_sessions(result: SoakResult) -> float:
    duration = result.plan.duration_s
    alive = 0.0
    for session in result.sessions:
        end = session.ended_s if session.ended_s is not None else duration
        alive += max(0.0, min(end, duration) - max(session.started_s, 0.0))
    return alive / duration if duration else 0.0


def text_report(result: SoakResult, report_dir: Path) -> str:
    fig = figures(result)
    options = result.options
    lines = [
        f"rcm-realtime soak: {'PASSED' if result.passed else 'FAILED'}",
        f"run          {result.plan.duration_s:g} s of load ({result.wall_s:.0f} s "
        f"wall), {options.replicas} replicas, {options.events_per_s:g} events/s, "
        f"exchange {result.exchange}",
        f"events       {_n(fig['eventsPublished'])} published in "
        f"{_n(fig['publishRequests'])} requests ({_n(fig['publishRefused'])} refused "
        f"while the broker was down and sent again, {_n(fig['publishUnanswered'])} "
        f"unanswered and sent again, {_n(fig['eventsHeldBack'])} held back)",
        f"clients      {_n(fig['sessions'])} sessions, {fig['sessionsMeanConcurrent']} "
        f"at a time on average ({fig['sessionsFlapping']} flapping, "
        f"{fig['sessionsNarrowScopes']} with narrow scopes); ended: "
        + ", ".join(f"{k} {v}" for k, v in fig["sessionsEnded"].items()),
        f"connections  {_n(fig['connections'])} ({_n(fig['streams'])} streams, "
        f"{_n(fig['streamsRefused'])} refused; {_n(fig['streamsResumed'])} resumed "
        f"with Last-Event-ID; {fig['clientDrops']} flapping drops; ended "
        + ", ".join(f"{k} {v}" for k, v in fig["streamsEnded"].items())
        + f"; {fig['reloadNotices']} reload notices)",
        f"frames       {_n(fig['framesReceived'])} received by clients "
        f"({fig['duplicateFrames']} duplicates"
        + "".join(f", {n} {kind}" for kind, n in fig["duplicateFramesByType"].items())
        + f"; {fig['duplicateFramesAfterCompletionResume']} of them on the "
        f"{fig['streamsResumedAfterCompletion']} streams resumed after a "
        "batch.completed id)",
    ]
    for index, fault in enumerate(result.faults):
        head = "faults       " if index == 0 else "             "
        lines.append(head + _fault_line(fault, result))
    if result.unplanned_outages:
        lines.append(
            f"             {len(result.unplanned_outages)} broker outages this soak "
            "did not inject (another run restarted the shared broker):"
        )
        lines += [
            f"               {outage.describe()}" for outage in result.unplanned_outages
        ]
    lines.append("memory (RSS, MiB)  start    end   peak  judged span      verdict")
    for verdict in result.verdicts:
        state = "flat" if verdict.flat else "GROWING" if verdict.flat is False else "-"
        lines.append(
            f"  {verdict.instance:<14}{_mib(verdict.start_mib):>7}"
            f"{_mib(verdict.end_mib):>7}{_mib(verdict.peak_mib):>7}  "
            f"{verdict.judged_from_s:5.0f}-{verdict.judged_until_s:<5.0f} s    "
            f"{state}: {verdict.note}"
        )
    lines.append("checks")
    for check in result.checks:
        lines.append(
            f"  {'PASS' if check.passed else 'FAIL'} {check.title}: {check.summary}"
        )
        limit = None if not check.passed else 6
        for detail in check.details[:limit]:
            lines.append(f"       {detail}")
    lines.append(
        f"report       {report_dir / SUMMARY_NAME}, {report_dir / PLOT_NAME}, "
        f"replica logs in {report_dir / 'logs'}"
    )
    return "\n".join(lines)


def _fault_line(fault: Any, result: SoakResult) -> str:
    if not fault.injected and fault.started_s is None:
        return f"{fault.kind}: NOT INJECTED ({fault.error})"
    steps = ", ".join(f"{name} at {at:.1f} s" for name, at in fault.steps.items())
    ended = "-" if fault.ended_s is None else f"{fault.ended_s:.1f} s"
    text = (
        f"{fault.kind} of {fault.target} at {fault.started_s:.1f} s: {steps}; "
        f"recovered at {ended} ({fault.streams_open} streams open)"
    )
    if fault.error:
        text += f" FAILED: {fault.error}"
    return text


def summary_document(result: SoakResult) -> dict[str, Any]:
    options = result.options
    plan = result.plan
    return {
        "passed": result.passed,
        "options": {
            "durationS": options.duration_s,
            "replicas": options.replicas,
            "clients": options.clients,
            "eventsPerS": options.events_per_s,
            "bus": options.bus_url.split("@")[-1],
            "seed": options.seed,
        },
        "plan": {
            "warmupS": plan.warmup_s,
            "brokerRestartAtS": plan.broker_restart_at_s,
            "brokerDownS": plan.broker_down_s,
            "killAtS": plan.kill_at_s,
            "killDownS": plan.kill_down_s,
            "sessionLifeS": plan.session_life_s,
            "flappingShare": plan.flapping_share,
            "flapEveryS": plan.flap_every_s,
            "darkS": [plan.dark_min_s, plan.dark_max_s],
            "closeShare": plan.close_share,
            "narrowShare": plan.narrow_share,
        },
        "runId": result.run_id,
        "exchange": result.exchange,
        "hubEnvironment": result.hub_environment,
        "wallStartedAt": result.wall_started,
        "wallS": round(result.wall_s, 1),
        "figures": figures(result),
        "faults": [
            {
                "kind": fault.kind,
                "target": fault.target,
                "plannedS": fault.planned_s,
                "startedS": fault.started_s,
                "endedS": fault.ended_s,
                "injected": fault.injected,
                "steps": fault.steps,
                "streamsOpen": fault.streams_open,
                "error": fault.error,
            }
            for fault in result.faults
        ],
        "unplannedBrokerOutages": [
            {"atS": o.at_s, "instances": list(o.instances), "downS": o.down_s}
            for o in result.unplanned_outages
        ],
        "instances": [
            {
                "instance": instance.key,
                "pid": instance.pid,
                "port": instance.port,
                "spawnedS": round(instance.spawned_s, 3),
                "readyS": None
                if instance.ready_s is None
                else round(instance.ready_s, 3),
                "killedS": instance.killed_s,
                "exitCode": instance.exit_code,
                "log": str(instance.log_path),
                "logLevels": result.log_levels.get(instance.key, {}),
                "final": _scrape_json(result.final.get(instance.key)),
                "lastSeen": _scrape_json(result.last_seen.get(instance.key)),
            }
            for instance in result.instances
        ],
        "memory": [verdict.to_json() for verdict in result.verdicts],
        "rssSamples": {
            key: [[round(at, 2), rss] for at, rss in samples]
            for key, samples in sorted(result.memory.items())
        },
        "reconciliation": [r.to_json() for r in result.reconciliations],
        "cutTolerance": result.cut_tolerance,
        "excusedErrors": [
            {"instance": r.instance, "atS": r.at_s, "line": r.text}
            for r in result.excused_errors
        ],
        "scrapes": result.scrapes,
        "checks": [check.to_json() for check in result.checks],
        "problems": result.problems,
        "streamEnds": {
            end.value: sum(1 for s in result.streams if s.end is end)
            for end in StreamEnd
        },
    }


def _scrape_json(scrape: Any) -> dict[str, Any] | None:
    if scrape is None:
        return None
    return {
        "atS": round(scrape.at_s, 2),
        "backlog": scrape.backlog,
        "tenants": {
            tenant: {
                "fanout": f.fanout,
                "delivered": f.delivered,
                "droppedPermission": f.dropped_permission,
                "droppedBackpressure": f.dropped_backpressure,
                "droppedDisconnected": f.dropped_disconnected,
                "queued": f.queued,
                "dispatched": f.dispatched,
                "subscribers": f.subscribers,
            }
            for tenant, f in sorted(scrape.tenants.items())
        },
    }


def write_summary(result: SoakResult, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(summary_document(result), indent=2) + "\n", "utf-8")


def plot_memory(result: SoakResult, path: Path) -> None:
    """RSS over time per replica instance, with the faults and warm-up marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(11, 5.5))
    for key, samples in sorted(result.memory.items()):
        if samples:
            axes.plot(
                [at for at, _ in samples],
                [rss / MIB for _, rss in samples],
                label=key,
                linewidth=1.2,
            )
    axes.axvline(result.plan.warmup_s, color="grey", linestyle=":", linewidth=1)
    axes.text(
        result.plan.warmup_s,
        1.0,
        " warm-up ends",
        transform=axes.get_xaxis_transform(),
        va="top",
        fontsize=8,
        color="grey",
    )
    for fault in result.faults:
        if fault.started_s is None:
            continue
        end = fault.ended_s if fault.ended_s is not None else fault.started_s
        if fault.kind == "broker_restart":
            axes.axvspan(fault.started_s, end, color="tab:orange", alpha=0.15)
            label = "broker restart"
        else:
            axes.axvline(fault.started_s, color="tab:red", linewidth=1.2)
            axes.axvspan(fault.started_s, end, color="tab:red", alpha=0.1)
            label = f"SIGKILL {fault.target}"
        axes.text(
            fault.started_s,
            0.02,
            f" {label}",
            transform=axes.get_xaxis_transform(),
            fontsize=8,
            rotation=90,
            va="bottom",
        )
    for outage in result.unplanned_outages:
        axes.axvline(outage.at_s, color="grey", linestyle="--", linewidth=0.8)
    if result.unplanned_outages:
        axes.plot(
            [], [], color="grey", linestyle="--", label="broker outage (not injected)"
        )
    axes.set_xlabel("seconds of load")
    axes.set_ylabel("RSS (MiB)")
    axes.set_title(
        f"Replica memory during the soak ({result.plan.duration_s:g} s, "
        f"{result.options.events_per_s:g} events/s, "
        f"{figures(result)['sessions']} sessions)"
    )
    axes.set_xlim(0, result.plan.duration_s)
    axes.grid(alpha=0.3)
    axes.legend(loc="lower right", fontsize=8)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
