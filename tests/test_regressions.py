"""Failures the property tests found, each kept as the plain example they shrank to.

Each failed on the core as it was before its fix (the two that did not are controls:
behaviour the fix had to keep) and sits under the property file that found it, so a
change that brings a defect back fails readably even when the property's examples
happen to miss it.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from typing import Any

import pytest

from hub import load_catalog
from hub.core import (
    BatchRef,
    BatchSynthesizer,
    Envelope,
    EnvelopeError,
    HubCore,
    Principal,
    completion_id,
    encode_event,
    envelope_from_json,
    format_timestamp,
    parse_timestamp,
)

from .sse import parse_stream

CATALOG = load_catalog()
WINDOW_S = 5.0
BUCKET = ("acme", "availity", "000000001")
EPOCH_S = 1_800_000_000.0


def batch_event(event_id: str, occurred_at_s: float) -> Envelope:
    return Envelope(
        id=event_id,
        type="claim.submitted",
        tenant_id="acme",
        occurred_at=format_timestamp(occurred_at_s),
        severity="info",
        payload={},
        batch=BatchRef("availity", "000000001"),
    )


# -- test_properties_batches: quiet windows ------------------------------------------


def test_event_after_a_quiet_window_completes_the_bucket_without_a_tick() -> None:
    """Arrivals at 0 s and 5 s with no tick between are two runs: the bucket was
    quiet a whole window, so the second event opens a new one (it used to be
    merged into the first, and the completion counted 2)."""
    synthesizer = BatchSynthesizer(WINDOW_S)
    synthesizer.observe(batch_event("e0", EPOCH_S), 0.0)
    synthesizer.observe(batch_event("e1", EPOCH_S + 5), 5.0)

    first = synthesizer.due(5.0)
    later = synthesizer.due(10.0)

    assert [(c.id, c.payload["eventCount"]) for c in first] == [
        (completion_id(BUCKET, "e0"), 1)
    ]
    assert [(c.id, c.payload["eventCount"]) for c in later] == [
        (completion_id(BUCKET, "e1"), 1)
    ]
    assert synthesizer.open_buckets() == []


@pytest.mark.parametrize("ticks", [[], [5.0]], ids=["late-timer", "timely-timer"])
def test_replicas_agree_whether_or_not_their_timer_fired_in_the_gap(
    ticks: list[float],
) -> None:
    """Arrivals at 0 s and 5.5 s: a replica that ticked at 5 s and one that did not
    announce the same completions (they used to differ in id and count)."""
    synthesizer = BatchSynthesizer(WINDOW_S)
    announced = []
    synthesizer.observe(batch_event("e0", EPOCH_S), 0.0)
    for tick in ticks:
        announced += synthesizer.due(tick)
    synthesizer.observe(batch_event("e1", EPOCH_S + 5.5), 5.5)
    announced += synthesizer.due(10.5)

    assert [c.id for c in announced] == [
        completion_id(BUCKET, "e0"),
        completion_id(BUCKET, "e1"),
    ]


def test_next_deadline_reports_an_overdue_completion() -> None:
    """A completion waiting for the next tick shows in ``next_deadline``, so the
    edge's timer fires for it at once."""
    synthesizer = BatchSynthesizer(WINDOW_S)
    synthesizer.observe(batch_event("e0", EPOCH_S), 0.0)
    synthesizer.observe(batch_event("e1", EPOCH_S + 7), 7.0)

    assert synthesizer.next_deadline() == 5.0
    assert len(synthesizer.due(7.0)) == 1
    assert synthesizer.next_deadline() == 12.0


def test_hub_announces_a_bucket_its_timer_missed() -> None:
    """Through the core: an event arriving after its bucket's window, before any
    tick, still makes the tick announce the earlier run to subscribers."""

    class Clock:
        t = 0.0

        def now(self) -> float:
            return self.t

    clock = Clock()
    core = HubCore(catalog=CATALOG, clock=clock, replica_id="r1")
    subscriber = core.subscribe(
        Principal("user", "acme", frozenset({"claims.read", "batches.read"}))
    )
    core.dispatch(batch_event("e0", EPOCH_S))
    clock.t = 6.0
    core.dispatch(batch_event("e1", EPOCH_S + 6))
    core.tick()

    completed = [f.envelope for f in subscriber.pending()[2:]]
    assert [(c.type, c.payload["eventCount"]) for c in completed] == [
        ("batch.completed", 1)
    ]
    stats = core.statistics().tenants["acme"]
    assert (stats.batches_completed, stats.batches_open) == (1, 1)


def test_first_event_at_is_the_earliest_occurrence_not_the_first_arrival() -> None:
    """Two events arriving together, the second having occurred half a second
    earlier: ``firstEventAt`` is the earlier moment (it used to be the first
    arrival's)."""
    synthesizer = BatchSynthesizer(WINDOW_S)
    synthesizer.observe(batch_event("e0", EPOCH_S), 0.0)
    synthesizer.observe(batch_event("e1", EPOCH_S - 0.5), 0.0)

    [completion] = synthesizer.due(5.0)

    assert completion.payload["firstEventAt"] == format_timestamp(EPOCH_S - 0.5)
    assert completion.payload["lastEventAt"] == format_timestamp(EPOCH_S)


