"""`rcm-realtime load`: real Locust runs against real replicas, reconciled exactly,
and the rules of the reconciliation and the client's sequence tracking."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from hub._load_reconcile import Scrape, hub_latency_quantiles, reconcile
from loadtests._tally import ClientTally, SequenceTracker

from .test_hub_process import free_port

RCM = [sys.executable, "-m", "hub.cli"]


def run_load(
    *args: str, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("RCM_")}
    # Interchanges complete after the quiet window; a short one keeps the drain short.
    full_env["RCM_REALTIME_BATCH_QUIET_WINDOW_MS"] = "400"
    full_env.update(env or {})
    return subprocess.run(
        [*RCM, "load", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=full_env,
    )


def report_of(result: subprocess.CompletedProcess[str]) -> tuple[Path, dict[str, Any]]:
    index = Path(result.stdout.strip().splitlines()[-1])
    return index.parent, json.loads((index.parent / "summary.json").read_text())


@pytest.mark.slow
@pytest.mark.parametrize(
    "model",
    [
        pytest.param([], id="closed"),
        pytest.param(["--churn", "--session-s", "3"], id="churn"),
    ],
)
def test_a_short_run_reconciles_exactly(tmp_path: Path, model: list[str]) -> None:
    """50 users on 2 replicas: the clients received exactly what the hubs delivered,
    the ledger held, and every drop has its reason, with clients staying or coming
    and going."""
    result = run_load(
        "--replicas",
        "2",
        "--users",
        "50",
        "--spawn-rate",
        "50",
        "--duration",
        "8",
        "--events-per-s",
        "40",
        "--report-dir",
        str(tmp_path),
        *model,
    )

    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    directory, summary = report_of(result)
    checks = {c["name"]: c for c in summary["reconciliation"]["checks"]}
    assert all(c["ok"] for c in checks.values()), checks
    assert summary["received_total"] == summary["delivered_total"] > 0
    rows = summary["reconciliation"]["rows"]
    assert len(rows) == 4, "2 replicas x 2 tenants"
    assert all(row["delivered"] > 0 for row in rows), "each replica serves each tenant"
    clients = summary["clients"]
    # Interchanges were completed by the hubs and read by clients with batches.read.
    assert clients["received_by_type"].get("batch.completed", 0) > 0
    assert clients["gaps"] == clients["duplicates"] == 0
    if model:
        assert clients["sessions"] > 50, "clients should have come and gone"
    else:
        assert clients["sessions"] == clients["connects"] == 50
        assert summary["peak_open_streams"] == 50
    for name in ("index.html", "timeline.csv", "reconciliation.csv", "latency.png"):
        assert (directory / name).stat().st_size > 0, name
    assert "data:image/png;base64," in (directory / "index.html").read_text()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param(["--users", "0"], "must be above zero", id="users"),
        pytest.param(["--duration", "soon"], "not a duration", id="duration"),
        pytest.param(["--url", "ftp://x:1"], "is not like http://", id="scheme"),
        pytest.param(
            ["--replicas", "2", "--url", "http://127.0.0.1:1"],
            "not allowed with",
            id="both-targets",
        ),
        pytest.param(["--catalog", "/nonexistent.toml"], "no such file", id="catalog"),
    ],
)
def test_bad_flags_are_refused_with_a_sentence(
    tmp_path: Path, args: list[str], message: str
) -> None:
    """A bad flag stops the command with exit 2 and a line saying what is wrong."""
    result = run_load(*args, "--report-dir", str(tmp_path / "reports"))

    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "reports").exists()


def test_an_unreachable_url_is_named_before_anything_runs(tmp_path: Path) -> None:
    """A --url nobody listens on is reported by address, with no report left."""
    url = f"http://127.0.0.1:{free_port()}"

    result = run_load(
        "--url",
        url,
        "--report-dir",
        str(tmp_path / "reports"),
        env={"RCM_REALTIME_JWT_SECRET": "k" * 40},
    )

    assert result.returncode == 2
    assert f"cannot reach {url}" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "reports").exists()


def test_running_hubs_need_their_key() -> None:
    """Targeting running hubs without their signing key says which variable to set."""
    result = run_load("--url", "http://127.0.0.1:1")

    assert result.returncode == 2
    assert "RCM_REALTIME_JWT_SECRET" in result.stderr


# -- the client's sequence tracking -------------------------------------------------


@pytest.mark.parametrize(
    ("first", "seen", "verdict"),
    [
        pytest.param([4], 5, ("ok", 0), id="next"),
        pytest.param([4], 7, ("gap", 2), id="gap"),
        pytest.param([4], 4, ("duplicate", 1), id="same"),
        pytest.param([4], 2, ("duplicate", 1), id="older"),
        pytest.param([], 9, ("ok", 0), id="first-sighting-is-baseline"),
    ],
)
def test_sequences_within_a_connection(
    first: list[int], seen: int, verdict: tuple[str, int]
) -> None:
    """Within one connection a jump is a gap and a repeat is a duplicate."""
    tracker = SequenceTracker()
    for seq in first:
        tracker.observe("p/acme/claims.read", seq)

    assert tracker.observe("p/acme/claims.read", seen) == verdict


def test_a_jump_across_a_reconnect_is_missed_not_a_gap() -> None:
    """Events published while the client was away count as missed, not as drops."""
    tracker = SequenceTracker()
    tracker.observe("k", 1)
    tracker.new_connection()

    assert tracker.observe("k", 5) == ("missed", 3)
    assert tracker.observe("k", 7) == ("gap", 1)


def test_tallies_of_processes_add_up() -> None:
    """A master's sum of worker tallies adds counters and per-tenant counts."""
    one, two = ClientTally(), ClientTally()
    one.received["acme"] += 3
    one.gaps = 1
    two.received.update({"acme": 2, "globex": 5})
    total = ClientTally()

    total.merge(one.to_json())
    total.merge(two.to_json())

    assert total.received == {"acme": 5, "globex": 5}
    assert total.gaps == 1
    assert total.total_received == 10


