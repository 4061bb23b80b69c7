"""The simulator's options for callers that script a world (the scenario runner):
socket allowances in bytes, slow readers behind their socket, clients that walk
the replicas themselves, a dark clock per client, and per-event reads."""

from __future__ import annotations

from dataclasses import replace

import pytest

from hub.core import Envelope, encode_event
from sim import (
    Clients,
    HubSettings,
    RollingDeploy,
    SubscriberGroup,
    Topology,
    Workload,
    World,
    WorldConfig,
    parse_distribution,
)

from .sim_worlds import small_world


def scripted_world(*groups: SubscriberGroup, **changes: object) -> WorldConfig:
    """Only the given groups, no workload of its own; ``changes`` replace
    top-level fields."""
    world = small_world(
        topology=Topology(
            replicas=1, subscribers=0, tenant_names=("acme",), groups=groups
        ),
        workload=Workload(
            emitters=(), interchanges=small_world().workload.interchanges
        ),
    )
    return replace(world, **changes)


def publish_padded(world: World, count: int, every_s: float, pad: int) -> int:
    """``count`` acme claims of one size from 1 s on; returns the frame size."""
    size = 0
    for number in range(count):
        at = 1.0 + number * every_s
        envelope = Envelope(
            id=f"event-{number:05d}",
            type="claim.submitted",
            tenant_id="acme",
            occurred_at=world.occurred_at(at),
            severity="info",
            payload={"pad": "x" * pad},
        )
        size = len(encode_event(envelope).frame)
        world.publish_at(at, envelope)
    return size


@pytest.mark.parametrize("pad", [0, 1000], ids=["small-frames", "large-frames"])
def test_unread_socket_takes_frames_while_their_bytes_fit(pad: int) -> None:
    """A stream whose client vanished absorbs as many whole frames as fit in the
    socket's bytes; the rest waits in the queue."""
    group = SubscriberGroup(
        name="gone",
        tenant="acme",
        roles=("BILLING_SPECIALIST",),
        behaviour="half_open",
        dark_after=parse_distribution("fixed(0.5)"),
    )
    world = World(
        scripted_world(
            group,
            duration_s=20.0,
            hub=HubSettings(queue_size=10_000, evict_after_s=1e9),
            clients=Clients(socket_buffer_bytes=20_000, half_open_return=None),
        )
    )
    size = publish_padded(world, 200, 0.05, pad)
    result = world.run()

    assert result.final_total("rcm_realtime_delivered_total") == 20_000 // size
    assert result.value("rcm_realtime_queued") == 200 - 20_000 // size
    [client] = result.clients
    assert client.lost_in_socket == 20_000 // size


def test_slow_reader_reads_behind_its_socket() -> None:
    """A slow reader with a byte-sized socket reads at its own pace while the hub
    counts as delivered what sits unread in its socket; the queue overflows."""
    group = SubscriberGroup(
        name="slow",
        tenant="acme",
        roles=("BILLING_SPECIALIST",),
        behaviour="slow",
        read_rate_per_s=2.0,
    )
    world = World(
        scripted_world(
            group,
            duration_s=30.0,
            hub=HubSettings(queue_size=10, evict_after_s=1e9),
            clients=Clients(socket_buffer_bytes=5_000, slow_drain="fixed"),
        )
    )
    # Events until after the end of the run, so the reader never catches up.
    size = publish_padded(world, 1000, 0.05, 200)
    result = world.run()

    [client] = result.clients
    in_socket = 5_000 // size
    # 2 frames a second from the first event at 1 s to the end of the run.
    assert client.got == pytest.approx(2 * (result.sample_times[-1] - 1.0), abs=2)
    assert result.final_total("rcm_realtime_delivered_total") == client.got + in_socket
    assert result.final_total("rcm_realtime_dropped_total", reason="backpressure") > 0


def test_clients_can_walk_the_replicas_in_turn() -> None:
    """With client rotation a group's streams start on replicas in turn by their
    place in the group, and each reconnect tries the next replica."""
    group = SubscriberGroup(
        name="ops", tenant="acme", count=6, roles=("PAYMENT_POSTER",)
    )
    world = scripted_world(
        group,
        duration_s=20.0,
        topology=Topology(
            replicas=3,
            subscribers=0,
            tenant_names=("acme",),
            groups=(group,),
            balancer="client_rotation",
        ),
        hub=HubSettings(retry_ms=500, shutdown_retry_spread_ms=0),
        operations=(RollingDeploy(at_s=5.0, interval_s=2.0, restart_s=0.0),),
    )
    result = World(world).run()

    walks = [[replica for _, replica in c.connects] for c in result.clients]
    # r1's streams move to r2 at 5 s, then with r2's own to r3 at 7 s, and all
    # of them to r1 once r3 closes at 9 s.
    assert walks[0] == ["r1", "r2", "r3", "r1"]
    assert walks[1] == ["r2", "r3", "r1"]
    assert walks[2] == ["r3", "r1"]
    assert walks[3] == ["r1", "r2", "r3", "r1"]


