"""What a scenario run shows people and machines: a table, JUnit XML, HTML plots."""

from __future__ import annotations

import html
import xml.etree.ElementTree as ElementTree
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ._result import FidelityRow, RunResult, Verdict


@dataclass(slots=True)
class ScenarioOutcome:
    name: str
    description: str
    results: dict[str, RunResult]  # by target
    verdicts: dict[str, list[Verdict]]
    fidelity: list[FidelityRow] | None
    error: str | None = None

    @property
    def passed(self) -> bool:
        if self.error is not None:
            return False
        if any(not v.passed for vs in self.verdicts.values() for v in vs):
            return False
        return self.fidelity is None or all(row.within for row in self.fidelity)


def _seen(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.6g}"


def _expected(verdict: Verdict) -> str:
    e = verdict.expectation
    what = e.check.value if e.metric and e.check.value != "value" else ""
    window = ""
    if e.check.value == "reaches":
        window = f" within {e.within_s:g} s of {e.from_s:g} s"
    elif e.to_s is not None or e.from_s:
        window = f" in [{e.from_s:g}, {e.to_s if e.to_s is not None else 'end'}] s"
    elif e.at_s is not None:
        window = f" at {e.at_s:g} s"
    return f"{what} {e.op.value} {e.value:g}{window}".strip()


def terminal_table(outcome: ScenarioOutcome) -> str:
    lines = [f"== {outcome.name}: {'PASS' if outcome.passed else 'FAIL'}"]
    if outcome.error is not None:
        lines.append(f"   error: {outcome.error}")
        return "\n".join(lines)
    for target, verdicts in outcome.verdicts.items():
        result = outcome.results[target]
        lines.append(f"   on {target} ({result.wall_s:.1f} s wall)")
        width = max((len(v.expectation.name) for v in verdicts), default=10)
        for verdict in verdicts:
            mark = "pass" if verdict.passed else "FAIL"
            detail = f"  ({verdict.detail})" if verdict.detail else ""
            lines.append(
                f"   {mark}  {verdict.expectation.name:<{width}}  "
                f"seen {_seen(verdict.seen):>9}  expected {_expected(verdict)}{detail}"
            )
    if outcome.fidelity is not None:
        off = [row for row in outcome.fidelity if not row.within]
        lines.append(
            f"   fidelity: {len(outcome.fidelity) - len(off)}/{len(outcome.fidelity)} "
            "counters agree within tolerance"
        )
        names = [
            f"{row.metric}{{{','.join(f'{k}={v}' for k, v in row.labels)}}}"
            for row in outcome.fidelity
        ]
        width = max((len(name) for name in names), default=10)
        for row, name in zip(outcome.fidelity, names, strict=True):
            mark = "pass" if row.within else "FAIL"
            lines.append(
                f"   {mark}  {name:<{width}}  sim {row.sim:>9g}  hub {row.hub:>9g}"
            )
    return "\n".join(lines)


def write_junit(outcomes: Sequence[ScenarioOutcome], path: Path) -> None:
    suites = ElementTree.Element("testsuites", name="rcm-realtime scenarios")
    for outcome in outcomes:
        suite = ElementTree.SubElement(suites, "testsuite", name=outcome.name)
        cases = 0
        failures = 0
        if outcome.error is not None:
            case = ElementTree.SubElement(
                suite, "testcase", classname=outcome.name, name="run"
            )
            ElementTree.SubElement(case, "error", message=outcome.error)
            cases += 1
            failures += 1
        for target, verdicts in outcome.verdicts.items():
            result = outcome.results[target]
            for verdict in verdicts:
                case = ElementTree.SubElement(
                    suite,
                    "testcase",
                    classname=f"{outcome.name}.{target}",
                    name=verdict.expectation.name,
                    time=f"{result.wall_s / max(len(verdicts), 1):.3f}",
                )
                cases += 1
                if not verdict.passed:
                    failures += 1
                    ElementTree.SubElement(
                        case,
                        "failure",
                        message=f"seen {_seen(verdict.seen)}, expected "
                        f"{_expected(verdict)} {verdict.detail}".strip(),
                    )
        for row in outcome.fidelity or []:
            labels = ",".join(f"{k}={v}" for k, v in row.labels)
            case = ElementTree.SubElement(
                suite,
                "testcase",
                classname=f"{outcome.name}.fidelity",
                name=f"{row.metric}{{{labels}}}",
            )
            cases += 1
            if not row.within:
                failures += 1
                ElementTree.SubElement(
                    case, "failure", message=f"sim {row.sim:g}, hub {row.hub:g}"
                )
        suite.set("tests", str(cases))
        suite.set("failures", str(failures))
    ElementTree.indent(suites)
    ElementTree.ElementTree(suites).write(path, encoding="utf-8", xml_declaration=True)