# -- the reconciliation rules --------------------------------------------------------


def metrics(
    *,
    fanout: int,
    delivered: int,
    queued: int = 0,
    permission: int = 0,
    backpressure: int = 0,
    disconnected: int = 0,
    unknown: int = 0,
    dispatched: int = 0,
) -> str:
    t = 'tenant_id="acme"'
    return "\n".join(
        [
            f"rcm_realtime_fanout_total{{{t}}} {fanout}",
            f"rcm_realtime_delivered_total{{{t}}} {delivered}",
            f"rcm_realtime_queued{{{t}}} {queued}",
            f'rcm_realtime_dropped_total{{{t},reason="permission"}} {permission}',
            f'rcm_realtime_dropped_total{{{t},reason="backpressure"}} {backpressure}',
            f'rcm_realtime_dropped_total{{{t},reason="disconnected"}} {disconnected}',
            f'rcm_realtime_dropped_total{{{t},reason="unknown_type"}} {unknown}',
            f'rcm_realtime_events_dispatched_total{{{t},event_type="claim.submitted"}} '
            f"{dispatched}",
            "",
        ]
    )


ZERO = Scrape.parse("r1", 0.0, metrics(fanout=0, delivered=0))
HEALTHY = {"fanout": 30, "delivered": 20, "permission": 10, "dispatched": 10}
PUBLISHED = {"publishers": {"p": {"accepted": {"acme": 10}}}}


def outcome(
    end: dict[str, int], clients: dict[str, Any], published: Any = PUBLISHED
) -> dict[str, bool]:
    result = reconcile(
        tenants=["acme"],
        start={"r1": ZERO},
        end={"r1": Scrape.parse("r1", 1.0, metrics(**end))},
        clients={"processes_reported": 1, **clients},
        published=published,
        expected_processes=1,
    )
    return {check.name: check.ok for check in result.checks}


def test_matching_counts_reconcile() -> None:
    """Received equals delivered, the ledger holds, permission drops are explained."""
    checks = outcome(HEALTHY, {"received": {"acme": 20}})

    assert all(checks.values()), checks


@pytest.mark.parametrize(
    ("end", "clients", "failed"),
    [
        pytest.param(
            HEALTHY,
            {"received": {"acme": 19}},
            "clients received exactly what the hubs delivered",
            id="one-event-short",
        ),
        pytest.param(
            {**HEALTHY, "fanout": 31},
            {"received": {"acme": 20}},
            "ledger holds",
            id="ledger-gap",
        ),
        pytest.param(
            {**HEALTHY, "queued": 1, "fanout": 31},
            {"received": {"acme": 20}},
            "hubs drained before the clients left",
            id="still-queued",
        ),
        pytest.param(
            HEALTHY,
            {"received": {"acme": 20}, "gaps": 2},
            "gaps explained by backpressure drops",
            id="gap-without-drop",
        ),
        pytest.param(
            {**HEALTHY, "unknown": 1},
            {"received": {"acme": 20}},
            "no unknown_type drops",
            id="unknown-type",
        ),
        pytest.param(
            {**HEALTHY, "disconnected": 2, "fanout": 32},
            {"received": {"acme": 20}},
            "disconnected drops explained by clients leaving",
            id="disconnected-without-departure",
        ),
        pytest.param(
            {**HEALTHY, "dispatched": 9},
            {"received": {"acme": 20}},
            "every replica dispatched every accepted event",
            id="lost-on-the-bus",
        ),
        pytest.param(
            HEALTHY,
            {"received": {"acme": 20}, "foreign_tenant": 1},
            "no events of another tenant",
            id="foreign-tenant",
        ),
        pytest.param(
            HEALTHY,
            {"received": {"acme": 20}, "processes_reported": 0},
            "every load process reported",
            id="missing-process",
        ),
    ],
)
def test_what_does_not_add_up_fails_its_check(
    end: dict[str, int], clients: dict[str, Any], failed: str
) -> None:
    """Each kind of discrepancy fails exactly the check that names it."""
    checks = outcome(end, clients)

    assert [name for name, ok in checks.items() if not ok] == [failed]


def test_backpressure_explains_gaps_up_to_its_count() -> None:
    """Gaps seen by clients are explained while the hubs dropped at least as many."""
    end = {**HEALTHY, "backpressure": 3, "fanout": 33}

    assert outcome(end, {"received": {"acme": 20}, "gaps": 3})[
        "gaps explained by backpressure drops"
    ]
    assert not outcome(end, {"received": {"acme": 20}, "gaps": 4})[
        "gaps explained by backpressure drops"
    ]


def test_hub_latency_quantiles_come_from_the_histogram_increase() -> None:
    """The hubs' latency quantiles are the bucket bounds over the run's increase."""
    name = "rcm_realtime_delivery_latency_seconds_bucket"

    def histogram(counts: dict[str, int]) -> Scrape:
        lines = [f'{name}{{le="{le}"}} {n}' for le, n in counts.items()]
        return Scrape.parse("r1", 0.0, "\n".join(lines) + "\n")

    start = histogram({"0.005": 100, "0.01": 100, "0.1": 100, "+Inf": 100})
    end = histogram({"0.005": 150, "0.01": 195, "0.1": 200, "+Inf": 200})

    assert hub_latency_quantiles({"r1": start}, {"r1": end}) == {
        "50%": 5.0,
        "90%": 10.0,
        "99%": 100.0,
    }
