"""The batch synthesizer: ``batch.completed`` once a bucket has stayed quiet.

A bucket is ``(tenantId, tradingPartnerId, isa13)``. Each event that carries a batch
reference re-arms its bucket's deadline at ``arrival + quiet window``; a bucket whose
deadline passes is completed and forgotten, so a later event opens a new one and the
next completion counts only the events since the previous one.

Whether a bucket completes depends on arrival times only, never on when the edge's
timer happens to fire: an event that finds its bucket already past its deadline
completes it first, and the next ``due`` announces it. Replicas whose timers run
late therefore still announce the same completions, with the same ids.
"""

from __future__ import annotations

import hashlib
import heapq
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from ._envelope import (
    ISA13_PATTERN,
    TENANT_PATTERN,
    TOKEN_TEXT_PATTERN,
    Envelope,
    format_timestamp,
)
from ._errors import EnvelopeError

BucketKey = tuple[str, str, str]


@dataclass(slots=True)
class _Bucket:
    key: BucketKey
    event_count: int
    first_event_at: str
    first_event_at_s: float
    last_event_at: str
    last_event_at_s: float
    last_event_id: str
    deadline: float


@dataclass(frozen=True, slots=True)
class OpenBucket:
    tenant_id: str
    trading_partner_id: str
    isa13: str
    event_count: int
    deadline: float


def completion_id(key: BucketKey, last_event_id: str) -> str:
    """The same on every replica: derived from the bucket and its last event only."""
    digest = hashlib.sha256("\x1f".join((*key, last_event_id)).encode()).hexdigest()
    return f"batch-{digest[:32]}"


class BatchSynthesizer:
    def __init__(self, quiet_window_s: float) -> None:
        if quiet_window_s <= 0:
            raise ValueError("the quiet window must be positive")
        self.quiet_window_s = quiet_window_s
        self._buckets: dict[BucketKey, _Bucket] = {}
        # Lazy-deletion heap: an entry is live only while it matches its bucket's
        # current deadline; re-arming pushes a new entry and strands the old one.
        self._deadlines: list[tuple[float, BucketKey]] = []
        self._open_per_tenant: Counter[str] = Counter()
        # Completions of buckets that went quiet before any tick saw it, with their
        # deadlines; announced, oldest first, by the next ``due``.
        self._overdue: list[tuple[float, Envelope]] = []

    def observe(self, envelope: Envelope, now: float) -> None:
        batch = envelope.batch
        if batch is None:
            return
        key = (envelope.tenant_id, batch.trading_partner_id, batch.isa13)
        deadline = now + self.quiet_window_s
        bucket = self._buckets.get(key)
        if bucket is not None and bucket.deadline <= now:
            self._forget(bucket)
            self._overdue.append((bucket.deadline, self._completion(bucket)))
            bucket = None
        if bucket is None:
            self._buckets[key] = _Bucket(
                key,
                1,
                envelope.occurred_at,
                envelope.occurred_at_s,
                envelope.occurred_at,
                envelope.occurred_at_s,
                envelope.id,
                deadline,
            )
            self._open_per_tenant[envelope.tenant_id] += 1
        else:
            bucket.event_count += 1
            bucket.last_event_id = envelope.id
            bucket.deadline = deadline
            # Arrival order can differ from occurredAt order; keep the true span.
            if envelope.occurred_at_s < bucket.first_event_at_s:
                bucket.first_event_at = envelope.occurred_at
                bucket.first_event_at_s = envelope.occurred_at_s
            if envelope.occurred_at_s >= bucket.last_event_at_s:
                bucket.last_event_at = envelope.occurred_at
                bucket.last_event_at_s = envelope.occurred_at_s
        heapq.heappush(self._deadlines, (deadline, key))

    def due(self, now: float) -> list[Envelope]:
        """Complete every bucket whose deadline is at or before ``now``."""
        completed = [completion for _, completion in self._overdue]
        self._overdue.clear()
        while self._deadlines and self._deadlines[0][0] <= now:
            deadline, key = heapq.heappop(self._deadlines)
            bucket = self._buckets.get(key)
            if bucket is None or bucket.deadline != deadline:
                continue
            self._forget(bucket)
            completed.append(self._completion(bucket))
        return completed

    def next_deadline(self) -> float | None:
        if self._overdue:
            return min(deadline for deadline, _ in self._overdue)
        while self._deadlines:
            deadline, key = self._deadlines[0]
            bucket = self._buckets.get(key)
            if bucket is not None and bucket.deadline == deadline:
                return deadline
            heapq.heappop(self._deadlines)
        return None

    def open_buckets(self) -> list[OpenBucket]:
        return [
            OpenBucket(*bucket.key, bucket.event_count, bucket.deadline)
            for bucket in self._buckets.values()
        ]

    def open_count(self, tenant_id: str) -> int:
        return self._open_per_tenant.get(tenant_id, 0)

    def _forget(self, bucket: _Bucket) -> None:
        del self._buckets[bucket.key]
        tenant = bucket.key[0]
        self._open_per_tenant[tenant] -= 1
        if not self._open_per_tenant[tenant]:
            del self._open_per_tenant[tenant]

    def _completion(self, bucket: _Bucket) -> Envelope:
        tenant, partner, isa13 = bucket.key
        # occurredAt is derived too (last event + window) so that the whole envelope,
        # not only its id, is identical on every replica.
        return Envelope(
            id=completion_id(bucket.key, bucket.last_event_id),
            type="batch.completed",
            tenant_id=tenant,
            occurred_at=format_timestamp(bucket.last_event_at_s + self.quiet_window_s),
            severity="success",
            payload={
                "tradingPartnerId": partner,
                "isa13": isa13,
                "eventCount": bucket.event_count,
                "firstEventAt": bucket.first_event_at,
                "lastEventAt": bucket.last_event_at,
            },
        )