@pytest.mark.parametrize(
    ("clock", "second_connect_s", "third_connect_s"),
    [("connection", 24.0, 48.0), ("client", 24.0, 45.0)],
    ids=["from-each-connection", "from-the-last-spell"],
)
def test_dark_clock_counts_from_the_connection_or_the_last_spell(
    clock: str, second_connect_s: float, third_connect_s: float
) -> None:
    """A flapping client lit 6 s, dark 15 s, reconnecting 3 s after dropping its
    socket, goes dark again 6 s after reconnecting or 6 s after its last spell."""
    group = SubscriberGroup(
        name="flapper",
        tenant="acme",
        roles=("BILLING_SPECIALIST",),
        behaviour="flapping",
        dark_after=parse_distribution("fixed(6)"),
        dark_for=parse_distribution("fixed(15)"),
    )
    result = World(
        scripted_world(
            group,
            duration_s=50.0,
            clients=Clients(
                flap_drops_socket=True,
                reconnect_jitter=0.0,
                dark_clock=clock,  # type: ignore[arg-type]
            ),
        )
    ).run()

    [client] = result.clients
    times = [at for at, _ in client.connects]
    assert times == pytest.approx([0.0, second_connect_s, third_connect_s])


def test_recorded_reads_count_every_event_id() -> None:
    """With ``record_reads`` each client counts every event id it read, once
    per reading."""
    group = SubscriberGroup(
        name="readers", tenant="acme", count=2, roles=("BILLING_SPECIALIST",)
    )
    world = World(
        scripted_world(group, duration_s=10.0, clients=Clients(record_reads=True))
    )
    publish_padded(world, 20, 0.25, 0)
    world.run()

    for client in world.clients:
        assert client.reads is not None
        assert sorted(client.reads) == [f"event-{n:05d}" for n in range(20)]
        assert set(client.reads.values()) == {1}


@pytest.mark.parametrize(
    ("wait", "second_close_s"),
    [(False, 12.0), (True, 15.0)],
    ids=["from-each-close", "from-each-restart"],
)
def test_rolling_deploy_can_wait_for_each_replica_to_be_back(
    wait: bool, second_close_s: float
) -> None:
    """A slow reader holds r1's close for the whole grace period; a deploy that
    waits for each replica to be back closes r2 that much later."""
    group = SubscriberGroup(
        name="slow",
        tenant="acme",
        roles=("BILLING_SPECIALIST",),
        behaviour="slow",
        read_rate_per_s=1.0,
        replica="r1",
    )
    world = scripted_world(
        group,
        duration_s=30.0,
        topology=Topology(
            replicas=2, subscribers=0, tenant_names=("acme",), groups=(group,)
        ),
        hub=HubSettings(queue_size=50, evict_after_s=1e9, shutdown_grace_s=3.0),
        clients=Clients(slow_drain="fixed"),
        operations=(
            RollingDeploy(
                at_s=10.0, interval_s=2.0, restart_s=0.0, wait_for_restart=wait
            ),
        ),
    )
    simulated = World(world)
    publish_padded(simulated, 40, 0.1, 0)
    simulated.run()

    first, second = simulated.replicas
    assert first.generations[0].closed_at == pytest.approx(13.0)
    assert second.generations[0].closed_at == pytest.approx(second_close_s)


@pytest.mark.parametrize(
    "dark_after_s", [0.5, 1.72], ids=["dark-at-once", "dark-after-reading"]
)
def test_unread_stream_fills_its_socket_then_the_hubs_write_buffer(
    dark_after_s: float,
) -> None:
    """With 10 kB of socket and a writer that waits every 20 kB, a stream whose
    client stops reading takes about 30 kB, whenever it went dark."""
    group = SubscriberGroup(
        name="gone",
        tenant="acme",
        roles=("BILLING_SPECIALIST",),
        behaviour="half_open",
        dark_after=parse_distribution(f"fixed({dark_after_s})"),
    )
    world = World(
        scripted_world(
            group,
            duration_s=20.0,
            hub=HubSettings(queue_size=10_000, evict_after_s=1e9),
            clients=Clients(
                socket_buffer_bytes=10_000,
                write_drain_bytes=20_000,
                half_open_return=None,
            ),
        )
    )
    # 20 events a second from 1 s: 15 are read before the later dark spell.
    size = publish_padded(world, 200, 0.05, 1000)
    result = world.run()

    read = 0 if dark_after_s < 1.0 else 15
    taken = result.final_total("rcm_realtime_delivered_total") - read
    # The response head and the ready frame count towards the first wait.
    assert 30_000 - 2 * size < taken * size <= 30_000


def test_waiting_write_goes_through_once_the_reader_makes_room() -> None:
    """A slow reader of large frames frees room in its socket as it reads: the
    write that waited goes through and the hub counts more as delivered."""
    group = SubscriberGroup(
        name="slow",
        tenant="acme",
        roles=("BILLING_SPECIALIST",),
        behaviour="slow",
        read_rate_per_s=4.0,
    )
    world = World(
        scripted_world(
            group,
            duration_s=30.0,
            hub=HubSettings(queue_size=10_000, evict_after_s=1e9),
            clients=Clients(
                socket_buffer_bytes=10_000,
                write_drain_bytes=20_000,
                slow_drain="fixed",
            ),
        )
    )
    size = publish_padded(world, 600, 0.05, 1000)
    result = world.run()

    [client] = result.clients
    delivered = result.final_total("rcm_realtime_delivered_total")
    assert (delivered - client.got) * size <= 30_000
    assert delivered * size > 30_000 + 20 * size