def _plot(result: RunResult, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    replicas = sorted({s.replica for s in result.samples})
    figure, axes = plt.subplots(1, 3, figsize=(15, 3.6))
    for replica in replicas:
        points = result.series("rcm_realtime_subscribers", {}, replica)
        axes[0].plot(
            [t for t, _ in points], [v for _, v in points], label=f"r{replica}"
        )
        backlog = result.series("rcm_realtime_bus_backlog", {}, replica)
        axes[2].plot(
            [t for t, _ in backlog], [v for _, v in backlog], label=f"r{replica}"
        )
    for reason in ("permission", "backpressure", "disconnected", "unknown_type"):
        points = result.series("rcm_realtime_dropped_total", {"reason": reason}, None)
        axes[1].plot([t for t, _ in points], [v for _, v in points], label=reason)
    titles = (
        "open streams per replica",
        "drops by reason (all replicas)",
        "bus backlog per replica",
    )
    for axis, title in zip(axes, titles, strict=True):
        axis.set_title(title)
        axis.set_xlabel("scenario time (s)")
        axis.set_ylim(bottom=0)
        for at, action in result.operations:
            axis.axvline(at, color="grey", linestyle=":", linewidth=1)
            axis.annotate(action, (at, 0), fontsize=6, rotation=90, color="grey")
        axis.legend(fontsize=7)
    figure.suptitle(f"{result.scenario.name} on {result.target}")
    figure.tight_layout()
    figure.savefig(path, dpi=80)
    plt.close(figure)


def write_html(outcomes: Sequence[ScenarioOutcome], directory: Path) -> Path:
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        "<title>rcm-realtime scenarios</title><style>",
        "body{font-family:sans-serif;margin:2em;max-width:1200px}",
        "td,th{padding:2px 8px;text-align:left}.pass{color:#176f2c}",
        ".fail{color:#b00020;font-weight:bold}img{max-width:100%}",
        "</style></head><body><h1>Scenario report</h1><ul>",
    ]
    for outcome in outcomes:
        status = "pass" if outcome.passed else "fail"
        parts.append(
            f"<li><a href='#{outcome.name}'>{outcome.name}</a> "
            f"<span class='{status}'>{status.upper()}</span></li>"
        )
    parts.append("</ul>")
    for outcome in outcomes:
        parts.append(f"<h2 id='{outcome.name}'>{html.escape(outcome.name)}</h2>")
        parts.append(f"<p>{html.escape(outcome.description)}</p>")
        if outcome.error:
            parts.append(f"<p class='fail'>{html.escape(outcome.error)}</p>")
            continue
        for target, verdicts in outcome.verdicts.items():
            result = outcome.results[target]
            image = f"{outcome.name}-{target}.png"
            _plot(result, directory / image)
            parts.append(f"<h3>on {target} ({result.wall_s:.1f} s wall)</h3><table>")
            parts.append(
                "<tr><th></th><th>expectation</th><th>seen</th><th>expected</th></tr>"
            )
            for verdict in verdicts:
                mark = "pass" if verdict.passed else "fail"
                parts.append(
                    f"<tr><td class='{mark}'>{mark}</td>"
                    f"<td>{html.escape(verdict.expectation.name)}</td>"
                    f"<td>{_seen(verdict.seen)}</td>"
                    f"<td>{html.escape(_expected(verdict))} "
                    f"{html.escape(verdict.detail)}</td></tr>"
                )
            parts.append(f"</table><img src='{image}' alt='{target} plots'>")
        if outcome.fidelity:
            parts.append("<h3>fidelity: simulator against hub</h3><table>")
            parts.append("<tr><th>counter</th><th>sim</th><th>hub</th><th></th></tr>")
            for row in outcome.fidelity:
                labels = ",".join(f"{k}={v}" for k, v in row.labels)
                mark = "pass" if row.within else "fail"
                parts.append(
                    f"<tr><td>{html.escape(row.metric)}{{{html.escape(labels)}}}</td>"
                    f"<td>{row.sim:g}</td><td>{row.hub:g}</td>"
                    f"<td class='{mark}'>{mark}</td></tr>"
                )
            parts.append("</table>")
    parts.append("</body></html>")
    page = directory / "index.html"
    page.write_text("\n".join(parts), "utf-8")
    return page
