"""The soak: its verdicts on recorded runs, its options, and one real 60 s run of
hub processes on RabbitMQ with a broker restart and a SIGKILLed replica."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest

from hub.cli import build_parser, main
from hub.core import ConfigError
from soak import Plan, SoakOptions, StreamEnd, StreamRecord
from soak._checks import (
    MEMORY_GROWTH_LIMIT,
    MEMORY_SLACK_MIB,
    MIB,
    HubStream,
    check_dispatched,
    check_errors,
    check_ledger,
    check_memory,
    foreign_outages,
    hub_streams,
    judge_memory,
    parse_log,
    parse_scrape,
    reconcile,
)
from soak._command import default_duration_s

SOAK_TEST_S = 60
SOAK_TIMEOUT_S = 150


def exposition(
    *,
    fanout: int,
    delivered: int,
    permission: int = 0,
    backpressure: int = 0,
    disconnected: int = 0,
    queued: int = 0,
    tenant: str = "acme",
) -> str:
    t = f'tenant_id="{tenant}"'
    return f"""\
# TYPE rcm_realtime_fanout_total counter
rcm_realtime_fanout_total{{tenant_id="{tenant}"}} {fanout}
# TYPE rcm_realtime_delivered_total counter
rcm_realtime_delivered_total{{tenant_id="{tenant}"}} {delivered}
# TYPE rcm_realtime_dropped_total counter
rcm_realtime_dropped_total{{tenant_id="{tenant}",reason="permission"}} {permission}
rcm_realtime_dropped_total{{tenant_id="{tenant}",reason="backpressure"}} {backpressure}
rcm_realtime_dropped_total{{tenant_id="{tenant}",reason="disconnected"}} {disconnected}
rcm_realtime_dropped_total{{tenant_id="{tenant}",reason="unknown_type"}} 7
# TYPE rcm_realtime_queued gauge
rcm_realtime_queued{{tenant_id="{tenant}"}} {queued}
# TYPE rcm_realtime_events_dispatched_total counter
rcm_realtime_events_dispatched_total{{{t},event_type="claim.submitted"}} 3
rcm_realtime_events_dispatched_total{{{t},event_type="denial.created"}} 4
# TYPE rcm_realtime_bus_backlog gauge
rcm_realtime_bus_backlog 5
"""


# -- the ledger ------------------------------------------------------------------------


def test_a_scrape_is_read_per_tenant_with_dispatched_summed_over_types() -> None:
    """Every ledger term of a tenant is read from the exposition, dispatched is
    summed over event types, and the backlog gauge is read."""
    scrape = parse_scrape(
        exposition(fanout=20, delivered=10, permission=4, backpressure=3, queued=3),
        at_s=1.0,
        instance="r1#1",
    )

    figures = scrape.tenants["acme"]
    assert (figures.fanout, figures.delivered, figures.queued) == (20, 10, 3)
    assert (figures.dropped_permission, figures.dropped_backpressure) == (4, 3)
    assert figures.dispatched == 7
    assert scrape.backlog == 5
    assert figures.ledger_gap() == 0


@pytest.mark.parametrize(
    ("terms", "passed"),
    [
        pytest.param(
            {"fanout": 9, "delivered": 4, "disconnected": 5}, True, id="exact"
        ),
        pytest.param({"fanout": 9, "delivered": 4}, False, id="five-frames-missing"),
        pytest.param(
            {"fanout": 9, "delivered": 10}, False, id="more-delivered-than-fanout"
        ),
    ],
)
def test_the_ledger_check_fails_on_any_tenant_whose_terms_do_not_add_up(
    terms: dict[str, int], passed: bool
) -> None:
    """One scrape with a tenant whose fanout is not the sum of its terms fails
    the check, and the detail names the instance and the tenant."""
    good = parse_scrape(exposition(fanout=3, delivered=3), at_s=0.0, instance="r1#1")
    probe = parse_scrape(exposition(tenant="beta", **terms), at_s=2.0, instance="r2#1")

    check = check_ledger([good, probe])

    assert check.passed is passed
    if not passed:
        assert "r2#1" in check.details[0] and "beta" in check.details[0]


def test_the_ledger_check_fails_when_nothing_was_scraped() -> None:
    """A run that never scraped a replica cannot claim its ledger held."""
    assert check_ledger([]).passed is False


# -- client-received against delivered ----------------------------------------------


def stream(
    subscriber: str | None,
    received: int,
    end: StreamEnd,
    *,
    instance: str = "r1#1",
    farewell: str | None = None,
    dark: bool = False,
) -> StreamRecord:
    return StreamRecord(
        session=1,
        tenant="acme",
        slot=0,
        instance=instance,
        opened_s=0.0,
        resumed=False,
        status=200,
        subscriber_id=subscriber,
        received=received,
        farewell=farewell or ("token_expired" if end is StreamEnd.FAREWELL else None),
        went_dark=dark,
        end=end,
    )


def logged(subscriber: str, delivered: int, reason: str = "client") -> HubStream:
    return HubStream("r1#1", subscriber, "acme", delivered, reason, 1.0)


def test_streams_the_hub_ended_must_match_exactly_and_cuts_count_as_in_flight() -> None:
    """Hub-ended streams reconcile exactly; a cut stream's difference is in
    flight; together they explain delivered_total to the frame."""
    result = reconcile(
        [
            stream("r1-s1", 40, StreamEnd.FAREWELL),
            stream("r1-s2", 25, StreamEnd.CUT, dark=True),
            stream("r1-s3", 12, StreamEnd.CUT),
        ],
        [logged("r1-s1", 40), logged("r1-s2", 31), logged("r1-s3", 10)],
        instance="r1#1",
        delivered_total=81,
        killed=False,
        cut_tolerance=100,
    )

    assert result.passed, result.problems
    assert (result.exact_streams, result.cut_streams, result.cut_dark) == (1, 2, 1)
    assert (result.in_flight, result.in_flight_dark) == (4, 6)
    assert (result.in_flight_min, result.in_flight_max) == (-2, 6)
    assert result.received + result.in_flight == result.delivered_total


@pytest.mark.parametrize(
    ("streams", "logs", "delivered_total", "complaint"),
    [
        pytest.param(
            [stream("r1-s1", 39, StreamEnd.FAREWELL)],
            [logged("r1-s1", 40)],
            40,
            "ended by the hub",
            id="hub-ended-stream-short-by-one",
        ),
        pytest.param(
            [stream("r1-s1", 10, StreamEnd.CUT)],
            [logged("r1-s1", 200)],
            200,
            "beyond what the buffers hold",
            id="cut-losing-more-than-buffers-hold",
        ),
        pytest.param(
            [stream("r1-s1", 10, StreamEnd.LOST)],
            [logged("r1-s1", 10)],
            10,
            "without a farewell",
            id="stream-lost-on-a-live-replica",
        ),
        pytest.param(
            [stream("r1-s1", 10, StreamEnd.FAREWELL)],
            [logged("r1-s1", 10)],
            12,
            "differs from the sum",
            id="delivered-total-beyond-its-streams",
        ),
        pytest.param(
            [stream("r1-s1", 10, StreamEnd.FAREWELL)],
            [logged("r1-s1", 10), logged("r1-s9", 5)],
            15,
            "no client saw open",
            id="frames-to-a-stream-no-client-had",
        ),
        pytest.param(
            [stream("r1-s1", 10, StreamEnd.FAREWELL)],
            [],
            10,
            "no record in its replica's log",
            id="client-stream-unknown-to-the-hub",
        ),
    ],
)
def test_reconciliation_names_each_way_counts_can_disagree(
    streams: list[StreamRecord],
    logs: list[HubStream],
    delivered_total: int,
    complaint: str,
) -> None:
    """Each kind of disagreement between clients and a live replica is a
    problem that says what disagreed."""
    result = reconcile(
        streams,
        logs,
        instance="r1#1",
        delivered_total=delivered_total,
        killed=False,
        cut_tolerance=50,
    )

    assert not result.passed
    assert any(complaint in problem for problem in result.problems), result.problems


def test_a_killed_instance_reconciles_what_it_logged_and_reports_the_rest() -> None:
    """Streams a killed replica ended before its death reconcile from its log;
    those open at the kill are counted as not reconcilable, not as failures."""
    result = reconcile(
        [
            stream("r2-s1", 30, StreamEnd.FAREWELL, instance="r2#1"),
            stream("r2-s2", 17, StreamEnd.LOST, instance="r2#1"),
        ],
        [HubStream("r2#1", "r2-s1", "acme", 30, "client", 3.0)],
        instance="r2#1",
        delivered_total=None,
        killed=True,
        cut_tolerance=50,
    )

    assert result.passed, result.problems
    assert (result.exact_streams, result.open_at_kill) == (1, 1)
    assert result.open_at_kill_received == 17
    assert "cannot be reconciled" in result.line()


# -- memory ----------------------------------------------------------------------------


def ramp(
    start_mib: float, slope_mib_per_s: float, until_s: float
) -> list[tuple[float, int]]:
    return [
        (float(at), int((start_mib + slope_mib_per_s * at) * MIB))
        for at in range(0, int(until_s) + 1)
    ]


def step(base_mib: float, step_mib: float) -> list[tuple[float, int]]:
    """Level, then one step up at 70 s, after the last third's start."""
    return [
        (float(at), int((base_mib + (step_mib if at > 70 else 0.0)) * MIB))
        for at in range(101)
    ]


