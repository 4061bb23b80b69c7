"""Event envelopes: validation at ingest, and the SSE frame each one is sent as."""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from ._catalog import EVENT_TYPE_PATTERN, SEVERITIES, Catalog
from ._errors import EnvelopeError

# Every pattern ends in ``\Z``, not ``$``: ``$`` also matches before a final "\n",
# which would let "acme\n" pass as a tenant and "e1\n" end an id line early.
TENANT_PATTERN = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}\Z")
ISA13_PATTERN = re.compile(r"^[0-9]{9}\Z")
# Ids and partner ids travel in SSE fields and logs: printable ASCII only, so no CR,
# LF or NUL can ever split a frame or a log line.
TOKEN_TEXT_PATTERN = re.compile(r"^[\x21-\x7e]{1,128}\Z")
MAX_MEMBERS = 1000
ENVELOPE_KEYS = frozenset(
    {"id", "type", "tenantId", "occurredAt", "severity", "payload", "batch"}
)


@dataclass(frozen=True, slots=True)
class BatchRef:
    trading_partner_id: str
    isa13: str


@dataclass(frozen=True, slots=True)
class Envelope:
    id: str
    type: str
    tenant_id: str
    occurred_at: str
    severity: str
    payload: Mapping[str, Any]
    batch: BatchRef | None = None

    def to_json(self) -> dict[str, Any]:
        document: dict[str, Any] = {
            "id": self.id,
            "type": self.type,
            "tenantId": self.tenant_id,
            "occurredAt": self.occurred_at,
            "severity": self.severity,
            "payload": self.payload,
        }
        if self.batch is not None:
            document["batch"] = {
                "tradingPartnerId": self.batch.trading_partner_id,
                "isa13": self.batch.isa13,
            }
        return document

    @property
    def occurred_at_s(self) -> float:
        """``occurredAt`` as seconds since the epoch."""
        return parse_timestamp(self.occurred_at)


def format_timestamp(epoch_s: float) -> str:
    """RFC 3339 in UTC with milliseconds, as envelopes carry it.

    RFC 3339 has four-digit years only: a moment derived past either end (a batch
    completion after an event stamped 9999-12-31T23:59:59Z) is pinned to that end.
    """
    try:
        m = datetime.fromtimestamp(epoch_s, UTC)
    except (ValueError, OverflowError, OSError):
        m = datetime.max if epoch_s > 0 else datetime.min
    # Spelled out rather than strftime("%Y"), which drops the zeros of years < 1000.
    return (
        f"{m.year:04d}-{m.month:02d}-{m.day:02d}T"
        f"{m.hour:02d}:{m.minute:02d}:{m.second:02d}.{m.microsecond // 1000:03d}Z"
    )


