"""The benchmark summary: ratios only within one run, targets judged, a system that
could not run said so plainly."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from benchmarks._systems import Nchan
from benchmarks.report import Summary


def window(deliveries: float, per_cpu: float, client: float = 0.3) -> dict[str, Any]:
    return {
        "deliveries_per_s": deliveries,
        "deliveries_per_server_cpu_s": per_cpu,
        "cpu": {"client_cores": [client], "client_saturated": client >= 0.9},
    }


def fanout(name: str, run: str, per_count: dict[int, float]) -> dict[str, Any]:
    steps = [
        {
            "subscribers": count,
            "saturation": window(rate, rate * 2),
            "latency": {"p99_ms": 20.0 if count < 10_000 else 120.0},
            "memory": {"bytes_per_subscriber": 18 * 1024},
            "connect": {"per_second": 1000.0},
        }
        for count, rate in per_count.items()
    ]
    return {
        "benchmark": name,
        "run_id": run,
        "finished_at": f"{run}-done",
        "machine": {"nproc": 2, "load_average_1m": 1.0},
        "available": True,
        "label": name,
        "steps": steps,
    }


def unavailable(name: str, run: str, reason: str) -> dict[str, Any]:
    return {
        "benchmark": name,
        "run_id": run,
        "finished_at": f"{run}-done",
        "machine": {},
        "available": False,
        "reason": reason,
    }


def test_ratios_and_targets_come_from_one_run() -> None:
    """Ours over naive is computed and judged when both share a run."""
    summary = Summary(
        {
            "hub": fanout("hub", "r1", {1000: 300_000.0, 10_000: 100_000.0}),
            "naive": fanout("naive", "r1", {1000: 50_000.0, 10_000: 50_000.0}),
        }
    )

    ratios = {r["subscribers"]: r for r in summary.ratios()}
    targets = {t["target"]: t for t in summary.targets()}

    assert ratios[1000]["deliveries_ratio"] == pytest.approx(6.0)
    assert targets[">= 5x the naive hub's deliveries/s at 1,000"]["met"] is True
    assert targets[">= 5x the naive hub's deliveries/s at 10,000"]["met"] is False
    assert (
        targets["p99 <= 50 ms at half of our saturation, 10,000 streams"]["met"]
        is False
    )
    assert targets["<= 20 KiB per idle stream (10,000 open)"]["met"] is True


def test_a_ratio_across_runs_is_shown_but_not_judged() -> None:
    """Figures from two runs are divided for reading, never counted as a pass."""
    summary = Summary(
        {
            "hub": fanout("hub", "r1", {1000: 300_000.0}),
            "naive": fanout("naive", "r2", {1000: 10_000.0}),
        }
    )

    [target] = [t for t in summary.targets() if "naive" in t["target"]]

    assert target["met"] is None
    assert "different runs" in target["shown"]


def test_a_system_that_could_not_run_is_named_with_its_reason(tmp_path: Path) -> None:
    """Without nchan the summary says so and still reports the rest."""
    summary = Summary(
        {
            "hub": fanout("hub", "r1", {1000: 300_000.0}),
            "nchan": unavailable("nchan", "r1", "nginx is not installed; run X"),
        }
    )

    text = summary.markdown("plot.png")

    assert "**nchan was not measured**: nginx is not installed; run X" in text
    assert "300,000" in text
    assert not any("nchan" in t["target"] for t in summary.targets())
    assert summary.plot(tmp_path / "plot.png")
    assert (tmp_path / "plot.png").stat().st_size > 0


def test_nchan_without_its_module_explains_how_to_get_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A missing nchan module is reported with the package and the script."""
    monkeypatch.setattr(Nchan, "module_path", staticmethod(lambda: None))
    monkeypatch.setattr("shutil.which", lambda name: "/usr/sbin/nginx")

    reason = Nchan().unavailable()

    assert reason is not None
    assert "libnginx-mod-nchan" in reason
    assert "tools/install-bench-deps.sh" in reason