@pytest.mark.parametrize(
    ("samples", "flat"),
    [
        pytest.param(ramp(80.0, 0.0, 100), True, id="level"),
        pytest.param(step(80.0, 9.0), True, id="step-within-the-slack"),
        pytest.param(step(80.0, 12.0), False, id="step-beyond-the-slack"),
        pytest.param(step(200.0, 15.0), True, id="step-within-ten-percent"),
        pytest.param(step(200.0, 25.0), False, id="step-beyond-ten-percent"),
        pytest.param(ramp(80.0, 0.5, 100), False, id="growing-steadily"),
    ],
)
def test_memory_is_flat_only_when_the_last_third_stays_near_the_first(
    samples: list[tuple[float, int]], flat: bool
) -> None:
    """After the warm-up, the mean of the last third may exceed the first
    third's by the slack or the growth limit, and no more."""
    verdict = judge_memory("r1#1", samples, ready_s=0.0, until_s=100.0, warmup_s=20.0)

    assert verdict.flat is flat
    assert verdict.judged_from_s == 20.0
    assert check_memory([verdict]).passed is flat
    assert verdict.growth is not None
    assert verdict.last_third_mib is not None and verdict.first_third_mib is not None
    growth_mib = verdict.last_third_mib - verdict.first_third_mib
    beyond = growth_mib > MEMORY_SLACK_MIB and verdict.growth > MEMORY_GROWTH_LIMIT
    assert beyond is not flat


