"""SSE frames, encoded once per event and shared by every subscriber's queue.

Every field value written here is either validated printable ASCII (ids, types) or
JSON serialised with ``ensure_ascii``, so no value can carry CR, LF or NUL and no
frame can smuggle an extra field or event.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from ._envelope import Envelope


@dataclass(frozen=True, slots=True)
class EncodedEvent:
    """One event's frame bytes, plus what the edges need without re-parsing."""

    envelope: Envelope
    frame: bytes
    occurred_at_s: float


def _json_line(document: Any) -> str:
    return json.dumps(document, ensure_ascii=True, separators=(",", ":"))


def encode_event(envelope: Envelope) -> EncodedEvent:
    frame = (
        f"id: {envelope.id}\nevent: {envelope.type}\n"
        f"data: {_json_line(envelope.to_json())}\n\n"
    ).encode("ascii")
    return EncodedEvent(envelope, frame, envelope.occurred_at_s)


def ready_frame(
    *, subscriber_id: str, replica_id: str, tenant_id: str, retry_ms: int
) -> bytes:
    data = _json_line(
        {"subscriberId": subscriber_id, "replicaId": replica_id, "tenantId": tenant_id}
    )
    return f"retry: {retry_ms}\nevent: ready\ndata: {data}\n\n".encode("ascii")


def shutdown_frame(reason: str, *, retry_ms: int | None = None) -> bytes:
    retry = f"retry: {retry_ms}\n" if retry_ms is not None else ""
    data = _json_line({"reason": reason})
    return f"{retry}event: server_shutdown\ndata: {data}\n\n".encode("ascii")


def control_frame(event: str, document: Any) -> bytes:
    """An in-band notice that is not a catalog event (no ``id``, not counted)."""
    return f"event: {event}\ndata: {_json_line(document)}\n\n".encode("ascii")


PING_FRAME = b": ping\n\n"
