"""Properties of the SSE framing: what the hub writes, a WHATWG parser reads back.

Each event must come back as exactly one event with the same id, type and JSON
data, whatever its payload holds and however the bytes are split across reads; and
nothing a publisher controls (id, type, tenant, partner, payload) may add a field,
an event or an invalid JSON document to the stream.
"""

from __future__ import annotations

import json
import math
from datetime import timedelta, timezone
from typing import Any

import pytest
from hypothesis import event as tally_event
from hypothesis import given
from hypothesis import strategies as st

from hub import load_catalog
from hub.core import (
    PING_FRAME,
    BatchRef,
    EncodedEvent,
    Envelope,
    EnvelopeError,
    HubCore,
    Principal,
    encode_event,
    envelope_from_json,
    ready_frame,
    shutdown_frame,
)

from .sse import SseEvent, SseParser, parse_stream

CATALOG = load_catalog()
# Characters that break naive framing or decoding, mixed into every text.
HOSTILE = (
    "\r",
    "\n",
    "\r\n",
    "\x00",
    "\u2028",
    "\u2029",
    "\u0085",
    "\ufeff",
    "\ud800",
    "\udfff",
    "\U0001f600",
    "\U0010ffff",
    ":",
    " ",
    "\ndata: x\n\n",
    "\nevent: x",
    "\nid: x",
)
texts = st.lists(st.text() | st.sampled_from(HOSTILE), max_size=6).map("".join)


def strict_json(text: str) -> Any:
    """Parse JSON as a browser's ``JSON.parse`` does: NaN and Infinity refused."""

    def refuse(constant: str) -> Any:
        raise ValueError(f"{constant} is not JSON")

    return json.loads(text, parse_constant=refuse)


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | texts,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(texts, inner, max_size=4)
    ),
    max_leaves=12,
)
payloads = st.dictionaries(texts, json_values, max_size=5)
printable_tokens = st.text(
    st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=40
)
event_types = st.sampled_from(sorted(CATALOG.rows))


@st.composite
def envelopes(draw: st.DrawFn) -> Envelope:
    batch = draw(
        st.none()
        | st.builds(BatchRef, printable_tokens, st.from_regex(r"\A[0-9]{9}\Z"))
    )
    return Envelope(
        id=draw(printable_tokens),
        type=draw(event_types),
        tenant_id=draw(st.sampled_from(("acme", "a", "tenant-9"))),
        occurred_at="2027-01-15T08:00:00.000Z",
        severity="info",
        payload=draw(payloads),
        batch=batch,
    )


def assert_reads_back(event: SseEvent, envelope: Envelope) -> None:
    assert event.type == envelope.type
    assert event.last_event_id == envelope.id
    # JSON-equal: compared as JSON text means it (two escaped lone surrogates that
    # form a pair read back as the one astral character they spell).
    assert strict_json(event.data) == json.loads(json.dumps(envelope.to_json()))


def assert_one_clean_frame(encoded: EncodedEvent) -> None:
    """Exactly the three fields of the contract, then the blank line."""
    lines = encoded.frame.split(b"\n")
    assert [line.split(b":", 1)[0] for line in lines] == [
        b"id",
        b"event",
        b"data",
        b"",
        b"",
    ], encoded.frame
    assert b"\r" not in encoded.frame and b"\x00" not in encoded.frame


@given(envelope=envelopes())
def test_any_payload_reads_back_as_one_event(envelope: Envelope) -> None:
    """Whatever Unicode the payload holds, its frame parses to exactly one event
    whose data is the envelope as JSON."""
    encoded = encode_event(envelope)
    assert_one_clean_frame(encoded)
    [event] = parse_stream(encoded.frame).events
    assert_reads_back(event, envelope)


@given(items=st.lists(envelopes(), min_size=1, max_size=5), data=st.data())
def test_a_stream_split_anywhere_reads_back_the_same(
    items: list[Envelope], data: st.DataObject
) -> None:
    """A stream of ready, events, pings and a farewell, delivered in reads cut at
    arbitrary bytes, parses to the same events as when read whole."""
    stream = ready_frame(
        subscriber_id="r1-s1", replica_id="r1", tenant_id="acme", retry_ms=3000
    )
    pings = 0
    for envelope in items:
        stream += encode_event(envelope).frame
        if data.draw(st.booleans(), label="ping after it"):
            stream += PING_FRAME
            pings += 1
    stream += shutdown_frame("shutdown")
    cuts = sorted(
        data.draw(
            st.lists(st.integers(min_value=0, max_value=len(stream)), max_size=12),
            label="cuts",
        )
    )

    parser = SseParser()
    for start, end in zip([0, *cuts], [*cuts, len(stream)], strict=True):
        parser.feed_bytes(stream[start:end])

    assert parser.events == parse_stream(stream).events
    ready, *events, farewell = parser.events
    assert ready.type == "ready" and parser.retry_ms == 3000
    assert farewell.type == "server_shutdown"
    assert strict_json(farewell.data) == {"reason": "shutdown"}
    assert len(events) == len(items)
    for event, envelope in zip(events, items, strict=True):
        assert_reads_back(event, envelope)
    assert parser.comments == [" ping"] * pings