# -- test_properties_frames: what ingest lets through ---------------------------------


def offer(**fields: Any) -> Envelope:
    document: dict[str, Any] = {
        "id": "0",
        "type": "authorization.approved",
        "tenantId": "acme",
        "payload": {},
        "batch": {"tradingPartnerId": "0", "isa13": "000000123"},
    }
    for key, value in fields.items():
        if key in ("tradingPartnerId", "isa13"):
            document["batch"][key] = value
        else:
            document[key] = value
    return envelope_from_json(
        document,
        catalog=CATALOG,
        member=None,
        new_id=lambda: "generated",
        now_iso=lambda: "2027-01-15T08:00:00.000Z",
    )


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("id", "0\n"),
        ("type", "claim.submitted\n"),
        ("tenantId", "acme\n"),
        ("tradingPartnerId", "0\n"),
        ("isa13", "000000123\n"),
    ],
    ids=["id", "type", "tenant", "partner", "isa13"],
)
def test_a_trailing_newline_is_refused(field: str, value: str) -> None:
    """A value ending in LF is refused (the patterns' ``$`` used to let it through,
    and an id "0\\n" ended its frame's id line with a blank line)."""
    with pytest.raises(EnvelopeError) as refused:
        offer(**{field: value})
    assert refused.value.field is not None and refused.value.field.endswith(field)


@pytest.mark.parametrize(
    "number",
    [math.nan, math.inf, -math.inf],
    ids=["nan", "infinity", "minus-infinity"],
)
def test_a_payload_number_json_cannot_carry_is_refused(number: float) -> None:
    """``{"payload": {"": NaN}}`` is refused: it used to be framed as data that a
    browser's ``JSON.parse`` rejects."""
    with pytest.raises(EnvelopeError, match="finite") as refused:
        offer(payload={"": [{"deep": number}]})
    assert refused.value.field == "payload"


def test_finite_payload_numbers_still_pass() -> None:
    """Ordinary and extreme finite numbers are accepted and framed as JSON."""
    envelope = offer(payload={"a": 1e308, "b": -0.0, "c": 10**30, "d": [0.5]})
    [event] = parse_stream(encode_event(envelope).frame).events
    assert json.loads(event.data)["payload"] == {
        "a": 1e308,
        "b": -0.0,
        "c": 10**30,
        "d": [0.5],
    }


@pytest.mark.parametrize(
    ("occurred_at", "completed_at"),
    [
        ("0999-01-01T00:00:00+00:00", "0999-01-01T00:00:05.000Z"),
        ("9999-12-31T23:59:59.999Z", "9999-12-31T23:59:59.999Z"),
    ],
    ids=["year-999", "year-9999"],
)
def test_a_batch_at_the_edge_of_time_completes(
    occurred_at: str, completed_at: str
) -> None:
    """A batch event stamped in year 999 or at the last millisecond of 9999 is
    completed and framed (the tick used to raise: a three-digit year, and a
    completion moment past year 9999)."""

    class Clock:
        t = 0.0

        def now(self) -> float:
            return self.t

    clock = Clock()
    core = HubCore(catalog=CATALOG, clock=clock, replica_id="r1")
    subscriber = core.subscribe(
        Principal("user", "acme", frozenset({"authorizations.read", "batches.read"}))
    )
    core.dispatch(offer(occurredAt=occurred_at))
    clock.t = WINDOW_S
    core.tick()

    [_, completion] = subscriber.pending()
    assert completion.envelope.occurred_at == completed_at
    [event] = parse_stream(completion.frame).events
    assert json.loads(event.data)["occurredAt"] == completed_at


@pytest.mark.parametrize(
    ("epoch_s", "text"),
    [
        (datetime(999, 1, 1, tzinfo=UTC).timestamp(), "0999-01-01T00:00:00.000Z"),
        (-1e13, "0001-01-01T00:00:00.000Z"),
        (1e13, "9999-12-31T23:59:59.999Z"),
    ],
    ids=["four-digit-year", "before-year-1", "after-year-9999"],
)
def test_format_timestamp_always_writes_rfc3339(epoch_s: float, text: str) -> None:
    """Timestamps keep four-digit years and pin moments outside years 1 to 9999 to
    the nearest end, so that they always parse back."""
    assert format_timestamp(epoch_s) == text
    parse_timestamp(text)


# -- test_properties_hub: mark_written -------------------------------------------------


def test_mark_written_on_an_empty_queue_does_nothing() -> None:
    """``mark_written(subscriber, 1)`` with nothing queued is a no-op (it used to
    raise IndexError from the empty queue)."""

    class Clock:
        def now(self) -> float:
            return 0.0

    core = HubCore(catalog=CATALOG, clock=Clock(), replica_id="r1")
    subscriber = core.subscribe(Principal("user", "acme", frozenset()))
    core.mark_written(subscriber, 1)
    assert subscriber.delivered == 0
    assert core.counters("acme").ledger_gap() == 0