def test_an_instance_too_short_lived_after_its_warm_up_is_not_judged() -> None:
    """A restarted replica's warm-up counts from its own start; with too few
    samples after it, it is reported unjudged rather than passed or failed."""
    verdict = judge_memory(
        "r2#2", ramp(50.0, 1.0, 40), ready_s=30.0, until_s=40.0, warmup_s=5.0
    )

    assert verdict.flat is None
    assert verdict.judged_from_s == 35.0
    assert "not judged" in verdict.note
    assert check_memory([verdict]).passed is False


# -- logs and errors -------------------------------------------------------------------


def stamp(epoch_s: float) -> str:
    moment = datetime.fromtimestamp(epoch_s)
    return moment.strftime("%Y-%m-%d %H:%M:%S,") + f"{moment.microsecond // 1000:03d}"


ORIGIN = 1_800_000_000.0


def log_text() -> str:
    return "\n".join(
        [
            "rcm-realtime serving on 127.0.0.1 ports 8080 (bus: amqp://127.0.0.1/)",
            f"ts={stamp(ORIGIN + 1)} level=INFO logger=hub event=subscriber_"
            "disconnected tenant=acme subscriber=r1-s4 replica=r1 reason=client "
            "delivered=17",
            f"ts={stamp(ORIGIN + 5)} level=ERROR logger=hub event=request_failed "
            "path=/v1/realtime/events",
            "Traceback (most recent call last):",
            '  File "x.py", line 1, in <module>',
            f"ts={stamp(ORIGIN + 9.5)} level=WARNING logger=hub event=bus_"
            'disconnected replica=r1 reason="the connection closed"',
            f"ts={stamp(ORIGIN + 20)} level=INFO logger=asyncio hello",
            "Traceback (most recent call last):",
            "RuntimeError: boom",
        ]
    )


def test_a_replica_log_is_read_into_timed_records_with_their_fields() -> None:
    """Stamps become seconds after the origin, quoted values are unquoted,
    traceback lines stay with their record, and stream ends are found."""
    records = parse_log(log_text(), instance="r1#1", wall_origin=ORIGIN)

    assert [r.level for r in records] == ["OUTPUT", "INFO", "ERROR", "WARNING", "INFO"]
    assert [r.at_s for r in records[1:]] == pytest.approx([1.0, 5.0, 9.5, 20.0])
    assert records[3].fields["reason"] == "the connection closed"
    assert len(records[2].continuation) == 2
    [ended] = hub_streams(records)
    assert (ended.subscriber_id, ended.tenant, ended.delivered) == ("r1-s4", "acme", 17)
    assert ended.reason == "client"


