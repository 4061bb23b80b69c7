"""`rcm-realtime scenarios run`: the pre-deploy regression suite."""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from ._hub_target import run_on_hub
from ._model import Scenario, ScenarioError, find_scenarios, load_scenario
from ._report import ScenarioOutcome, terminal_table, write_html, write_junit
from ._result import RunResult, compare_targets, judge

DEFAULT_TIME_SCALE = 0.1


class ProgressLine:
    """One line on stderr, rewritten in place on a terminal, appended otherwise."""

    def __init__(self) -> None:
        self.interactive = sys.stderr.isatty()
        self.started = time.monotonic()

    def __call__(self, text: str) -> None:
        elapsed = time.monotonic() - self.started
        line = f"[{elapsed:6.1f} s] {text}"
        if self.interactive:
            sys.stderr.write("\r\x1b[2K" + line[:150])
        else:
            sys.stderr.write(line + "\n")
        sys.stderr.flush()

    def finish(self) -> None:
        if self.interactive:
            sys.stderr.write("\n")


def _run_target(
    scenario: Scenario,
    target: str,
    *,
    time_scale: float,
    bus_url: str | None,
    progress: Callable[[str], None],
) -> RunResult:
    if target == "hub":
        return asyncio.run(
            run_on_hub(
                scenario, time_scale=time_scale, bus_url=bus_url, progress=progress
            )
        )
    from ._sim_target import run_on_sim

    return run_on_sim(scenario, progress=progress)


def run_suite(
    paths: list[Path],
    *,
    targets: list[str],
    time_scale: float,
    bus_url: str | None,
    report_dir: Path,
) -> list[ScenarioOutcome]:
    progress = ProgressLine()
    outcomes: list[ScenarioOutcome] = []
    for number, path in enumerate(paths, start=1):
        scenario = load_scenario(path)
        results: dict[str, RunResult] = {}
        verdicts = {}
        error = None
        for target in targets:
            if target not in scenario.targets:
                continue
            progress(f"[{number}/{len(paths)}] {scenario.name} on {target}")
            try:
                result = _run_target(
                    scenario,
                    target,
                    time_scale=time_scale,
                    bus_url=bus_url,
                    progress=progress,
                )
            except ScenarioError:
                raise
            except Exception as failure:
                error = f"{target} run failed: {type(failure).__name__}: {failure}"
                break
            results[target] = result
            verdicts[target] = judge(result)
        fidelity = None
        if error is None and "sim" in results and "hub" in results:
            fidelity = compare_targets(results["sim"], results["hub"])
        outcome = ScenarioOutcome(
            scenario.name, scenario.description, results, verdicts, fidelity, error
        )
        outcomes.append(outcome)
        progress(
            f"[{number}/{len(paths)}] {scenario.name}: "
            f"{'pass' if outcome.passed else 'FAIL'}"
        )
    progress.finish()
    report_dir.mkdir(parents=True, exist_ok=True)
    write_junit(outcomes, report_dir / "junit.xml")
    write_html(outcomes, report_dir)
    return outcomes


def add_scenarios_command(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
) -> None:
    parser = commands.add_parser(
        "scenarios", help="the pre-deploy regression suite of scenarios"
    )
    actions = parser.add_subparsers(dest="scenarios_action", required=True)
    run = actions.add_parser("run", help="play scenarios and check their expectations")
    run.add_argument("names", nargs="*", help="shipped scenario names or .toml paths")
    run.add_argument("--target", choices=["sim", "hub", "both"], default="hub")
    run.add_argument(
        "--time-scale",
        type=float,
        default=DEFAULT_TIME_SCALE,
        help="multiplies every duration on the hub target (default %(default)s)",
    )
    run.add_argument("--bus", help="'memory' (default) or an amqp:// URL for the hub")
    run.add_argument("--report-dir", type=Path, help="default reports/<timestamp>")
    run.set_defaults(run=_run_command)
    listing = actions.add_parser("list", help="the shipped scenarios")
    listing.set_defaults(run=_list_command)


def _list_command(args: argparse.Namespace) -> int:
    for path in find_scenarios([]):
        scenario = load_scenario(path)
        first = scenario.description.strip().splitlines()[0]
        print(f"{scenario.name:<40} {first}")
    return 0


def _run_command(args: argparse.Namespace) -> int:
    if not 0 < args.time_scale <= 10:
        raise ScenarioError("--time-scale must be above 0 and at most 10")
    paths = find_scenarios(args.names)
    for path in paths:
        load_scenario(path)  # every file is checked before anything runs
    targets = ["sim", "hub"] if args.target == "both" else [args.target]
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    report_dir = args.report_dir or Path("reports") / stamp
    started = time.monotonic()
    outcomes = run_suite(
        paths,
        targets=targets,
        time_scale=args.time_scale,
        bus_url=args.bus,
        report_dir=report_dir,
    )
    for outcome in outcomes:
        print(terminal_table(outcome))
    failed = [o.name for o in outcomes if not o.passed]
    print()
    print(
        f"{len(outcomes) - len(failed)} passed, {len(failed)} failed "
        f"in {time.monotonic() - started:.1f} s"
    )
    if failed:
        print(f"failed: {', '.join(failed)}")
    print(f"report: {report_dir / 'index.html'} (JUnit: {report_dir / 'junit.xml'})")
    return 1 if failed else 0
