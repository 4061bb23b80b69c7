"""``diagnose`` on the shipped scenarios played on real hubs: the operator's verdict
matches the situation each scenario is named for."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from hub import DiagnoseOptions, Diagnosis, Verdict, diagnose_live
from scenarios import find_scenarios, load_scenario
from scenarios._hub_target import HubRun

from .support import wait_until

TIME_SCALE = 0.25


async def diagnose_mid_run(
    name: str, tenant: str, at_s: float, interval_s: float
) -> Diagnosis:
    """Play scenario ``name`` on hubs and diagnose ``tenant`` from scenario time
    ``at_s``; the run is stopped once the verdict is in."""
    [path] = find_scenarios([name])
    run = HubRun(load_scenario(path), time_scale=TIME_SCALE)
    task = asyncio.create_task(run.run())
    try:
        await wait_until(
            lambda: run._start > 0 or task.done(), timeout=10, what="the hubs"
        )
        assert not task.done(), task.exception()
        await run.sleep_until(at_s)
        slots = run.live_slots()
        replica = slots[0].replica
        assert replica is not None
        options = DiagnoseOptions(
            tenant=tenant,
            urls=tuple(f"http://127.0.0.1:{slot.port}" for slot in slots),
            metrics_token=run.metrics_bearer,
            interval_s=interval_s,
        )
        # The replicas' own catalog: it holds any row the scenario deployed.
        return await diagnose_live(options, replica.core.catalog)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@pytest.mark.parametrize(
    ("scenario", "tenant", "at_s", "interval_s", "verdict"),
    [
        ("steady-dashboards", "acme", 8, 0.5, Verdict.HEALTHY),
        ("client-never-connected", "initech", 6, 0.5, Verdict.NEVER_CONNECTED),
        ("stale-role", "acme", 6, 0.5, Verdict.STALE_ROLE),
        ("unseeded-event-type-deploy", "acme", 14, 0.5, Verdict.UNSEEDED_TYPE),
        ("flapping-network", "acme", 8, 1.5, Verdict.BACKPRESSURE),
    ],
    ids=["steady", "never-connected", "stale-role", "unseeded-type", "flapping"],
)
async def test_diagnose_names_the_scenario_situation(
    scenario: str, tenant: str, at_s: float, interval_s: float, verdict: Verdict
) -> None:
    """Mid-run, diagnose gives the verdict the scenario is named for."""
    result = await diagnose_mid_run(scenario, tenant, at_s, interval_s)
    assert result.verdict is verdict, result.findings[0]
