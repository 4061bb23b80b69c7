"""The truth only a simulator knows: per client and per interchange."""

from __future__ import annotations

from dataclasses import replace

import pytest

import sim._streams as streams
from hub.core import Latency
from sim import (
    BusModel,
    ClientMix,
    Clients,
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
from .test_sim_ledger import busy_world


def test_steady_clients_in_a_calm_world_get_everything_once() -> None:
    """Without faults or operations every client gets each event it may read,
    exactly once, a bus latency after it occurred."""
    result = World(small_world(duration_s=30.0)).run()

    for client in result.clients:
        assert client.should > 0
        assert (client.got, client.missed, client.duplicates) == (client.should, 0, 0)
        assert client.connections == 1
        assert client.staleness_max_s is not None
        # occurredAt has milliseconds; the bus takes 2 ms.
        assert client.staleness_max_s < 0.004
    assert sum(c.got for c in result.clients) == result.total("delivered")


def test_a_client_sees_only_what_its_roles_allow() -> None:
    """A user whose roles seed no scope of the published family should have, and
    gets, nothing; the hub counts its frames as permission drops."""
    world = small_world(
        duration_s=20.0,
        topology=replace(
            small_world().topology, roles={"AUTHORIZATION_COORDINATOR": 1.0}
        ),
    )
    result = World(world).run()

    assert all(c.should == c.got == 0 for c in result.clients)
    assert result.dropped("permission") == result.total("fanout") > 0


def test_reconnecting_to_a_lagging_replica_shows_duplicates() -> None:
    """Clients moved by a deploy onto a replica whose subscription was paused
    are told to reload (it cannot replay what it has not seen), then get the
    backlog again: the truth counts the second copies as duplicates."""
    world = small_world(
        duration_s=60.0,
        operations=(RollingDeploy(at_s=20.0, restart_s=2.0, replicas=("r1",)),),
        faults=(FaultWindow(kind="pause", replica="r2", at_s=10.0, duration_s=30.0),),
        hub=HubSettings(shutdown_retry_spread_ms=0),
    )
    result = World(world).run()
    moved = [c for c in result.clients if c.farewells]

    assert moved
    assert all(c.duplicates > 0 and c.reload_notices == 1 for c in moved)
    assert all(c.missed == 0 for c in result.clients)


def test_fast_writer_counts_what_the_frame_by_frame_writer_counts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The bulk writer for fresh live streams reaches the same per-client truth
    as writing every stream frame by frame."""
    fast = World(busy_world()).run()
    monkeypatch.setattr(streams.Connection, "begin_span", lambda self: None)
    slow = World(busy_world()).run()

    assert fast.clients_jsonl() == slow.clients_jsonl()
    assert fast.series_csv() == slow.series_csv()


def interchange_world(
    *, pause_probability: float, quiet_window_ms: int, pause: str = "fixed(8)"
) -> WorldConfig:
    return small_world(
        duration_s=600.0,
        hub=HubSettings(quiet_window_ms=quiet_window_ms),
        bus=BusModel(latency=Latency.fixed(0.002)),
        clients=Clients(
            mix=ClientMix(steady=1.0, slow=0.0, flapping=0.0, half_open=0.0)
        ),
        workload=Workload(
            emitters=(),
            interchanges=Interchanges(
                per_partner_per_hour=20.0,
                size=parse_distribution("fixed(10)"),
                gap=parse_distribution("uniform(0.1, 1.0)"),
                pause_probability=pause_probability,
                pause=parse_distribution(pause),
            ),
        ),
    )


def test_interchanges_without_long_pauses_complete_once_after_the_window() -> None:
    """Gaps well inside the quiet window: one completion per interchange and
    replica, counting every event, one window after the last."""
    result = World(interchange_world(pause_probability=0.0, quiet_window_ms=5000)).run()
    batches = [b for b in result.batches if not b.truncated]

    assert len(batches) >= 10
    for batch in batches:
        assert (batch.completions, batch.premature) == (1, 0)
        assert batch.final_event_count == batch.events == 10
        assert batch.latency_s == pytest.approx(5.0, abs=0.01)


def test_pauses_longer_than_the_window_complete_prematurely() -> None:
    """An 8 s pause under a 5 s window splits the interchange: a completion comes
    before its last event; a 10 s window does not split it."""
    short = World(interchange_world(pause_probability=0.3, quiet_window_ms=5000)).run()
    long = World(interchange_world(pause_probability=0.3, quiet_window_ms=10000)).run()

    split = [b for b in short.batches if not b.truncated and b.premature]
    assert split
    for batch in split:
        assert batch.completions == batch.premature + 1
        assert batch.final_event_count is not None
        assert batch.final_event_count < batch.events
    assert all(b.premature == 0 for b in long.batches if not b.truncated)
