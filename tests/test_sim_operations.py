"""Each operation and client behaviour leaves its signature in the metrics."""

from __future__ import annotations

from dataclasses import replace

import pytest

from hub.core import Latency
from sim import (
    AdminDisconnect,
    ClientMix,
    Clients,
    DeployNewType,
    FaultWindow,
    HubSettings,
    RollingDeploy,
    SimulationResult,
    World,
    parse_distribution,
)

from .sim_worlds import STEADY, small_world

NEW_TYPE = "eligibility.checked"


def run(**changes: object) -> SimulationResult:
    result = World(small_world(**changes)).run()
    assert not result.ledger_violations, result.ledger_violations[:3]
    return result


def total_streams(result: SimulationResult, at: float) -> float:
    return result.value("rcm_realtime_subscribers", at=at)


def test_flapping_clients_are_evicted_and_reconnect() -> None:
    """Dark sockets fill their queues (backpressure), are evicted after the
    eviction time, and their clients reconnect; steady readers lose nothing."""
    result = run(
        duration_s=120.0,
        hub=HubSettings(queue_size=8, evict_after_s=5.0),
        clients=Clients(
            mix=ClientMix(steady=0.5, slow=0.0, flapping=0.5, half_open=0.0),
            flap_every=parse_distribution("exp(10)"),
            flap_dark=parse_distribution("fixed(20)"),
            socket_buffer_frames=4,
            reconnect_jitter=0.0,
        ),
    )
    end = result.sample_times[-1]

    assert result.increase("rcm_realtime_dropped_total", 0, end, reason="backpressure")
    evictions = result.increase(
        "rcm_realtime_disconnects_total", 0, end, reason="evicted"
    )
    assert evictions > 0
    flapping = [c for c in result.clients if c.kind == "flapping"]
    steady = [c for c in result.clients if c.kind == "steady"]
    assert sum(c.streams_ended.get("evicted", 0) for c in flapping) == evictions
    for client in flapping:
        evicted = client.streams_ended.get("evicted", 0)
        if evicted:
            # Each eviction but one still running at the end is followed by a
            # reconnect.
            assert client.connections >= evicted
            assert client.lost_in_socket > 0
    assert sum(c.connections for c in flapping) > len(flapping)
    for client in steady:
        assert client.streams_ended == {}
        assert (client.missed, client.duplicates) == (0, 0)


def test_rolling_deploy_says_server_shutdown_and_the_gauge_dips() -> None:
    """Each replica in turn says server_shutdown to every stream and restarts;
    the open streams dip while clients wait out retry:, then come back."""
    result = run(
        duration_s=70.0,
        operations=(RollingDeploy(at_s=20.0, interval_s=15.0, restart_s=3.0),),
    )
    end = result.sample_times[-1]

    shutdowns = result.disconnects("shutdown")
    assert shutdowns == sum(c.farewells for c in result.clients) > 0
    assert all(c.farewells >= 1 for c in result.clients)
    assert total_streams(result, 19.0) == 60
    dip = min(total_streams(result, t) for t in range(20, 45))
    assert dip < 60
    assert total_streams(result, end) == 60
    assert result.value("sim_replica_ready", at=21.0, replica="r1") == 0
    assert [run.generation for run in result.generations if run.replica == "r1"] == [
        1,
        2,
    ]
    # retry: is 3 s (plus the farewell's spread): nobody comes back sooner, and
    # nobody comes back to the replica that dropped it.
    for client in result.clients:
        for at, replica in client.connects:
            assert not (20.0 < at < 23.0 or 35.0 < at < 38.0), (client.client_id, at)
            if 20.0 < at < 35.0:
                assert replica == "r2"
    assert all(c.missed == 0 for c in result.clients)


def test_admin_disconnect_ejects_one_tenant_on_every_replica() -> None:
    """The tenant's streams get server_shutdown (admin) and, told not to come
    back, stay away; other tenants are untouched."""
    result = run(
        duration_s=40.0,
        operations=(AdminDisconnect(at_s=20.0, tenant="acme"),),
        clients=Clients(mix=STEADY, reconnect_after_admin=False),
    )
    end = result.sample_times[-1]
    before = result.value("rcm_realtime_subscribers", at=19.0, tenant_id="acme")

    assert before > 0
    ejected = result.increase(
        "rcm_realtime_disconnects_total", 0, end, reason="admin", tenant_id="acme"
    )
    assert ejected == before
    assert result.value("rcm_realtime_subscribers", at=end, tenant_id="acme") == 0
    for tenant in ("globex", "initech"):
        assert not result.increase(
            "rcm_realtime_disconnects_total", 0, end, reason="admin", tenant_id=tenant
        )
        assert result.value(
            "rcm_realtime_subscribers", at=end, tenant_id=tenant
        ) == result.value("rcm_realtime_subscribers", at=19.0, tenant_id=tenant)
    for client in result.clients:
        if client.tenant_id == "acme":
            assert client.streams_ended == {"admin": 1}
            assert client.final_state == "gone"


