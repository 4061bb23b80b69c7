"""What a caller such as the scenario runner builds worlds from: subscriber groups,
explicit schedules, per-tenant emitters, hot catalog rows, reset-proof counters."""

from __future__ import annotations

from dataclasses import replace

from hub.core import BatchRef, Envelope
from sim import (
    Clients,
    DeployNewType,
    Emitter,
    HubSettings,
    RollingDeploy,
    SubscriberGroup,
    Topology,
    Workload,
    World,
    WorldConfig,
    parse_distribution,
)

from .sim_worlds import STEADY, small_world


def grouped_world(*groups: SubscriberGroup, **changes: object) -> WorldConfig:
    world = small_world(
        topology=replace(
            small_world().topology, subscribers=0, tenant_names=(), groups=groups
        ),
        workload=Workload(
            emitters=(Emitter(types=("claim.submitted",), rate_per_s=5.0),),
            interchanges=small_world().workload.interchanges,
        ),
    )
    return world.with_changes(**changes) if changes else world


def test_groups_bring_their_tenants_roles_pins_and_connect_times() -> None:
    """Each group's streams belong to its tenant, hold its roles' and its own
    scopes, connect evenly over its window and stay on a pinned replica."""
    result = World(
        grouped_world(
            SubscriberGroup(
                name="billing",
                tenant="acme",
                count=4,
                roles=("BILLING_SPECIALIST",),
                replica="r2",
                connect_at_s=2.0,
                connect_over_s=4.0,
            ),
            SubscriberGroup(
                name="ops", tenant="globex", count=2, scopes=("claims.read",)
            ),
            operations=(RollingDeploy(at_s=20.0, restart_s=1.0, replicas=("r2",)),),
        )
    ).run()
    billing = [c for c in result.clients if c.group == "billing"]
    ops = [c for c in result.clients if c.group == "ops"]

    assert {c.tenant_id for c in billing} == {"acme"}
    assert billing[0].scopes == ("batches.read", "claims.read", "denials.read")
    assert [c.connects[0][0] for c in billing] == [2.0, 3.0, 4.0, 5.0]
    # Pinned: after r2's restart they come back to r2, nowhere else.
    assert all({replica for _, replica in c.connects} == {"r2"} for c in billing)
    assert all(c.connections == 2 for c in billing)
    assert ops[0].scopes == ("claims.read",)
    assert all(c.should == c.got > 0 for c in ops)


def test_explicit_schedule_is_published_at_its_times() -> None:
    """Envelopes handed to ``publish_at`` reach the bus at their times, count in
    the truth, and their batches are judged like any interchange."""
    world = World(
        grouped_world(
            SubscriberGroup(
                name="posters", tenant="acme", count=3, roles=("PAYMENT_POSTER",)
            ),
            workload=Workload(
                emitters=(), interchanges=small_world().workload.interchanges
            ),
        )
    )
    for index, at in enumerate((10.0, 10.5, 11.0, 30.0)):
        world.publish_at(
            at,
            Envelope(
                id=f"scheduled-{index}",
                type="remittance.payment.posted",
                tenant_id="acme",
                occurred_at=world.occurred_at(at),
                severity="success",
                payload={"seq": index},
                batch=BatchRef("availity", "000000042") if at < 20 else None,
            ),
        )
    result = world.run()

    assert result.published == 4
    assert all((c.should, c.got) == (4, 4) for c in result.clients)
    batches = [b for b in result.batches if b.replica == "r1"]
    assert len(batches) == 1
    [batch] = batches
    assert (batch.events, batch.first_event_s, batch.last_event_s) == (3, 10.0, 11.0)
    assert (batch.completions, batch.premature, batch.final_event_count) == (1, 0, 3)


def test_emitters_can_be_held_to_tenants_and_a_window() -> None:
    """An emitter limited to one tenant and a time window publishes only there
    and then, with padded payloads."""
    world = small_world(
        duration_s=30.0,
        workload=Workload(
            emitters=(
                Emitter(
                    family="claims",
                    rate_per_s=20.0,
                    tenants=("globex",),
                    start_s=10.0,
                    stop_s=20.0,
                    payload_bytes=500,
                ),
            ),
            interchanges=small_world().workload.interchanges,
        ),
    )
    result = World(world).run()
    end = result.sample_times[-1]

    def dispatched(tenant: str, start: float, stop: float) -> float:
        return result.increase(
            "rcm_realtime_events_dispatched_total",
            start,
            stop,
            replica="r1",
            tenant_id=tenant,
        )

    assert dispatched("globex", 10.0, 21.0) > 100
    assert dispatched("globex", 0.0, 10.0) == dispatched("globex", 21.0, end) == 0
    assert dispatched("acme", 0.0, end) == dispatched("initech", 0.0, end) == 0


def test_catalog_row_can_land_without_a_restart() -> None:
    """Without a restart the row reaches every running replica at once: no
    server_shutdown, and permission drops on every replica right away."""
    result = World(
        small_world(
            duration_s=30.0,
            operations=(DeployNewType(at_s=10.0, restart=False, rate_per_s=5.0),),
        )
    ).run()
    end = result.sample_times[-1]

    assert result.disconnects("shutdown") == 0
    assert result.dropped("unknown_type") == 0
    for replica in ("r1", "r2"):
        assert result.increase(
            "rcm_realtime_dropped_total", 10, end, replica=replica, reason="permission"
        )


def test_flapping_clients_can_drop_their_socket_and_resume() -> None:
    """A flapping client that drops its socket after a dark spell reconnects
    with Last-Event-ID, and the replay gives back what the socket lost."""
    result = World(
        small_world(
            duration_s=60.0,
            hub=HubSettings(evict_after_s=1e9),
            clients=Clients(
                mix=replace(STEADY, steady=0.0, flapping=1.0),
                flap_every=parse_distribution("fixed(10)"),
                flap_dark=parse_distribution("fixed(3)"),
                flap_drops_socket=True,
            ),
        )
    ).run()

    assert result.disconnects("client") > 0
    assert all(c.streams_ended.get("client", 0) >= 4 for c in result.clients)
    assert all(c.missed == 0 and c.reload_notices == 0 for c in result.clients)


def test_final_totals_read_counters_across_restarts() -> None:
    """After a rolling deploy the per-process counters restart at zero; the final
    totals add every process up, as Prometheus reads a reset."""
    result = World(
        small_world(
            duration_s=40.0,
            operations=(RollingDeploy(at_s=10.0, interval_s=5.0, restart_s=1.0),),
        )
    ).run()

    assert result.final_total("rcm_realtime_delivered_total") == result.total(
        "delivered"
    )
    assert result.final_total(
        "rcm_realtime_disconnects_total", reason="shutdown"
    ) == result.disconnects("shutdown")
    end = result.sample_times[-1]
    assert result.value("rcm_realtime_delivered_total", at=end) < result.total(
        "delivered"
    )


def test_topology_without_groups_or_subscribers_runs_empty() -> None:
    """A world with no streams still dispatches and reports."""
    result = World(
        small_world(duration_s=5.0, topology=Topology(replicas=1, subscribers=0))
    ).run()

    assert result.clients == []
    assert result.total("dispatched") == result.published > 0
