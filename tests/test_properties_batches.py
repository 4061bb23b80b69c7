"""Properties of the batch synthesizer and of recorded batch failures.

A bucket's arrivals split into runs wherever the bucket stays quiet for at least the
window; each run must be announced by exactly one ``batch.completed``, at the first
tick at or after the window has passed since the run's last arrival, whatever else
the ticks do. Replicas tick at their own moments, so two synthesizers fed the same
arrivals must announce the same envelopes even with different tick schedules.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hub import EventPublisher, MemoryBus, load_catalog
from hub.core import (
    BatchRef,
    BatchSynthesizer,
    Envelope,
    EnvelopeError,
    HubCore,
    Principal,
    SubscriberState,
    batch_failure_from_json,
    completion_id,
    format_timestamp,
    parse_timestamp,
)

from .sse import parse_stream

WINDOW_S = 5.0
EPOCH_S = 1_800_000_000.0
BUCKETS = (
    ("acme", "availity", "000000001"),
    ("acme", "availity", "000000002"),
    ("globex", "availity", "000000001"),
)
CATALOG = load_catalog()
READ_SCOPES = (
    "claims.read",
    "denials.read",
    "remittance.read",
    "authorizations.read",
    "batches.read",
)


@dataclass(frozen=True)
class Arrival:
    at: float
    bucket: int
    # How long before its arrival the event occurred; varies, so arrival order
    # and occurredAt order differ.
    lag_s: float


# Gaps around the window's edges (same instant, just under, exactly, just over),
# in half seconds so that the arithmetic is exact.
gaps = st.sampled_from((0.0, 0.5, 2.0, 4.5, 5.0, 5.5, 12.0))


@st.composite
def arrival_sequences(draw: st.DrawFn) -> list[Arrival]:
    steps = draw(
        st.lists(
            st.tuples(
                gaps,
                st.integers(min_value=0, max_value=len(BUCKETS) - 1),
                st.sampled_from((0.0, 0.5, 3.0)),
            ),
            min_size=1,
            max_size=30,
        )
    )
    arrivals, now = [], 0.0
    for gap, bucket, lag in steps:
        now += gap
        arrivals.append(Arrival(now, bucket, lag))
    return arrivals


# Tick times as gaps from the previous tick; a replica's timer may fire late, early
# or many times between two arrivals.
tick_schedules = st.lists(gaps, max_size=40)


def envelope_for(index: int, arrival: Arrival) -> Envelope:
    tenant, partner, isa13 = BUCKETS[arrival.bucket]
    return Envelope(
        id=f"e{index}",
        type="claim.submitted",
        tenant_id=tenant,
        occurred_at=format_timestamp(EPOCH_S + arrival.at - arrival.lag_s),
        severity="info",
        payload={},
        batch=BatchRef(partner, isa13),
    )


@dataclass(frozen=True)
class Outcome:
    ticks: list[float]
    # (tick time, completion), in announcement order
    announced: list[tuple[float, Envelope]]


def run(
    arrivals: list[Arrival], tick_gaps: list[float], arrivals_first: bool
) -> Outcome:
    """Feed ``arrivals`` with ticks at the given gaps, then one tick late enough for
    everything. An arrival at the very instant of a tick lands before it when
    ``arrivals_first``, after it otherwise: a replica may see either."""
    synthesizer = BatchSynthesizer(WINDOW_S)
    ticks, t = [], 0.0
    for gap in tick_gaps:
        t += gap
        ticks.append(t)
    ticks.append(max([arrivals[-1].at + WINDOW_S, *ticks]))
    announced: list[tuple[float, Envelope]] = []
    pending = list(enumerate(arrivals))
    for tick in ticks:
        while pending and (
            pending[0][1].at < tick or (arrivals_first and pending[0][1].at == tick)
        ):
            index, arrival = pending.pop(0)
            synthesizer.observe(envelope_for(index, arrival), arrival.at)
        announced += [(tick, c) for c in synthesizer.due(tick)]
    assert not pending
    assert synthesizer.next_deadline() is None
    assert synthesizer.open_buckets() == []
    return Outcome(ticks, announced)


@dataclass(frozen=True)
class Run:
    bucket: int
    indexes: tuple[int, ...]


def quiet_runs(arrivals: list[Arrival]) -> list[Run]:
    """Each bucket's arrivals, split wherever it stayed quiet a whole window."""
    runs: list[Run] = []
    for bucket in range(len(BUCKETS)):
        current: list[int] = []
        for index, arrival in enumerate(arrivals):
            if arrival.bucket != bucket:
                continue
            if current and arrival.at - arrivals[current[-1]].at >= WINDOW_S:
                runs.append(Run(bucket, tuple(current)))
                current = []
            current.append(index)
        if current:
            runs.append(Run(bucket, tuple(current)))
    return runs


