"""The scenario format, the runner on real hubs, and its reports."""

from __future__ import annotations

import subprocess
import sys
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import pytest

from scenarios import ScenarioError, find_scenarios, load_scenario

GOOD = """
name = "tiny"
description = "two streams, a few events"
duration_s = 6

[topology]
replicas = 2

[[topology.subscribers]]
name = "readers"
tenant = "acme"
count = 2
roles = ["BILLING_SPECIALIST"]

[[workload.events]]
tenant = "acme"
types = ["claim.submitted"]
rate_per_s = 5

[[expect]]
name = "nothing missed"
truth = "missed_events"
value = 0
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "scenario.toml"
    path.write_text(text)
    return path


def test_every_shipped_scenario_parses() -> None:
    """Each file in the library reads without error and names itself after its file."""
    paths = find_scenarios([])
    assert len(paths) >= 13
    for path in paths:
        assert load_scenario(path).name == path.stem


@pytest.mark.parametrize(
    ("change", "key", "expected"),
    [
        pytest.param(
            ('tenant = "acme"\ncount', 'tenant = "ACME"\ncount'),
            "topology.subscribers[0].tenant",
            "matching",
            id="bad-tenant",
        ),
        pytest.param(
            ("count = 2", 'count = "two"'),
            "topology.subscribers[0].count",
            "whole number",
            id="wrong-type",
        ),
        pytest.param(
            ("roles = [", 'behaviour = "bursty"\nroles = ['),
            "topology.subscribers[0].behaviour",
            "one of steady",
            id="bad-behaviour",
        ),
        pytest.param(
            ("duration_s = 6", "duration_s = 6\ncolour = 1"),
            "colour",
            "unknown key",
            id="unknown-key",
        ),
        pytest.param(
            ('truth = "missed_events"', 'truth = "happiness"'),
            "expect[0].truth",
            "one of missed_events",
            id="bad-truth",
        ),
        pytest.param(('name = "tiny"\n', ""), "name", "required", id="missing-name"),
    ],
)
def test_bad_scenario_files_name_the_key(
    tmp_path: Path, change: tuple[str, str], key: str, expected: str
) -> None:
    """A bad file's error names the file, the dotted key and what was expected."""
    path = _write(tmp_path, GOOD.replace(*change, 1))
    with pytest.raises(ScenarioError) as caught:
        load_scenario(path)
    message = str(caught.value)
    assert str(path) in message
    assert f"'{key}'" in message
    assert expected in message


def test_runner_refuses_bad_file_without_traceback(tmp_path: Path) -> None:
    """The command exits 2 with one clear line for a file that is not TOML."""
    path = _write(tmp_path, "name = [")
    result = subprocess.run(
        [sys.executable, "-m", "hub.cli", "scenarios", "run", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "not valid TOML" in result.stderr
    assert "Traceback" not in result.stderr


def _run(path: Path, report: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "hub.cli",
            "scenarios",
            "run",
            str(path),
            "--target",
            "hub",
            "--time-scale",
            "0.2",
            "--report-dir",
            str(report),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_passing_scenario_on_hub_writes_reports(tmp_path: Path) -> None:
    """A scenario whose expectations hold exits 0 and writes JUnit XML and HTML."""
    result = _run(_write(tmp_path, GOOD), tmp_path / "report")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "pass  nothing missed" in result.stdout
    assert "pass  ledger holds at every sample" in result.stdout
    junit = ElementTree.parse(tmp_path / "report" / "junit.xml").getroot()
    assert junit.find("testsuite").get("failures") == "0"  # type: ignore[union-attr]
    assert (tmp_path / "report" / "index.html").read_text().count("<img") == 1
    assert (tmp_path / "report" / "tiny-hub.png").stat().st_size > 1000


def test_failing_expectation_fails_the_run(tmp_path: Path) -> None:
    """An expectation that does not hold is shown as FAIL and the exit status is 1."""
    wrong = (
        GOOD
        + '\n[[expect]]\nname = "impossible"\ntruth = "received_events"\nvalue = -1\n'
    )
    result = _run(_write(tmp_path, wrong), tmp_path / "report")
    assert result.returncode == 1
    assert "FAIL  impossible" in result.stdout
    junit = ElementTree.parse(tmp_path / "report" / "junit.xml").getroot()
    assert junit.find("testsuite").get("failures") == "1"  # type: ignore[union-attr]