@pytest.mark.parametrize(
    ("windows", "unexplained_at"),
    [
        pytest.param([], [5.0, 20.0], id="no-fault"),
        pytest.param([(4.0, 6.0)], [20.0], id="error-inside-a-fault-window"),
        pytest.param([(4.0, 6.0), (19.0, 30.0)], [], id="both-inside-windows"),
    ],
)
def test_errors_and_tracebacks_fail_unless_a_fault_window_covers_them(
    windows: list[tuple[float, float]], unexplained_at: list[float]
) -> None:
    """An ERROR line, and a traceback under any line, fail the check unless they
    fall inside an injected fault's window; WARNINGs never do."""
    records = parse_log(log_text(), instance="r1#1", wall_origin=ORIGIN)

    check, unexplained, excused = check_errors(records, windows)

    assert [r.at_s for r in unexplained] == pytest.approx(unexplained_at)
    assert len(excused) == 2 - len(unexplained_at)
    assert check.passed is (not unexplained_at)


def test_broker_outages_outside_the_injected_restart_are_reported_one_each() -> None:
    """Disconnects seen by several replicas within seconds are one outage, dated
    and timed by each replica's first reconnection; the injected restart's own
    outage is left out."""

    def line(instance: str, at: float, event: str, extra: str = "") -> str:
        return (
            f"ts={stamp(ORIGIN + at)} level=WARNING logger=hub event={event} "
            f"replica={instance}{extra}"
        )

    records = []
    for instance, delay in (("r1#1", 0.0), ("r2#1", 0.4)):
        text = "\n".join(
            [
                line(instance, 10 + delay, "bus_disconnected"),
                line(instance, 25, "bus_reconnected", f" down_s={15 - delay}"),
                line(instance, 50 + delay, "bus_disconnected"),
                line(instance, 52, "bus_reconnected", f" down_s={2 - delay}"),
            ]
        )
        records += parse_log(text, instance=instance, wall_origin=ORIGIN)

    assert [o.describe() for o in foreign_outages(records, None)] == [
        "at 10.0 s on r1#1, r2#1, down 15 s",
        "at 50.0 s on r1#1, r2#1, down 2 s",
    ]
    assert [o.describe() for o in foreign_outages(records, (8.0, 27.0))] == [
        "at 50.0 s on r1#1, r2#1, down 2 s"
    ]


# -- dispatched against published ------------------------------------------------------


@pytest.mark.parametrize(
    ("dispatched", "uncertain", "passed"),
    [
        pytest.param({"r1#1": 500, "r3#1": 500}, 0, True, id="all-once"),
        pytest.param({"r1#1": 500, "r3#1": 499}, 0, False, id="one-lost"),
        pytest.param({"r1#1": 503}, 5, True, id="perhaps-published"),
        pytest.param({"r1#1": 506}, 5, False, id="more-than-could-be"),
        pytest.param({"r1#1": None}, 0, False, id="scrape-failed"),
    ],
)
def test_each_replica_never_killed_dispatches_every_published_event_once(
    dispatched: dict[str, int | None], uncertain: int, passed: bool
) -> None:
    """Dispatched must equal published, give or take the events whose request
    went unanswered and may or may not have been published."""
    assert check_dispatched(500, uncertain, dispatched).passed is passed


# -- options and the command line ------------------------------------------------------


@pytest.mark.parametrize("duration_s", [30.0, 60.0, 600.0, 3600.0], ids=str)
def test_the_plan_fits_its_faults_inside_the_run_in_order(duration_s: float) -> None:
    """Warm-up, broker restart and replica kill happen in that order inside the
    run, the broker is back before the kill, and a dark client is dropped by its
    own hand before the hub's 30 s eviction."""
    plan = Plan.for_options(SoakOptions(duration_s=duration_s))

    assert 0 < plan.warmup_s < plan.broker_restart_at_s
    assert plan.broker_restart_at_s + plan.broker_down_s < plan.lock_deadline_s
    assert plan.lock_deadline_s < plan.kill_at_s
    assert plan.kill_at_s + plan.kill_down_s < duration_s
    assert plan.dark_min_s < plan.dark_max_s < 30.0


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        pytest.param({"duration_s": 10.0}, "at least 30s", id="too-short"),
        pytest.param({"replicas": 1}, "at least 2", id="one-replica"),
        pytest.param({"clients": 0}, "--clients", id="no-clients"),
        pytest.param({"events_per_s": 0.0}, "--events-per-s", id="no-events"),
        pytest.param({"bus_url": "memory"}, "amqp://", id="in-process-bus"),
        pytest.param({"port": 80}, "--port", id="privileged-port"),
    ],
)
def test_options_that_cannot_work_are_refused_with_the_flag_named(
    changes: dict[str, object], message: str
) -> None:
    """Each impossible option raises ConfigError naming what to change."""
    options = SoakOptions(**changes)  # type: ignore[arg-type]

    with pytest.raises(ConfigError, match=message):
        options.validate()