@given(
    arrivals=arrival_sequences(), tick_gaps=tick_schedules, arrivals_first=st.booleans()
)
def test_each_quiet_gap_completes_its_bucket_exactly_once(
    arrivals: list[Arrival], tick_gaps: list[float], arrivals_first: bool
) -> None:
    """Every run of arrivals ended by a quiet window is announced once, counting its
    own events, at the first tick a whole window after its last event."""
    outcome = run(arrivals, tick_gaps, arrivals_first)
    announced = outcome.announced

    expected = {}
    for quiet in quiet_runs(arrivals):
        last = quiet.indexes[-1]
        key = BUCKETS[quiet.bucket]
        occurred = [EPOCH_S + arrivals[i].at - arrivals[i].lag_s for i in quiet.indexes]
        expected[completion_id(key, f"e{last}")] = (quiet, occurred)
    seen = [envelope.id for _, envelope in announced]
    assert sorted(seen) == sorted(expected), "one completion per quiet run"

    for tick, envelope in announced:
        quiet, occurred = expected[envelope.id]
        deadline = arrivals[quiet.indexes[-1]].at + WINDOW_S
        assert tick >= deadline, f"{envelope.id} announced before its window passed"
        first_tick = min(t for t in outcome.ticks if t >= deadline)
        assert tick == first_tick, f"{envelope.id} announced late, at {tick}"
        assert envelope.tenant_id == BUCKETS[quiet.bucket][0]
        assert envelope.payload["eventCount"] == len(quiet.indexes)
        assert envelope.payload["firstEventAt"] == format_timestamp(min(occurred))
        assert envelope.payload["lastEventAt"] == format_timestamp(max(occurred))
        assert envelope.occurred_at == format_timestamp(max(occurred) + WINDOW_S)


@given(
    arrivals=arrival_sequences(),
    ticks_a=tick_schedules,
    ticks_b=tick_schedules,
    arrivals_first=st.booleans(),
)
def test_replicas_ticking_differently_announce_the_same_completions(
    arrivals: list[Arrival],
    ticks_a: list[float],
    ticks_b: list[float],
    arrivals_first: bool,
) -> None:
    """Two synthesizers fed the same arrivals announce identical envelopes, in the
    same order per bucket, however their ticks fall."""

    def per_bucket(outcome: Outcome) -> dict[str, list[Envelope]]:
        grouped: dict[str, list[Envelope]] = {}
        for _, envelope in outcome.announced:
            key = f"{envelope.tenant_id}/{envelope.payload['isa13']}"
            grouped.setdefault(key, []).append(envelope)
        return grouped

    a = run(arrivals, ticks_a, arrivals_first)
    b = run(arrivals, ticks_b, not arrivals_first)
    assert per_bucket(a) == per_bucket(b)


@given(
    arrivals=arrival_sequences(),
    cut=st.integers(min_value=0, max_value=60).map(lambda n: n / 2),
)
def test_nothing_is_announced_before_its_window(
    arrivals: list[Arrival], cut: float
) -> None:
    """A single late tick completes only runs quiet for a whole window by then, and
    the deadline it reports next is the earliest one still open."""
    synthesizer = BatchSynthesizer(WINDOW_S)
    last_of: dict[str, float] = {}
    for index, arrival in enumerate(arrivals):
        if arrival.at > cut:
            break
        synthesizer.observe(envelope_for(index, arrival), arrival.at)
        last_of[completion_id(BUCKETS[arrival.bucket], f"e{index}")] = arrival.at
    for completion in synthesizer.due(cut):
        assert last_of[completion.id] + WINDOW_S <= cut, completion.payload
    still_open = [b.deadline for b in synthesizer.open_buckets()]
    assert all(deadline > cut for deadline in still_open)
    assert synthesizer.next_deadline() == (min(still_open) if still_open else None)


# -- recorded failures ---------------------------------------------------------------

failure_text = st.text(
    st.characters(codec="utf-8") | st.sampled_from("\r\n\x00\u2028\U0001f600"),
    min_size=1,
    max_size=20,
)
failure_bodies = st.fixed_dictionaries(
    {
        "tenantId": st.sampled_from(("acme", "globex")),
        "tradingPartnerId": st.sampled_from(("availity", "change-hc")),
        "reason": failure_text,
    },
    optional={
        "isa13": st.sampled_from(("000000123", "999999999")),
        "sourceId": st.sampled_from(("job-1", "ftp/2")),
        "message": failure_text,
    },
)
audiences = st.lists(
    st.tuples(
        st.sampled_from(("acme", "globex")),
        st.frozensets(st.sampled_from(READ_SCOPES)),
    ),
    max_size=6,
)


