"""Scenarios: the pre-deploy regression suite, played on the simulator and on real
hubs with expectations on the contract's metrics and on client truth."""

from ._model import Scenario, ScenarioError, find_scenarios, load_scenario
from ._result import RunResult, compare_targets, judge
from ._runner import run_suite

__all__ = [
    "RunResult",
    "Scenario",
    "ScenarioError",
    "compare_targets",
    "find_scenarios",
    "judge",
    "load_scenario",
    "run_suite",
]