# What a line-based format or a log line must never see inside a value.
BREAKERS = ("\n", "\r", "\r\n", "\x00", " ", "\u2028", "\u0085")
breakers = st.sampled_from(BREAKERS)
hostile_tokens = st.one_of(
    st.builds(lambda a, h: a + h, printable_tokens, breakers),
    st.builds(lambda a, h, b: a + h + b, printable_tokens, breakers, printable_tokens),
    texts,
)
hostile_types = st.one_of(
    st.builds(lambda t, h: t + h, event_types, breakers),
    st.builds(lambda h, t: h + t, breakers, event_types),
    texts,
)
hostile_tenants = st.one_of(
    st.builds(lambda t, h: t + h, st.sampled_from(("acme", "globex")), breakers),
    texts,
)
# What json.loads makes of NaN, Infinity, 1e400 and the like, besides plain numbers.
numbers = (
    st.sampled_from((math.nan, math.inf, -math.inf, 1e308, -0.0))
    | st.integers()
    | st.floats()
)


HOSTILE_FIELDS = {
    "id": ("id",),
    "type": ("type",),
    "tenantId": ("tenantId",),
    "partner": ("batch", "tradingPartnerId"),
    "payload": ("payload",),
}


def hostile_values(field: str) -> st.SearchStrategy[Any]:
    if field in ("id", "partner"):
        return hostile_tokens
    if field == "type":
        return hostile_types
    if field == "tenantId":
        return hostile_tenants
    return st.dictionaries(texts, numbers, min_size=1)


@pytest.mark.parametrize("field", list(HOSTILE_FIELDS))
@given(data=st.data())
def test_ingest_refuses_or_accepts_only_what_frames_cleanly(
    field: str, data: st.DataObject
) -> None:
    """An envelope offered with a hostile id, type, tenant, partner or number is
    refused with an ``EnvelopeError``, or framed as one clean event that a browser
    parses: no smuggled field, event or non-JSON data."""
    document: dict[str, Any] = {
        "id": data.draw(printable_tokens),
        "type": data.draw(event_types),
        "tenantId": "acme",
        "payload": data.draw(payloads),
        "batch": {
            "tradingPartnerId": data.draw(printable_tokens),
            "isa13": "000000123",
        },
    }
    *parents, name = HOSTILE_FIELDS[field]
    target = document
    for parent in parents:
        target = target[parent]
    target[name] = data.draw(hostile_values(field), label=field)
    try:
        envelope = envelope_from_json(
            document,
            catalog=CATALOG,
            member=None,
            new_id=lambda: "generated",
            now_iso=lambda: "2027-01-15T08:00:00.000Z",
        )
    except EnvelopeError as error:
        tally_event("refused")
        assert error.field is not None and error.field.endswith(name), error
        return

    tally_event("accepted")
    assert envelope.batch is not None
    for text in (
        envelope.id,
        envelope.type,
        envelope.tenant_id,
        envelope.batch.trading_partner_id,
    ):
        assert text.isascii() and text.isprintable() and " " not in text, text
    encoded = encode_event(envelope)
    assert_one_clean_frame(encoded)
    [event] = parse_stream(encoded.frame).events
    assert_reads_back(event, envelope)


@given(
    document=st.dictionaries(
        st.sampled_from(
            ("id", "type", "tenantId", "occurredAt", "severity", "payload", "batch")
        ),
        json_values | numbers,
    )
)
def test_ingest_refuses_malformed_envelopes_with_an_envelope_error(
    document: dict[str, Any],
) -> None:
    """Any JSON document is either an envelope the core can dispatch or refused
    with an ``EnvelopeError`` naming a field, never another exception."""
    try:
        envelope = envelope_from_json(
            document,
            catalog=CATALOG,
            member=3,
            new_id=lambda: "generated",
            now_iso=lambda: "2027-01-15T08:00:00.000Z",
        )
    except EnvelopeError as error:
        assert error.member == 3
        return
    [event] = parse_stream(encode_event(envelope).frame).events
    assert_reads_back(event, envelope)


class StillClock:
    def __init__(self) -> None:
        self.t = 0.0

    def now(self) -> float:
        return self.t


@given(
    occurred_at=st.sampled_from(
        (
            "9999-12-31T23:59:59.999Z",
            "9999-12-31T20:00:00-05:00",
            "0001-01-01T00:00:00+01:00",
            "0999-06-01T00:00:00Z",
        )
    )
    | st.datetimes(
        timezones=st.builds(
            timezone,
            st.timedeltas(
                min_value=timedelta(hours=-23, minutes=-59),
                max_value=timedelta(hours=23, minutes=59),
            ),
        )
    ).map(lambda moment: moment.isoformat()),
    partner=printable_tokens,
)
def test_any_accepted_timestamp_survives_dispatch_and_completion(
    occurred_at: str, partner: str
) -> None:
    """An event with any timestamp ingest accepts is dispatched, and its batch is
    completed and framed, without the core raising."""
    document = {
        "type": "claim.submitted",
        "tenantId": "acme",
        "occurredAt": occurred_at,
        "payload": {},
        "batch": {"tradingPartnerId": partner, "isa13": "000000123"},
    }
    try:
        envelope = envelope_from_json(
            document,
            catalog=CATALOG,
            member=None,
            new_id=lambda: "e1",
            now_iso=lambda: "2027-01-15T08:00:00.000Z",
        )
    except EnvelopeError:
        return
    clock = StillClock()
    core = HubCore(catalog=CATALOG, clock=clock, replica_id="r1")
    subscriber = core.subscribe(
        Principal("user", "acme", frozenset({"claims.read", "batches.read"}))
    )
    core.dispatch(envelope)
    clock.t = core.settings.quiet_window_s
    core.tick()
    frames = subscriber.pending()
    assert [f.envelope.type for f in frames] == ["claim.submitted", "batch.completed"]
    for frame in frames:
        [event] = parse_stream(frame.frame).events
        assert_reads_back(event, frame.envelope)