def test_deploy_of_an_unseeded_event_type_spikes_permission_drops() -> None:
    """Users hold every read scope, so nothing is refused until a deploy lands a
    type whose scope no role seeds: then every frame of it is a permission drop,
    and replicas not yet deployed drop it as an unknown type."""
    result = run(
        duration_s=60.0,
        operations=(
            DeployNewType(at_s=20.0, interval_s=10.0, restart_s=2.0, rate_per_s=5.0),
        ),
    )
    end = result.sample_times[-1]

    assert not result.increase("rcm_realtime_dropped_total", 0, 19, reason="permission")
    refused = result.increase(
        "rcm_realtime_dropped_total", 20, end, reason="permission"
    )
    assert refused > 0
    for replica in ("r1", "r2"):
        assert result.increase(
            "rcm_realtime_events_dispatched_total",
            35,
            end,
            replica=replica,
            event_type=NEW_TYPE,
        )
    # r2 closes at 30: until then it has no row for the type.
    assert result.increase(
        "rcm_realtime_dropped_total", 20, 30, replica="r2", reason="unknown_type"
    )
    # Every other frame reached its reader: the refused ones are exactly the
    # new type's, and nobody missed anything they may read.
    assert result.total("fanout") - result.total("delivered") == result.dropped(
        "permission"
    )
    assert result.dropped("backpressure") == result.dropped("disconnected") == 0
    assert all(c.missed == 0 for c in result.clients)


@pytest.mark.parametrize(
    ("fault", "lost"),
    [
        (FaultWindow(kind="pause", replica="r1", at_s=20.0, duration_s=10.0), False),
        (FaultWindow(kind="cut", replica="r1", at_s=20.0, duration_s=10.0), True),
        (
            FaultWindow(
                kind="drop", replica="r1", at_s=20.0, duration_s=10.0, fraction=0.5
            ),
            True,
        ),
        (
            FaultWindow(
                kind="latency",
                replica="r1",
                at_s=20.0,
                duration_s=10.0,
                latency=Latency.fixed(2.0),
            ),
            False,
        ),
    ],
    ids=["pause", "cut", "drop", "latency"],
)
def test_bus_faults_take_exactly_what_the_metrics_show(
    fault: FaultWindow, lost: bool
) -> None:
    """A faulted replica dispatches fewer events than its peer by exactly what
    the fault took, and a held subscription shows its backlog."""
    result = run(duration_s=50.0, faults=(fault,))
    end = result.sample_times[-1]
    dispatched = {
        replica: result.value(
            "rcm_realtime_events_dispatched_total", at=end, replica=replica
        )
        for replica in ("r1", "r2")
    }
    [r1] = [run for run in result.generations if run.replica == "r1"]

    taken = r1.bus_dropped + r1.bus_cut
    assert dispatched["r2"] - dispatched["r1"] == taken
    assert (taken > 0) is lost
    if fault.kind == "pause":
        assert result.value("rcm_realtime_bus_backlog", at=29.0, replica="r1") > 0
        assert result.value("rcm_realtime_bus_backlog", at=end, replica="r1") == 0
    if fault.kind == "cut":
        assert result.value("sim_replica_ready", at=25.0, replica="r1") == 0
        assert result.value("sim_replica_ready", at=35.0, replica="r1") == 1
    if fault.kind == "latency":
        slow = result.value(
            "rcm_realtime_delivery_latency_seconds_bucket",
            at=end,
            replica="r1",
            le="1.0",
        )
        written = result.value(
            "rcm_realtime_delivery_latency_seconds_count", at=end, replica="r1"
        )
        assert slow < written


def test_half_open_connections_linger_until_evicted_or_timed_out() -> None:
    """A client that vanishes without a FIN leaves a stream the hub keeps
    writing into until eviction (or the write times out); what the socket took
    is lost, and the hub counted it as delivered."""
    result = run(
        duration_s=120.0,
        # Eviction takes longer than the users take to come back, so ghosts and
        # their users' new streams overlap.
        hub=HubSettings(queue_size=8, evict_after_s=40.0),
        clients=Clients(
            mix=ClientMix(steady=0.0, slow=0.0, flapping=0.0, half_open=1.0),
            half_open_after=parse_distribution("exp(20)"),
            half_open_return=parse_distribution("fixed(30)"),
            socket_buffer_frames=4,
            tcp_timeout_s=60.0,
        ),
    )
    end = result.sample_times[-1]

    gone = result.increase("rcm_realtime_disconnects_total", 0, end, reason="evicted")
    gone += result.increase("rcm_realtime_disconnects_total", 0, end, reason="client")
    spells = sum(c.half_open_spells for c in result.clients)
    assert spells > 0
    assert gone > 0
    assert sum(c.lost_in_socket for c in result.clients) > 0
    # Ghosts still count as open streams while their clients are back on new ones.
    assert max(total_streams(result, t) for t in result.sample_times) > 60


def test_slow_reader_alone_pays_for_its_slowness() -> None:
    """One slow client among steady ones drops frames for backpressure; the
    steady ones lose nothing."""
    world = small_world(
        duration_s=60.0,
        hub=HubSettings(queue_size=8, evict_after_s=1e9),
        clients=Clients(
            mix=ClientMix(steady=0.9, slow=0.1, flapping=0.0, half_open=0.0),
            slow_drain_rate_per_s=1.0,
        ),
    )
    result = World(replace(world, seed=11)).run()
    slow = [c for c in result.clients if c.kind == "slow"]
    steady = [c for c in result.clients if c.kind == "steady"]

    assert slow and all(c.missed > 0 for c in slow)
    assert all(c.missed == 0 for c in steady)
    end = result.sample_times[-1]
    assert result.increase("rcm_realtime_dropped_total", 0, end, reason="backpressure")
