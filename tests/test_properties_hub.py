"""The contract's laws (ledger, gauges, isolation, farewells) over the hub core,
driven by the stateful machine in ``tests/stateful.py``."""

from __future__ import annotations

from collections import deque

from hypothesis import given, settings
from hypothesis import strategies as st

from hub import load_catalog
from hub.core import (
    Catalog,
    CoreSettings,
    DisconnectReason,
    Envelope,
    HubCore,
    Principal,
    SubscriberState,
)

from .stateful import CoreAdapter, FakeClock, HubMachine, HubUnderTest

CATALOG = load_catalog()
MACHINE_RUNS = 400


class CoreHubMachine(HubMachine):
    """The bare core behind a fake clock, with the edge's writes played inline."""

    def make_hub(self, settings: CoreSettings, catalog: Catalog) -> HubUnderTest:
        return CoreAdapter(settings, catalog)


TestCoreHubKeepsTheLaws = CoreHubMachine.TestCase
# Many runs end before anything overflows or goes quiet, so the machine gets more of
# them than the profile's default; still about ten seconds on the ci profile.
TestCoreHubKeepsTheLaws.settings = settings(
    max_examples=max(MACHINE_RUNS, settings().max_examples)
)


@given(
    queued=st.integers(min_value=0, max_value=4),
    counts=st.lists(st.integers(min_value=0, max_value=6), max_size=4),
)
def test_mark_written_moves_at_most_what_is_queued(
    queued: int, counts: list[int]
) -> None:
    """Marking ``count`` frames written delivers the oldest ``min(count, queued)``
    frames, keeps the ledger, and never fails on a short or empty queue."""
    core = HubCore(catalog=CATALOG, clock=FakeClock(), replica_id="r1")
    subscriber = core.subscribe(Principal("user", "acme", frozenset({"claims.read"})))
    for n in range(queued):
        core.dispatch(
            Envelope(
                id=f"e{n}",
                type="claim.submitted",
                tenant_id="acme",
                occurred_at="2027-01-15T08:00:00.000Z",
                severity="info",
                payload={},
            )
        )
    delivered = 0
    for count in counts:
        moved = min(count, len(subscriber.queue))
        core.mark_written(subscriber, count)
        delivered += moved
        assert subscriber.delivered == delivered
        assert len(subscriber.queue) == queued - delivered
        assert core.counters("acme").ledger_gap() == 0
        if delivered:
            assert subscriber.last_event_id == f"e{delivered - 1}"


# -- focused laws: eviction time and replay --------------------------------------------
# The machine covers these among everything else; these properties aim straight at
# them, so that a regression is caught by every run of the ci profile.

EVICT_AFTER_S = 10.0
one_stream_steps = st.lists(
    st.one_of(
        st.tuples(st.just("publish"), st.integers(min_value=1, max_value=4)),
        st.tuples(st.just("drain"), st.integers(min_value=1, max_value=3)),
        st.tuples(
            st.just("advance"), st.sampled_from((0.0, 2.5, 5.0, 9.5, 10.0, 10.5))
        ),
        st.tuples(st.just("tick"), st.just(0)),
    ),
    max_size=25,
)


def claim(
    n: int, tenant: str = "acme", event_type: str = "claim.submitted"
) -> Envelope:
    return Envelope(
        id=f"e{n}",
        type=event_type,
        tenant_id=tenant,
        occurred_at="2027-01-15T08:00:00.000Z",
        severity="info",
        payload={},
    )


@given(steps=one_stream_steps)
def test_a_stream_is_evicted_exactly_when_its_backpressure_outlasts_the_limit(
    steps: list[tuple[str, float]],
) -> None:
    """A stream that keeps overflowing without reading for the eviction time is
    evicted at the next overflow or tick, and never a moment sooner."""
    clock = FakeClock()
    core = HubCore(
        catalog=CATALOG,
        clock=clock,
        replica_id="r1",
        settings=CoreSettings(queue_size=2, evict_after_s=EVICT_AFTER_S),
    )
    subscriber = core.subscribe(Principal("user", "acme", frozenset({"claims.read"})))
    overflowing_since: float | None = None
    published = 0
    for action, amount in steps:
        if action == "publish":
            for _ in range(int(amount)):
                published += 1
                full = len(subscriber.queue) >= 2
                core.dispatch(claim(published))
                if full and overflowing_since is None:
                    overflowing_since = clock.t
        elif action == "drain":
            if subscriber.queue:
                overflowing_since = None
            core.mark_written(subscriber, int(amount))
        elif action == "advance":
            clock.t += amount
        else:
            core.tick()
            if overflowing_since is not None:
                due = clock.t - overflowing_since >= EVICT_AFTER_S
                assert (subscriber.disconnect_reason is DisconnectReason.EVICTED) is due
        if subscriber.state is SubscriberState.CLOSED:
            assert subscriber.disconnect_reason is DisconnectReason.EVICTED
            assert overflowing_since is not None
            assert clock.t - overflowing_since >= EVICT_AFTER_S, (
                f"evicted at {clock.t}, overflowing since {overflowing_since}"
            )
            return


def allowed(event_type: str, scopes: frozenset[str]) -> bool:
    row = CATALOG.row(event_type)
    return row is not None and row.required_permission in scopes


@given(
    published=st.lists(
        st.tuples(
            st.sampled_from(("acme", "globex")),
            st.sampled_from(("claim.submitted", "denial.created", "widget.created")),
        ),
        min_size=1,
        max_size=12,
    ),
    scopes=st.frozensets(st.sampled_from(("claims.read", "denials.read"))),
    read=st.integers(min_value=0, max_value=12),
    more=st.integers(min_value=0, max_value=4),
)
def test_a_reconnect_replays_exactly_what_followed_its_last_event(
    published: list[tuple[str, str]],
    scopes: frozenset[str],
    read: int,
    more: int,
) -> None:
    """Reconnecting with the last id it read, a client gets every later event of
    its tenant it may see, once, in order; another tenant's id or an unknown one
    replays nothing and asks for a reload."""
    core = HubCore(catalog=CATALOG, clock=FakeClock(), replica_id="r1")
    principal = Principal("user", "acme", scopes)
    first = core.subscribe(principal)
    for n, (tenant, event_type) in enumerate(published):
        core.dispatch(claim(n, tenant, event_type))
    core.mark_written(first, read)
    eligible = [
        f"e{n}"
        for n, (tenant, event_type) in enumerate(published)
        if tenant == "acme" and allowed(event_type, scopes)
    ]
    delivered = eligible[:read]
    assert first.delivered == len(delivered)
    core.disconnect(first)
    for n in range(len(published), len(published) + more):
        core.dispatch(claim(n))

    if delivered:
        again = core.subscribe(principal, last_event_id=delivered[-1])
        expected = [
            f"e{n}"
            for n, (tenant, event_type) in enumerate(
                published + [("acme", "claim.submitted")] * more
            )
            if n > int(delivered[-1][1:])
            and tenant == "acme"
            and allowed(event_type, scopes)
        ]
        assert [f.envelope.id for f in again.queue] == expected
        assert not set(delivered) & {f.envelope.id for f in again.queue}
        assert again.notice is None
    foreign = [f"e{n}" for n, (tenant, _) in enumerate(published) if tenant != "acme"]
    for last_event_id in [*foreign[-1:], "never-sent"]:
        stranger = core.subscribe(principal, last_event_id=last_event_id)
        assert stranger.queue == deque()
        assert stranger.notice is not None and b"replay_unavailable" in stranger.notice
    assert core.counters("acme").ledger_gap() == 0
