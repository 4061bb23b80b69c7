"""The simulator's metrics are the hub's metrics, and its ledger is exact."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import generate_latest

from hub._metrics import replica_registry
from hub.core import Latency
from sim import (
    AdminDisconnect,
    Checks,
    ClientMix,
    Clients,
    DeployNewType,
    Emitter,
    FaultWindow,
    HubSettings,
    Interchanges,
    RollingDeploy,
    Workload,
    World,
    WorldConfig,
    parse_distribution,
)

from .sim_worlds import small_world
from .support import LABEL, METRIC_LINE


def busy_world(**changes: object) -> WorldConfig:
    """Every behaviour, operation and fault at once, on a small scale."""
    world = small_world(
        duration_s=90.0,
        hub=HubSettings(queue_size=8, evict_after_s=4.0, quiet_window_ms=2000),
        clients=Clients(
            mix=ClientMix(steady=0.4, slow=0.2, flapping=0.2, half_open=0.2),
            flap_every=parse_distribution("exp(8)"),
            flap_dark=parse_distribution("uniform(2, 15)"),
            half_open_after=parse_distribution("exp(20)"),
            half_open_return=parse_distribution("exp(10)"),
            slow_drain_rate_per_s=2.0,
            socket_buffer_frames=3,
            tcp_timeout_s=20.0,
        ),
        workload=Workload(
            emitters=(Emitter(family="claims", rate_per_s=10.0),),
            interchanges=Interchanges(
                per_partner_per_hour=600.0, pause_probability=0.2
            ),
        ),
        operations=(
            RollingDeploy(at_s=20.0, interval_s=5.0, restart_s=1.0),
            AdminDisconnect(at_s=40.0, tenant="globex"),
            DeployNewType(at_s=55.0, interval_s=4.0, restart_s=1.0),
        ),
        faults=(
            FaultWindow(kind="pause", replica="r1", at_s=10.0, duration_s=8.0),
            FaultWindow(
                kind="drop", replica="r2", at_s=30.0, duration_s=10.0, fraction=0.3
            ),
            FaultWindow(kind="cut", replica="r1", at_s=45.0, duration_s=5.0),
            FaultWindow(
                kind="latency",
                replica="r2",
                at_s=70.0,
                duration_s=10.0,
                latency=Latency.uniform(0.1, 3.0),
            ),
        ),
    )
    return world.with_changes(**changes) if changes else world


def test_ledger_holds_after_every_step_of_a_busy_world() -> None:
    """Through deploys, ejections, faults, evictions and half-open streams, the
    ledger and the gauges are exact after every simulation step."""
    result = World(busy_world(checks=Checks(ledger_every_step=True))).run()

    assert result.ledger_checks > 10_000
    assert result.ledger_violations == []
    # The world really did all of it.
    for reason in ("evicted", "shutdown", "admin"):
        assert result.disconnects(reason) > 0, reason
    for reason in ("permission", "backpressure", "disconnected", "unknown_type"):
        assert result.dropped(reason) > 0, reason


def test_a_broken_ledger_is_reported() -> None:
    """A counter that loses step with the others shows up as a violation, with
    the replica, tenant and time."""
    world = World(small_world(duration_s=20.0))

    def corrupt() -> None:
        generation = world.replicas[0].current
        assert generation is not None
        generation.core.counters("acme").fanout += 1

    world.env.timeout(10.5).callbacks.append(lambda _: corrupt())
    result = world.run()

    assert result.ledger_violations
    first = result.ledger_violations[0]
    assert (first.replica, first.tenant_id, first.time_s) == ("r1", "acme", 11.0)
    assert "fanout" in first.detail


def exposition(text: str) -> Iterator[tuple[str, frozenset[tuple[str, str]], float]]:
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = METRIC_LINE.match(line)
        assert match, line
        labels = frozenset(LABEL.findall(match.group(2) or ""))
        yield match.group(1), labels, float(match.group(3))


def test_samples_are_what_the_hub_exposes_for_the_same_core() -> None:
    """At the end of a run, every contract series of every replica equals what
    the hub's own Prometheus collector renders for that replica's core."""
    world = World(busy_world())
    result = world.run()
    end = result.sample_times[-1]

    for replica in world.replicas:
        generation = replica.current
        assert generation is not None
        registry = replica_registry(
            generation.core, generation.latency, generation.subscription.backlog
        )
        hub_samples = {
            (name, labels): value
            for name, labels, value in exposition(generate_latest(registry).decode())
        }
        sim_samples = {}
        for record in result.series:
            if record.time_s != end or record.replica != replica.name:
                continue
            if record.metric.startswith("sim_"):
                continue
            labels = {
                key: getattr(record, key)
                for key in ("tenant_id", "event_type", "reason", "le")
                if getattr(record, key)
            }
            sim_samples[(record.metric, frozenset(labels.items()))] = record.value
        assert sim_samples == hub_samples