def batch_failure(
    *,
    event_id: str,
    occurred_at: str,
    tenant_id: str,
    trading_partner_id: str,
    reason: str,
    isa13: str | None = None,
    source_id: str | None = None,
    message: str | None = None,
) -> Envelope:
    """The ``batch.failed`` envelope for a recorded failure (never derived)."""
    payload: dict[str, str] = {"tradingPartnerId": trading_partner_id, "reason": reason}
    if isa13 is not None:
        payload["isa13"] = isa13
    if source_id is not None:
        payload["sourceId"] = source_id
    if message is not None:
        payload["message"] = message
    return Envelope(
        id=event_id,
        type="batch.failed",
        tenant_id=tenant_id,
        occurred_at=occurred_at,
        severity="error",
        payload=payload,
        batch=None,
    )


def batch_failure_from_json(
    document: object, *, new_id: Callable[[], str], now_iso: Callable[[], str]
) -> Envelope:
    """Validate the body of a recorded batch failure and build its event."""
    if not isinstance(document, dict):
        raise EnvelopeError("expected a JSON object", member=None, field=None)
    allowed = {"tenantId", "tradingPartnerId", "reason", "isa13", "sourceId", "message"}
    for key in document:
        if key not in allowed:
            raise EnvelopeError(
                f"unknown field; expected {', '.join(sorted(allowed))}",
                member=None,
                field=key,
            )

    def text(
        key: str, *, required: bool, pattern: re.Pattern[str] | None
    ) -> str | None:
        value = document.get(key)
        if value is None and not required:
            return None
        if not isinstance(value, str) or not value:
            raise EnvelopeError(
                "required, and must be a non-empty string"
                if required
                else "must be a non-empty string",
                member=None,
                field=key,
            )
        if pattern is not None and not pattern.match(value):
            raise EnvelopeError(FIELD_RULES[key], member=None, field=key)
        if len(value) > 2000:
            raise EnvelopeError("at most 2000 characters", member=None, field=key)
        return value

    tenant_id = text("tenantId", required=True, pattern=TENANT_PATTERN)
    partner = text("tradingPartnerId", required=True, pattern=TOKEN_TEXT_PATTERN)
    reason = text("reason", required=True, pattern=None)
    assert tenant_id is not None and partner is not None and reason is not None
    return batch_failure(
        event_id=new_id(),
        occurred_at=now_iso(),
        tenant_id=tenant_id,
        trading_partner_id=partner,
        reason=reason,
        isa13=text("isa13", required=False, pattern=ISA13_PATTERN),
        source_id=text("sourceId", required=False, pattern=TOKEN_TEXT_PATTERN),
        message=text("message", required=False, pattern=None),
    )


FIELD_RULES = {
    "tenantId": "not a tenant slug (lower case letters, digits and '-', at most 63)",
    "tradingPartnerId": "must be 1 to 128 printable ASCII characters without spaces",
    "sourceId": "must be 1 to 128 printable ASCII characters without spaces",
    "isa13": "must be nine digits, like '000000123'",
}