def test_the_command_refuses_a_bad_option_with_one_line_and_exit_2(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``rcm-realtime soak --replicas 1`` exits 2 with a sentence, before it
    touches the broker."""
    code = main(["soak", "--replicas", "1"])

    err = capsys.readouterr().err
    assert code == 2
    assert "--replicas must be at least 2" in err
    assert "Traceback" not in err


def test_an_unreadable_duration_is_a_usage_error() -> None:
    """``--duration soon`` is refused by the parser with exit status 2."""
    with pytest.raises(SystemExit) as raised:
        build_parser().parse_args(["soak", "--duration", "soon"])
    assert raised.value.code == 2


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        pytest.param({}, 600.0, id="ten-minutes"),
        pytest.param({"CI": "true"}, 60.0, id="sixty-seconds-in-ci"),
    ],
)
def test_the_default_duration_is_ten_minutes_and_sixty_seconds_in_ci(
    environ: dict[str, str], expected: float
) -> None:
    """Without --duration the soak runs 10 minutes, or 60 s when CI is set."""
    assert default_duration_s(environ) == expected


def test_the_command_line_loads_the_soak_run_only_when_it_runs() -> None:
    """Building the parser leaves the soak's run, psutil and matplotlib unloaded."""
    probe = (
        "import sys, hub.cli; hub.cli.build_parser(); print(sorted(m for m in "
        "('soak._run', 'psutil', 'matplotlib', 'aio_pika') if m in sys.modules))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    )

    assert done.stdout.strip() == "[]"


# -- the real thing --------------------------------------------------------------------


@pytest.mark.rabbitmq
@pytest.mark.slow
@pytest.mark.timeout(SOAK_TIMEOUT_S + 30)
def test_a_sixty_second_soak_with_a_broker_restart_and_a_killed_replica_passes(
    rabbitmq_url: str, tmp_path: Path
) -> None:
    """Three hub processes on RabbitMQ under load and churn, through a broker
    restart and a SIGKILLed replica, pass every check of the soak, and the run
    leaves its summary, its plot and the replicas' logs."""
    report_dir = tmp_path / "soak"
    started = time.monotonic()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "hub.cli",
            "soak",
            "--duration",
            f"{SOAK_TEST_S}s",
            "--bus",
            rabbitmq_url,
            "--report-dir",
            str(report_dir),
            # The fixture holds the shared broker lock for this whole test.
            "--broker-lock",
            str(tmp_path / "held-by-the-fixture.lock"),
        ],
        capture_output=True,
        text=True,
        timeout=SOAK_TIMEOUT_S,
        env={**os.environ, "CI": os.environ.get("CI", "")},
    )
    wall_s = time.monotonic() - started

    assert done.returncode == 0, done.stdout + done.stderr[-4000:]
    summary = json.loads((report_dir / "soak-summary.json").read_text())
    assert summary["passed"] is True
    assert {c["name"]: c["passed"] for c in summary["checks"]} == {
        "ledger_exact": True,
        "received_equals_delivered": True,
        "memory_flat": True,
        "no_unexplained_errors": True,
        "nothing_lost": True,
        "run_as_planned": True,
    }
    faults = {fault["kind"]: fault for fault in summary["faults"]}
    assert faults["broker_restart"]["injected"] is True
    assert set(faults["broker_restart"]["steps"]) == {"stop_app", "start_app"}
    assert faults["replica_kill"]["injected"] is True
    assert [i["instance"] for i in summary["instances"]] == [
        "r1#1",
        "r2#1",
        "r2#2",
        "r3#1",
    ]
    assert summary["instances"][1]["exitCode"] == -9
    figures = summary["figures"]
    assert figures["eventsPublished"] > 0.8 * SOAK_TEST_S * 100
    assert figures["sessions"] > 60
    assert figures["clientDrops"] > 0
    assert figures["streamsEnded"]["lost"] > 0  # the killed replica's streams
    killed = next(r for r in summary["reconciliation"] if r["killed"])
    assert killed["openAtKill"] > 0
    assert (report_dir / "soak-rss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in (report_dir / "logs").iterdir()) == [
        "r1-1.log",
        "r2-1.log",
        "r2-2.log",
        "r3-1.log",
    ]
    assert "PASSED" in done.stdout and "faults" in done.stdout
    assert wall_s < SOAK_TIMEOUT_S
