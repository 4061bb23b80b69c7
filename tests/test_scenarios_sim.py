"""The scenario runner's simulator target: scenarios played in simulated time on
the hub's own core, judged like the hub target, and compared with it."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from scenarios import compare_targets, find_scenarios, judge, load_scenario
from scenarios._hub_target import run_on_hub
from scenarios._model import Scenario, parse_scenario
from scenarios._sim_target import run_on_sim

SMALL = """
name = "small"
description = "steady and slow readers through a rolling deploy"
duration_s = 20
seed = 5

[hub]
queue_size = 8
retry_ms = 500
shutdown_retry_spread_ms = 500

[topology]
replicas = 2

[[topology.subscribers]]
name = "steady"
tenant = "acme"
count = 4
roles = ["BILLING_SPECIALIST"]

[[topology.subscribers]]
name = "slow"
tenant = "acme"
roles = ["BILLING_SPECIALIST"]
behaviour = "slow"
read_rate_per_s = 1

[[workload.events]]
tenant = "acme"
types = ["claim.submitted", "remittance.payment.posted"]
rate_per_s = 40
payload_bytes = 1000

[[timeline]]
at_s = 8
action = "rolling_deploy"
every_s = 3

[[expect]]
name = "steady readers miss nothing"
truth = "missed_events"
group = "steady"
value = 0

[[expect]]
name = "the slow reader overflows"
metric = "rcm_realtime_dropped_total"
labels = { reason = "backpressure" }
op = ">"
value = 0

[[expect]]
name = "remittance refused for permission"
metric = "rcm_realtime_dropped_total"
labels = { reason = "permission" }
op = ">"
value = 0

[[expect]]
name = "every steady stream saw the deploy"
truth = "shutdown_frames"
group = "steady"
aggregate = "min"
op = ">="
value = 1

[[expect]]
name = "no event leaked"
truth = "leaked_events"
value = 0
"""


def small_scenario() -> Scenario:
    return parse_scenario(tomllib.loads(SMALL), source="small.toml")


def test_small_scenario_passes_on_sim() -> None:
    """Every expectation of a small scenario holds on the simulator, sampled every
    half second per replica like the hub target's scrapes."""
    result = run_on_sim(small_scenario())

    failed = [v.expectation.name for v in judge(result) if not v.passed]
    assert failed == []
    assert result.target == "sim"
    times = sorted({s.at_s for s in result.samples if s.replica == 2})
    assert times[:4] == [0.0, 0.5, 1.0, 1.5]
    assert times[-1] == pytest.approx(21.0)
    assert [c.name for c in result.clients] == [
        "steady-0",
        "steady-1",
        "steady-2",
        "steady-3",
        "slow-0",
    ]
    assert result.operations == [(8.0, "rolling_deploy")]


def test_sim_target_is_deterministic() -> None:
    """The same scenario twice gives identical samples, clients and interchanges."""
    first = run_on_sim(small_scenario())
    second = run_on_sim(small_scenario())

    assert first.samples == second.samples
    assert first.clients == second.clients
    assert first.interchanges == second.interchanges


def test_restarted_replicas_carry_their_counters_on() -> None:
    """Across a rolling deploy a replica's counters never go back: the new
    process's counts are added to what the old one had counted."""
    result = run_on_sim(small_scenario())

    for replica in (1, 2):
        points = result.series(
            "rcm_realtime_events_dispatched_total", {}, replica=replica
        )
        values = [value for _, value in points]
        assert values == sorted(values)
    assert result.final("rcm_realtime_disconnects_total", {"reason": "shutdown"}) >= 5


@pytest.mark.parametrize("path", find_scenarios([]), ids=lambda path: Path(path).stem)
def test_shipped_scenario_passes_on_sim(path: Path) -> None:
    """Every shipped scenario's expectations hold on the simulator."""
    result = run_on_sim(load_scenario(path))

    failed = [
        f"{v.expectation.name}: seen {v.seen}" for v in judge(result) if not v.passed
    ]
    assert failed == []


def test_fidelity_of_a_shipped_scenario_holds() -> None:
    """The stale-role scenario's counters on the simulator and on real hubs agree
    within its tolerance."""
    scenario = load_scenario(find_scenarios(["stale-role"])[0])
    sim = run_on_sim(scenario)
    hub = asyncio.run(run_on_hub(scenario, time_scale=0.1))

    rows = compare_targets(sim, hub)
    assert {row.metric for row in rows} >= {
        "rcm_realtime_fanout_total",
        "rcm_realtime_delivered_total",
        "rcm_realtime_dropped_total",
    }
    off = [(row.metric, row.labels, row.sim, row.hub) for row in rows if not row.within]
    assert off == []


def test_runner_on_both_targets_prints_fidelity(tmp_path: Path) -> None:
    """`scenarios run --target both` plays the scenario on each target and prints
    every compared counter with both figures."""
    scenario = tmp_path / "small.toml"
    scenario.write_text(SMALL)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "hub.cli",
            "scenarios",
            "run",
            str(scenario),
            "--target",
            "both",
            "--report-dir",
            str(tmp_path / "report"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert "on sim" in result.stdout and "on hub" in result.stdout
    assert "counters agree within tolerance" in result.stdout
    assert "pass  rcm_realtime_fanout_total{tenant_id=acme}" in result.stdout