def parse_timestamp(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


def envelope_from_json(
    document: Any,
    *,
    catalog: Catalog,
    member: int | None,
    new_id: Callable[[], str],
    now_iso: Callable[[], str],
) -> Envelope:
    """Validate one envelope as offered at ingest or read from the bus.

    ``id`` and ``occurredAt`` are filled in when absent; ``severity`` becomes the
    catalog's ``defaultUiSeverity`` when the type has a row.
    """
    if not isinstance(document, dict):
        raise EnvelopeError("expected a JSON object", member=member, field=None)
    for key in document:
        if key not in ENVELOPE_KEYS:
            raise EnvelopeError(
                f"unknown field; an envelope has {', '.join(sorted(ENVELOPE_KEYS))}",
                member=member,
                field=key,
            )

    event_type = _required_text(document, "type", member)
    if not EVENT_TYPE_PATTERN.match(event_type):
        raise EnvelopeError(
            f"'{_shorten(event_type)}' is not an event type like 'claim.submitted'",
            member=member,
            field="type",
        )
    tenant_id = _required_text(document, "tenantId", member)
    if not TENANT_PATTERN.match(tenant_id):
        raise EnvelopeError(
            f"'{_shorten(tenant_id)}' is not a tenant slug (lower case letters, "
            "digits and '-', at most 63)",
            member=member,
            field="tenantId",
        )
    payload = document.get("payload")
    if not isinstance(payload, dict):
        raise EnvelopeError(
            "required, and must be a JSON object", member=member, field="payload"
        )
    if not _all_numbers_finite(payload):
        # Python's JSON reader turns NaN, Infinity and 1e400 into floats that no
        # browser's JSON.parse would read back from the frame.
        raise EnvelopeError(
            "numbers must be finite (NaN, Infinity and overflowing numbers are not "
            "JSON)",
            member=member,
            field="payload",
        )

    event_id = document.get("id")
    if event_id is None:
        event_id = new_id()
    elif not isinstance(event_id, str) or not TOKEN_TEXT_PATTERN.match(event_id):
        raise EnvelopeError(
            "must be 1 to 128 printable ASCII characters without spaces",
            member=member,
            field="id",
        )

    occurred_at = document.get("occurredAt")
    if occurred_at is None:
        occurred_at = now_iso()
    elif not isinstance(occurred_at, str) or not _is_timestamp(occurred_at):
        raise EnvelopeError(
            "must be an RFC 3339 timestamp with a zone, like "
            "'2026-12-03T10:00:00.000Z'",
            member=member,
            field="occurredAt",
        )

    severity = document.get("severity")
    if severity is None:
        severity = "info"
    elif not isinstance(severity, str) or severity not in SEVERITIES:
        raise EnvelopeError(
            f"must be one of {', '.join(SEVERITIES)}", member=member, field="severity"
        )
    row = catalog.row(event_type)
    if row is not None:
        severity = row.default_ui_severity

    return Envelope(
        id=event_id,
        type=event_type,
        tenant_id=tenant_id,
        occurred_at=occurred_at,
        severity=severity,
        payload=payload,
        batch=_batch_ref(document.get("batch"), member),
    )


def envelopes_from_body(
    body: Any,
    *,
    catalog: Catalog,
    new_id: Callable[[], str],
    now_iso: Callable[[], str],
) -> list[Envelope]:
    """One envelope or an array of 1 to 1000: taken whole or refused whole."""
    if isinstance(body, list):
        if not 1 <= len(body) <= MAX_MEMBERS:
            raise EnvelopeError(
                f"an array must hold 1 to {MAX_MEMBERS} envelopes, not {len(body)}",
                member=None,
                field=None,
            )
        return [
            envelope_from_json(
                item, catalog=catalog, member=index, new_id=new_id, now_iso=now_iso
            )
            for index, item in enumerate(body)
        ]
    return [
        envelope_from_json(
            body, catalog=catalog, member=None, new_id=new_id, now_iso=now_iso
        )
    ]


def _required_text(document: dict[str, Any], key: str, member: int | None) -> str:
    value = document.get(key)
    if not isinstance(value, str) or not value:
        raise EnvelopeError(
            "required, and must be a non-empty string", member=member, field=key
        )
    return value


def _batch_ref(raw: Any, member: int | None) -> BatchRef | None:
    if raw is None:
        return None
    if not isinstance(raw, dict) or set(raw) - {"tradingPartnerId", "isa13"}:
        raise EnvelopeError(
            "must be an object with 'tradingPartnerId' and 'isa13'",
            member=member,
            field="batch",
        )
    partner = raw.get("tradingPartnerId")
    if not isinstance(partner, str) or not TOKEN_TEXT_PATTERN.match(partner):
        raise EnvelopeError(
            "must be 1 to 128 printable ASCII characters without spaces",
            member=member,
            field="batch.tradingPartnerId",
        )
    isa13 = raw.get("isa13")
    if not isinstance(isa13, str) or not ISA13_PATTERN.match(isa13):
        raise EnvelopeError(
            "must be nine digits, like '000000123'",
            member=member,
            field="batch.isa13",
        )
    return BatchRef(partner, isa13)


def _all_numbers_finite(document: Any) -> bool:
    stack = [document]
    while stack:
        value = stack.pop()
        if isinstance(value, float):
            if not math.isfinite(value):
                return False
        elif isinstance(value, dict):
            stack.extend(value.values())
        elif isinstance(value, list):
            stack.extend(value)
    return True


def _is_timestamp(text: str) -> bool:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return False
    return moment.tzinfo is not None


def _shorten(text: str, limit: int = 60) -> str:
    shown = text if len(text) <= limit else text[:limit] + "..."
    return shown.encode("unicode_escape").decode("ascii")
