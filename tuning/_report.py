"""What the tuner shows: a table for people, a JSON document for machines, a plot."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._arrivals import Partner
from ._recommend import Recommendation, Recommendations
from ._sweep import WindowResult, WindowStats

# Above this many partners the plot shows only the overall curve; more lines than
# this cannot be told apart.
PLOT_PARTNER_LIMIT = 8


@dataclass(frozen=True, slots=True)
class TuningReport:
    """Everything one run found, in the form every output is drawn from."""

    source: str
    kind: str  # "model" or "log"
    seed: int | None
    partners: tuple[Partner, ...]
    interchanges: int
    events: int
    target_share: float
    results: tuple[WindowResult, ...]
    recommendations: Recommendations


# -- table --------------------------------------------------------------------------


def render_table(report: TuningReport) -> str:
    lines = [_headline(report), ""]
    overall_ms = report.recommendations.overall.window_ms
    lines += [
        "  window  premature   95% upper  completions  latency p50  latency p95"
        "  open buckets",
        "    (ms)        (%)         (%) /interchange          (s)          (s)"
        "   peak   mean",
    ]
    for result in report.results:
        stats = result.overall
        mark = "  <- recommended" if result.window_ms == overall_ms else ""
        lines.append(
            f"{stats.window_ms:>8}  {_percent(stats.premature_share):>9}"
            f"  {_percent(stats.premature_share_upper):>10}"
            f"  {stats.completions_per_interchange:>11.3f}"
            f"  {_seconds(stats.latency_p50_s):>11}"
            f"  {_seconds(stats.latency_p95_s):>11}"
            f"  {stats.open_peak:>5}  {stats.open_mean:>5.2f}{mark}"
        )
    lines.append(
        "  latency: from an interchange's last occurredAt to its final batch.completed."
    )
    lines.append("")

    recommendations = report.recommendations
    target = _percent(report.target_share)
    lines.append(
        f"recommended realtimeBatchQuietWindowMs (premature share <= {target} %):"
    )
    for item in (recommendations.overall, recommendations.every_partner):
        lines.append(f"  {item.scope:<14} {_recommendation_line(item)}")
    lines.append("")

    label_width = max(
        [len("trading partner")] + [len(p.label) for p in report.partners]
    )
    at_overall = (
        next(r for r in report.results if r.window_ms == overall_ms)
        if overall_ms is not None
        else None
    )
    lines.append(
        f"  {'trading partner':<{label_width}}  window (ms)  premature (%)"
        f"  95% upper (%)  interchanges"
        + (f"  premature at {overall_ms} ms (%)" if at_overall else "")
    )
    for index, item in enumerate(recommendations.partners):
        window = "none" if item.window_ms is None else str(item.window_ms)
        line = (
            f"  {item.scope:<{label_width}}  {window:>11}"
            f"  {_percent(item.stats.premature_share):>13}"
            f"  {_percent(item.stats.premature_share_upper):>13}"
            f"  {item.stats.interchanges:>12,}"
        )
        if at_overall is not None:
            line += f"  {_percent(at_overall.partners[index].premature_share):>21}"
        lines.append(line)

    notes = _notes(report)
    if notes:
        lines.append("")
        lines.extend(notes)
    return "\n".join(lines) + "\n"


def _headline(report: TuningReport) -> str:
    seed = f" (seed {report.seed})" if report.seed is not None else ""
    return (
        f"quiet window sweep on {report.source}{seed}: {len(report.partners)} "
        f"trading partners, {report.interchanges:,} interchanges, "
        f"{report.events:,} events"
    )


def _recommendation_line(item: Recommendation) -> str:
    stats = item.stats
    if item.window_ms is None:
        return (
            f"none of the windows tried; the widest, {stats.window_ms} ms, leaves "
            f"{_percent(stats.premature_share)} % premature"
        )
    return (
        f"{item.window_ms:>6} ms  premature {_percent(stats.premature_share)} % "
        f"(95% upper bound {_percent(stats.premature_share_upper)} %) of "
        f"{stats.interchanges:,} interchanges"
    )


def _notes(report: TuningReport) -> list[str]:
    recommendations = report.recommendations
    notes: list[str] = []
    unconfirmed = [
        item
        for item in (recommendations.overall, *recommendations.partners)
        if item.window_ms is not None and not item.confirmed
    ]
    if unconfirmed:
        needed = unconfirmed[0].interchanges_to_confirm
        scopes = ", ".join(item.scope for item in unconfirmed)
        notes.append(
            f"note: too few interchanges to confirm the target at 95 % confidence "
            f"for: {scopes}."
        )
        if needed is not None:
            notes.append(
                f"      About {needed:,} interchanges without a premature completion "
                "would confirm it; widen the log or the model."
            )
    missing = [
        item.scope for item in recommendations.partners if item.window_ms is None
    ]
    if missing:
        notes.append(
            f"note: no window tried meets the target for: {', '.join(missing)}; "
            "sweep wider windows (--windows or --window-range)."
        )
    return notes


def _percent(share: float) -> str:
    return f"{share * 100:.3f}"


def _seconds(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.3f}"


# -- JSON ---------------------------------------------------------------------------


def report_json(report: TuningReport) -> dict[str, Any]:
    def stats_json(stats: WindowStats) -> dict[str, Any]:
        return {
            "window_ms": stats.window_ms,
            "interchanges": stats.interchanges,
            "premature_interchanges": stats.premature,
            "premature_share": stats.premature_share,
            "premature_share_upper95": stats.premature_share_upper,
            "completions": stats.completions,
            "completions_per_interchange": stats.completions_per_interchange,
            "max_completions_per_interchange": stats.max_completions,
            "latency_p50_s": _finite(stats.latency_p50_s),
            "latency_p95_s": _finite(stats.latency_p95_s),
            "open_buckets_peak": stats.open_peak,
            "open_buckets_mean": stats.open_mean,
        }

    def recommendation_json(item: Recommendation) -> dict[str, Any]:
        return {
            "scope": item.scope,
            "window_ms": item.window_ms,
            "confirmed95": item.confirmed,
            "stats": stats_json(item.stats),
        }

    recommendations = report.recommendations
    return {
        "input": {
            "kind": report.kind,
            "source": report.source,
            "seed": report.seed,
            "trading_partners": len(report.partners),
            "interchanges": report.interchanges,
            "events": report.events,
        },
        "target_premature_share": report.target_share,
        "windows": [
            {
                **stats_json(result.overall),
                "partners": [
                    {
                        "tenant_id": partner.tenant_id,
                        "trading_partner_id": partner.trading_partner_id,
                        **stats_json(stats),
                    }
                    for partner, stats in zip(
                        report.partners, result.partners, strict=True
                    )
                ],
            }
            for result in report.results
        ],
        "recommendation": {
            "overall": recommendation_json(recommendations.overall),
            "every_partner": recommendation_json(recommendations.every_partner),
            "partners": [
                {
                    "tenant_id": partner.tenant_id,
                    "trading_partner_id": partner.trading_partner_id,
                    **recommendation_json(item),
                }
                for partner, item in zip(
                    report.partners, recommendations.partners, strict=True
                )
            ],
        },
    }


def _finite(value: float) -> float | None:
    return None if math.isnan(value) else value


# -- plot ---------------------------------------------------------------------------


def draw_plot(report: TuningReport, path: Path) -> None:
    """Premature share (log scale) and latency against the window, one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    windows_s = [result.window_ms / 1000 for result in report.results]
    # A log axis cannot show zero; a share of zero is drawn on a floor, hollow,
    # below both the smallest share one interchange makes and the target.
    target = report.target_share * 100
    floor = 50 / max(report.interchanges, 1)
    if target > 0:
        floor = min(floor, target / 10)

    figure, (upper, lower) = plt.subplots(
        2, 1, sharex=True, figsize=(9, 7.5), height_ratios=(3, 2)
    )
    figure.suptitle(
        f"realtimeBatchQuietWindowMs sweep: {report.source}\n"
        f"{len(report.partners)} trading partners, {report.interchanges:,} "
        f"interchanges",
        fontsize=11,
    )

    def shares(stats: list[WindowStats]) -> list[float]:
        return [max(s.premature_share * 100, floor) for s in stats]

    if len(report.partners) <= PLOT_PARTNER_LIMIT:
        for index, partner in enumerate(report.partners):
            upper.plot(
                windows_s,
                shares([r.partners[index] for r in report.results]),
                linewidth=1,
                alpha=0.7,
                label=partner.label,
            )
    overall = [r.overall for r in report.results]
    upper.plot(
        windows_s, shares(overall), color="black", linewidth=2.2, label="overall"
    )
    upper.scatter(
        [w for w, s in zip(windows_s, overall, strict=True) if s.premature == 0],
        [floor for s in overall if s.premature == 0],
        facecolors="none",
        edgecolors="black",
        zorder=3,
        label="none premature",
    )
    upper.axhline(
        target if target > 0 else floor,
        color="tab:red",
        linestyle="--",
        linewidth=1,
        label=f"target {report.target_share * 100:g} %",
    )
    upper.set_yscale("log")
    upper.set_ylabel("interchanges with a premature\nbatch.completed (%)")
    upper.grid(True, which="both", alpha=0.3)

    lower.plot(
        windows_s,
        [s.latency_p50_s for s in overall],
        color="tab:blue",
        label="p50",
    )
    lower.plot(
        windows_s,
        [s.latency_p95_s for s in overall],
        color="tab:orange",
        label="p95",
    )
    lower.set_ylabel("completion latency after\nthe interchange's end (s)")
    lower.set_xlabel("quiet window (s)")
    lower.grid(True, alpha=0.3)
    buckets = lower.twinx()
    buckets.plot(
        windows_s,
        [s.open_mean for s in overall],
        color="tab:gray",
        linestyle=":",
        label="open buckets (mean)",
    )
    buckets.set_ylabel("open buckets held (mean)", color="tab:gray")
    buckets.tick_params(axis="y", colors="tab:gray")
    buckets.set_ylim(bottom=0)

    chosen = report.recommendations.overall.window_ms
    if chosen is not None:
        for axis in (upper, lower):
            axis.axvline(chosen / 1000, color="tab:green", linewidth=1.5)
        upper.annotate(
            f"recommended {chosen} ms",
            xy=(chosen / 1000, 1.0),
            xycoords=("data", "axes fraction"),
            xytext=(4, -14),
            textcoords="offset points",
            color="tab:green",
            fontsize=9,
        )
        at = report.recommendations.overall.stats
        lower.annotate(
            f"p50 {at.latency_p50_s:.2f} s, p95 {at.latency_p95_s:.2f} s",
            xy=(chosen / 1000, at.latency_p95_s),
            xytext=(8, -18),
            textcoords="offset points",
            color="tab:green",
            fontsize=9,
            bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.85},
        )
    upper.legend(fontsize=8, loc="center right")
    lines, labels = lower.get_legend_handles_labels()
    more_lines, more_labels = buckets.get_legend_handles_labels()
    lower.legend(lines + more_lines, labels + more_labels, fontsize=8, loc="upper left")

    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