class StillClock:
    def now(self) -> float:
        return 0.0


def deliver(failure: Envelope, audience: list[tuple[str, frozenset[str]]]) -> HubCore:
    core = HubCore(catalog=CATALOG, clock=StillClock(), replica_id="r1")
    for tenant, scopes in audience:
        core.subscribe(Principal("user", tenant, scopes))
    core.dispatch(failure)
    return core


def assert_routed_by_catalog(
    core: HubCore, failure: Envelope, body: dict[str, str]
) -> None:
    permission = CATALOG.rows["batch.failed"].required_permission
    for subscriber in core.subscribers():
        entitled = (
            subscriber.tenant_id == failure.tenant_id
            and permission in subscriber.principal.scopes
        )
        frames = subscriber.pending()
        assert len(frames) == int(entitled), subscriber.principal
        for frame in frames:
            [event] = parse_stream(frame.frame).events
            assert event.type == "batch.failed"
            document = json.loads(event.data)
            assert document["payload"] == {
                k: v for k, v in body.items() if k != "tenantId"
            }
            assert (
                document["severity"] == CATALOG.rows["batch.failed"].default_ui_severity
            )
    stats = core.statistics().tenants[failure.tenant_id]
    denied = sum(
        1
        for s in core.subscribers(failure.tenant_id)
        if permission not in s.principal.scopes
    )
    assert stats.dropped["permission"] == denied
    assert stats.dispatched == {"batch.failed": 1}


@given(body=failure_bodies, audience=audiences)
def test_recorded_failure_reaches_only_entitled_streams(
    body: dict[str, str], audience: list[tuple[str, frozenset[str]]]
) -> None:
    """A recorded failure is routed by its catalog row: only its tenant's streams
    holding the row's permission get it, the others count a permission drop."""
    failure = batch_failure_from_json(
        body, new_id=lambda: "f1", now_iso=lambda: "2027-01-15T08:00:00.000Z"
    )
    assert failure.type == "batch.failed" and failure.batch is None
    assert_routed_by_catalog(deliver(failure, audience), failure, body)


@given(body=failure_bodies, audience=audiences)
def test_failure_recorded_through_the_publisher_travels_the_bus(
    body: dict[str, str], audience: list[tuple[str, frozenset[str]]]
) -> None:
    """``EventPublisher.record_batch_failure`` puts the failure on the bus, and each
    replica routes what it takes from its subscription through the catalog."""

    async def record() -> list[Envelope]:
        bus = MemoryBus()
        subscription = await bus.subscribe("r1")
        await EventPublisher(bus).record_batch_failure(
            tenant_id=body["tenantId"],
            trading_partner_id=body["tradingPartnerId"],
            reason=body["reason"],
            isa13=body.get("isa13"),
            source_id=body.get("sourceId"),
            message=body.get("message"),
        )
        batches = subscription.batches()
        taken = await asyncio.wait_for(anext(batches), timeout=5)
        await subscription.close()
        return taken

    [failure] = asyncio.run(record())
    parse_timestamp(failure.occurred_at)
    assert_routed_by_catalog(deliver(failure, audience), failure, body)


@given(
    body=st.dictionaries(
        st.sampled_from(
            ("tenantId", "tradingPartnerId", "reason", "isa13", "sourceId", "extra")
        ),
        st.none() | st.integers() | failure_text,
    )
)
def test_any_failure_body_is_refused_cleanly_or_frames_safely(
    body: dict[str, object],
) -> None:
    """Whatever a publisher sends, recording either refuses it with an
    ``EnvelopeError`` or builds one ``batch.failed`` frame that parses back."""
    try:
        failure = batch_failure_from_json(
            body, new_id=lambda: "f1", now_iso=lambda: "2027-01-15T08:00:00.000Z"
        )
    except EnvelopeError:
        return
    core = deliver(failure, [(failure.tenant_id, frozenset(READ_SCOPES))])
    [subscriber] = core.subscribers()
    assert subscriber.state is SubscriberState.OPEN
    [frame] = subscriber.pending()
    [event] = parse_stream(frame.frame).events
    assert json.loads(event.data) == json.loads(json.dumps(failure.to_json()))


@pytest.mark.parametrize("window", [0.0, -1.0], ids=["zero", "negative"])
def test_window_must_be_positive(window: float) -> None:
    """A synthesizer refuses a quiet window that is not positive."""
    with pytest.raises(ValueError, match="positive"):
        BatchSynthesizer(window)
