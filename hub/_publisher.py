"""EventPublisher: the one way the rest of the code emits events."""

from __future__ import annotations

import time
from collections.abc import Sequence

from ulid import ULID

from ._bus import Bus
from .core import Envelope, batch_failure_from_json, format_timestamp


def new_event_id() -> str:
    """A ULID: unique, sortable by creation time, printable ASCII."""
    return str(ULID())


def now_iso() -> str:
    return format_timestamp(time.time())


class EventPublisher:
    def __init__(self, bus: Bus) -> None:
        self._bus = bus

    async def publish(self, envelopes: Sequence[Envelope]) -> list[str]:
        await self._bus.publish(envelopes)
        return [envelope.id for envelope in envelopes]

    async def record_batch_failure(
        self,
        *,
        tenant_id: str,
        trading_partner_id: str,
        reason: str,
        isa13: str | None = None,
        source_id: str | None = None,
        message: str | None = None,
    ) -> Envelope:
        """Publish ``batch.failed`` so that every replica delivers it.

        Validated exactly as the HTTP endpoint validates its body.
        """
        document = {
            "tenantId": tenant_id,
            "tradingPartnerId": trading_partner_id,
            "reason": reason,
            "isa13": isa13,
            "sourceId": source_id,
            "message": message,
        }
        envelope = batch_failure_from_json(
            {key: value for key, value in document.items() if value is not None},
            new_id=new_event_id,
            now_iso=now_iso,
        )
        await self._bus.publish([envelope])
        return envelope
