"""The operations assets: Prometheus alert rules with their unit tests, promtool's
lint of a live scrape, and the Grafana dashboard, all on the contract's metrics."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import aiohttp

from .support import (
    METRICS_BEARER,
    open_stream,
    publish,
    require_binary,
    running_replicas,
    token,
    url,
)

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "ops" / "prometheus" / "rcm-realtime-alerts.yml"
RULE_TESTS = sorted((ROOT / "ops" / "prometheus" / "tests").glob("*.yml"))
DASHBOARD = ROOT / "ops" / "grafana" / "rcm-realtime-dashboard.json"

# The metric names of the contract; a query on any other name is a typo.
CONTRACT_METRICS = {
    "rcm_realtime_subscribers",
    "rcm_realtime_events_dispatched_total",
    "rcm_realtime_fanout_total",
    "rcm_realtime_delivered_total",
    "rcm_realtime_dropped_total",
    "rcm_realtime_queued",
    "rcm_realtime_disconnects_total",
    "rcm_realtime_batches_open",
    "rcm_realtime_batches_completed_total",
    "rcm_realtime_bus_backlog",
    "rcm_realtime_delivery_latency_seconds",
}
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")
METRIC_NAME = re.compile(r"\brcm_realtime_[a-z_]+")


def metric_names(text: str) -> set[str]:
    """Metric names in PromQL text, histogram series folded onto their family."""
    names = set()
    for name in METRIC_NAME.findall(text):
        for suffix in HISTOGRAM_SUFFIXES:
            base = name.removesuffix(suffix)
            if base != name and base in CONTRACT_METRICS:
                name = base
        names.add(name)
    return names


def test_alert_rules_are_valid_and_pass_their_unit_tests() -> None:
    """promtool accepts the rules and every alert's unit test passes."""
    promtool = require_binary("promtool", "prometheus")
    checked = subprocess.run(
        [promtool, "check", "rules", str(RULES)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert RULE_TESTS, "no rule unit tests under ops/prometheus/tests"
    tested = subprocess.run(
        [promtool, "test", "rules", *map(str, RULE_TESTS)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_every_alert_has_a_unit_test() -> None:
    """Each alert in the rules file is exercised by at least one rule test."""
    alerts = set(re.findall(r"^\s*- alert: (\w+)", RULES.read_text(), re.MULTILINE))
    tested = {
        name
        for path in RULE_TESTS
        for name in re.findall(r"alertname: (\w+)", path.read_text())
    }
    assert alerts == tested
    assert {
        "RcmRealtimePermissionDropSpike",
        "RcmRealtimeBackpressureSustained",
        "RcmRealtimeReplicaDispatchLagging",
        "RcmRealtimeTenantSubscribersZero",
    } <= alerts


def test_alert_rules_use_only_contract_metrics() -> None:
    """Every metric an alert reads is one the contract names."""
    used = metric_names(RULES.read_text())
    assert used <= CONTRACT_METRICS, used - CONTRACT_METRICS


async def test_live_scrape_passes_promtool_check_metrics(
    session: aiohttp.ClientSession,
) -> None:
    """A replica's /metrics, with every family populated, passes promtool's lint."""
    promtool = require_binary("promtool", "prometheus")
    async with running_replicas() as [replica]:
        async with open_stream(session, replica, token()) as stream:
            await publish(
                session,
                replica,
                {"type": "claim.submitted", "tenantId": "acme", "payload": {}},
            )
            await stream.wait_for_events(2)
        async with session.get(
            url(replica, "/metrics"),
            headers={"Authorization": f"Bearer {METRICS_BEARER}"},
        ) as response:
            exposition = await response.text()
    assert metric_names(exposition) == CONTRACT_METRICS
    linted = subprocess.run(
        [promtool, "check", "metrics"],
        input=exposition,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert linted.returncode == 0, linted.stdout + linted.stderr
    assert linted.stdout.strip() == "" and linted.stderr.strip() == ""


def dashboard_panels() -> list[dict[str, Any]]:
    document = json.loads(DASHBOARD.read_text())
    return [p for p in document["panels"] if p["type"] != "row"]


def test_grafana_dashboard_queries_only_contract_metrics() -> None:
    """The dashboard parses, and its queries cover exactly the contract's metrics."""
    exprs = [t["expr"] for p in dashboard_panels() for t in p["targets"]]
    used = set().union(*(metric_names(expr) for expr in exprs))
    assert used == CONTRACT_METRICS


def test_grafana_dashboard_is_well_formed() -> None:
    """Panels have unique ids, titles, the data source variable and tidy queries."""
    document = json.loads(DASHBOARD.read_text())
    ids = [p["id"] for p in document["panels"]]
    assert len(ids) == len(set(ids))
    assert {v["name"] for v in document["templating"]["list"]} == {
        "datasource",
        "tenant",
        "instance",
    }
    for panel in dashboard_panels():
        assert panel["title"]
        assert panel["datasource"]["uid"] == "${datasource}"
        for target in panel["targets"]:
            expr = target["expr"]
            assert expr.count("(") == expr.count(")"), expr
            assert expr.count("{") == expr.count("}"), expr


def test_grafana_queries_are_valid_promql(tmp_path: Path) -> None:
    """Each dashboard query, with Grafana's variables filled in, parses as PromQL
    (checked by promtool as recording rules)."""
    promtool = require_binary("promtool", "prometheus")
    rules = []
    for panel in dashboard_panels():
        for target in panel["targets"]:
            expr = (
                target["expr"]
                .replace("$__rate_interval", "5m")
                .replace("$tenant", ".*")
                .replace("$instance", ".*")
            )
            rules.append(
                {
                    "record": f"dashboard:panel{panel['id']}:{target['refId']}",
                    "expr": expr,
                }
            )
    # JSON is YAML, so the rules file needs no YAML writer.
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(json.dumps({"groups": [{"name": "dashboard", "rules": rules}]}))
    checked = subprocess.run(
        [promtool, "check", "rules", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
